/* A lock holder that blocks: no deadlock, no spinning.
 *
 * Thread A locks a pthread mutex and then blocks in read() on an empty pipe,
 * holding the lock. Threads B and C find the mutex busy and wait for it. Main
 * lets 200 ms pass, checks that the mutex is still A's and that the whole
 * process used (almost) no CPU meanwhile -- the waiters wait, they do not
 * spin -- then writes to the pipe. A wakes, releases the mutex, and B and C
 * get it, each once, only after A released it.
 *
 * Under greenshim, A's read() parks A's greenlet while it holds the lock and
 * B and C park on the mutex: the one OS thread keeps running main, and when
 * the pipe becomes readable A resumes and unlocks. Unpatched, the same
 * happens with three OS threads.
 *
 * Prints a fixed list of statements each ending "yes" (or "NO"), and exits 0
 * only if all are "yes". Figures (CPU time) go to stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static int pipefd[2];
static sem_t a_locked, waiter_ready;

/* Written under the mutex. */
static int a_released;
static char a_got[32];
/* Per waiter (B = 0, C = 1). */
static int found_busy[2], saw_released[2], times_locked[2];
static int acquisitions; /* by B or C; read racily (atomically) by main */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void *thread_a(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mutex);
    sem_post(&a_locked);
    char buf[sizeof a_got];
    ssize_t n;
    do n = read(pipefd[0], buf, sizeof buf - 1); while (n < 0 && errno == EINTR);
    if (n < 0) { perror("lock_parked: read"); exit(1); }
    buf[n] = 0;
    strcpy(a_got, buf);
    a_released = 1;
    pthread_mutex_unlock(&mutex);
    return NULL;
}

static void *waiter(void *arg) {
    int i = (int)(long)arg;
    found_busy[i] = pthread_mutex_trylock(&mutex) == EBUSY;
    sem_post(&waiter_ready);
    if (!found_busy[i]) return NULL; /* reported below as a failure */
    pthread_mutex_lock(&mutex);
    saw_released[i] = a_released;
    ++times_locked[i];
    __atomic_fetch_add(&acquisitions, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mutex);
    return NULL;
}

static int all_ok = 1;

static void say(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "yes" : "NO");
    all_ok &= ok;
}

int main(void) {
    if (pipe(pipefd) != 0) { perror("pipe"); return 1; }
    sem_init(&a_locked, 0, 0);
    sem_init(&waiter_ready, 0, 0);
    pthread_t a, w[2];
    if (pthread_create(&a, NULL, thread_a, NULL) != 0) return 1;
    sem_wait(&a_locked);
    for (long i = 0; i < 2; ++i)
        if (pthread_create(&w[i], NULL, waiter, (void *)i) != 0) return 1;
    sem_wait(&waiter_ready);
    sem_wait(&waiter_ready);

    double cpu0 = cpu_s(), t0 = now_s();
    struct timespec d = {0, 200 * 1000 * 1000};
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {}
    double cpu = cpu_s() - cpu0, waited = now_s() - t0;
    fprintf(stderr, "lock_parked: waited %.0f ms, CPU used meanwhile %.1f ms\n", waited * 1e3, cpu * 1e3);

    int still_held = pthread_mutex_trylock(&mutex) == EBUSY;
    if (!still_held) pthread_mutex_unlock(&mutex);
    int none_yet = __atomic_load_n(&acquisitions, __ATOMIC_SEQ_CST) == 0;

    if (write(pipefd[1], "wake up", 7) != 7) { perror("write"); return 1; }
    pthread_join(a, NULL);
    pthread_join(w[0], NULL);
    pthread_join(w[1], NULL);

    printf("A locked the mutex, then blocked in read() holding it\n");
    say("B found the mutex busy", found_busy[0]);
    say("C found the mutex busy", found_busy[1]);
    say("after 200 ms the mutex is still held by A", still_held && waited >= 0.195);
    say("B and C have not got it meanwhile", none_yet);
    say("CPU used while waiting < 100 ms", cpu < 0.100);
    say("A read \"wake up\" and released the mutex", strcmp(a_got, "wake up") == 0);
    say("B got the mutex after A released it", saw_released[0]);
    say("C got the mutex after A released it", saw_released[1]);
    say("B and C each got it exactly once", times_locked[0] == 1 && times_locked[1] == 1);
    return all_ok ? 0 : 1;
}
