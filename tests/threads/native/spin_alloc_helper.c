/* A library that spin_alloc.c (a malloc of its own) calls with its lock
 * held: it computes for the milliseconds asked, asking the clock all the
 * while, so that most ticks find it in libc's clock_gettime or in the vdso
 * that function calls. (A loop that asked the clock now and then let the
 * shim take the thread back in the vdso in 1 run of ~15 with two hubs; this
 * one, in nearly every run, until the vdso counted as libc's.) */
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void spin_alloc_work(double ms) {
    double until = now_ms() + ms;
    while (now_ms() < until) continue;
}
