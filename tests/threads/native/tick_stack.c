/* The stall tick leaves no frame on the stacks of threads that keep
 * switching (issue 15, memory per thread). Under greenrun a timer signal
 * fires every GREENSHIM_HANDOFF/2 ms while the hub runs threads; a signal
 * frame (1-3 KiB with the CPU's xsave area) pushed below wherever it lands
 * keeps that page of the thread's stack resident for good, so over time
 * nearly every thread of a busy server had one page more. The tick runs on
 * the OS thread's sigaltstack instead, and only goes to the thread's stack
 * where it may take the thread back, which a thread that switches never is.
 *
 * Four threads fill 24 KiB of their stack below their loop's frame with a
 * pattern, call sched_yield for 300 ms (under greenrun: a switch to the next
 * thread each time, ~60 ticks meanwhile), then find how deep below the loop
 * anything wrote. The calls' own frames (the shim's yield and switch) reach
 * well under 2 KiB; a tick's frame on the stack went ~3 KiB deeper here.
 * Statements true unpatched and under greenrun; the depths go to stderr. */
#include "common.h"

#include <stdint.h>

enum { kThreads = 4, kFill = 24 * 1024, kGap = 512, kLimit = 2048, kMillis = 300 };

static long g_depth[kThreads];
static long g_yields[kThreads];

/* Not inlined: `top` is in the caller's frame, above everything below. */
static __attribute__((noinline)) void yield_loop(int i, char *top) {
    /* The pattern, written by plain stores (no call pushes a frame here). */
    volatile unsigned char *lo = (volatile unsigned char *)(top - kFill);
    for (long k = 0; k < kFill - kGap; ++k) lo[k] = 0xa5;
    double end = now_ms() + kMillis;
    long n = 0;
    while (now_ms() < end) {
        sched_yield();
        ++n;
    }
    long k = 0;
    while (k < kFill - kGap && lo[k] == 0xa5) ++k;
    g_depth[i] = kFill - k; /* how far below `top` the lowest write is */
    g_yields[i] = n;
}

static void *run(void *arg) {
    int i = (int)(intptr_t)arg;
    /* This frame's own address on the thread's stack (a local's may be
     * elsewhere: a sanitizer's fake stack). */
    yield_loop(i, (char *)__builtin_frame_address(0));
    __asm__ volatile("" : : : "memory");  /* (not a tail call: the frame stays) */
    return NULL;
}

int main(void) {
    /* The first call of each through the PLT runs the loader's resolver,
     * whose frames (an xsave area among them) go ~3 KiB deep: made here. */
    sched_yield();
    (void)now_ms();
    pthread_t t[kThreads];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < kThreads; ++i)
        if (pthread_create(&t[i], &attr, run, (void *)(intptr_t)i) != 0) {
            printf("pthread_create: NO\n");
            return 1;
        }
    for (int i = 0; i < kThreads; ++i) pthread_join(t[i], NULL);
    long deepest = 0;
    for (int i = 0; i < kThreads; ++i) {
        fprintf(stderr, "thread %d: %ld yields, lowest write %ld bytes below its loop\n", i, g_yields[i], g_depth[i]);
        if (g_depth[i] > deepest) deepest = g_depth[i];
    }
    int ok = deepest <= kLimit;
    printf("%d threads yielding for %d ms wrote at most 2 KiB below their loops: %s\n", kThreads, kMillis,
           ok ? "yes" : "NO");
    return ok ? 0 : 1;
}
