// Cooperative synchronisation: mutexes, condition variables, rwlocks,
// semaphores, barriers, spinlocks, pthread_once and private futexes. A
// greenlet that must wait parks on a WaitQueue kept inside the object itself
// (all-zero bytes are an empty queue, so static initialisers work); the holder
// of a lock may block while holding it, and the others wait, never spin.
//
// Objects glibc keeps (process-shared ones, named semaphores, robust and
// priority-inheritance/-protection mutexes) stay glibc's, since another
// process may use them through its own glibc; but glibc is never let block
// on them (see "objects glibc keeps" below).
//
// The shim's own objects may be shared across OS threads: greenlets of
// another hub, and OS threads the shim did not make (an allocator's
// background thread: it gets a hub of its own when it first waits). Each
// object's state is read and written under its queue's Guard (hub.hpp: a
// spin lock picked by the queue's address, held for a few loads and stores,
// never across a switch); a waiter checks its condition and enqueues under
// the Guard, which is released once it is parked, so a wake made on
// another OS thread cannot fall between the two. Objects glibc keeps stay
// per OS thread (their Shared entries hang on the OS thread's hub).
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <sys/syscall.h>

#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "greenshim/cold.hpp"
#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

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

// Parks on q through the one wait (park_as): 0 when notified, -ETIMEDOUT,
// -EINTR (as mode allows). A wait only another thread could end, when none
// can, is the program's deadlock: reported there, and the process exits
// (Go's "all goroutines are asleep").
int wait_in(WaitQueue& q, WaitSite& site, const void* object, Deadline deadline = kForever,
            Interruptible mode = Interruptible::no) {
    return park_as(site, reinterpret_cast<std::intptr_t>(object), mode, EndsBy::other_thread,
                   [&](Hub&) { return q.wait(deadline); });
}
// The same with q's Guard held by the caller, who checked its condition
// under it: returns with it released (the caller takes it again to look).
int wait_in(WaitQueue& q, WaitQueue::Guard& held, WaitSite& site, const void* object, Deadline deadline = kForever,
            Interruptible mode = Interruptible::no) {
    if (__builtin_expect(!greenshim::detail::existing_hub(), 0)) {
        // The first wait of a thread the shim did not make (jemalloc's
        // background thread in a condition wait) makes its hub, which
        // allocates: malloc takes the allocator's lock, whose holder may be
        // waiting for this Guard's spin lock (queues share 64 of them), so
        // never with the Guard held. Made with it let go; the caller looks
        // again, as after any wake. (If it cannot be made, park_as says so.)
        held.unlock();
        try {
            greenshim::detail::current_hub();
            return 0;
        } catch (...) {
        }
        held.lock();
    }
    return park_as(site, reinterpret_cast<std::intptr_t>(object), mode, EndsBy::other_thread,
                   [&](Hub&) { return q.wait(held, deadline); });
}

// Who holds a lock: greenshim::detail::current_owner_id(), which sets nothing up and
// allocates nothing. An allocator's mutexes are taken inside malloc, often
// before anything else ran on the thread (jemalloc's first malloc, from
// libstdc++'s start-up): an uncontended lock, unlock or trylock must never
// reach the runtime's per-thread set-up, the hub or malloc.
const void* self() noexcept { return greenshim::detail::current_owner_id(); }

// Who a refused try was (the mark a lock keeps, see mutex_unlock): 32 bits of
// its owner id, never 0. (Two threads that share them only cost a give-way.)
std::uint32_t trier_mark(const void* id) noexcept {
    auto a = reinterpret_cast<std::uintptr_t>(id);
    std::uint32_t m = std::uint32_t(a >> 3) ^ std::uint32_t(a >> 35);
    return m ? m : 1;
}
// Took the lock: a mark of its own is answered (anyone else's stays).
// Atomic, for a semaphore's, which is read and written without its Guard.
void answered(std::uint32_t& mark, const void* me) noexcept {
    std::uint32_t t = __atomic_load_n(&mark, __ATOMIC_RELAXED);
    if (__builtin_expect(t != 0, 0) && t == trier_mark(me))
        __atomic_compare_exchange_n(&mark, &t, 0u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

// A post or unlock: whether a try refused since is another thread's. The
// poster's own mark is answered here: a thread that tries a lock it holds
// (CPython's Condition._is_owned() on a plain Lock: acquire(False), which
// fails, in every wait and notify) has nobody to give way to. (Giving way
// there sent CPython's accepting thread to the back of a queue of 500 at
// each Thread.start: ThreadingHTTPServer's p99 went from ~40 ms to ~700.)
bool refused_other(std::uint32_t& tried) {
    if (__builtin_expect(__atomic_load_n(&tried, __ATOMIC_RELAXED) == 0, 1)) return false;
    answered(tried, self());
    return __atomic_load_n(&tried, __ATOMIC_RELAXED) != 0;
}

// After an unlock that woke a waiter who had already lost the lock to this
// thread once (a starving waiter: an rwlock's, a futex word's), or that
// found another thread's try refused and not yet answered (a thread that
// tries in a loop: a mutex's, a semaphore's, an rwlock's, a spin lock's):
// this thread gives way, so the woken or the trier look before it can take
// the lock again. (On one hub they run first; on another hub they run
// meanwhile.) Never inside an allocator (caller: the unlock's return
// address), which may hold another of its locks, spun for where it is
// waited on (mutex_spin_until).
void give_way_to_woken(const void* caller = nullptr) noexcept {
    Hub* hub;
    if (may_park(hub) && hub && !(caller && from_allocator(caller))) coop_give_way(*hub);
}

// ---- objects glibc keeps ----
//
// Process-shared semaphores (sem_open, sem_init with pshared), mutexes,
// condition variables, rwlocks and barriers (PTHREAD_PROCESS_SHARED), and
// robust, priority-inheritance and priority-protection mutexes are glibc's:
// another process may use the same memory through its own glibc. A blocking
// glibc call on one would stop the OS thread, and with it every greenlet,
// including the one that would release it. So the shim only ever makes
// glibc's non-blocking calls on them (sem_trywait, pthread_mutex_trylock,
// pthread_rwlock_try*lock) and, while busy, parks through retry_with_backoff
// (shim.hpp) with kSharedBackoff:
//  - a release made in this process (sem_post, unlock, signal) notifies the
//    object's queue here: the waiter retries at once;
//  - a release made by another process is seen at the next try: for 50 us
//    the waiter yields to the other greenlets and retries, then it parks on
//    a timer, 1 ms then 2 ms (libev's epoll sleeps in whole milliseconds).
//    Wake latency measured on this 2-core VM, see README ("How it works").
//  - glibc records the OS thread as a mutex's owner, and every greenlet is
//    that thread: the table below records which greenlet holds a mutex (or
//    an rwlock's write side), so that EDEADLK, EPERM, recursion and robust
//    owner death are per greenlet thread as they are per thread unpatched,
//    and an unlock hands the mutex straight to this process's longest waiter
//    (FIFO, as the shim's own mutexes do) without releasing it in between.
//  - a pshared condition variable cannot be waited on without glibc blocking:
//    a wait releases the mutex, parks until a signal or broadcast made in this
//    process or for at most kCondPollNs, and relocks: a wakeup no signal
//    caused, which POSIX allows (callers recheck their predicate). A signal
//    made in another process is thus seen within kCondPollNs.
//  - a pshared barrier's wait runs on a helper thread (Hub::run_blocking): a
//    barrier has no owner, so a helper may wait in it for the greenlet.
//  - a greenlet thread that ends holding a robust mutex: the shim does what
//    the kernel does for a thread that dies (sync_thread_exiting).
// Each waiter polls for itself: N greenlets waiting on one object another
// process holds make N timers.
constexpr std::int64_t kCondPollNs = 2000000;

enum class SharedKind : std::uint8_t { sem, mutex, cond, rwlock };

// This process's side of one such object, while a greenlet holds it or waits
// on it. Keyed by address, per OS thread (per hub: its greenlets share it).
struct Shared {
    WaitQueue waiters;          // greenlets of this process waiting on it
    const void* owner = nullptr;  // mutex: the holder's owner id (self()); rwlock: the writer's
    unsigned depth = 0;         // mutex: recursion depth
    unsigned readers = 0;       // rwlock: read locks held by greenlets of this process
    unsigned users = 0;         // calls on it in progress
    SharedKind kind = SharedKind::sem;
};
using SharedTable = std::unordered_map<const void*, Shared>;
struct SemWaiter;
}  // namespace

// Both tables are the OS thread's (its greenlets share them), never a
// greenlet thread's own thread-locals: they hang on the OS thread's hub.
struct greenshim::shim::OsThreadSync {
    SharedTable shared;
    SemWaiter* sem_waiters = nullptr;
    std::uint64_t sem_posts_seen = 0;  // g_sem_posts_in_handler at this hub's last scan
};

namespace {
// This OS thread's, made if `make` (nullptr: none yet, or out of memory).
OsThreadSync* os_sync(bool make) noexcept {
    OsThread* o = os_thread(make);
    if (o && !o->sync && make) o->sync = new (std::nothrow) OsThreadSync;
    return o ? o->sync : nullptr;
}

// The owner a mutex keeps when its greenlet thread ended holding it (not
// robust): locked for ever, as with a thread that exits holding one.
char g_dead_owner_tag;
const void* const kDeadOwner = &g_dead_owner_tag;

Shared* shared_find(const void* p) {
    OsThreadSync* o = os_sync(false);
    if (!o) return nullptr;
    auto it = o->shared.find(p);
    return it == o->shared.end() ? nullptr : &it->second;
}

// Forgets an object nobody of this process holds or waits on.
void shared_drop(const void* p, Shared& s) {
    if (!s.owner && !s.users && !s.readers && s.waiters.empty()) os_sync(false)->shared.erase(p);
}

// Whether this OS thread's hub may give its greenlets to another
// (Hub::set_share_check): not while its table has an entry, which may say a
// greenlet of it owns a process-shared lock (glibc recorded this OS
// thread's tid) or is in a call on one, nor while one of them is in a
// dlopen (the loader's lock is this tid's too: stall.cpp).
bool may_share(Hub&) noexcept {
    if (loader_lock_here()) return false;
    OsThreadSync* o = os_sync(false);
    return !o || o->shared.empty();
}

// The entry for the length of one call.
struct SharedUse {
    const void* p;
    Shared& s;
    SharedUse(const void* object, SharedKind kind) : p(object), s(get(object)) {
        ++s.users;
        s.kind = kind;
    }
    ~SharedUse() {
        --s.users;
        shared_drop(p, s);
    }
    static Shared& get(const void* p) {
        OsThreadSync* o = os_sync(true);
        if (!o) throw std::bad_alloc();
        return o->shared[p];
    }
};

// Polls: retry_with_backoff with the object's queue.
template <class Try, class Busy>
int shared_wait(Shared& s, Deadline deadline, bool interruptible, Try&& try_once, Busy&& busy) {
    Backoff how = kSharedBackoff;
    how.interruptible = interruptible;
    how.cancellation_point = interruptible;  // (sem_wait's; a mutex's or rwlock's is neither)
    how.queue = &s.waiters;
    return retry_with_backoff(deadline, try_once, busy, how);
}

// ---- sem_post in a signal handler ----
//
// POSIX lets a signal handler call sem_post. A handler may interrupt this
// OS thread anywhere, even while a wait queue or the hub's run queue is
// being changed: there sem_post only adds to the count (atomically) and asks
// the hub (Hub::notify_signal, async-signal-safe) to call
// sync_after_handlers(), which wakes every greenlet waiting on a semaphore
// whose count is positive. Semaphore waiters are listed for that scan while
// they park; a waiter checks the count (atomically) before it parks, and the
// hub runs only once it has parked, so none sleeps while the count is positive.
struct SemWaiter {
    const sem_t* sem;
    bool glibc;  // a glibc semaphore (count read with sem_getvalue)
    Greenlet* g;
    SemWaiter* prev = nullptr;
    SemWaiter* next = nullptr;
};
// Bumped by each sem_post in a handler; each hub's scan (sync_after_handlers)
// remembers the last count it saw, so every hub looks once per post.
std::atomic<std::uint64_t> g_sem_posts_in_handler{0};

struct SemListed {
    StayOnHub stay;  // (the list is this OS thread's: the node must not go to another)
    SemWaiter node;
    OsThreadSync* list;  // nullptr only when out of memory: not listed
    SemListed(const sem_t* s, bool glibc) : node{s, glibc, &greenshim::detail::current_greenlet()}, list(os_sync(true)) {
        if (!list) return;
        node.next = list->sem_waiters;
        if (list->sem_waiters) list->sem_waiters->prev = &node;
        list->sem_waiters = &node;
    }
    ~SemListed() {
        if (!list) return;
        if (node.prev) node.prev->next = node.next;
        else list->sem_waiters = node.next;
        if (node.next) node.next->prev = node.prev;
    }
};

// Called where the queues may not be touched (a signal handler, a helper thread).
void sem_posted_from_handler() noexcept {
    g_sem_posts_in_handler.fetch_add(1);
    wake_hub_from_handler();
}

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
    std::uint32_t tried;  // trier_mark of a thread whose trylock found it taken, until that thread takes it (mutex_unlock)
    WaitQueue waiters;
};
static_assert(sizeof(Mutex) <= sizeof(pthread_mutex_t));
static_assert(offsetof(Mutex, kind) == offsetof(pthread_mutex_t, __data.__kind));

constexpr int kKindMask = 3;            // NORMAL, RECURSIVE, ERRORCHECK, ADAPTIVE
constexpr int kRobust = 16, kPrioInherit = 32, kPrioProtect = 64, kPshared = 128;  // glibc's __kind bits
constexpr int kRealBits = kRobust | kPrioInherit | kPrioProtect | kPshared;     // glibc's own
constexpr int kInconsistent = INT_MAX;  // glibc's __owner of a robust mutex locked with EOWNERDEAD

Mutex* as_mutex(pthread_mutex_t* m) { return reinterpret_cast<Mutex*>(m); }
// A mutex is the shim's or glibc's by its kind alone, wherever it is taken:
// an allocator's lock is taken both by the program's threads and by malloc
// called in the runtime's own code or a hub (where nothing may park), maybe
// on two OS threads at once, and the two layouts must never meet in one
// object. Only with the shim disabled is every mutex glibc's.
bool real_mutex(pthread_mutex_t* m) { return !config().enabled || (as_mutex(m)->kind & kRealBits); }

// A lock that must wait where nothing may park (the shim's or the runtime's
// own code, a hub greenlet, a signal handler: an allocator's lock taken by
// malloc there), or that a malloc replacement's own code takes
// (from_allocator). Its holder runs on another OS thread (a hub, a thread
// the shim did not make) and lets go soon: spin, then yield the OS thread,
// as glibc's adaptive mutex does. A holder parked on this OS thread could
// not run, and none is: an allocator's locks are only ever waited for here,
// and the stall tick never takes a greenlet back inside the allocator, so no
// greenlet is suspended holding one. (With two hubs, a greenlet that parked
// for jemalloc's lock while it held another hung its hub, which freed a
// thread-locals block and spun for the lock held.) Called with the Guard
// held; returns with it held once the lock is taken.
int mutex_spin_until(Mutex* m, WaitQueue::Guard& held, const void* me, Deadline deadline) {
    for (unsigned spins = 0;; ++spins) {
        held.unlock();
        if (spins < 100) __builtin_ia32_pause();
        else REAL(sched_yield)();
        if (deadline != kForever && (spins & 63) == 0 && monotonic_ns() >= deadline) return ETIMEDOUT;
        held.lock();
        if (!m->locked) {
            m->locked = 1;
            m->owner = me;
            m->count = 1;
            return 0;
        }
    }
}

// mutex_lock_until found m taken (held: its Guard, held).
__attribute__((noinline)) int mutex_lock_busy(Mutex* m, WaitQueue::Guard& held, const void* me, Deadline deadline,
                                              bool try_only, bool malformed_time, const void* caller) {
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
    if (try_only) {
        if (!relock) m->tried = trier_mark(me);
        return EBUSY;
    }
    if (malformed_time) return EINVAL;
    if (!relock && (!may_park() || from_allocator(caller))) return mutex_spin_until(m, held, me, deadline);
    for (;;) {
        int w = wait_in(m->waiters, held, g_mutex, m, deadline);
        held.lock();
        if (!relock && m->owner == me) {  // handed over by unlock
            answered(m->tried, me);
            return 0;
        }
        if (!m->locked) {  // woken without a handover (queue torn down)
            m->locked = 1;
            m->owner = me;
            m->count = 1;
            answered(m->tried, me);
            return 0;
        }
        if (w == -ETIMEDOUT) return ETIMEDOUT;
    }
}

// malformed_time: the caller's time is invalid. As in glibc, that is EINVAL
// only when the call would have to wait: a free mutex is taken (and a
// recursive one relocked) without looking at the time.
// caller: the lock call's return address (from_allocator: spin, never park).
// The free case inline (every uncontended lock), the rest out of line.
inline int mutex_lock_until(Mutex* m, Deadline deadline, bool try_only, bool malformed_time = false,
                            const void* caller = nullptr) {
    const void* me = self();
    WaitQueue::Guard held(m->waiters);
    if (__builtin_expect(!m->locked, 1)) {
        m->locked = 1;
        m->owner = me;
        m->count = 1;
        answered(m->tried, me);
        return 0;
    }
    return mutex_lock_busy(m, held, me, deadline, try_only, malformed_time, caller);
}

// caller: the unlock's return address (give_way_to_woken), or null where
// this thread parks next anyway (a condition variable's wait).
int mutex_unlock_slow(Mutex* m, WaitQueue::Guard& held, const void* caller);
inline int mutex_unlock(Mutex* m, const void* caller) {
    WaitQueue::Guard held(m->waiters);
    // The common case inline: a normal mutex nobody waits for or tried.
    if (__builtin_expect((m->kind & kKindMask) != PTHREAD_MUTEX_RECURSIVE &&
                             (m->kind & kKindMask) != PTHREAD_MUTEX_ERRORCHECK && m->waiters.empty() && !m->tried,
                         1)) {
        m->locked = 0;
        m->owner = nullptr;
        m->count = 0;
        return 0;
    }
    return mutex_unlock_slow(m, held, caller);
}
__attribute__((noinline)) int mutex_unlock_slow(Mutex* m, WaitQueue::Guard& held, const void* caller) {
    int type = m->kind & kKindMask;
    if (type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK) {
        if (!m->locked || m->owner != self()) return EPERM;
        if (type == PTHREAD_MUTEX_RECURSIVE && --m->count > 0) return 0;
    }
    // Hand the lock straight to the longest waiter: FIFO, and a greenlet that
    // unlocks and relocks in a loop cannot starve the others. (It looks at
    // the owner under the Guard, which is held until the handover is made.)
    if (Greenlet* next = m->waiters.wake_one(held)) {
        m->owner = next->owner_id();
        m->count = 1;
        answered(m->tried, m->owner);
        return 0;
    }
    m->locked = 0;
    m->owner = nullptr;
    m->count = 0;
    // A thread that tries in a loop (trylock, then sched_yield or a sleep)
    // never waits, so nothing is handed to it, and a holder that relocks at
    // once would find it free every time: while a try is unanswered (the
    // thread refused has not taken it since, by any call) the unlock gives
    // way, so that the trier, once runnable, tries first. (Answered by the
    // trier only: a holder's relock must not clear it, or a trier that sleeps
    // between tries would find it taken at every wake. Cleared by any take
    // before, the mark of a CPython lock, which tries once before it waits,
    // stayed on the locks the waiter then took without parking, and their
    // every release gave way: ThreadingHTTPServer's p99 at 500 connections
    // went from 32-49 ms to 510-710.)
    bool give_way = m->tried && caller;
    held.unlock();
    if (give_way) give_way_to_woken(caller);
    return 0;
}

// ---- glibc's mutexes (process-shared, robust, PI, PP) ----

// Whether glibc's unlock checks that the calling thread owns the mutex.
bool glibc_checks_owner(int kind) {
    int type = kind & kKindMask;
    return (kind & (kRobust | kPrioInherit)) || type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE;
}

// glibc 2.36's trylock of a robust (non-PI) mutex made unrecoverable leaves
// the lock word holding the caller's tid as it returns ENOTRECOVERABLE
// (pthread_mutex_trylock.c tests `oldval == id` after a compare-and-swap
// that left oldval 0); its lock releases the word. A lock the shim made of
// trylocks releases it as glibc's lock does (lll_unlock), so that the next
// call sees ENOTRECOVERABLE again, not EDEADLK or a busy mutex.
void lock_word_back(pthread_mutex_t* m) {
    int kind = as_mutex(m)->kind;
    if (!(kind & kRobust) || (kind & kPrioInherit)) return;
    auto* word = reinterpret_cast<unsigned*>(&m->__data.__lock);
    unsigned tid = unsigned(gettid());
    if ((__atomic_load_n(word, __ATOMIC_ACQUIRE) & FUTEX_TID_MASK) != tid) return;
    if (__atomic_exchange_n(word, 0u, __ATOMIC_RELEASE) > 1)
        REAL(syscall)(SYS_futex, word, FUTEX_WAKE | ((kind & kPshared) ? 0 : FUTEX_PRIVATE_FLAG), 1, nullptr, nullptr, 0);
}

int shared_mutex_lock(pthread_mutex_t* m, Deadline deadline, bool try_only, bool malformed_time) {
    const void* me = self();
    SharedUse use(m, SharedKind::mutex);
    Shared& s = use.s;
    if (s.owner == me) {
        // Relocked by its holder: glibc, which sees its own thread as the
        // owner, knows what that gives (EDEADLK, a recursion, or busy).
        int r = REAL(pthread_mutex_trylock)(m);
        if (r == 0) ++s.depth;
        if (r != EBUSY || try_only) return r;
        // (glibc's trylock of its own errorcheck mutex says busy, its lock EDEADLK)
        if ((as_mutex(m)->kind & kKindMask) == PTHREAD_MUTEX_ERRORCHECK) return EDEADLK;
        if (malformed_time) return EINVAL;
        // A normal mutex relocked by its holder: waits for ever (a timed
        // lock until its deadline, then ETIMEDOUT), as in glibc.
        WaitQueue never;
        for (;;) {
            if (wait_in(never, g_mutex, m, deadline) == -ETIMEDOUT) return ETIMEDOUT;
        }
    }
    auto try_once = [&]() -> int {
        if (s.owner == me) return 0;  // handed over by an unlock in this process
        if (s.owner) {                // another greenlet of this process holds it
            errno = EBUSY;
            return -1;
        }
        int r = REAL(pthread_mutex_trylock)(m);
        if (r == 0 || r == EOWNERDEAD) {
            s.owner = me;
            s.depth = 1;
            return r;
        }
        errno = r;
        return -1;
    };
    int r = try_once();
    if (r < 0 && errno != EBUSY) {
        if (errno == ENOTRECOVERABLE && !try_only) lock_word_back(m);
        return errno;
    }
    if (r >= 0) return r;
    if (try_only) return EBUSY;
    if (malformed_time) return EINVAL;
    WaitScope what(g_mutex, reinterpret_cast<std::intptr_t>(m));
    r = shared_wait(s, deadline, false, try_once, [](int e) { return e == EBUSY; });
    if (r >= 0) return r;
    if (errno == ENOTRECOVERABLE) lock_word_back(m);
    return errno == EBUSY ? ETIMEDOUT : errno;
}

int shared_mutex_unlock(pthread_mutex_t* m) {
    Shared* s = shared_find(m);
    int kind = as_mutex(m)->kind;
    if (!s || !s->owner) return REAL(pthread_mutex_unlock)(m);  // not ours: glibc says
    if (s->owner != self()) {
        if (glibc_checks_owner(kind)) return EPERM;
        s->depth = 1;  // anyone may unlock a normal mutex (glibc does not look)
    }
    if (s->depth > 1) {
        int r = REAL(pthread_mutex_unlock)(m);
        if (r == 0) --s->depth;
        return r;
    }
    // Hand it to this process's longest waiter, still locked. Not a robust
    // mutex left inconsistent (glibc's unlock makes it unrecoverable and
    // wakes everyone) nor a priority-protected one (glibc's unlock restores
    // the thread's priority).
    bool inconsistent = (kind & kRobust) && m->__data.__owner == kInconsistent;
    if (!inconsistent && !(kind & kPrioProtect)) {
        if (Greenlet* next = s->waiters.wake_one()) {
            s->owner = next->owner_id();
            s->depth = 1;
            return 0;
        }
    }
    s->owner = nullptr;
    s->depth = 0;
    int r = REAL(pthread_mutex_unlock)(m);
    if (inconsistent) s->waiters.notify_all();  // ENOTRECOVERABLE for each
    shared_drop(m, *s);
    return r;
}

// What the kernel does for a robust mutex on the robust list of a thread
// that dies (kernel/futex/core.c, handle_futex_death): the lock word becomes
// FUTEX_OWNER_DIED (keeping FUTEX_WAITERS) and one waiter is woken, so the
// next locker, in this process or another, gets EOWNERDEAD from glibc. The
// mutex first leaves glibc's list of this OS thread's robust mutexes (glibc's
// DEQUEUE_MUTEX, nptl/pthreadP.h: doubly linked through __data.__list, each
// link pointing at the next one's __next; list_op_pending covers the change
// as glibc's own unlock does). False when that cannot be done: a PI mutex
// with waiters in the kernel, whose word the kernel owns.
bool robust_owner_died(pthread_mutex_t* m) {
    int kind = as_mutex(m)->kind;
    auto* word = reinterpret_cast<unsigned*>(&m->__data.__lock);
    if ((kind & kPrioInherit) && (__atomic_load_n(word, __ATOMIC_ACQUIRE) & FUTEX_WAITERS)) return false;
    struct robust_list_head* head = nullptr;
    size_t len = 0;
    if (REAL(syscall)(SYS_get_robust_list, 0, &head, &len) != 0 || !head) return false;
    head->list_op_pending = reinterpret_cast<struct robust_list*>(&m->__data.__list.__next);
    __asm__ volatile("" ::: "memory");
    constexpr std::uintptr_t adjust = offsetof(__pthread_list_t, __next);
    auto link = [](void* p) { return reinterpret_cast<__pthread_list_t*>((reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t(1)) - adjust); };
    if (m->__data.__list.__next && m->__data.__list.__prev) {
        __pthread_list_t* next = link(m->__data.__list.__next);
        next->__prev = m->__data.__list.__prev;
        __pthread_list_t* prev = link(m->__data.__list.__prev);
        prev->__next = reinterpret_cast<__pthread_list_t*>(reinterpret_cast<std::uintptr_t>(m->__data.__list.__next) |
                                                           (reinterpret_cast<std::uintptr_t>(prev->__next) & 1));
        __asm__ volatile("" ::: "memory");
        m->__data.__list.__prev = nullptr;
        m->__data.__list.__next = nullptr;
    }
    unsigned old = __atomic_load_n(word, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(word, &old, (old & FUTEX_WAITERS) | FUTEX_OWNER_DIED, false, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED)) {
    }
    if (old & FUTEX_WAITERS) REAL(syscall)(SYS_futex, word, FUTEX_WAKE | ((kind & kPshared) ? 0 : FUTEX_PRIVATE_FLAG), 1, nullptr, nullptr, 0);
    __asm__ volatile("" ::: "memory");
    head->list_op_pending = nullptr;
    return true;
}

// Any mutex, the shim's or glibc's: the calls a condition variable's wait makes.
int any_mutex_lock(pthread_mutex_t* m) {
    if (as_mutex(m)->kind & kRealBits) return shared_mutex_lock(m, kForever, false, false);
    return mutex_lock_until(as_mutex(m), kForever, false);
}

}  // namespace

SHIM_EXPORT int pthread_mutex_init(pthread_mutex_t* m, const pthread_mutexattr_t* attr) {
    SHIM_ENTER;
    int type = PTHREAD_MUTEX_NORMAL, pshared = PTHREAD_PROCESS_PRIVATE, robust = PTHREAD_MUTEX_STALLED,
        proto = PTHREAD_PRIO_NONE;
    if (attr) {
        pthread_mutexattr_gettype(attr, &type);
        pthread_mutexattr_getpshared(attr, &pshared);
        pthread_mutexattr_getrobust(attr, &robust);
        pthread_mutexattr_getprotocol(attr, &proto);
    }
    if (pshared != PTHREAD_PROCESS_PRIVATE || robust != PTHREAD_MUTEX_STALLED || proto != PTHREAD_PRIO_NONE ||
        !config().enabled)
        return REAL(pthread_mutex_init)(m, attr);  // glibc sets its own kind bits
    std::memset(m, 0, sizeof *m);
    as_mutex(m)->kind = type;
    return 0;
}

SHIM_EXPORT int pthread_mutex_destroy(pthread_mutex_t* m) {
    SHIM_ENTER;
    if (as_mutex(m)->kind & kRealBits) {
        if (Shared* s = shared_find(m); s && s->owner == kDeadOwner) {
            s->owner = nullptr;  // its thread ended holding it: the program may still destroy it
            shared_drop(m, *s);
        }
        return REAL(pthread_mutex_destroy)(m);
    }
    Mutex* x = as_mutex(m);
    WaitQueue::Guard held(x->waiters);
    if (x->locked || !x->waiters.empty()) return EBUSY;
    return 0;
}

SHIM_EXPORT int pthread_mutex_lock(pthread_mutex_t* m) {
    SHIM_ENTER;
    if (real_mutex(m)) {
        if (!may_park()) return REAL(pthread_mutex_lock)(m);
        return shared_mutex_lock(m, kForever, false, false);
    }
    return mutex_lock_until(as_mutex(m), kForever, false, false, __builtin_return_address(0));
}

SHIM_EXPORT int pthread_mutex_trylock(pthread_mutex_t* m) {
    SHIM_ENTER;
    if (real_mutex(m)) {
        if (!may_park()) return REAL(pthread_mutex_trylock)(m);
        return shared_mutex_lock(m, kForever, true, false);
    }
    return mutex_lock_until(as_mutex(m), kForever, true);
}

SHIM_EXPORT int pthread_mutex_timedlock(pthread_mutex_t* m, const struct timespec* abstime) {
    SHIM_ENTER;
    bool malformed = bad_time(abstime);
    Deadline d = malformed ? kForever : deadline_at(CLOCK_REALTIME, abstime);
    if (real_mutex(m)) {
        if (!may_park()) return REAL(pthread_mutex_timedlock)(m, abstime);
        return shared_mutex_lock(m, d, false, malformed);
    }
    return mutex_lock_until(as_mutex(m), d, false, malformed);
}

SHIM_EXPORT int pthread_mutex_clocklock(pthread_mutex_t* m, clockid_t clock, const struct timespec* abstime) {
    SHIM_ENTER;
    if (real_mutex(m) && !may_park()) return REAL(pthread_mutex_clocklock)(m, clock, abstime);
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) return EINVAL;
    bool malformed = bad_time(abstime);
    Deadline d = malformed ? kForever : deadline_at(clock, abstime);
    if (real_mutex(m)) return shared_mutex_lock(m, d, false, malformed);
    return mutex_lock_until(as_mutex(m), d, false, malformed);
}

SHIM_EXPORT int pthread_mutex_unlock(pthread_mutex_t* m) {
    SHIM_ENTER;
    if (real_mutex(m)) {
        if (!may_park()) return REAL(pthread_mutex_unlock)(m);
        return shared_mutex_unlock(m);
    }
    return mutex_unlock(as_mutex(m), __builtin_return_address(0));
}

SHIM_EXPORT int pthread_mutex_consistent(pthread_mutex_t* m) { SHIM_ENTER; return REAL(pthread_mutex_consistent)(m); }

// A greenlet thread ends. The kernel knows nothing of it (the OS thread
// lives on), so the robust mutexes it holds are made owner-dead here, as the
// kernel does for a dying thread; its other glibc mutexes and write locks
// stay locked for ever, as they would.
void greenshim::shim::sync_thread_exiting(Greenlet& g) noexcept {
    OsThreadSync* o = os_sync(false);
    if (!o) return;
    for (auto it = o->shared.begin(); it != o->shared.end();) {
        Shared& s = it->second;
        if (s.owner == g.owner_id()) {
            auto* m = static_cast<pthread_mutex_t*>(const_cast<void*>(it->first));
            if (s.kind == SharedKind::mutex && (as_mutex(m)->kind & kRobust) && robust_owner_died(m)) {
                s.owner = nullptr;
                s.depth = 0;
                s.waiters.notify_one();  // it will find the owner dead
            } else {
                s.owner = kDeadOwner;
            }
        }
        if (!s.owner && !s.users && !s.readers && s.waiters.empty()) it = o->shared.erase(it);
        else ++it;
    }
}

// ---- condition variables ----
//
// Layout inside pthread_cond_t (48 bytes):
//   0  WaitQueue waiters
//   16 int       clock + 1 (0 = CLOCK_REALTIME, the static initialiser's)
//   20 unsigned  signals made so far (under the queue's Guard)
// A waiter reads the count before it releases the mutex and enqueues only
// if it is unchanged after: a signal made on another OS thread in between
// (the signaller may have taken the mutex meanwhile) ends its wait at once,
// a wakeup POSIX allows, instead of being lost.
// A process-shared one is glibc's, marked by glibc in __wrefs (bit 0,
// offset 36, which the shim's own never set).
namespace {
struct Cond {
    WaitQueue waiters;
    int clock_plus1;
    unsigned signals;
};
static_assert(sizeof(Cond) <= offsetof(pthread_cond_t, __data.__wrefs));
Cond* as_cond(pthread_cond_t* c) { return reinterpret_cast<Cond*>(c); }
bool glibc_cond(pthread_cond_t* c) { return c->__data.__wrefs & 1; }  // __PTHREAD_COND_SHARED_MASK
bool real_cond(pthread_cond_t* c) { return !may_park() || glibc_cond(c); }

// The mutex a wait releases and takes back, the shim's or glibc's. As glibc's
// condition variables do, one level of a recursive glibc mutex; the shim's
// own are released whole and their depth restored.
int release_for_wait(pthread_mutex_t* m, unsigned* depth) {
    if (as_mutex(m)->kind & kRealBits) return shared_mutex_unlock(m);
    Mutex* mx = as_mutex(m);
    int type = mx->kind & kKindMask;
    if ((type == PTHREAD_MUTEX_ERRORCHECK || type == PTHREAD_MUTEX_RECURSIVE) && mx->owner != self()) return EPERM;
    *depth = mx->count;
    mx->count = 1;
    return mutex_unlock(mx, nullptr);
}
int take_back(pthread_mutex_t* m, unsigned depth) {
    int r = any_mutex_lock(m);  // glibc's robust mutex: EOWNERDEAD, which the wait returns
    if (!(as_mutex(m)->kind & kRealBits)) as_mutex(m)->count = depth;
    return r;
}

// (Written under the Guard; read without it, before the mutex is released.)
unsigned cond_signals(Cond* c) { return __atomic_load_n(&c->signals, __ATOMIC_ACQUIRE); }

// Parks on c unless a signal came since `seen`; 0 or -ETIMEDOUT.
int cond_park(Cond* c, unsigned seen, Deadline deadline) {
    WaitQueue::Guard held(c->waiters);
    if (c->signals != seen) return 0;
    return wait_in(c->waiters, held, g_cond, c, deadline, cancellable(Interruptible::no));
}

void cond_signal(Cond* c, bool all) {
    WaitQueue::Guard held(c->waiters);
    __atomic_store_n(&c->signals, c->signals + 1, __ATOMIC_RELAXED);
    if (all) c->waiters.notify_all(held);
    else c->waiters.wake_one(held);
}

int cond_wait_until(pthread_cond_t* c, pthread_mutex_t* m, Deadline deadline) {
    unsigned depth = 1;
    unsigned seen = glibc_cond(c) ? 0 : cond_signals(as_cond(c));
    if (int r = release_for_wait(m, &depth)) return r;
    int w;
    if (glibc_cond(c)) {
        // A signal made in this process wakes us; one made in another is
        // seen within kCondPollNs, as a wakeup no signal caused.
        SharedUse use(c, SharedKind::cond);
        Deadline poll = deadline_after_ns(kCondPollNs);
        w = wait_in(use.s.waiters, g_cond, c, poll < deadline ? poll : deadline, cancellable(Interruptible::no));
        if (w == -ETIMEDOUT && monotonic_ns() < deadline) w = 0;
    } else {
        w = cond_park(as_cond(c), seen, deadline);
    }
    if (int r = take_back(m, depth)) return r;
    return w == -ETIMEDOUT ? ETIMEDOUT : 0;  // anything else is a spurious wakeup, which POSIX allows
}
}  // namespace

SHIM_EXPORT int pthread_cond_init(pthread_cond_t* c, const pthread_condattr_t* attr) {
    SHIM_ENTER;
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
    SHIM_ENTER;
    if (glibc_cond(c)) return REAL(pthread_cond_destroy)(c);
    WaitQueue::Guard held(as_cond(c)->waiters);
    return as_cond(c)->waiters.empty() ? 0 : EBUSY;
}

SHIM_EXPORT int pthread_cond_signal(pthread_cond_t* c) {
    SHIM_ENTER;
    if (real_cond(c)) {
        int r = REAL(pthread_cond_signal)(c);  // waiters in other processes
        if (may_park())
            if (Shared* s = shared_find(c)) s->waiters.notify_one();
        return r;
    }
    cond_signal(as_cond(c), false);
    return 0;
}

SHIM_EXPORT int pthread_cond_broadcast(pthread_cond_t* c) {
    SHIM_ENTER;
    if (real_cond(c)) {
        int r = REAL(pthread_cond_broadcast)(c);
        if (may_park())
            if (Shared* s = shared_find(c)) s->waiters.notify_all();
        return r;
    }
    cond_signal(as_cond(c), true);
    return 0;
}

SHIM_EXPORT int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(pthread_cond_wait)(c, m);
    return cond_wait_until(c, m, kForever);
}

SHIM_EXPORT int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const struct timespec* abstime) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(pthread_cond_timedwait)(c, m, abstime);
    if (bad_time(abstime)) return EINVAL;
    clockid_t clock = CLOCK_REALTIME;
    if (glibc_cond(c)) clock = (c->__data.__wrefs & 2) ? CLOCK_MONOTONIC : CLOCK_REALTIME;  // __PTHREAD_COND_CLOCK_MONOTONIC_MASK
    else if (int cp1 = as_cond(c)->clock_plus1) clock = clockid_t(cp1 - 1);
    return cond_wait_until(c, m, deadline_at(clock, abstime));
}

SHIM_EXPORT int pthread_cond_clockwait(pthread_cond_t* c, pthread_mutex_t* m, clockid_t clock,
                                       const struct timespec* abstime) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(pthread_cond_clockwait)(c, m, clock, abstime);
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
//   16 uint8     starving: a woken waiter found it taken again
//   20 uint32    tried_by: trier_mark of a thread whose try found it taken,
//                 until that thread takes it (mutex_unlock says more)
//   32 WaitQueue waiters (readers and writers; each rechecks when woken)
// An unlock wakes every waiter to look again, and a writer that unlocks and
// relocks in a loop, giving way only inside calls made holding it (a
// greenlet's only turns), would take it back each time before they ran. So
// a woken waiter that finds it taken again marks it starving, and the next
// unlock that wakes waiters gives way to them (pthread_rwlock_unlock), as
// the futex words' waiters get (FutexEntry). A thread that tries in a loop
// never waits, so while a try is unanswered every unlock gives way
// (mutex_unlock says more).
namespace {
struct RwLock {
    int readers;
    int writers_waiting;
    const void* writer;
    unsigned char starving;
    char pad[3];
    std::uint32_t tried_by;
    char pad2[4];
    int shared;
    WaitQueue waiters;
};
static_assert(sizeof(RwLock) <= sizeof(pthread_rwlock_t));
static_assert(offsetof(RwLock, shared) == offsetof(pthread_rwlock_t, __data.__shared));
RwLock* as_rw(pthread_rwlock_t* l) { return reinterpret_cast<RwLock*>(l); }

// The Guard of an rwlock, which a signal handler may take (rw_lock; OpenSSL's
// locks in PostgreSQL's handlers): the handler may have interrupted this very
// OS thread inside a Guard on the same spin lock. There it tries a bounded
// number of times and goes on without it if it is still held, as before there
// were Guards (the handler runs alone on its OS thread).
void lock_rw_guard(WaitQueue::Guard& held) {
    if (!in_signal_handler()) held.lock();
    else held.try_lock(4000);  // (~100 us: far longer than any holder on another thread)
}

int rd_lock(RwLock* l, Deadline deadline, bool try_only) {
    WaitQueue::Guard held(l->waiters, WaitQueue::Guard::deferred);
    lock_rw_guard(held);
    bool woken = false;
    for (;;) {
        if (!l->writer && l->writers_waiting == 0) {
            ++l->readers;
            answered(l->tried_by, self());
            return 0;
        }
        if (try_only) {  // (glibc's trylock just finds it busy, even for its writer)
            if (l->writer != self()) l->tried_by = trier_mark(self());
            return EBUSY;
        }
        if (l->writer == self()) return EDEADLK;
        if (woken) l->starving = 1;
        int w = wait_in(l->waiters, held, g_rdlock, l, deadline);
        held.lock();
        if (w == -ETIMEDOUT) return ETIMEDOUT;
        woken = w == 0;
    }
}

int wr_lock(RwLock* l, Deadline deadline, bool try_only) {
    const void* me = self();
    WaitQueue::Guard held(l->waiters, WaitQueue::Guard::deferred);
    lock_rw_guard(held);
    if (!l->writer && l->readers == 0) {
        l->writer = me;
        answered(l->tried_by, me);
        return 0;
    }
    if (try_only) {
        if (l->writer != me) l->tried_by = trier_mark(me);
        return EBUSY;
    }
    if (l->writer == me) return EDEADLK;
    ++l->writers_waiting;
    for (;;) {
        int w = wait_in(l->waiters, held, g_wrlock, l, deadline);
        held.lock();
        if (!l->writer && l->readers == 0) {
            --l->writers_waiting;
            l->writer = me;
            answered(l->tried_by, me);
            return 0;
        }
        if (w == -ETIMEDOUT) {
            --l->writers_waiting;
            l->waiters.notify_all(held);  // readers held back for us may go now
            return ETIMEDOUT;
        }
        if (w == 0) l->starving = 1;
    }
}
// glibc's (process-shared): tried, and polled while busy. glibc records
// the writer's OS thread, which every greenlet is: the writer greenlet is
// recorded here.
int shared_rw_lock(pthread_rwlock_t* l, bool write, Deadline deadline, bool try_only) {
    const void* me = self();
    SharedUse use(l, SharedKind::rwlock);
    Shared& s = use.s;
    if (s.owner == me && !try_only) return EDEADLK;  // glibc's answer to its writer
    auto try_once = [&]() -> int {
        if (s.owner && s.owner != me) {  // another greenlet of this process writes
            errno = EBUSY;
            return -1;
        }
        int r = write ? REAL(pthread_rwlock_trywrlock)(l) : REAL(pthread_rwlock_tryrdlock)(l);
        if (r == 0) {
            if (write) s.owner = me;
            else ++s.readers;
            return 0;
        }
        errno = r;
        return -1;
    };
    int r = try_once();
    if (r >= 0) return 0;
    if (errno != EBUSY || try_only) return errno;
    WaitScope what(write ? g_wrlock : g_rdlock, reinterpret_cast<std::intptr_t>(l));
    r = shared_wait(s, deadline, false, try_once, [](int e) { return e == EBUSY; });
    if (r >= 0) return 0;
    return errno == EBUSY ? ETIMEDOUT : errno;
}
int shared_rd_lock(RwLock* l, Deadline d, bool try_only) {
    return shared_rw_lock(reinterpret_cast<pthread_rwlock_t*>(l), false, d, try_only);
}
int shared_wr_lock(RwLock* l, Deadline d, bool try_only) {
    return shared_rw_lock(reinterpret_cast<pthread_rwlock_t*>(l), true, d, try_only);
}

int shared_rw_unlock(pthread_rwlock_t* l) {
    Shared* s = shared_find(l);
    const void* me = self();
    if (s && s->owner && s->owner != me) return EPERM;  // glibc would take us for its writer
    int r = REAL(pthread_rwlock_unlock)(l);
    if (r == 0 && s) {
        if (s->owner == me) s->owner = nullptr;
        else if (s->readers) --s->readers;
        s->waiters.notify_all();
        shared_drop(l, *s);
    }
    return r;
}

// The timed forms: EINVAL for a malformed time or an unsupported clock.
// The call for l: the shim's, glibc's through the shim, or glibc's own where
// nothing may park.
bool glibc_rw(pthread_rwlock_t* l) { return as_rw(l)->shared; }

// Whether glibc's own code does a call on l: with the shim off or in the
// runtime's own work (the locks there are glibc's, made and used by glibc),
// and for a glibc rwlock where nothing may park. A lock in the shim's format
// is never handed to glibc: glibc's lock and unlock leave glibc's state in
// the words the shim reads (PostgreSQL 15's postmaster, which runs OpenSSL
// in its signal handlers, then waited for ever on a free lock). So a
// program's signal handler that interrupted the runtime's own work (the hub
// in its poll) is the program's, not the runtime's: its locks stay the
// shim's (before, tests/threads rwlock-in-handler: the handler's lock went
// to glibc whenever the signal came in the hub, and every later lock of it
// failed; 6-8 runs in 40 with two busy loops beside it).
bool runtime_own_work() noexcept { return greenshim::detail::internal() && !in_signal_handler(); }
bool rw_by_glibc(pthread_rwlock_t* l) {
    return !config().enabled || runtime_own_work() || (glibc_rw(l) && !may_park());
}

using RwLockFn = int (*)(RwLock*, Deadline, bool);
// A lock call in the shim's format, or glibc's through the shim. Where
// nothing may park (a signal handler, the hub), a free lock is taken and a
// busy one, which nothing could release while the handler runs, is EDEADLK
// (EBUSY for a try).
int rw_lock(pthread_rwlock_t* l, RwLockFn own, RwLockFn glibcs, Deadline deadline, bool try_only) {
    if (glibc_rw(l)) return glibcs(as_rw(l), deadline, try_only);
    if (may_park()) return own(as_rw(l), deadline, try_only);
    int r = own(as_rw(l), deadline, true);
    return r == EBUSY && !try_only ? EDEADLK : r;
}

int rw_timed(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t, RwLockFn own, RwLockFn glibcs) {
    if (bad_time(t) || (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)) return EINVAL;
    return rw_lock(l, own, glibcs, deadline_at(clock, t), false);
}
}  // namespace

SHIM_EXPORT int pthread_rwlock_init(pthread_rwlock_t* l, const pthread_rwlockattr_t* attr) {
    SHIM_ENTER;
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr) pthread_rwlockattr_getpshared(attr, &pshared);
    if (pshared != PTHREAD_PROCESS_PRIVATE || !config().enabled || runtime_own_work())
        return REAL(pthread_rwlock_init)(l, attr);
    std::memset(l, 0, sizeof *l);
    return 0;
}
SHIM_EXPORT int pthread_rwlock_destroy(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (as_rw(l)->shared) return REAL(pthread_rwlock_destroy)(l);
    WaitQueue::Guard held(as_rw(l)->waiters);
    return (as_rw(l)->readers || as_rw(l)->writer) ? EBUSY : 0;
}
SHIM_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_rdlock)(l);
    return rw_lock(l, rd_lock, shared_rd_lock, kForever, false);
}
SHIM_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_tryrdlock)(l);
    return rw_lock(l, rd_lock, shared_rd_lock, kForever, true);
}
SHIM_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t* l, const struct timespec* t) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_timedrdlock)(l, t);
    return rw_timed(l, CLOCK_REALTIME, t, rd_lock, shared_rd_lock);
}
SHIM_EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_clockrdlock)(l, clock, t);
    return rw_timed(l, clock, t, rd_lock, shared_rd_lock);
}
SHIM_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_wrlock)(l);
    return rw_lock(l, wr_lock, shared_wr_lock, kForever, false);
}
SHIM_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_trywrlock)(l);
    return rw_lock(l, wr_lock, shared_wr_lock, kForever, true);
}
SHIM_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t* l, const struct timespec* t) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_timedwrlock)(l, t);
    return rw_timed(l, CLOCK_REALTIME, t, wr_lock, shared_wr_lock);
}
SHIM_EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t* l, clockid_t clock, const struct timespec* t) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_clockwrlock)(l, clock, t);
    return rw_timed(l, clock, t, wr_lock, shared_wr_lock);
}
SHIM_EXPORT int pthread_rwlock_unlock(pthread_rwlock_t* l) {
    SHIM_ENTER;
    if (rw_by_glibc(l)) return REAL(pthread_rwlock_unlock)(l);
    if (glibc_rw(l)) return shared_rw_unlock(l);
    RwLock* x = as_rw(l);
    WaitQueue::Guard held(x->waiters, WaitQueue::Guard::deferred);
    lock_rw_guard(held);
    if (x->writer == self()) {
        x->writer = nullptr;
    } else if (x->readers > 0) {
        --x->readers;
        if (x->readers > 0) return 0;
    } else {
        return EPERM;
    }
    bool woke = x->waiters.notify_all(held) > 0;
    bool give_way = (woke && std::exchange(x->starving, 0)) | refused_other(x->tried_by);
    held.unlock();
    if (give_way) give_way_to_woken();
    return 0;
}

// ---- semaphores ----
//
// Ours are marked by sem_init; sem_open'd (named) and process-shared ones are
// glibc's, waited on by polling (see "objects glibc keeps"). Layout inside
// sem_t (32 bytes):
//   0  unsigned  value (atomic: sem_post may run in a signal handler)
//   4  unsigned  grants (atomic): units handed to woken waiters
//   8  WaitQueue waiters
// A sem_post that finds a waiter hands its unit to the longest one (FIFO,
// as mutex_unlock hands the lock over): the unit becomes a grant, which only
// a woken waiter takes, never a caller that did not wait. Otherwise a
// thread that posts and waits again at once takes its unit back before the
// woken one runs, and since a greenlet gives way only inside a call (where
// such a thread holds the semaphore), the waiter never gets it. (CPython's
// locks are semaphores: a daemon thread writing to stderr in a loop kept
// the main thread's write out for good; test_io's shutdown tests.) A post
// from a signal handler only adds to the value.
//   24 unsigned  magic
//   28 unsigned  tried: trier_mark of a thread whose sem_trywait found it
//      at zero; until that thread takes a unit (any call), a post that
//      wakes nobody gives way (a thread that retries in a loop never waits,
//      so nothing is granted to it; mutex_unlock says more)
// The kernel's rules for EINTR, measured here on glibc 2.36: sem_wait is
// interrupted by a handler without SA_RESTART and restarted after one with
// it; sem_timedwait and sem_clockwait (a futex wait with a deadline, which
// the kernel never restarts) are interrupted by any handler.
namespace {
constexpr unsigned kSemMagic = 0x67736d31;  // "gsm1"
struct Sem {
    unsigned value;
    unsigned grants;
    WaitQueue waiters;
    unsigned magic;
    std::uint32_t tried;  // (atomic) trier_mark of a thread whose sem_trywait found none, until it takes one
};
static_assert(sizeof(Sem) <= sizeof(sem_t));
Sem* as_sem(sem_t* s) { return reinterpret_cast<Sem*>(s); }
bool real_sem(sem_t* s) { return as_sem(s)->magic != kSemMagic; }

// Takes one from a counter (value or grants) if it is positive.
bool take_one(unsigned* counter) {
    unsigned v = __atomic_load_n(counter, __ATOMIC_ACQUIRE);
    while (v > 0)
        if (__atomic_compare_exchange_n(counter, &v, v - 1, true, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return true;
    return false;
}
bool sem_take(Sem* s) { return take_one(&s->value); }

Interruptible sem_interruptible(Deadline deadline) {
    return cancellable(deadline == kForever ? Interruptible::unless_restart : Interruptible::always);
}

// Took a unit: a mark of this thread's own is answered.
int sem_took(Sem* s) {
    answered(s->tried, self());
    return 0;
}

int sem_wait_until(Sem* s, Deadline deadline, bool try_only) {
    if (try_only) {
        if (sem_take(s)) return sem_took(s);
        __atomic_store_n(&s->tried, trier_mark(self()), __ATOMIC_RELAXED);
        errno = EAGAIN;
        return -1;
    }
    for (;;) {
        if (sem_take(s)) return sem_took(s);
        if (!may_park()) {
            errno = EAGAIN;
            return -1;
        }
        int w;
        {
            SemListed listed(reinterpret_cast<sem_t*>(s), false);
            // Looked at again under the Guard: a post made on another OS
            // thread after the look above wakes the queue under it.
            WaitQueue::Guard held(s->waiters);
            if (sem_take(s)) return sem_took(s);
            w = wait_in(s->waiters, held, g_sem, s, deadline, sem_interruptible(deadline));
        }
        // Woken by a post: its grant. (Another waiter woken otherwise, by a
        // handler's post, may take it first: the count stays right, and the
        // one whose grant it was finds the handler's unit or waits again.)
        if (w == 0 && take_one(&s->grants)) return sem_took(s);
        if (sem_take(s)) return sem_took(s);
        if (w == -ETIMEDOUT || w == -EINTR) {
            errno = -w;
            return -1;
        }
    }
}

// glibc's: sem_trywait, polled while it says EAGAIN.
int real_sem_wait_until(sem_t* s, Deadline deadline) {
    SharedUse use(s, SharedKind::sem);
    WaitScope what(g_sem, reinterpret_cast<std::intptr_t>(s));
    SemListed listed(s, true);
    int r = shared_wait(use.s, deadline, true, [&] { return REAL(sem_trywait)(s); }, [](int e) { return e == EAGAIN; });
    if (r < 0 && errno == EAGAIN) errno = ETIMEDOUT;
    return r;
}

// The wait for every form: try_only (sem_trywait), deadline (timed forms).
int sem_wait_any(sem_t* s, Deadline deadline, bool try_only) {
    if (!real_sem(s)) return sem_wait_until(as_sem(s), deadline, try_only);
    if (try_only) return REAL(sem_trywait)(s);
    if (!may_park()) {
        if (deadline == kForever) return REAL(sem_wait)(s);
        errno = EAGAIN;  // (callers with a deadline go to glibc themselves)
        return -1;
    }
    return real_sem_wait_until(s, deadline);
}
}  // namespace

// Wakes the semaphore waiters whose count a handler made positive.
void greenshim::shim::sync_after_handlers(Hub& hub) noexcept {
    std::uint64_t posts = g_sem_posts_in_handler.load();
    OsThreadSync* o = os_sync(false);
    if (!o || o->sem_posts_seen == posts) return;
    o->sem_posts_seen = posts;
    for (SemWaiter* n = o ? o->sem_waiters : nullptr; n; n = n->next) {
        sem_t* sem = const_cast<sem_t*>(n->sem);
        int v = 0;
        if (n->glibc) REAL(sem_getvalue)(sem, &v);
        else v = int(__atomic_load_n(&as_sem(sem)->value, __ATOMIC_ACQUIRE));
        if (v > 0) hub.schedule(*n->g, Wake::event);
    }
}

SHIM_EXPORT int sem_init(sem_t* s, int pshared, unsigned value) {
    SHIM_ENTER;
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
    SHIM_ENTER;
    if (real_sem(s)) return REAL(sem_destroy)(s);
    as_sem(s)->magic = 0;
    return 0;
}
// Async-signal-safe, as POSIX requires: in a signal handler (or wherever a
// queue may not be touched) the waiters are woken by the hub afterwards.
SHIM_EXPORT int sem_post(sem_t* s) {
    SHIM_ENTER;
    if (real_sem(s)) {
        int r = REAL(sem_post)(s);
        if (r == 0) {
            if (!may_park()) sem_posted_from_handler();
            else if (Shared* e = shared_find(s)) e->waiters.notify_one();
        }
        return r;
    }
    Sem* x = as_sem(s);
    if (!may_park()) {  // (a signal handler: the queue may not be touched here)
        unsigned v = __atomic_load_n(&x->value, __ATOMIC_RELAXED);
        do {
            if (v + __atomic_load_n(&x->grants, __ATOMIC_RELAXED) >= SEM_VALUE_MAX) {
                errno = EOVERFLOW;
                return -1;
            }
        } while (!__atomic_compare_exchange_n(&x->value, &v, v + 1, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
        sem_posted_from_handler();
        return 0;
    }
    WaitQueue::Guard held(x->waiters);
    if (__atomic_load_n(&x->value, __ATOMIC_RELAXED) + __atomic_load_n(&x->grants, __ATOMIC_RELAXED) >=
        SEM_VALUE_MAX) {
        errno = EOVERFLOW;
        return -1;
    }
    // The grant before the wake: the woken waiter may run on another hub at
    // once. Nobody woken (no waiter, or each one's deadline fired): the unit
    // goes to the value, unless a waiter woken otherwise took it meanwhile.
    __atomic_add_fetch(&x->grants, 1, __ATOMIC_RELEASE);
    if (x->waiters.wake_one(held)) return 0;
    if (take_one(&x->grants)) __atomic_add_fetch(&x->value, 1, __ATOMIC_RELEASE);
    bool give_way = refused_other(x->tried);
    held.unlock();
    if (give_way) give_way_to_woken();
    return 0;
}
SHIM_EXPORT int sem_wait(sem_t* s) { SHIM_CANCEL_POINT; return sem_wait_any(s, kForever, false); }
SHIM_EXPORT int sem_trywait(sem_t* s) { SHIM_ENTER; return sem_wait_any(s, kForever, true); }
SHIM_EXPORT int sem_timedwait(sem_t* s, const struct timespec* t) {
    SHIM_CANCEL_POINT;
    if (real_sem(s) && !may_park()) return REAL(sem_timedwait)(s, t);
    if (bad_time(t)) {  // glibc checks the time even when it need not wait
        errno = EINVAL;
        return -1;
    }
    return sem_wait_any(s, deadline_at(CLOCK_REALTIME, t), false);
}
SHIM_EXPORT int sem_clockwait(sem_t* s, clockid_t clock, const struct timespec* t) {
    SHIM_CANCEL_POINT;
    if (real_sem(s) && !may_park()) return REAL(sem_clockwait)(s, clock, t);
    if ((clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) || bad_time(t)) {
        errno = EINVAL;
        return -1;
    }
    return sem_wait_any(s, deadline_at(clock, t), false);
}
SHIM_EXPORT int sem_getvalue(sem_t* s, int* value) {
    SHIM_ENTER;
    if (real_sem(s)) return REAL(sem_getvalue)(s, value);
    // (A unit handed to a waiter that has not run yet still counts, as in
    // glibc, where the waiter takes it from the value when it runs.)
    *value = int(__atomic_load_n(&as_sem(s)->value, __ATOMIC_ACQUIRE) +
                 __atomic_load_n(&as_sem(s)->grants, __ATOMIC_ACQUIRE));
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
    SHIM_ENTER;
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
    SHIM_ENTER;
    if (as_barrier(b)->magic != kBarrierMagic) return REAL(pthread_barrier_destroy)(b);
    WaitQueue::Guard held(as_barrier(b)->waiters);
    if (as_barrier(b)->arrived) return EBUSY;
    as_barrier(b)->magic = 0;
    return 0;
}
SHIM_EXPORT int pthread_barrier_wait(pthread_barrier_t* b) {
    SHIM_ENTER;
    if (as_barrier(b)->magic != kBarrierMagic) {
        if (!may_park()) return REAL(pthread_barrier_wait)(b);
        // glibc's (process-shared): a barrier has no owner, so a helper
        // thread waits in it for this greenlet while the others run.
        WaitScope what(g_barrier, reinterpret_cast<std::intptr_t>(b));
        int r = 0;
        greenshim::detail::current_hub().run_blocking([&] { r = REAL(pthread_barrier_wait)(b); });
        return r;
    }
    Barrier* x = as_barrier(b);
    WaitQueue::Guard held(x->waiters);
    if (++x->arrived == x->needed) {
        x->arrived = 0;
        ++x->generation;
        x->waiters.notify_all(held);
        return PTHREAD_BARRIER_SERIAL_THREAD;
    }
    unsigned gen = x->generation;
    while (gen == x->generation) {
        wait_in(x->waiters, held, g_barrier, b);
        held.lock();
    }
    return 0;
}

// ---- spinlocks: a holder may be parked, so a waiter yields instead of spinning ----
SHIM_EXPORT int pthread_spin_init(pthread_spinlock_t* l, int) {
    SHIM_ENTER;
    *l = 0;
    return 0;
}
SHIM_EXPORT int pthread_spin_destroy(pthread_spinlock_t*) { SHIM_ENTER; return 0; }
// The word: 0 free, 1 held, 2 held and a try found it taken. A spinner (or
// a thread that tries in a loop) yields its turn between tries; its holder,
// if it unlocks and relocks in a loop giving way only inside calls made
// holding the lock, would find it free at every turn of its own: so an
// unlock that finds a try was refused gives way.
SHIM_EXPORT int pthread_spin_trylock(pthread_spinlock_t* l) {
    SHIM_ENTER;
    int expected = 0;
    if (__atomic_compare_exchange_n(l, &expected, 1, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return 0;
    if (expected == 1) __atomic_compare_exchange_n(l, &expected, 2, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return EBUSY;
}
SHIM_EXPORT int pthread_spin_lock(pthread_spinlock_t* l) {
    SHIM_ENTER;
    if (pthread_spin_trylock(l) == 0) return 0;
    bool parks = may_park();
    while (pthread_spin_trylock(l) != 0) {
        if (parks) greenshim::detail::current_hub().yield();
        else __builtin_ia32_pause();
    }
    return 0;
}
SHIM_EXPORT int pthread_spin_unlock(pthread_spinlock_t* l) {
    SHIM_ENTER;
    if (__atomic_exchange_n(l, 0, __ATOMIC_RELEASE) == 2) give_way_to_woken(__builtin_return_address(0));
    return 0;
}

// ---- pthread_once: correct when the init routine itself blocks ----
namespace {
GREENSHIM_STARTUP_DATA WaitQueue g_once_waiters;  // (cold.hpp: its destructor reads it at every exit)
}
SHIM_EXPORT int pthread_once(pthread_once_t* once, void (*init)(void)) {
    SHIM_ENTER;
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
        // Looked at again under the Guard, which the init's end takes to
        // wake the waiters: it cannot end between the look and the wait.
        WaitQueue::Guard held(g_once_waiters);
        if (__atomic_load_n(once, __ATOMIC_ACQUIRE) == 1) wait_in(g_once_waiters, held, g_once, once);
    }
}

// ---- syscall(SYS_futex): private futex waits park greenlets ----
//
// libstdc++ (std::future, atomic wait, std::latch, std::counting_semaphore)
// waits through syscall(SYS_futex, ...), without the private flag on this
// system. FUTEX_WAIT/WAKE (and their BITSET forms) are emulated with a wait
// queue per address; every other futex operation goes to the kernel.
namespace {
// An address's waiters, and how many greenlets use the entry (waiting, or on
// their way in or out): it is dropped when none does.
//
// A lock built on a futex (Rust's std::sync::Mutex, a C library's own) is
// released before its waiter is woken, so its holder may take it again
// before the woken waiter runs: with OS threads the waiter soon gets in
// anyway, between two of the holder's turns, but a greenlet gives way only
// inside a call, and a holder that loops makes them all holding the lock:
// the waiter would never get in. So a waiter that comes back to wait on the
// word it was just woken from (it lost that race) marks the word starving,
// and the next wake of it gives way to the woken (futex_wake), as Go's
// sync.Mutex hands itself over once a waiter has starved.
struct FutexEntry {
    WaitQueue waiters;
    unsigned users = 0;
    bool starving = false;  // a waiter lost a race for it since its last wake
};
// The table, under its own spin lock: never one of the Guards' words, since
// a waiter takes its queue's Guard while it holds this (the order is always
// the table, then a Guard).
std::unordered_map<const void*, FutexEntry>* g_futex = nullptr;
SpinLock g_futex_lock;

// Set while this thread holds it: the table allocates under it, and an
// allocator that waits on a futex of its own through syscall() (gperftools'
// spin locks do) must not come back for the lock; its call goes to the kernel.
thread_local bool t_futex_table_held __attribute__((tls_model("initial-exec"))) = false;
// The word this thread's last futex wait was woken from (nullptr if it ended
// otherwise): a wait on it again means the waiter lost the race (FutexEntry).
thread_local const void* t_futex_woken_from __attribute__((tls_model("initial-exec"))) = nullptr;

struct FutexTableLock {
    FutexTableLock() noexcept {
        g_futex_lock.lock();
        t_futex_table_held = true;
    }
    ~FutexTableLock() {
        t_futex_table_held = false;
        g_futex_lock.unlock();
    }
    FutexTableLock(const FutexTableLock&) = delete;
    FutexTableLock& operator=(const FutexTableLock&) = delete;
};

// The waiter's entry, counted in use (nullptr if the word is not val).
FutexEntry* futex_enter(const std::uint32_t* addr, std::uint32_t val) {
    if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) != val) return nullptr;
    if (!g_futex) g_futex = new std::unordered_map<const void*, FutexEntry>();
    FutexEntry& e = (*g_futex)[addr];
    ++e.users;
    return &e;
}

void futex_leave(const void* addr, FutexEntry& e) {
    FutexTableLock table;
    if (--e.users == 0) g_futex->erase(addr);  // (nobody waits: users counts them)
}

// A shared (non-private) futex may be woken by another process through the
// kernel, which our queue never hears of: such a wait also rechecks the word
// every few milliseconds (a futex wait may return spuriously; callers loop).
// The word is compared under the table's lock, and the waiter queued under
// its queue's Guard taken before that lock is let go; a wake takes both: a
// wake made on another OS thread after the compare finds the waiter queued.
long futex_wait(const std::uint32_t* addr, std::uint32_t val, Deadline deadline, bool shared) {
    Deadline d = deadline;
    if (shared) {
        Deadline poll = deadline_after_ns(5000000);
        if (poll < d) d = poll;
    }
    bool lost_race = std::exchange(t_futex_woken_from, nullptr) == addr;
    FutexEntry* e;
    {
        FutexTableLock table;
        e = futex_enter(addr, val);
        if (e && lost_race) e->starving = true;
    }
    if (!e) {
        errno = EAGAIN;
        return -1;
    }
    int w;
    bool parked = false;
    {
        WaitQueue::Guard held(e->waiters);
        // Looked at again under the Guard (a wake takes it): a change made
        // between the table's lock and here is seen.
        if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) != val) {
            w = 0;
        } else {
            w = wait_in(e->waiters, held, g_futex_wait, addr, d, Interruptible::unless_restart);
            parked = true;
        }
    }
    futex_leave(addr, *e);
    if (parked && w == 0) t_futex_woken_from = addr;
    if (w == -ETIMEDOUT && monotonic_ns() < deadline) return 0;  // the recheck: a spurious wakeup
    if (w == -ETIMEDOUT || w == -EINTR) {
        errno = -w;
        return -1;
    }
    return 0;
}

long futex_wake(const std::uint32_t* addr, int n) {
    long woken = 0;
    bool give_way = false;
    {
        FutexTableLock table;
        if (!g_futex) return 0;
        auto it = g_futex->find(addr);
        if (it == g_futex->end()) return 0;
        FutexEntry& e = it->second;
        WaitQueue::Guard held(e.waiters);
        while (woken < n && e.waiters.wake_one(held)) ++woken;
        give_way = woken > 0 && std::exchange(e.starving, false);
    }
    if (give_way) give_way_to_woken();
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

GREENSHIM_STARTUP_CODE void greenshim::shim::sync_init() noexcept { Hub::set_share_check(may_share); }

void greenshim::shim::sync_after_fork_child() noexcept {
    g_futex_lock.reset();
    t_futex_table_held = false;
}

// Reads all six arguments a syscall can take, as libc's own syscall() does
// (in assembly): a caller passing fewer leaves the sixth to be read from its
// stack frame, mapped and harmless, its value unused by the kernel. ASan
// flags that read of the caller's frame (stack-buffer-underflow), a false
// positive for this one function, hence no ASan instrumentation here.
SHIM_EXPORT __attribute__((no_sanitize("address"))) long syscall(long number, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    // A word the kernel cannot use (NULL, misaligned) is its error to report, at once.
    bool usable = a1 && a1 % alignof(std::uint32_t) == 0;
    // (An allocator's own futex words are waited on and woken only by its
    // code: in the kernel, so that it never parks holding its lock.)
    if (number == SYS_futex && usable && !t_futex_table_held && may_park() && emulated_futex(int(a2)) &&
        !from_allocator(__builtin_return_address(0)))
        return do_futex(reinterpret_cast<std::uint32_t*>(a1), int(a2), std::uint32_t(a3),
                        reinterpret_cast<const struct timespec*>(a4), std::uint32_t(a6));
    // A raw close or close_range leaves the shim's own fds too (is_own_fd).
    if (number == SYS_close && is_own_fd(int(a1))) return close_fd(int(a1));  // (not a cancellation point)
    if (number == SYS_close_range) return close_range(unsigned(a1), unsigned(a2), int(a3));
    return REAL(syscall)(number, a1, a2, a3, a4, a5, a6);
}
