/* A library whose constructor computes for 60 ms (past the hand-off period)
 * and then makes a call the shim interposes: dlopen_ctor.c loads it. */
#include <time.h>
#include <unistd.h>

int ctor_spin_done;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

__attribute__((constructor)) static void spin(void) {
    double until = now_ms() + 60;
    volatile unsigned long x = 0;
    while (now_ms() < until) x += 1;
    usleep(1000);
    ctor_spin_done = 1;
}
