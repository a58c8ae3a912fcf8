// sem_post from a signal handler, which POSIX allows: no post may be lost.
//
//   sem_post_signals [N]     (default 1000000)
//   sem_post_signals --timer SECONDS   (see timer_mode)
//
// A child process sends N real-time signals (SIGRTMIN, queued: none merges
// with another; sigqueue is retried while the queue is full). The handler
// posts a semaphore (sem_init, not shared: under greenshim the shim's own)
// and counts. Three threads (main and two others) take from the semaphore
// with sem_timedwait, interrupted (EINTR) by the handler now and then, until
// N are taken, while a fourth posts and takes in a loop (net nothing) so
// that handlers interrupt semaphore operations and thread switches half-way
// (under greenshim, the shim's wait and run queues). The last taker posts one stop token per other
// taker. Checked: the handler ran N times, N were taken, the tokens too, and
// the semaphore is back to 0. A lost post shows as a taker that waits 10 s
// for nothing (exit 1); the output is the same with and without the shim.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TAKERS 3

static sem_t g_sem;
static atomic_long g_handled;
static atomic_long g_taken;
static atomic_long g_eintr;
static long g_n;
static atomic_int g_failed;

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    atomic_fetch_add(&g_handled, 1);  // before the post: a take implies its handler counted
    if (sem_post(&g_sem) != 0) atomic_store(&g_failed, 1);
    errno = saved;
}

// Takes until N are taken; the one that takes the N-th posts a stop token
// for each other taker, which exits on its next take.
static void* taker(void* arg) {
    (void)arg;
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        int r = sem_timedwait(&g_sem, &until);
        if (r != 0) {
            if (errno == EINTR) {
                atomic_fetch_add(&g_eintr, 1);
                continue;
            }
            fprintf(stderr, "sem_timedwait: %s after %ld taken, %ld handled: a post was lost\n", strerror(errno),
                    atomic_load(&g_taken), atomic_load(&g_handled));
            atomic_store(&g_failed, 1);
            return NULL;
        }
        long n = atomic_fetch_add(&g_taken, 1) + 1;
        if (n == g_n)
            for (int i = 0; i < TAKERS - 1; ++i) sem_post(&g_sem);
        if (n >= g_n) return NULL;
    }
}

// Keeps the semaphore and the scheduler busy while signals arrive, so that
// handlers interrupt sem_post and sem_wait half-way and the threads'
// switching: posts one and takes one (net nothing), yielding now and then.
// (sem_trywait: when a taker took its post, it goes on; both are counted.)
static atomic_int g_churning = 1;
static atomic_long g_churn_posts, g_churn_takes;
static void* churn(void* arg) {
    (void)arg;
    for (long i = 1; atomic_load(&g_churning); ++i) {
        if (sem_post(&g_sem) == 0) atomic_fetch_add(&g_churn_posts, 1);
        if (sem_trywait(&g_sem) == 0) atomic_fetch_add(&g_churn_takes, 1);
        if (i % 16 == 0) sched_yield();
    }
    return NULL;
}

// Every post made is taken or still there.
static int balanced(long handled, long tokens, long takes) {
    int left = -1;
    sem_getvalue(&g_sem, &left);
    long posts = handled + tokens + atomic_load(&g_churn_posts);
    long taken = takes + atomic_load(&g_churn_takes);
    fprintf(stderr, "posts: %ld by the handler, %ld tokens, %ld churn; taken: %ld by takers, %ld churn; left %d\n",
            handled, tokens, atomic_load(&g_churn_posts), takes, atomic_load(&g_churn_takes), left);
    return posts == taken + left;
}

// --timer SECONDS: the signals are SIGALRM from an interval timer (every
// 20 us), which the kernel delivers at whatever instruction the thread is
// at when the timer interrupts it. They merge when one is pending, so what
// is checked is the handler's own count: every post it made is taken or
// still on the semaphore.
static atomic_int g_stopping;
static atomic_long g_waits;
static void* timed_taker(void* arg) {
    (void)arg;
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        if (sem_timedwait(&g_sem, &until) != 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "sem_timedwait: %s: a post was lost\n", strerror(errno));
            atomic_store(&g_failed, 1);
            return NULL;
        }
        atomic_fetch_add(&g_waits, 1);
        if (atomic_load(&g_stopping)) return NULL;
    }
}

static int timer_mode(double seconds) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) return 2;
    pthread_t takers[TAKERS], churner;
    for (int i = 0; i < TAKERS; ++i)
        if (pthread_create(&takers[i], NULL, timed_taker, NULL) != 0) return 2;
    if (pthread_create(&churner, NULL, churn, NULL) != 0) return 2;
    struct itimerval it = {{0, 20}, {0, 20}};
    setitimer(ITIMER_REAL, &it, NULL);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {  // (a nanosleep interrupted 50,000 times a second may never end: look at the clock)
        struct timespec ms = {0, 10000000};
        nanosleep(&ms, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    atomic_store(&g_churning, 0);
    pthread_join(churner, NULL);
    atomic_store(&g_stopping, 1);
    for (int i = 0; i < TAKERS; ++i) sem_post(&g_sem);  // one stop token each
    for (int i = 0; i < TAKERS; ++i) pthread_join(takers[i], NULL);
    fprintf(stderr, "%ld signals handled in %.1f s\n", atomic_load(&g_handled), seconds);
    int ok = !atomic_load(&g_failed) && balanced(atomic_load(&g_handled), TAKERS, atomic_load(&g_waits));
    printf("every post taken or left on the semaphore: %s\n", ok ? "yes" : "NO");
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc > 2 && strcmp(argv[1], "--timer") == 0) {
        if (sem_init(&g_sem, 0, 0) != 0) return 2;
        return timer_mode(atof(argv[2]));
    }
    g_n = argc > 1 ? atol(argv[1]) : 1000000;
    if (g_n <= 0) return 2;
    if (sem_init(&g_sem, 0, 0) != 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGRTMIN, &sa, NULL) != 0) return 2;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) return 2;
    if (child == 0) {
        union sigval v = {0};
        for (long i = 0; i < g_n; ++i)
            while (sigqueue(parent, SIGRTMIN, v) != 0) {
                if (errno != EAGAIN) _exit(3);
                sched_yield();  // the queue is full: let the parent catch up
            }
        _exit(0);
    }
    pthread_t others[TAKERS - 1], churner;
    for (int i = 0; i < TAKERS - 1; ++i)
        if (pthread_create(&others[i], NULL, taker, NULL) != 0) return 2;
    if (pthread_create(&churner, NULL, churn, NULL) != 0) return 2;
    taker(NULL);
    for (int i = 0; i < TAKERS - 1; ++i) pthread_join(others[i], NULL);
    atomic_store(&g_churning, 0);
    pthread_join(churner, NULL);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    // Every signal sigqueue accepted is delivered: await the last handlers.
    for (int i = 0; i < 10000 && atomic_load(&g_handled) < g_n; ++i) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "%ld signals in %.2f s (%.0f/s); %ld sem_timedwait calls interrupted\n", g_n, s, (double)g_n / s,
            atomic_load(&g_eintr));
    int ok = !atomic_load(&g_failed) && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
             balanced(atomic_load(&g_handled), TAKERS - 1, atomic_load(&g_taken));
    printf("signals sent: %ld\n", g_n);
    printf("handler ran: %ld\n", atomic_load(&g_handled));
    printf("every post taken or left on the semaphore: %s\n", ok ? "yes" : "NO");
    return ok ? 0 : 1;
}
