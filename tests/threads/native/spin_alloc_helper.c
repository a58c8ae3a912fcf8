/* A library that spin_alloc.c (a malloc of its own) calls with its lock
 * held: it computes for the milliseconds asked, in its own code. */
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void spin_alloc_work(double ms) {
    double until = now_ms() + ms;
    volatile unsigned long x = 0;
    do
        for (int i = 0; i < 1 << 16; ++i) x += (unsigned long)i;  /* (the clock asked now and then) */
    while (now_ms() < until);
}
