/* A malloc replacement, preloaded ahead of the shim (spin_lock_alloc.c runs
 * under it), whose lock is a plain word, as tcmalloc's SpinLock is: a
 * thread that waits for it sleeps 1 ms at a time in a raw futex wait
 * (SpinLockDelay's), which the shim makes in the kernel when the allocator
 * calls it, never parking. Every
 * 100th allocation it calls into another library (spin_alloc_helper.c, one
 * it needs) that computes for 30 ms, with the lock held; tcmalloc's page
 * heap does that with a std::set, in libstdc++. The memory is glibc's
 * (__libc_malloc and company), so what libc's own memalign hands out frees
 * here too. */
#include <linux/futex.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
void spin_alloc_work(double ms);

static int g_lock;
static unsigned long g_calls;
unsigned long spin_alloc_slow_calls;

static void lock(void) {
    while (__atomic_exchange_n(&g_lock, 1, __ATOMIC_ACQUIRE)) {
        struct timespec ms = {0, 1000000};
        while (__atomic_load_n(&g_lock, __ATOMIC_RELAXED)) syscall(SYS_futex, &g_lock, FUTEX_WAIT_PRIVATE, 1, &ms);
    }
}
static void unlock(void) { __atomic_store_n(&g_lock, 0, __ATOMIC_RELEASE); }

void *malloc(size_t n) {
    lock();
    if (++g_calls % 100 == 0) {
        spin_alloc_work(30);
        ++spin_alloc_slow_calls;
    }
    void *p = __libc_malloc(n);
    unlock();
    return p;
}

void *calloc(size_t n, size_t size) {
    lock();
    void *p = __libc_calloc(n, size);
    unlock();
    return p;
}

void *realloc(void *p, size_t n) {
    lock();
    void *q = __libc_realloc(p, n);
    unlock();
    return q;
}

void free(void *p) {
    lock();
    __libc_free(p);
    unlock();
}
