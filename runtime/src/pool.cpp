// The helper pool (gevent's threadpool): OS threads that run libc calls
// which would block the thread and have no readiness to wait for (DNS
// lookups, slow files), while the greenlet that asked parks. Finished jobs
// come back through the hub's async watcher (async.cpp).
#include <pthread.h>
#include <signal.h>

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

// Under g_pool->mu.
void count_helpers(int delta) {
    auto& c = detail::g_counters;
    std::uint64_t n = c.helpers.load(std::memory_order_relaxed) + std::uint64_t(std::int64_t(delta));
    c.helpers.store(n, std::memory_order_relaxed);
    if (n > c.peak_helpers.load(std::memory_order_relaxed)) c.peak_helpers.store(n, std::memory_order_relaxed);
}
Pool* g_pool = nullptr;

void* pool_main(void*) {
    t_internal = 1;  // for life: every libc call here goes straight to libc
    detail::OwnThread own;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are for the program's thread
    for (;;) {
        PoolJob* j;
        {
            std::unique_lock<detail::OsMutex> lk(g_pool->mu);
            ++g_pool->idle;
            bool work = g_pool->cv.wait_for_seconds(lk, detail::kHelperIdleSeconds,
                                                    [] { return !g_pool->queue.empty(); });
            --g_pool->idle;
            if (!work) {
                --g_pool->threads;
                count_helpers(-1);
                return nullptr;
            }
            j = g_pool->queue.front();
            g_pool->queue.pop_front();
            detail::bump(detail::g_counters.helper_jobs);
        }
        j->fn();
        detail::post_done(*j->hub, j);
    }
    return nullptr;
}

void pool_submit(PoolJob* j) {
    InternalScope internal;
    if (!g_pool) {
        // Made once, whichever hub asks first (two may at once).
        static Pool* const first = new Pool;
        if (!g_pool) g_pool = first;
    }
    std::unique_lock<detail::OsMutex> lk(g_pool->mu);
    g_pool->queue.push_back(j);
    if (g_pool->queue.size() > g_pool->idle && g_pool->threads < Pool::kMaxThreads) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, pool_main, nullptr) == 0) {
            ++g_pool->threads;
            count_helpers(+1);
        }
        pthread_attr_destroy(&attr);
    }
    lk.unlock();
    g_pool->cv.notify_one();
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
    if (g_pool) g_pool = new (std::nothrow) Pool;  // the old one is the parent's copy: leave it
    g_counters.helpers.store(0, std::memory_order_relaxed);
}
}  // namespace detail

}  // namespace greenshim
