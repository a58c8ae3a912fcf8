// A small threaded program whose output says whether it ran right, for
// tests/badinput/config.py: four threads pass a token around a ring of pipes,
// count under a mutex and a condition variable, and sleep. Its stdout is the
// same unpatched and under the shim, except two lines config.py checks:
//   OS threads: N             (how many OS threads the four ran on: 4 unpatched,
//                             1 under the shim, at most GREENSHIM_HUBS with several hubs)
//   stack KiB: N              (the stack a new thread gets, pthread_getattr_np)
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { kThreads = 4, kRounds = 100 };

static int ring[kThreads][2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int counter = 0;
static pthread_barrier_t all_alive;
static long tids[kThreads];
static size_t stack_size;

static void must(int ok, const char* what) {
    if (!ok) {
        perror(what);
        exit(3);
    }
}

static void* worker(void* arg) {
    int i = (int)(long)arg;
    tids[i] = syscall(SYS_gettid);
    if (i == 0) {
        pthread_attr_t a;
        must(pthread_getattr_np(pthread_self(), &a) == 0, "pthread_getattr_np");
        must(pthread_attr_getstacksize(&a, &stack_size) == 0, "pthread_attr_getstacksize");
        pthread_attr_destroy(&a);
    }
    pthread_barrier_wait(&all_alive);  // every tid is recorded while all live
    char token;
    for (int r = 0; r < kRounds; ++r) {
        if (i != 0 || r != 0) must(read(ring[i][0], &token, 1) == 1, "read");
        pthread_mutex_lock(&lock);
        ++counter;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        must(write(ring[(i + 1) % kThreads][1], "t", 1) == 1, "write");
    }
    usleep(1000);
    return (void*)(long)(i * 10);
}

int main(void) {
    pthread_t th[kThreads];
    for (int i = 0; i < kThreads; ++i) must(pipe(ring[i]) == 0, "pipe");
    pthread_barrier_init(&all_alive, NULL, kThreads);
    for (int i = 0; i < kThreads; ++i) must(pthread_create(&th[i], NULL, worker, (void*)(long)i) == 0, "pthread_create");
    pthread_mutex_lock(&lock);
    while (counter < kThreads * kRounds) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    long sum = 0;
    for (int i = 0; i < kThreads; ++i) {
        void* ret;
        must(pthread_join(th[i], &ret) == 0, "pthread_join");
        sum += (long)ret;
    }
    char last;
    must(read(ring[0][0], &last, 1) == 1, "read");  // the token's last pass
    int distinct = 0;
    for (int i = 0; i < kThreads; ++i) {
        int seen = 0;
        for (int j = 0; j < i; ++j) seen |= tids[j] == tids[i];
        distinct += !seen;
    }
    printf("passes: %d\n", counter);
    printf("results: %ld\n", sum);
    printf("OS threads: %d\n", distinct);
    printf("stack KiB: %zu\n", stack_size / 1024);
    return 0;
}
