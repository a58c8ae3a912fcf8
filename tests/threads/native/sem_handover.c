/* A semaphore used as a lock goes to the thread that waits for it, even when
 * the holder releases it and takes it again at once in a loop. Under
 * greenrun a greenlet gives way only inside a call, and this holder makes
 * its calls with the semaphore held: if a release let it take the unit back
 * before the woken waiter ran, the waiter would never get in. (CPython's
 * locks are semaphores: a daemon thread that writes to stderr in a loop kept
 * the main thread's write out for good; test_io's shutdown tests.) */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>

static sem_t lock;
static int devnull = -1;
static int stop;
static long rounds;

static void *holder(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
        while (sem_wait(&lock) != 0 && errno == EINTR) {
        }
        for (int i = 0; i < 4; ++i) (void)!write(devnull, ".", 1); /* (calls made holding it) */
        ++rounds;
        sem_post(&lock);
    }
    return NULL;
}

int main(void) {
    devnull = open("/dev/null", O_WRONLY);
    sem_init(&lock, 0, 1);
    pthread_t t = start(holder, NULL);
    usleep(50000); /* (the holder loops meanwhile) */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    double t0 = now_ms();
    int r;
    while ((r = sem_timedwait(&lock, &deadline)) != 0 && errno == EINTR) {
    }
    double waited = now_ms() - t0;
    if (r == 0) sem_post(&lock);
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    fprintf(stderr, "sem_handover: waited %.1f ms; the holder went round %ld times\n", waited, rounds);
    say("sem_handover: a thread waiting for a semaphore that another takes and gives back in a loop gets it", r == 0);
    int v = -1;
    sem_getvalue(&lock, &v);
    say("sem_handover: the semaphore's value is 1 at the end", v == 1);
    return all_ok ? 0 : 1;
}
