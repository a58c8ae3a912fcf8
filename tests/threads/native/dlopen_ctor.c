/* A thread loads a library whose constructor computes for 60 ms, longer than
 * the hand-off period (under greenrun: long enough to go on a spare OS
 * thread, were it not in the loader). glibc holds its
 * loader's lock through the constructor, a recursive mutex it marks with the
 * kernel tid of the OS thread that took it: a thread moved to another OS
 * thread meanwhile (to a carrier, say) unlocks it on the wrong tid, the unlock
 * fails and the lock stays taken for good. So afterwards an OS thread that
 * libc made itself looks a symbol up with dlsym: it must return. The same
 * statements run unpatched. */
#include "common.h"

#include <dlfcn.h>
#include <limits.h>

static char g_path[PATH_MAX];

static void *load(void *arg) {
    (void)arg;
    return dlopen(g_path, RTLD_NOW);
}

static int g_looked_up;
static void *look_up(void *arg) {
    (void)arg;
    if (dlsym(RTLD_DEFAULT, "printf")) __atomic_store_n(&g_looked_up, 1, __ATOMIC_RELEASE);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    ssize_t n = readlink("/proc/self/exe", g_path, sizeof g_path - 64);
    if (n <= 0) return 1;
    g_path[n] = 0;
    strcpy(strrchr(g_path, '/') + 1, "threads_ctor_spin.so");

    pthread_t loader = start(load, NULL);
    void *h = NULL;
    pthread_join(loader, &h);
    int *done = h ? (int *)dlsym(h, "ctor_spin_done") : NULL;
    say("dlopen_ctor: the library was loaded and its constructor ran", done && *done == 1);

    typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    create_fn libc_create = libc ? (create_fn)dlsym(libc, "pthread_create") : NULL;
    pthread_t os;
    if (!libc_create || libc_create(&os, NULL, look_up, NULL) != 0) return 1;
    double give_up = now_ms() + 5000;
    while (!__atomic_load_n(&g_looked_up, __ATOMIC_ACQUIRE) && now_ms() < give_up) usleep(1000);
    int ok = __atomic_load_n(&g_looked_up, __ATOMIC_ACQUIRE);
    say("dlopen_ctor: an OS thread libc made finds a symbol with dlsym afterwards (the loader's lock is free)", ok);
    if (!ok) _exit(1); /* (that thread waits for ever: not joined) */
    pthread_join(os, NULL);
    return all_ok ? 0 : 1;
}
