/* A thread spinning on pthread_yield until another sets a flag.
 *
 * glibc 2.34 made pthread_yield a compat symbol, pthread_yield@GLIBC_2.2.5,
 * which binaries built against older glibc import (Debian 12's sysbench);
 * <pthread.h> now turns the name into sched_yield, so this program names
 * the old symbol itself (.symver). glibc's body calls its own sched_yield:
 * under greenshim, unless the shim exports pthread_yield too, no other
 * greenlet would ever run and the spin would never end.
 *
 * Round 1 calls pthread_yield@GLIBC_2.2.5; round 2 the function dlsym finds
 * for the unversioned name (greenshim's; unpatched, glibc gives none, and
 * the round uses the versioned one again). */
#include "common.h"  /* first: it defines _GNU_SOURCE */

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>


__asm__(".symver old_pthread_yield, pthread_yield@GLIBC_2.2.5");
extern int old_pthread_yield(void);

static int (*yield_fn)(void);
static int flag, failed_yields, threads_seen, spinner_was_spinning;
static long spins;

static void *spinner(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&flag, __ATOMIC_SEQ_CST)) {
        if (yield_fn() != 0) ++failed_yields;
        __atomic_fetch_add(&spins, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void *setter(void *arg) {
    (void)arg;
    usleep(20000);
    /* On a loaded machine a new OS thread may not have run yet: give the
     * spinner up to 5 s to start (under greenshim it has, or never will). */
    for (int i = 0; i < 5000 && __atomic_load_n(&spins, __ATOMIC_SEQ_CST) == 0; ++i) usleep(1000);
    threads_seen = os_threads();
    spinner_was_spinning = __atomic_load_n(&spins, __ATOMIC_SEQ_CST) > 0;
    __atomic_store_n(&flag, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static const char *library_of(void *fn) {
    Dl_info info;
    return fn && dladdr(fn, &info) && info.dli_fname ? info.dli_fname : "";
}

static void round_(int (*fn)(void), const char *label) {
    yield_fn = fn;
    flag = failed_yields = threads_seen = spinner_was_spinning = 0;
    spins = 0;
    pthread_t a, b;
    if (pthread_create(&a, NULL, spinner, NULL) != 0 || pthread_create(&b, NULL, setter, NULL) != 0) exit(1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    fprintf(stderr, "yield_spin: %s: %ld calls of pthread_yield in the spin\n", label, spins);
    char what[200];
    snprintf(what, sizeof what, "%s: the spin ended once the other thread set the flag, having spun meanwhile", label);
    say(what, flag && spinner_was_spinning);
    snprintf(what, sizeof what, "%s: pthread_yield returned 0 each time", label);
    say(what, failed_yields == 0);
    snprintf(what, sizeof what, "%s: OS threads meanwhile: 3 (1 under greenshim)", label);
    say(what, threads_as_expected(threads_seen, 3));
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int shim = under_shim();
    void *unversioned = dlsym(RTLD_DEFAULT, "pthread_yield");
    const char *versioned_lib = library_of((void *)&old_pthread_yield);
    fprintf(stderr, "yield_spin: pthread_yield@GLIBC_2.2.5 is in %s; dlsym(\"pthread_yield\") in %s\n", versioned_lib,
            unversioned ? library_of(unversioned) : "(none)");
    say("pthread_yield@GLIBC_2.2.5 is greenshim's when it is loaded, else glibc's",
        shim ? strstr(versioned_lib, "libgreenshim") != NULL : strstr(versioned_lib, "libc.so") != NULL);
    say("dlsym(\"pthread_yield\") finds greenshim's when it is loaded (glibc has no default version)",
        shim ? unversioned && strstr(library_of(unversioned), "libgreenshim") != NULL : unversioned == NULL);
    round_(old_pthread_yield, "1 (pthread_yield@GLIBC_2.2.5)");
    round_(unversioned ? (int (*)(void))unversioned : old_pthread_yield, "2 (dlsym)");
    return all_ok ? 0 : 1;
}
