// The helper pool (gevent's threadpool): OS threads that run libc calls
// which would block the thread and have no readiness to wait for (DNS
// lookups, slow files), while the greenlet that asked parks. Finished jobs
// come back through the hub's async watcher (async.cpp).
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>

#include "internal.hpp"
#include "os_sync.hpp"

namespace greenshim {

using detail::PoolJob;
using detail::t_internal;

namespace {

// Process-wide pool of threads, created on demand (one per call in flight,
// up to kMaxThreads) and ended after kHelperIdleSeconds without work (short,
// so that a program that made one lookup goes back to one OS thread soon;
// starting a thread again costs ~30 us). They only
// ever run libc calls handed to them (never greenlets, never program code).
// Sized so that a burst of slow lookups (100 DNS queries to a slow server)
// runs side by side rather than in batches.
struct Pool {
    detail::OsMutex mu;
    detail::OsCondition cv;
    std::deque<PoolJob*> queue;
    unsigned threads = 0;
    unsigned idle = 0;
    static constexpr unsigned kMaxThreads = 128;
};

// Under the pool's mu.
void count_helpers(int delta) {
    auto& c = detail::g_counters;
    std::uint64_t n = c.helpers.load(std::memory_order_relaxed) + std::uint64_t(std::int64_t(delta));
    c.helpers.store(n, std::memory_order_relaxed);
    if (n > c.peak_helpers.load(std::memory_order_relaxed)) c.peak_helpers.store(n, std::memory_order_relaxed);
}
std::atomic<Pool*> g_pool{nullptr};

// The pool, made by whichever hub asks first (two may at once: one keeps its
// own). Not a function-local static: the guard of one, taken by a thread of
// the parent's just as another thread forked, stayed taken in the child,
// whose first pool call then waited for it forever (a process-shared
// barrier's wait in a fork child under two hubs: tests/threads
// shared-sync-patched, about 1 run in 10).
Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (__builtin_expect(p != nullptr, 1)) return *p;
    auto* made = new Pool;
    if (g_pool.compare_exchange_strong(p, made, std::memory_order_acq_rel)) return *made;
    delete made;
    return *p;
}

void* pool_main(void*) {
    t_internal = 1;  // for life: every libc call here goes straight to libc
    detail::OwnThread own;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are for the program's thread
    Pool& pl = pool();
    for (;;) {
        PoolJob* j;
        {
            std::unique_lock<detail::OsMutex> lk(pl.mu);
            ++pl.idle;
            bool work = pl.cv.wait_for_seconds(lk, detail::kHelperIdleSeconds, [&pl] { return !pl.queue.empty(); });
            --pl.idle;
            if (!work) {
                --pl.threads;
                count_helpers(-1);
                return nullptr;
            }
            j = pl.queue.front();
            pl.queue.pop_front();
            detail::bump(detail::g_counters.helper_jobs);
        }
        j->fn();
        detail::post_done(*j->hub, j);
    }
    return nullptr;
}

void pool_submit(PoolJob* j) {
    InternalScope internal;
    Pool& pl = pool();
    std::unique_lock<detail::OsMutex> lk(pl.mu);
    pl.queue.push_back(j);
    if (pl.queue.size() > pl.idle && pl.threads < Pool::kMaxThreads) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, pool_main, nullptr) == 0) {
            ++pl.threads;
            count_helpers(+1);
        }
        pthread_attr_destroy(&attr);
    }
    lk.unlock();
    pl.cv.notify_one();
}

}  // namespace

Wake Hub::run_blocking(std::function<void()> fn) {
    PoolJob j{std::move(fn), this, &detail::current_greenlet()};
    if (in_hub()) {  // no greenlet to park: run it here
        j.fn();
        return Wake::event;
    }
    j.submitted = true;
    pool_submit(&j);
    ++pool_waiters_;  // (counted down by the hub that sets j.done: on_async)
    // fn uses our stack: wait for it whatever wakes us. The wake that says
    // it is done may move us to another hub (share_ready): after it, only
    // the stack is touched, `this` no more.
    while (!j.done) park(kForever);
    return Wake::event;
}

namespace detail {
void PoolJob::in_flight_abandoned() noexcept {
    static const char msg[] =
        "greenshim: internal error: a greenlet's frame ended while a helper thread still used it\n";
    write_fully(2, msg, sizeof msg - 1);
    std::abort();
}

void pool_after_fork_child() noexcept {
    // The pool's threads did not come along; their lock may have.
    if (g_pool.load(std::memory_order_relaxed))  // the old one is the parent's copy: leave it
        g_pool.store(new (std::nothrow) Pool, std::memory_order_relaxed);  // (none: made at the first call)
    g_counters.helpers.store(0, std::memory_order_relaxed);
}
}  // namespace detail

}  // namespace greenshim
