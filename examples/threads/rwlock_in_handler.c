/* A signal handler that takes and releases a rwlock, as PostgreSQL 15's
 * postmaster does when its handlers run OpenSSL (CRYPTO_THREAD_write_lock),
 * while the program waits in select(); then the program takes the same lock.
 * It must be free: prints how often each side got it.
 *
 *     rwlock_in_handler */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static volatile sig_atomic_t g_handled, g_handler_failed;

static void on_alarm(int sig) {
    (void)sig;
    /* A write lock alone: glibc keeps its lock in the write phase after it. */
    if (pthread_rwlock_wrlock(&g_lock) != 0) {
        g_handler_failed++;
        return;
    }
    pthread_rwlock_unlock(&g_lock);
    g_handled++;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    int took = 0;
    for (int round = 0; round < 5; round++) {
        int before = g_handled;
        struct itimerval it = {{0, 0}, {0, 5000}}; /* one SIGALRM in 5 ms */
        setitimer(ITIMER_REAL, &it, NULL);
        while (g_handled == before && !g_handler_failed) {
            struct timeval tv = {0, 50000};
            select(0, NULL, NULL, NULL, &tv); /* the handler runs while we wait here */
        }
        struct timespec limit;
        clock_gettime(CLOCK_REALTIME, &limit);
        limit.tv_sec += 2;
        if (pthread_rwlock_timedwrlock(&g_lock, &limit) == 0) {
            took++;
            pthread_rwlock_unlock(&g_lock);
        }
    }
    printf("the handler took the lock %d times (%d failures); the program then took it %d of 5 times\n",
           (int)g_handled, (int)g_handler_failed, took);
    return 0;
}
