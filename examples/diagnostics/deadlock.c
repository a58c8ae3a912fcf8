/* A deliberate lock-order deadlock: two threads each take one mutex, meet at
 * a barrier (so both hold theirs), then each asks for the other's. The main
 * thread joins them, or with `main-exits` leaves them with pthread_exit().
 *
 *     deadlock [main-exits | busy-main]   (hangs forever with OS threads)
 *
 * busy-main: main computes for 3 ms after starting each thread, without
 * waiting (with several hubs, another hub, idle, then runs the thread).
 *
 * Under greenrun every greenlet then waits for another and nothing outside
 * (fd, timer, child, signal) could wake any of them: greenshim prints each
 * greenlet, where it waits and its start function, and exits with status 86. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t accounts = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ledger = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold;

void* transfer_worker(void* arg) {
    (void)arg;
    pthread_mutex_lock(&accounts);
    pthread_barrier_wait(&both_hold);
    pthread_mutex_lock(&ledger); /* held by audit_worker */
    puts("transfer done");
    return NULL;
}

void* audit_worker(void* arg) {
    (void)arg;
    pthread_mutex_lock(&ledger);
    pthread_barrier_wait(&both_hold);
    pthread_mutex_lock(&accounts); /* held by transfer_worker */
    puts("audit done");
    return NULL;
}

static void compute_ms(int ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

int main(int argc, char** argv) {
    int busy = argc > 1 && strcmp(argv[1], "busy-main") == 0;
    pthread_t a, b;
    pthread_barrier_init(&both_hold, NULL, 2);
    printf("starting two workers that lock in opposite orders\n");
    fflush(stdout);
    printf("this line is buffered when the deadlock strikes\n");
    pthread_create(&a, NULL, transfer_worker, NULL);
    if (busy) compute_ms(3);
    pthread_create(&b, NULL, audit_worker, NULL);
    if (busy) compute_ms(3);
    if (argc > 1 && strcmp(argv[1], "main-exits") == 0) {
        fflush(stdout);
        pthread_exit(NULL); /* the process lives on in its two threads */
    }
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    puts("no deadlock?");
    return 0;
}
