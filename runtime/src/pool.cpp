// The hub's ways in from outside its greenlets: a pool of helper OS threads
// for calls that would block the thread (run_blocking), and wakeups from
// signal handlers (notify_signal). Both arrive through one ev_async watcher.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>

#include "internal.hpp"

namespace greenshim {

namespace detail {
thread_local int t_internal GREENSHIM_TLS = 0;
}  // namespace detail

using detail::t_internal;

InternalScope::InternalScope() noexcept { ++t_internal; }
InternalScope::~InternalScope() { --t_internal; }
bool runtime_internal() noexcept { return t_internal != 0; }

InterruptScope::InterruptScope(Interruptible mode) noexcept {
    Greenlet::Impl& im = Greenlet::current().impl();
    saved_ = im.interruptible;
    im.interruptible = mode;
}
InterruptScope::~InterruptScope() { Greenlet::current().impl().interruptible = saved_; }

Interruptible Hub::interruptible(Greenlet& g) noexcept { return g.impl().interruptible; }

namespace {

struct Job {
    std::function<void()> fn;
    Hub* hub;
    Greenlet* waiter;
    bool done = false;  // set by the hub, under its async lock
};

// Process-wide pool of threads, created on demand (one per call in flight,
// up to kMaxThreads) and ended after kIdleSeconds without work. They only
// ever run libc calls handed to them (never greenlets, never program code).
// Sized so that a burst of slow lookups (100 DNS queries to a slow server)
// runs side by side rather than in batches.
struct Pool {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job*> queue;
    unsigned threads = 0;
    unsigned idle = 0;
    static constexpr unsigned kMaxThreads = 128;
    static constexpr int kIdleSeconds = 10;
};
Pool* g_pool = nullptr;
std::atomic<void (*)(Hub&)> g_signal_cb{nullptr};
std::atomic<bool> g_signals_can_wake{false};
}  // namespace
// Counts signals notified so far: a park remembers the count it started at, and
// only a signal that came later interrupts it (as a signal delivered before a
// blocking call does not interrupt that call).
std::atomic<std::uint64_t> g_signal_generation{0};
namespace {
std::atomic<Hub*> g_process_hub{nullptr};

void* pool_main(void* arg);

void pool_submit(Job* j) {
    InternalScope internal;
    if (!g_pool) g_pool = new Pool;
    std::unique_lock<std::mutex> lk(g_pool->mu);
    g_pool->queue.push_back(j);
    if (g_pool->queue.size() > g_pool->idle && g_pool->threads < Pool::kMaxThreads) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, pool_main, nullptr) == 0) ++g_pool->threads;
        pthread_attr_destroy(&attr);
    }
    lk.unlock();
    g_pool->cv.notify_one();
}

}  // namespace

struct Hub::Async {
    ev_async watcher;
    std::mutex mu;                      // guards done
    std::vector<Job*> done;
    std::atomic<int> signal_pending{0};

    static void on_async(struct ev_loop* loop, ev_async*, int) {
        Hub* hub = static_cast<Hub*>(ev_userdata(loop));
        Async* a = hub->async_;
        std::vector<Job*> finished;
        {
            InternalScope internal;
            std::lock_guard<std::mutex> lk(a->mu);
            finished.swap(a->done);
        }
        for (Job* j : finished) {
            j->done = true;
            hub->schedule(*j->waiter, Wake::event);
        }
        if (a->signal_pending.exchange(0)) {
            if (auto cb = g_signal_cb.load()) cb(*hub);
        }
    }
};

namespace {
void* pool_main(void*) {
    t_internal = 1;  // for life: every libc call here goes straight to libc
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are for the program's thread
    for (;;) {
        Job* j;
        {
            std::unique_lock<std::mutex> lk(g_pool->mu);
            ++g_pool->idle;
            bool work = g_pool->cv.wait_for(lk, std::chrono::seconds(Pool::kIdleSeconds),
                                            [] { return !g_pool->queue.empty(); });
            --g_pool->idle;
            if (!work) {
                --g_pool->threads;
                return nullptr;
            }
            j = g_pool->queue.front();
            g_pool->queue.pop_front();
        }
        j->fn();
        Hub* hub = j->hub;
        {
            std::lock_guard<std::mutex> lk(hub->async_for_pool().mu);
            hub->async_for_pool().done.push_back(j);
        }
        ev_async_send(hub->loop(), &hub->async_for_pool().watcher);
    }
    return nullptr;
}
}  // namespace

void Hub::start_async() {
    InternalScope internal;
    async_ = new Async;
    ev_async_init(&async_->watcher, Async::on_async);
    ev_async_start(loop_, &async_->watcher);
    Hub* none = nullptr;
    g_process_hub.compare_exchange_strong(none, this);
}

void Hub::stop_async() noexcept {
    if (!async_) return;
    ev_async_stop(loop_, &async_->watcher);
    delete async_;
    async_ = nullptr;
    Hub* me = this;
    g_process_hub.compare_exchange_strong(me, nullptr);
}

Wake Hub::run_blocking(std::function<void()> fn) {
    Job j{std::move(fn), this, &Greenlet::current()};
    if (in_hub()) {  // no greenlet to park: run it here
        j.fn();
        return Wake::event;
    }
    pool_submit(&j);
    ++pool_waiters_;
    while (!j.done) park(kForever);  // fn uses our stack: wait for it whatever wakes us
    --pool_waiters_;
    return Wake::event;
}

void Hub::notify_signal() noexcept {
    g_signal_generation.fetch_add(1);
    if (!async_) return;
    async_->signal_pending.store(1);
    ev_async_send(loop_, &async_->watcher);
}

bool Hub::interrupt_for_signal(bool restart) {
    std::uint64_t now = g_signal_generation.load();
    auto wakeable = [restart, now](Greenlet& g) {
        if (g.state() != GreenletState::parked || g.impl().signal_generation >= now) return false;
        Interruptible m = g.impl().interruptible;
        return m == Interruptible::always || (m == Interruptible::unless_restart && !restart);
    };
    // Linux gives a process-directed signal to the main thread when it does
    // not block it; all greenlets share that thread's mask, so the main
    // greenlet is the one (a restarted call of its stays asleep). Only once
    // main is gone (a child forked from another greenlet) does another get it.
    if (!main_->dead()) {
        if (!wakeable(*main_)) return false;
        schedule(*main_, Wake::interrupted);
        return true;
    }
    for (Greenlet* g = detail::ts().live_head; g; g = g->impl().live_next) {
        if (g != hub_greenlet_.get() && wakeable(*g)) {
            schedule(*g, Wake::interrupted);
            return true;
        }
    }
    return false;
}

Hub* Hub::process_hub() noexcept { return g_process_hub.load(); }

void Hub::set_signal_callback(void (*cb)(Hub&)) noexcept { g_signal_cb.store(cb); }
void Hub::set_signals_can_wake(bool yes) noexcept { g_signals_can_wake.store(yes); }
bool Hub::signals_can_wake() noexcept { return g_signals_can_wake.load(std::memory_order_relaxed); }

void pool_after_fork_child() noexcept {
    // The pool's threads did not come along; their lock may have.
    if (g_pool) g_pool = new (std::nothrow) Pool;  // the old one is the parent's copy: leave it
}

void async_after_fork_child(Hub::Async* a) noexcept {
    if (!a) return;
    // A pool thread may have held `mu` at the fork; the jobs it reports
    // belong to greenlets the child does not have.
    new (&a->mu) std::mutex;
    new (&a->done) std::vector<Job*>();  // the old one may be mid-update: leak it
    a->signal_pending.store(0);
}

}  // namespace greenshim
