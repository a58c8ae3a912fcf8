// What an uncontended pthread_mutex_lock + unlock pair costs, and the other
// calls an allocator makes on every malloc or thread start (trylock,
// pthread_getspecific, pthread_self): plain C, no greenshim code. Run it as
// it is and with LD_PRELOAD=libgreenshim.so and compare.
//
//   bench_lock [N]     N iterations per pass (default 10,000,000), best of 5
//
// Each figure is measured twice: before the process has any other thread
// (under the shim: no hub yet, the thread's runtime state not set up) and
// after one thread was created and joined (under the shim: a hub and the
// main greenlet exist).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static pthread_mutex_t g_normal = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_recursive;
static pthread_key_t g_key;

// Keeps the compiler from dropping calls whose results are unused.
static volatile unsigned long g_sink;

typedef void (*body_fn)(long n);

static void lock_normal(long n) {
    for (long i = 0; i < n; ++i) {
        pthread_mutex_lock(&g_normal);
        pthread_mutex_unlock(&g_normal);
    }
}
static void lock_recursive(long n) {
    for (long i = 0; i < n; ++i) {
        pthread_mutex_lock(&g_recursive);
        pthread_mutex_unlock(&g_recursive);
    }
}
static void trylock_normal(long n) {
    for (long i = 0; i < n; ++i) {
        if (pthread_mutex_trylock(&g_normal) == 0) pthread_mutex_unlock(&g_normal);
    }
}
static void getspecific(long n) {
    unsigned long s = 0;
    for (long i = 0; i < n; ++i) s += (unsigned long)pthread_getspecific(g_key);
    g_sink = s;
}
// pthread_self is declared const: called through a volatile pointer, each
// call is made.
static pthread_t (*volatile g_self)(void) = pthread_self;
static void self(long n) {
    unsigned long s = 0;
    for (long i = 0; i < n; ++i) s += (unsigned long)g_self();
    g_sink = s;
}

static double best_ns(body_fn f, long n) {
    double best = 1e18;
    for (int pass = 0; pass < 5; ++pass) {
        long long t0 = now_ns();
        f(n);
        double ns = (double)(now_ns() - t0) / (double)n;
        if (ns < best) best = ns;
    }
    return best;
}

static void* nothing(void* arg) { return arg; }

static void measure(const char* when, long n) {
    printf("%-14s lock+unlock %6.2f ns  recursive %6.2f ns  trylock+unlock %6.2f ns  getspecific %6.2f ns  self %6.2f ns\n",
           when, best_ns(lock_normal, n), best_ns(lock_recursive, n), best_ns(trylock_normal, n),
           best_ns(getspecific, n), best_ns(self, n));
}

int main(int argc, char** argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    if (n <= 0) {
        fprintf(stderr, "usage: bench_lock [N]\n");
        return 2;
    }
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_recursive, &a);
    pthread_mutexattr_destroy(&a);
    pthread_key_create(&g_key, NULL);
    pthread_setspecific(g_key, &g_key);
    measure("no thread yet", n);
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) != 0 || pthread_join(t, NULL) != 0) {
        fprintf(stderr, "bench_lock: pthread_create failed\n");
        return 1;
    }
    measure("after a thread", n);
    return 0;
}
