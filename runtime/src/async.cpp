// The hub's one way in from outside its greenlets: an ev_async watcher that
// any thread, or a signal handler, may poke. Two things arrive through it:
// helper-pool jobs that finished (pool.cpp) and notify_signal(). What a
// signal means for a parked greenlet (interrupt_one) is decided by the
// caller's InterruptMask bits; the runtime only matches them.
#include <atomic>
#include <mutex>
#include <new>
#include <vector>

#include "internal.hpp"
#include "os_sync.hpp"

namespace greenshim {

using detail::PoolJob;
using detail::Runtime;

namespace {
std::atomic<void (*)(Hub&)> g_signal_cb{nullptr};
std::atomic<bool> g_signals_can_wake{false};
std::atomic<Hub*> g_process_hub{nullptr};
}  // namespace

// Counts signals notified so far: a park remembers the count it started at, and
// only a signal that came later interrupts it (as a signal delivered before a
// blocking call does not interrupt that call).
std::atomic<std::uint64_t> g_signal_generation{0};

struct Hub::Async {
    ev_async watcher;
    detail::OsMutex mu;             // guards done and returned
    std::vector<PoolJob*> done;     // finished by pool threads, not yet seen
    std::vector<Greenlet*> returned;  // given back by carriers (carrier.cpp), not yet queued
    std::vector<int> closed_fds;      // closed by other hubs' threads (post_closed_fd), not yet seen
    std::atomic<bool> closed_pending{false};  // closed_fds is not empty (read without mu: drain_closed_fds)
    // Claimed ready by other threads (post_woken), not yet queued: a stack
    // linked through Impl::next_ready (free while a greenlet is in no run
    // queue), pushed with a compare-and-swap. No lock and no allocation: a
    // waker may hold a WaitQueue Guard, and malloc there could need a lock
    // whose Guard is that very stripe.
    std::atomic<Greenlet*> woken{nullptr};
    std::atomic<int> signal_pending{0};

    static void on_async(struct ev_loop* loop, ev_async*, int) {
        Hub* hub = static_cast<Hub*>(ev_userdata(loop));
        Async* a = hub->async_;
        std::vector<PoolJob*> finished;
        std::vector<Greenlet*> back;
        {
            InternalScope internal;
            std::lock_guard<detail::OsMutex> lk(a->mu);
            finished.swap(a->done);
            back.swap(a->returned);
        }
        // Before the loop's next pass, which may re-add every armed fd.
        hub->drain_closed_fds();
        if (Greenlet* stack = a->woken.exchange(nullptr, std::memory_order_acquire)) {
            // Not idle any more before the wakes stop counting as in flight:
            // another hub never sees both gone (idle_begin).
            detail::idle_end(hub);
            Greenlet* fifo = nullptr;  // (pushed last first: reversed, they run in wake order)
            while (stack) {
                Greenlet* next = detail::impl_of(*stack).next_ready;
                detail::impl_of(*stack).next_ready = fifo;
                fifo = stack;
                stack = next;
            }
            long n = 0;
            while (fifo) {
                Greenlet* next = detail::impl_of(*fifo).next_ready;
                detail::impl_of(*fifo).next_ready = nullptr;
                hub->take_woken(*fifo);
                fifo = next;
                ++n;
            }
            detail::g_wakes_in_flight.fetch_sub(n);
        }
        for (PoolJob* j : finished) {
            j->done = true;
            --hub->pool_waiters_;
            // Its waiter, woken by this, returns from run_blocking at once:
            // once ready, nothing of this hub's is on its stack (no timer, no
            // fd), so it may be given to an idle hub (share_ready).
            if (hub->wake_parked(*j->waiter, Wake::event)) detail::impl_of(*j->waiter).movable = true;
        }
        for (Greenlet* g : back) hub->came_back(*g);
        if (a->signal_pending.exchange(0)) {
            if (auto cb = g_signal_cb.load()) cb(*hub);
        }
    }
};

namespace detail {
namespace {
// ev_async_send writes the hub's eventfd when that hub sleeps in its poll:
// libev's write() is the shim's, which may yield (its cooperative budget),
// and a send is made in signal handlers, under queue Guards and in hubs.
// Straight to libc instead.
void send(Hub& hub, ev_async& w) noexcept {
    InternalScope internal;
    ev_async_send(hub.loop(), &w);
}
}  // namespace

void post_done(Hub& hub, PoolJob* j) {
    Hub::Async& a = Runtime::async(hub);
    {
        std::lock_guard<detail::OsMutex> lk(a.mu);
        a.done.push_back(j);
    }
    send(hub, a.watcher);
}

std::atomic<long> g_wakes_in_flight{0};

void post_woken(Hub& hub, Greenlet& g) {
    Hub::Async& a = Runtime::async(hub);
    g_wakes_in_flight.fetch_add(1);
    Greenlet::Impl& im = impl_of(g);
    Greenlet* head = a.woken.load(std::memory_order_relaxed);
    do im.next_ready = head;
    while (!a.woken.compare_exchange_weak(head, &g, std::memory_order_release, std::memory_order_relaxed));
    send(hub, a.watcher);
}

void post_closed_fd(Hub& hub, int fd) noexcept {
    Hub::Async& a = Runtime::async(hub);
    try {
        std::lock_guard<detail::OsMutex> lk(a.mu);
        a.closed_fds.push_back(fd);
        a.closed_pending.store(true, std::memory_order_release);
    } catch (...) {
        return;  // (no memory: hub's watcher is found stale at its next wait on the number, fd_watch)
    }
    send(hub, a.watcher);
}

void set_process_hub(Hub* h) noexcept { g_process_hub.store(h); }

// Makes hub look at its state again (an idle hub rechecks for a deadlock).
void poke(Hub& hub) noexcept { send(hub, Runtime::async(hub).watcher); }

void post_came_back(Hub& hub, Greenlet* g) {
    Hub::Async& a = Runtime::async(hub);
    {
        std::lock_guard<detail::OsMutex> lk(a.mu);
        a.returned.push_back(g);
    }
    send(hub, a.watcher);
}

void async_after_fork_child(Hub::Async* a) noexcept {
    if (!a) return;
    // A pool thread may have held `mu` at the fork; the jobs it reports
    // belong to greenlets the child does not have.
    a->mu.reset();
    new (&a->done) std::vector<PoolJob*>();  // the old one may be mid-update: leak it
    new (&a->returned) std::vector<Greenlet*>();
    new (&a->closed_fds) std::vector<int>();  // (a stale watcher is still found at its next wait: fd_watch)
    a->closed_pending.store(false);
    a->woken.store(nullptr);
    g_wakes_in_flight.store(0);
    a->signal_pending.store(0);
}
}  // namespace detail

// What post_closed_fd told this hub, done now (fd_closed_elsewhere), on its
// thread; true if it was told of any, a load when it was not. Run from its
// async watcher and before each run of its loop (run_loop): libev adds an
// armed watcher's fd to its epoll set at the start of a run, before any
// callback, and aborts on a closed one (EBADF). A watcher armed since the
// last run, its fd closed meanwhile on another thread (a wait whose deadline
// had passed returns without a run, its watcher left armed), must go before
// then. (A close told between this and that start still finds the watcher
// there: a window of a few instructions, where it was a whole pass.)
bool Hub::drain_closed_fds() noexcept {
    Async* a = async_;
    if (!a || !a->closed_pending.load(std::memory_order_acquire)) return false;
    InternalScope internal;  // (the vector's memory is the runtime's, taken and given back as such)
    std::vector<int> closed;
    {
        std::lock_guard<detail::OsMutex> lk(a->mu);
        closed.swap(a->closed_fds);
        a->closed_pending.store(false, std::memory_order_relaxed);
    }
    for (int fd : closed) fd_closed_elsewhere(fd);
    return true;
}

void Hub::start_async() {
    InternalScope internal;
    async_ = new Async;
    ev_async_init(&async_->watcher, Async::on_async);
    detail::LoopFdsScope making;  // (libev's eventfd)
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

void Hub::notify_signal() noexcept {
    g_signal_generation.fetch_add(1);
    if (!async_) return;
    async_->signal_pending.store(1);
    detail::send(*this, async_->watcher);
}

bool Hub::interrupt_one(InterruptMask kinds) {
    std::uint64_t now = g_signal_generation.load();
    auto accepts = [kinds, now](Greenlet& g) {
        Greenlet::Impl& im = detail::impl_of(g);
        return g.state() == GreenletState::parked && im.signal_generation < now && (im.interrupt_mask & kinds) != 0;
    };
    if (!main_->dead()) {
        if (!accepts(*main_)) return false;
        schedule(*main_, Wake::interrupted);
        return true;
    }
    for (Greenlet* g = detail::ts().live_head; g; g = detail::impl_of(*g).live_next) {
        if (g != hub_greenlet_.get() && accepts(*g)) {
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

}  // namespace greenshim
