/* Six threads allocate at once through a malloc whose lock is a plain word
 * and that computes 30 ms in another library with it held, every 100th call
 * (spin_alloc.c, preloaded ahead of the shim). Under greenrun, with no spare
 * OS thread (GREENSHIM_SPARES=0: a thread that runs past the hand-off period
 * is preempted), a thread taken back there would hold the lock in the run
 * queue while the thread run in its place spins for it in the allocator,
 * where the shim never takes a thread back: nothing would move again. The
 * shim counts the allocator's libraries as the allocator (shim/stall.cpp,
 * add_allocator_needs). The same statements run unpatched.
 *
 * Built twice: the second time without PIE, taking malloc's address as
 * Debian's python3.11 does. In such an executable, dlsym("malloc") answers
 * with the executable's PLT entry (the function's canonical address there),
 * not the allocator's code; the shim finds the allocator by its definition
 * (runtime/embed/greenshim/symbols.hpp, first_definition). */
#include "common.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

enum { kThreads = 6, kRounds = 200 };

/* malloc's address, taken in code (see above: main). */
void *(*volatile g_malloc)(size_t);

static void *allocate(void *arg) {
    unsigned long sum = 0;
    for (int i = 0; i < kRounds; ++i) {
        char *p = g_malloc(64);
        if (!p) return NULL;
        memset(p, i, 64);
        sum += (unsigned char)p[63];
        free(p);
    }
    *(unsigned long *)arg = sum;
    return arg;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_malloc = malloc;
    unsigned long *slow = dlsym(RTLD_DEFAULT, "spin_alloc_slow_calls");
    say("malloc is the spinning allocator's", slow != NULL);
    if (!slow) return 1;
    pthread_t t[kThreads];
    unsigned long sums[kThreads];
    for (int i = 0; i < kThreads; ++i) t[i] = start(allocate, &sums[i]);
    int all = 1;
    for (int i = 0; i < kThreads; ++i) {
        void *r = NULL;
        pthread_join(t[i], &r);
        unsigned long want = 0;
        for (int k = 0; k < kRounds; ++k) want += (unsigned char)k;
        all = all && r == &sums[i] && sums[i] == want;
    }
    say("6 threads x 200 allocations done, each checked", all);
    say("the allocator computed with its lock held (every 100th call)", *slow >= kThreads * kRounds / 100);
    return 0;
}
