/* A lock goes to the thread that waits for it, even when its holder releases
 * it and takes it again at once in a loop. Under greenrun a greenlet gives
 * way only inside a call, and this holder makes its calls with the lock
 * held: if a release let it take the lock back before the woken waiter ran,
 * the waiter would never get in. Locks the shim cannot simply hand over:
 *  - a semaphore (CPython's locks are semaphores: a daemon thread that writes
 *    to stderr in a loop kept the main thread's write out for good; test_io's
 *    shutdown tests);
 *  - a futex word, locked and unlocked in user space as Rust's
 *    std::sync::Mutex does (0 free, 1 locked, 2 locked with waiters; the
 *    unlock releases the word, then wakes one waiter);
 *  - an rwlock held for writing, awaited by a writer and by a reader;
 *  - a spin lock.
 * And a thread that never waits but tries in a loop (trylock, then
 * sched_yield or a short sleep), which nothing can be handed to: a mutex, a
 * semaphore, an rwlock and a spin lock. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <sys/syscall.h>

static sem_t sem;
static void sem_lock(void) {
    while (sem_wait(&sem) != 0 && errno == EINTR) {
    }
}
static void sem_unlock(void) { sem_post(&sem); }

static int word;
static void futex_lock(void) {
    int c = 0;
    if (__atomic_compare_exchange_n(&word, &c, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    if (c != 2) c = __atomic_exchange_n(&word, 2, __ATOMIC_ACQUIRE);
    while (c != 0) {
        syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = __atomic_exchange_n(&word, 2, __ATOMIC_ACQUIRE);
    }
}
static void futex_unlock(void) {
    if (__atomic_exchange_n(&word, 0, __ATOMIC_RELEASE) == 2)
        syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static void rw_write_lock(void) { pthread_rwlock_wrlock(&rw); }
static void rw_read_lock(void) { pthread_rwlock_rdlock(&rw); }
static void rw_unlock(void) { pthread_rwlock_unlock(&rw); }

static pthread_spinlock_t spin;
static void spin_lock(void) { pthread_spin_lock(&spin); }
static void spin_unlock(void) { pthread_spin_unlock(&spin); }

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static void mutex_lock(void) { pthread_mutex_lock(&mutex); }
static void mutex_unlock(void) { pthread_mutex_unlock(&mutex); }

/* Tries until one succeeds, yielding or sleeping 200 us in between. */
static void mutex_try_yield(void) {
    while (pthread_mutex_trylock(&mutex) != 0) sched_yield();
}
static void mutex_try_sleep(void) {
    while (pthread_mutex_trylock(&mutex) != 0) usleep(200);
}
static void sem_try_yield(void) {
    while (sem_trywait(&sem) != 0) sched_yield();
}
static void rw_try_write_yield(void) {
    while (pthread_rwlock_trywrlock(&rw) != 0) sched_yield();
}
static void rw_try_read_yield(void) {
    while (pthread_rwlock_tryrdlock(&rw) != 0) sched_yield();
}
static void spin_try_yield(void) {
    while (pthread_spin_trylock(&spin) != 0) sched_yield();
}

struct lock_kind {
    const char *name;
    void (*lock)(void);
    void (*unlock)(void);
    void (*waiter_lock)(void); /* (NULL: lock) */
};
static const struct lock_kind *kind;
static int devnull = -1;
static int stop, got_in;
static long rounds;

static void *holder(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
        kind->lock();
        for (int i = 0; i < 4; ++i) (void)!write(devnull, ".", 1); /* (calls made holding it) */
        ++rounds;
        kind->unlock();
    }
    return NULL;
}

static void *waiter(void *arg) {
    (void)arg;
    (kind->waiter_lock ? kind->waiter_lock : kind->lock)();
    __atomic_store_n(&got_in, 1, __ATOMIC_SEQ_CST);
    kind->unlock();
    return NULL;
}

/* The holder loops; a second thread waits for the lock, for up to 10 s. */
static int waiter_gets_in(const struct lock_kind *k) {
    kind = k;
    stop = got_in = 0;
    rounds = 0;
    pthread_t h = start(holder, NULL);
    usleep(20000); /* (the holder loops meanwhile) */
    pthread_t w = start(waiter, NULL);
    double t0 = now_ms();
    while (!__atomic_load_n(&got_in, __ATOMIC_SEQ_CST) && now_ms() - t0 < 10000) usleep(1000);
    double waited = now_ms() - t0;
    int ok = __atomic_load_n(&got_in, __ATOMIC_SEQ_CST);
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(h, NULL);
    pthread_join(w, NULL);
    fprintf(stderr, "lock_handover: %s: waited %.1f ms; the holder went round %ld times\n", k->name, waited, rounds);
    return ok;
}

int main(void) {
    devnull = open("/dev/null", O_WRONLY);
    sem_init(&sem, 0, 1);
    static const struct lock_kind sem_kind = {"semaphore", sem_lock, sem_unlock, NULL};
    static const struct lock_kind futex_kind = {"futex word", futex_lock, futex_unlock, NULL};
    static const struct lock_kind rw_writers = {"rwlock, a writer waits", rw_write_lock, rw_unlock, NULL};
    static const struct lock_kind spin_kind = {"spin lock", spin_lock, spin_unlock, NULL};
    static const struct lock_kind rw_reader = {"rwlock, a reader waits", rw_write_lock, rw_unlock, rw_read_lock};
    say("lock_handover: a thread waiting for a semaphore that another takes and gives back in a loop gets it",
        waiter_gets_in(&sem_kind));
    int v = -1;
    sem_getvalue(&sem, &v);
    say("lock_handover: the semaphore's value is 1 at the end", v == 1);
    say("lock_handover: a thread waiting for a futex lock that another takes and gives back in a loop gets it",
        waiter_gets_in(&futex_kind));
    say("lock_handover: the futex word is free at the end", __atomic_load_n(&word, __ATOMIC_SEQ_CST) == 0);
    say("lock_handover: a writer waiting for an rwlock that another writer takes and gives back in a loop gets it",
        waiter_gets_in(&rw_writers));
    say("lock_handover: a reader waiting for an rwlock that a writer takes and gives back in a loop gets it",
        waiter_gets_in(&rw_reader));
    say("lock_handover: the rwlock is free at the end", pthread_rwlock_trywrlock(&rw) == 0 && pthread_rwlock_unlock(&rw) == 0);
    pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE);
    say("lock_handover: a thread spinning for a spin lock that another takes and gives back in a loop gets it",
        waiter_gets_in(&spin_kind));

    static const struct lock_kind mutex_try = {"mutex, trylock and sched_yield", mutex_lock, mutex_unlock, mutex_try_yield};
    static const struct lock_kind mutex_sleep = {"mutex, trylock and usleep", mutex_lock, mutex_unlock, mutex_try_sleep};
    static const struct lock_kind sem_try = {"semaphore, sem_trywait and sched_yield", sem_lock, sem_unlock, sem_try_yield};
    static const struct lock_kind rw_try_w = {"rwlock, trywrlock and sched_yield", rw_write_lock, rw_unlock, rw_try_write_yield};
    static const struct lock_kind rw_try_r = {"rwlock, tryrdlock and sched_yield", rw_write_lock, rw_unlock, rw_try_read_yield};
    static const struct lock_kind spin_try = {"spin lock, trylock and sched_yield", spin_lock, spin_unlock, spin_try_yield};
    say("lock_handover: a thread that tries for a mutex in a loop, yielding between tries, while another takes and gives it back in a loop gets it",
        waiter_gets_in(&mutex_try));
    say("lock_handover: the same with a 200 us sleep between tries", waiter_gets_in(&mutex_sleep));
    say("lock_handover: the mutex is free at the end", pthread_mutex_trylock(&mutex) == 0 && pthread_mutex_unlock(&mutex) == 0);
    say("lock_handover: the same with sem_trywait on a semaphore", waiter_gets_in(&sem_try));
    v = -1;
    sem_getvalue(&sem, &v);
    say("lock_handover: the semaphore's value is 1 at the end, again", v == 1);
    say("lock_handover: the same with trywrlock on an rwlock", waiter_gets_in(&rw_try_w));
    say("lock_handover: the same with tryrdlock on an rwlock", waiter_gets_in(&rw_try_r));
    say("lock_handover: the same with pthread_spin_trylock on a spin lock", waiter_gets_in(&spin_try));
    say("lock_handover: the spin lock is free at the end", pthread_spin_trylock(&spin) == 0 && pthread_spin_unlock(&spin) == 0);
    return all_ok ? 0 : 1;
}
