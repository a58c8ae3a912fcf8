// Cooperative synchronisation: mutexes, condition variables, rwlocks,
// semaphores, barriers, spinlocks, pthread_once and private futexes. A
// greenlet that must wait parks on a WaitQueue kept inside the object itself
// (all-zero bytes are an empty queue, so static initialisers work); the holder
// of a lock may block while holding it, and the others wait, never spin.
//
// Process-shared, robust and priority-protocol objects keep glibc's real
// implementation. All greenlets of a process run on one OS thread: these
// objects are not meant to be shared with OS threads the shim did not make.
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <sys/syscall.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

bool bad_time(const struct timespec* t) { return t && (t->tv_nsec < 0 || t->tv_nsec >= 1000000000L); }

// A wait that nothing can end is a deadlock in the program: say so and stop
// rather than hang (issue: Go's "all goroutines are asleep").
void check_deadlock(Wake w, const char* what) {
    if (w == Wake::deadlock) deadlock_exit(what);
}

// What a greenlet parked on a lock waits for, for the trace, stats and the
// deadlock report ("pthread_mutex_lock 0x5581...").
WaitSite g_mutex{"pthread_mutex_lock", "sync", WaitSite::Arg::address};
WaitSite g_cond{"pthread_cond_wait", "sync", WaitSite::Arg::address};
WaitSite g_rdlock{"pthread_rwlock_rdlock", "sync", WaitSite::Arg::address};
WaitSite g_wrlock{"pthread_rwlock_wrlock", "sync", WaitSite::Arg::address};
WaitSite g_sem{"sem_wait", "sync", WaitSite::Arg::address};
WaitSite g_barrier{"pthread_barrier_wait", "sync", WaitSite::Arg::address};
WaitSite g_once{"pthread_once", "sync", WaitSite::Arg::address};
WaitSite g_futex_wait{"futex wait", "sync", WaitSite::Arg::address};

Wake wait_in(WaitQueue& q, WaitSite& site, const void* object, Deadline deadline = kForever) {
    WaitScope what(site, reinterpret_cast<std::intptr_t>(object));
    return q.wait(deadline);
}

// Who holds a lock: Greenlet::current_owner_id(), which sets nothing up and
// allocates nothing. An allocator's mutexes are taken inside malloc, often
// before anything else ran on the thread (jemalloc's first malloc, from
// libstdc++'s start-up): an uncontended lock, unlock or trylock must never
// reach the runtime's per-thread set-up, the hub or malloc.
const void* self() noexcept { return Greenlet::current_owner_id(); }

// ---- mutexes ----
//
// Layout inside pthread_mutex_t (40 bytes), glibc's __kind kept at offset 16:
//   0  int       locked     (0/1)
//   4  unsigned  count      (recursion depth)
//   8  void*     owner      (Greenlet::current_owner_id of the holder)
//   16 int       kind       (glibc's: type plus robust/PI/PP/pshared bits)
//   24 WaitQueue waiters    (16 bytes)
struct Mutex {
    int locked;
    unsigned count;
    const void* owner;
    int kind;
    int spare;
    WaitQueue waiters;
};
static_assert(sizeof(Mutex) <= sizeof(pthread_mutex_t));
static_assert(offsetof(Mutex, kind) == offsetof(pthread_mutex_t, __data.__kind));

constexpr int kKindMask = 3;            // NORMAL, RECURSIVE, ERRORCHECK, ADAPTIVE
constexpr int kRealBits = 16 | 32 | 64 | 128;  // robust, PI, PP, pshared: glibc's own

Mutex* as_mutex(pthread_mutex_t* m) { return reinterpret_cast<Mutex*>(m); }
bool real_mutex(pthread_mutex_t* m) { return !may_park() || (as_mutex(m)->kind & kRealBits); }

// malformed_time: the caller's time is invalid. As in glibc, that is EINVAL
// only when the call would have to wait: a free mutex is taken (and a
// recursive one relocked) without looking at the time.
int mutex_lock_until(Mutex* m, Deadline deadline, bool try_only, bool malformed_time = false) {
    const void* me = self();
    if (!m->locked) {
        m->locked = 1;
        m->owner = me;
        m->count = 1;
        return 0;
    }
    bool relock = m->owner == me;
    if (relock) {
        switch (m->kind & kKindMask) {
        case PTHREAD_MUTEX_RECURSIVE:
            if (m->count == UINT_MAX) return EAGAIN;
            ++m->count;
            return 0;
        case PTHREAD_MUTEX_ERRORCHECK:
            if (!try_only) return EDEADLK;  // (glibc's trylock just finds it busy)
            break;
        default: break;  // a normal mutex relocked by its owner deadlocks, as in glibc
        }
    }
    if (try_only) return EBUSY;
    if (malformed_time) return EINVAL;
    for (;;) {
        Wake w = wait_in(m->waiters, g_mutex, m, deadline);
        if (!relock && m->owner == me) return 0;  // handed over by unlock
        if (!m->locked) {                         // woken without a handover (queue torn down)
            m->locked = 1;
            m->owner = me;
            m->count = 1;
            return 0;
        }
        if (w == Wake::timeout) return ETIMEDOUT;
        check_deadlock(w, "pthread_mutex_lock");
    }
}

int mutex_unlock(Mutex* m) {
    int type = m->kind & kKindMask;
    if (type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK) {
        if (!m->locked || m->owner != self()) return EPERM;
        if (type == PTHREAD_MUTEX_RECURSIVE && --m->count > 0) return 0;
    }
    // Hand the lock straight to the longest waiter: FIFO, and a greenlet that
    // unlocks and relocks in a loop cannot starve the others.
    if (Greenlet* next = m->waiters.wake_one()) {
        m->owner = next->owner_id();
        m->count = 1;
        return 0;
    }
    m->locked = 0;
    m->owner = nullptr;
    m->count = 0;
    return 0;
}

}  // namespace

SHIM_EXPORT int pthread_mutex_init(pthread_mutex_t* m, const pthread_mutexattr_t* attr) {
    int type = PTHREAD_MUTEX_NORMAL, pshared = PTHREAD_PROCESS_PRIVATE, robust = PTHREAD_MUTEX_STALLED,
        proto = PTHREAD_PRIO_NONE;
    if (attr) {
        pthread_mutexattr_gettype(attr, &type);
        pthread_mutexattr_getpshared(attr, &pshared);
        pthread_mutexattr_getrobust(attr, &robust);
        pthread_mutexattr_getprotocol(attr, &proto);
    }
    if (pshared != PTHREAD_PROCESS_PRIVATE || robust != PTHREAD_MUTEX_STALLED || proto != PTHREAD_PRIO_NONE || !may_park())
        return REAL(pthread_mutex_init)(m, attr);  // glibc sets its own kind bits
    std::memset(m, 0, sizeof *m);
    as_mutex(m)->kind = type;
    return 0;
}

SHIM_EXPORT int pthread_mutex_destroy(pthread_mutex_t* m) {
    if (as_mutex(m)->kind & kRealBits) return REAL(pthread_mutex_destroy)(m);
    Mutex* x = as_mutex(m);
    if (x->locked || !x->waiters.empty()) return EBUSY;
    return 0;
}

SHIM_EXPORT int pthread_mutex_lock(pthread_mutex_t* m) {
    if (real_mutex(m)) return REAL(pthread_mutex_lock)(m);
    return mutex_lock_until(as_mutex(m), kForever, false);
}

SHIM_EXPORT int pthread_mutex_trylock(pthread_mutex_t* m) {
    if (real_mutex(m)) return REAL(pthread_mutex_trylock)(m);
    return mutex_lock_until(as_mutex(m), kForever, true);
}

SHIM_EXPORT int pthread_mutex_timedlock(pthread_mutex_t* m, const struct timespec* abstime) {
    if (real_mutex(m)) return REAL(pthread_mutex_timedlock)(m, abstime);
    bool malformed = bad_time(abstime);
    return mutex_lock_until(as_mutex(m), malformed ? kForever : deadline_at(CLOCK_REALTIME, abstime), false, malformed);
}

SHIM_EXPORT int pthread_mutex_clocklock(pthread_mutex_t* m, clockid_t clock, const struct timespec* abstime) {
    if (real_mutex(m)) return REAL(pthread_mutex_clocklock)(m, clock, abstime);
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) return EINVAL;
    bool malformed = bad_time(abstime);
    return mutex_lock_until(as_mutex(m), malformed ? kForever : deadline_at(clock, abstime), false, malformed);
}

SHIM_EXPORT int pthread_mutex_unlock(pthread_mutex_t* m) {
    if (real_mutex(m)) return REAL(pthread_mutex_unlock)(m);
    return mutex_unlock(as_mutex(m));
}

SHIM_EXPORT int pthread_mutex_consistent(pthread_mutex_t* m) { return REAL(pthread_mutex_consistent)(m); }

// ---- condition variables ----
//
// Layout inside pthread_cond_t (48 bytes):
//   0  WaitQueue waiters
//   16 int       clock + 1 (0 = CLOCK_REALTIME, the static initialiser's)
//   20 int       pshared: glibc's own implementation
namespace {
struct Cond {
    WaitQueue waiters;
    int clock_plus1;
    int pshared;
};
static_assert(sizeof(Cond) <= sizeof(pthread_cond_t));
Cond* as_cond(pthread_cond_t* c) { return reinterpret_cast<Cond*>(c); }
bool real_cond(pthread_cond_t* c) { return !may_park() || as_cond(c)->pshared; }

int cond_wait_until(pthread_cond_t* c, pthread_mutex_t* m, Deadline deadline) {
    if (real_mutex(m)) {
        std::fprintf(stderr, "greenshim: a private condition variable used with a process-shared mutex\n");
        return EINVAL;
    }
    Mutex* mx = as_mutex(m);
    int type = mx->kind & kKindMask;
    if ((type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) && mx->owner != self()) return EPERM;
    unsigned depth = mx->count;
    mx->count = 1;
    mutex_unlock(mx);
    Wake w = wait_in(as_cond(c)->waiters, g_cond, c, deadline);
    mutex_lock_until(mx, kForever, false);
    mx->count = depth;
    if (w == Wake::timeout) return ETIMEDOUT;
    check_deadlock(w, "pthread_cond_wait");
    return 0;  // Wake::interrupted counts as a spurious wakeup, which POSIX allows
}
}  // namespace

SHIM_EXPORT int pthread_cond_init(pthread_cond_t* c, const pthread_condattr_t* attr) {
    int pshared = PTHREAD_PROCESS_PRIVATE;
    clockid_t clock = CLOCK_REALTIME;
    if (attr) {
        pthread_condattr_getpshared(attr, &pshared);
        pthread_condattr_getclock(attr, &clock);
    }
    if (pshared != PTHREAD_PROCESS_PRIVATE || !may_park()) {
        int r = REAL(pthread_cond_init)(c, attr);
        return r;
    }
    std::memset(c, 0, sizeof *c);
    as_cond(c)->clock_plus1 = int(clock) + 1;
    return 0;
}

SHIM_EXPORT int pthread_cond_destroy(pthread_cond_t* c) {
    if (as_cond(c)->pshared) return REAL(pthread_cond_destroy)(c);
    return as_cond(c)->waiters.empty() ? 0 : EBUSY;
}

SHIM_EXPORT int pthread_cond_signal(pthread_cond_t* c) {
    if (real_cond(c)) return REAL(pthread_cond_signal)(c);
    as_cond(c)->waiters.notify_one();
    return 0;
}

SHIM_EXPORT int pthread_cond_broadcast(pthread_cond_t* c) {
    if (real_cond(c)) return REAL(pthread_cond_broadcast)(c);
    as_cond(c)->waiters.notify_all();
    return 0;
}

SHIM_EXPORT int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m) {
    if (real_cond(c)) return REAL(pthread_cond_wait)(c, m);
    return cond_wait_until(c, m, kForever);
}

SHIM_EXPORT int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* abstime) {
    if (real_cond(c)) return REAL(pthread_cond_timedwait)(c, m, abstime);
    if (bad_time(abstime)) return EINVAL;
    int cp1 = as_cond(c)->clock_plus1;
    return cond_wait_until(c, m, deadline_at(cp1 ? clockid_t(cp1 - 1) : CLOCK_REALTIME, abstime));
}

SHIM_EXPORT int pthread_cond_clockwait(pthread_cond_t* c, pthread_mutex_t* m, clockid_t clock,
                                       const struct timespec* abstime) {
    if (real_cond(c)) return REAL(pthread_cond_clockwait)(c, m, clock, abstime);
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) return EINVAL;
    if (bad_time(abstime)) return EINVAL;
    return cond_wait_until(c, m, deadline_at(clock, abstime));
}

// ---- rwlocks ----
//
// Layout inside pthread_rwlock_t (56 bytes); glibc's __shared (offset 28)
// is left alone and marks process-shared locks, which stay glibc's:
//   0  int       readers holding it
//   4  int       writers waiting (new readers queue behind them)
//   8  void*     writer holding it (its owner id)
//   32 WaitQueue waiters (readers and writers; each rechecks when woken)
namespace {
struct RwLock {
    int readers;
    int writers_waiting;
    const void* writer;
    char pad[12];
    int shared;
    WaitQueue waiters;
};
static_assert(sizeof(RwLock) <= sizeof(pthread_rwlock_t));
static_assert(offsetof(RwLock, shared) == offsetof(pthread_rwlock_t, __data.__shared));
RwLock* as_rw(pthread_rwlock_t* l) { return reinterpret_cast<RwLock*>(l); }
bool real_rw(pthread_rwlock_t* l) { return !may_park() || as_rw(l)->shared; }

int rd_lock(RwLock* l, Deadline deadline, bool try_only) {
    for (;;) {
        if (!l->writer && l->writers_waiting == 0) {
            ++l->readers;
            return 0;
        }
        if (try_only) return EBUSY;  // (glibc's trylock just finds it busy, even for its writer)
        if (l->writer == self()) return EDEADLK;
        Wake w = wait_in(l->waiters, g_rdlock, l, deadline);
        if (w == Wake::timeout) return ETIMEDOUT;
        check_deadlock(w, "pthread_rwlock_rdlock");
    }
}

int wr_lock(RwLock* l, Deadline deadline, bool try_only) {
    const void* me = self();
    if (!l->writer && l->readers == 0) {
        l->writer = me;
        return 0;
    }
    if (try_only) return EBUSY;
    if (l->writer == me) return EDEADLK;
    ++l->writers_waiting;
    for (;;) {
        Wake w = wait_in(l->waiters, g_wrlock, l, deadline);
        if (!l->writer && l->readers == 0) {
            --l->writers_waiting;
            l->writer = me;
            return 0;
        }
        if (w == Wake::timeout) {
            --l->writers_waiting;
            l->waiters.notify_all();  // readers held back for us may go now
            return ETIMEDOUT;
        }
        check_deadlock(w, "pthread_rwlock_wrlock");
    }
}
// The timed forms: EINVAL for a malformed time or an unsupported clock.
int rw_timed(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t, int (*lock)(RwLock*, Deadline, bool)) {
    if (bad_time(t) || (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)) return EINVAL;
    return lock(as_rw(l), deadline_at(clock, t), false);
}
}  // namespace

SHIM_EXPORT int pthread_rwlock_init(pthread_rwlock_t* l, const pthread_rwlockattr_t* attr) {
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr) pthread_rwlockattr_getpshared(attr, &pshared);
    if (pshared != PTHREAD_PROCESS_PRIVATE || !may_park()) return REAL(pthread_rwlock_init)(l, attr);
    std::memset(l, 0, sizeof *l);
    return 0;
}
SHIM_EXPORT int pthread_rwlock_destroy(pthread_rwlock_t* l) {
    if (as_rw(l)->shared) return REAL(pthread_rwlock_destroy)(l);
    return (as_rw(l)->readers || as_rw(l)->writer) ? EBUSY : 0;
}
SHIM_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t* l) {
    if (real_rw(l)) return REAL(pthread_rwlock_rdlock)(l);
    return rd_lock(as_rw(l), kForever, false);
}
SHIM_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t* l) {
    if (real_rw(l)) return REAL(pthread_rwlock_tryrdlock)(l);
    return rd_lock(as_rw(l), kForever, true);
}
SHIM_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t* l, const struct timespec* t) {
    if (real_rw(l)) return REAL(pthread_rwlock_timedrdlock)(l, t);
    return rw_timed(l, CLOCK_REALTIME, t, rd_lock);
}
SHIM_EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t) {
    if (real_rw(l)) return REAL(pthread_rwlock_clockrdlock)(l, clock, t);
    return rw_timed(l, clock, t, rd_lock);
}
SHIM_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t* l) {
    if (real_rw(l)) return REAL(pthread_rwlock_wrlock)(l);
    return wr_lock(as_rw(l), kForever, false);
}
SHIM_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t* l) {
    if (real_rw(l)) return REAL(pthread_rwlock_trywrlock)(l);
    return wr_lock(as_rw(l), kForever, true);
}
SHIM_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t* l, const struct timespec* t) {
    if (real_rw(l)) return REAL(pthread_rwlock_timedwrlock)(l, t);
    return rw_timed(l, CLOCK_REALTIME, t, wr_lock);
}
SHIM_EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t) {
    if (real_rw(l)) return REAL(pthread_rwlock_clockwrlock)(l, clock, t);
    return rw_timed(l, clock, t, wr_lock);
}
SHIM_EXPORT int pthread_rwlock_unlock(pthread_rwlock_t* l) {
    if (real_rw(l)) return REAL(pthread_rwlock_unlock)(l);
    RwLock* x = as_rw(l);
    if (x->writer == self()) {
        x->writer = nullptr;
    } else if (x->readers > 0) {
        --x->readers;
        if (x->readers > 0) return 0;
    } else {
        return EPERM;
    }
    x->waiters.notify_all();
    return 0;
}

// ---- semaphores ----
//
// Ours are marked by sem_init; sem_open'd (named, process-shared) ones are
// glibc's. Layout inside sem_t (32 bytes):
//   0  unsigned  value
//   8  WaitQueue waiters
//   24 unsigned  magic
namespace {
constexpr unsigned kSemMagic = 0x67736d31;  // "gsm1"
struct Sem {
    unsigned value;
    unsigned spare;
    WaitQueue waiters;
    unsigned magic;
};
static_assert(sizeof(Sem) <= sizeof(sem_t));
Sem* as_sem(sem_t* s) { return reinterpret_cast<Sem*>(s); }
bool real_sem(sem_t* s) { return as_sem(s)->magic != kSemMagic; }

int sem_wait_until(Sem* s, Deadline deadline, bool try_only) {
    while (s->value == 0) {
        if (try_only || !may_park()) {
            errno = EAGAIN;
            return -1;
        }
        Wake w;
        {
            InterruptScope interruptible(Interruptible::unless_restart);
            w = wait_in(s->waiters, g_sem, s, deadline);
        }
        if (s->value > 0) break;
        if (w == Wake::timeout) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (w == Wake::interrupted) {
            errno = EINTR;
            return -1;
        }
        check_deadlock(w, "sem_wait");
    }
    --s->value;
    return 0;
}
}  // namespace

SHIM_EXPORT int sem_init(sem_t* s, int pshared, unsigned value) {
    if (pshared || !may_park()) return REAL(sem_init)(s, pshared, value);
    if (value > SEM_VALUE_MAX) {
        errno = EINVAL;
        return -1;
    }
    std::memset(s, 0, sizeof *s);
    as_sem(s)->value = value;
    as_sem(s)->magic = kSemMagic;
    return 0;
}
SHIM_EXPORT int sem_destroy(sem_t* s) {
    if (real_sem(s)) return REAL(sem_destroy)(s);
    as_sem(s)->magic = 0;
    return 0;
}
SHIM_EXPORT int sem_post(sem_t* s) {
    if (real_sem(s)) return REAL(sem_post)(s);
    Sem* x = as_sem(s);
    if (x->value == SEM_VALUE_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    ++x->value;
    x->waiters.notify_one();
    return 0;
}
SHIM_EXPORT int sem_wait(sem_t* s) {
    if (real_sem(s)) return REAL(sem_wait)(s);
    return sem_wait_until(as_sem(s), kForever, false);
}
SHIM_EXPORT int sem_trywait(sem_t* s) {
    if (real_sem(s)) return REAL(sem_trywait)(s);
    return sem_wait_until(as_sem(s), kForever, true);
}
SHIM_EXPORT int sem_timedwait(sem_t* s, const struct timespec* t) {
    if (real_sem(s)) return REAL(sem_timedwait)(s, t);
    if (bad_time(t)) {  // glibc checks the time even when it need not wait
        errno = EINVAL;
        return -1;
    }
    return sem_wait_until(as_sem(s), deadline_at(CLOCK_REALTIME, t), false);
}
SHIM_EXPORT int sem_clockwait(sem_t* s, clockid_t clock, const struct timespec* t) {
    if (real_sem(s)) return REAL(sem_clockwait)(s, clock, t);
    if ((clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) || bad_time(t)) {
        errno = EINVAL;
        return -1;
    }
    return sem_wait_until(as_sem(s), deadline_at(clock, t), false);
}
SHIM_EXPORT int sem_getvalue(sem_t* s, int* value) {
    if (real_sem(s)) return REAL(sem_getvalue)(s, value);
    *value = int(as_sem(s)->value);
    return 0;
}

// ---- barriers ----
namespace {
constexpr unsigned kBarrierMagic = 0x67627231;  // "gbr1"
struct Barrier {
    unsigned needed;
    unsigned arrived;
    unsigned generation;
    unsigned magic;
    WaitQueue waiters;
};
static_assert(sizeof(Barrier) <= sizeof(pthread_barrier_t));
Barrier* as_barrier(pthread_barrier_t* b) { return reinterpret_cast<Barrier*>(b); }
}  // namespace

SHIM_EXPORT int pthread_barrier_init(pthread_barrier_t* b, const pthread_barrierattr_t* attr, unsigned count) {
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr) pthread_barrierattr_getpshared(attr, &pshared);
    if (pshared != PTHREAD_PROCESS_PRIVATE || !may_park()) return REAL(pthread_barrier_init)(b, attr, count);
    if (count == 0) return EINVAL;
    std::memset(b, 0, sizeof *b);
    as_barrier(b)->needed = count;
    as_barrier(b)->magic = kBarrierMagic;
    return 0;
}
SHIM_EXPORT int pthread_barrier_destroy(pthread_barrier_t* b) {
    if (as_barrier(b)->magic != kBarrierMagic) return REAL(pthread_barrier_destroy)(b);
    if (as_barrier(b)->arrived) return EBUSY;
    as_barrier(b)->magic = 0;
    return 0;
}
SHIM_EXPORT int pthread_barrier_wait(pthread_barrier_t* b) {
    if (as_barrier(b)->magic != kBarrierMagic) return REAL(pthread_barrier_wait)(b);
    Barrier* x = as_barrier(b);
    if (++x->arrived == x->needed) {
        x->arrived = 0;
        ++x->generation;
        x->waiters.notify_all();
        return PTHREAD_BARRIER_SERIAL_THREAD;
    }
    unsigned gen = x->generation;
    while (gen == x->generation) check_deadlock(wait_in(x->waiters, g_barrier, b), "pthread_barrier_wait");
    return 0;
}

// ---- spinlocks: a holder may be parked, so a waiter yields instead of spinning ----
SHIM_EXPORT int pthread_spin_init(pthread_spinlock_t* l, int) {
    *l = 0;
    return 0;
}
SHIM_EXPORT int pthread_spin_destroy(pthread_spinlock_t*) { return 0; }
SHIM_EXPORT int pthread_spin_trylock(pthread_spinlock_t* l) {
    int expected = 0;
    return __atomic_compare_exchange_n(l, &expected, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) ? 0 : EBUSY;
}
SHIM_EXPORT int pthread_spin_lock(pthread_spinlock_t* l) {
    while (pthread_spin_trylock(l) != 0) {
        if (may_park()) Hub::current().yield();
        else __builtin_ia32_pause();
    }
    return 0;
}
SHIM_EXPORT int pthread_spin_unlock(pthread_spinlock_t* l) {
    __atomic_store_n(l, 0, __ATOMIC_RELEASE);
    return 0;
}

// ---- pthread_once: correct when the init routine itself blocks ----
namespace {
WaitQueue g_once_waiters;
}
SHIM_EXPORT int pthread_once(pthread_once_t* once, void (*init)(void)) {
    if (!may_park()) return REAL(pthread_once)(once, init);
    // 0: not run, 1: running, 2: done.
    for (;;) {
        int state = __atomic_load_n(once, __ATOMIC_ACQUIRE);
        if (state == 2) return 0;
        if (state == 0) {
            if (!__atomic_compare_exchange_n(once, &state, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
            struct Reset {  // an init that exits by an exception (or pthread_exit) may be run again
                pthread_once_t* once;
                bool done = false;
                ~Reset() {
                    if (!done) __atomic_store_n(once, 0, __ATOMIC_RELEASE);
                    g_once_waiters.notify_all();
                }
            } reset{once};
            init();
            __atomic_store_n(once, 2, __ATOMIC_RELEASE);
            reset.done = true;
            return 0;
        }
        check_deadlock(wait_in(g_once_waiters, g_once, once), "pthread_once");
    }
}

// ---- syscall(SYS_futex): private futex waits park greenlets ----
//
// libstdc++ (std::future, atomic wait, std::latch, std::counting_semaphore)
// waits through syscall(SYS_futex, ...), without the private flag on this
// system. FUTEX_WAIT/WAKE (and their BITSET forms) are emulated with a wait
// queue per address; every other futex operation goes to the kernel.
namespace {
std::unordered_map<const void*, WaitQueue>* g_futex = nullptr;

WaitQueue& futex_queue(const void* addr) {
    if (!g_futex) g_futex = new std::unordered_map<const void*, WaitQueue>();
    return (*g_futex)[addr];
}

// A shared (non-private) futex may be woken by another process through the
// kernel, which our queue never hears of: such a wait also rechecks the word
// every few milliseconds (a futex wait may return spuriously; callers loop).
long futex_wait(const std::uint32_t* addr, std::uint32_t val, Deadline deadline, bool shared) {
    if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) != val) {
        errno = EAGAIN;
        return -1;
    }
    Wake w;
    {
        InterruptScope interruptible(Interruptible::unless_restart);
        Deadline d = deadline;
        if (shared) {
            Deadline poll = deadline_after_ns(5000000);
            if (poll < d) d = poll;
        }
        w = wait_in(futex_queue(addr), g_futex_wait, addr, d);
        if (w == Wake::timeout && monotonic_ns() < deadline) return 0;  // the recheck: a spurious wakeup
    }
    if (w == Wake::timeout) {
        errno = ETIMEDOUT;
        return -1;
    }
    if (w == Wake::interrupted) {
        errno = EINTR;
        return -1;
    }
    check_deadlock(w, "a futex wait");
    return 0;
}

long futex_wake(const std::uint32_t* addr, int n) {
    if (!g_futex) return 0;
    auto it = g_futex->find(addr);
    if (it == g_futex->end()) return 0;
    long woken = 0;
    while (woken < n && it->second.notify_one()) ++woken;
    if (it->second.empty()) g_futex->erase(it);
    return woken;
}

bool emulated_futex(int op) {
    int cmd = op & FUTEX_CMD_MASK;
    return cmd == FUTEX_WAIT || cmd == FUTEX_WAKE || cmd == FUTEX_WAIT_BITSET || cmd == FUTEX_WAKE_BITSET;
}

long do_futex(std::uint32_t* addr, int op, std::uint32_t val, const struct timespec* ts, std::uint32_t bitset) {
    int cmd = op & FUTEX_CMD_MASK;
    if ((cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET) && ts && !kernel_reads(ts)) {
        errno = EFAULT;
        return -1;
    }
    switch (cmd) {
    case FUTEX_WAIT: {
        if (bad_time(ts) || (ts && ts->tv_sec < 0)) {  // the kernel's timespec check
            errno = EINVAL;
            return -1;
        }
        Deadline d = ts ? deadline_after_ns(ns_saturating(ts->tv_sec, ts->tv_nsec)) : kForever;
        return futex_wait(addr, val, d, !(op & FUTEX_PRIVATE_FLAG));
    }
    case FUTEX_WAIT_BITSET: {
        if (bad_time(ts) || (ts && ts->tv_sec < 0) || bitset == 0) {
            errno = EINVAL;
            return -1;
        }
        clockid_t clock = (op & FUTEX_CLOCK_REALTIME) ? CLOCK_REALTIME : CLOCK_MONOTONIC;
        return futex_wait(addr, val, deadline_at(clock, ts), !(op & FUTEX_PRIVATE_FLAG));
    }
    default: {  // FUTEX_WAKE, FUTEX_WAKE_BITSET (bitsets other than all-ones are rare: wake as if all)
        long woken = futex_wake(addr, int(val));
        // A shared futex may have waiters in other processes, in the kernel.
        if (!(op & FUTEX_PRIVATE_FLAG) && woken < long(val))
            woken += REAL(syscall)(SYS_futex, addr, op, long(val) - woken, nullptr, nullptr, 0);
        return woken;
    }
    }
}
}  // namespace

// Reads all six arguments a syscall can take, as libc's own syscall() does
// (in assembly): a caller passing fewer leaves the sixth to be read from its
// stack frame, mapped and harmless, its value unused by the kernel. ASan
// flags that read of the caller's frame (stack-buffer-underflow), a false
// positive for this one function, hence no ASan instrumentation here.
SHIM_EXPORT __attribute__((no_sanitize("address"))) long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    // A word the kernel cannot use (NULL, misaligned) is its error to report, at once.
    bool usable = a1 && a1 % alignof(std::uint32_t) == 0;
    if (number == SYS_futex && usable && may_park() && emulated_futex(int(a2)))
        return do_futex(reinterpret_cast<std::uint32_t*>(a1), int(a2), std::uint32_t(a3),
                        reinterpret_cast<const struct timespec*>(a4), std::uint32_t(a6));
    return REAL(syscall)(number, a1, a2, a3, a4, a5, a6);
}
