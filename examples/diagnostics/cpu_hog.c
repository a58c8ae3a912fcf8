/* A thread that computes without ever waiting starves the others: under
 * greenshim all threads are greenlets of one OS thread, so a ticker thread
 * stops ticking while the hog runs.
 *
 *     cpu_hog [MS]        (the hog spins for MS milliseconds, default 600)
 *
 * Prints how many 10 ms ticks the ticker managed during the spin. Under
 * GREENSHIM_MONITOR=100 greenshim's monitor names the hog (greenlet, start
 * function hog_worker) and prints its backtrace (spin_for_a_while). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile int hog_done;
static volatile int ticks;
static long spin_ms = 600;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

__attribute__((noinline)) void spin_for_a_while(long ms) {
    double end = now_ms() + ms;
    volatile unsigned long x = 0;
    while (now_ms() < end) x++;
}

void* hog_worker(void* arg) {
    (void)arg;
    usleep(20000); /* let the ticker start */
    spin_for_a_while(spin_ms);
    hog_done = 1;
    return NULL;
}

void* ticker(void* arg) {
    (void)arg;
    while (!hog_done) {
        usleep(10000);
        ticks++;
    }
    return NULL;
}

int main(int argc, char** argv) {
    if (argc > 1) spin_ms = atol(argv[1]);
    pthread_t h, t;
    pthread_create(&t, NULL, ticker, NULL);
    pthread_create(&h, NULL, hog_worker, NULL);
    pthread_join(h, NULL);
    pthread_join(t, NULL);
    printf("hog spun %ld ms; ticker ticked %d times meanwhile\n", spin_ms, ticks);
    return 0;
}
