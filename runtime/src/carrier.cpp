// Carriers: spare OS threads that run a greenlet the hub handed off
// (Hub::hand_off_running), so that a greenlet that computes, spins or sits in
// a raw system call goes on in parallel while its hub runs the others. Go's
// sysmon gives a stuck M's P to another M; here the stuck greenlet moves and
// the hub stays on its own OS thread, with its loop, its timers and the
// thread's identity, so nothing of the hub's is ever touched by two threads.
// The OS thread's main greenlet, which shares the OS thread's own block with
// the hub, takes that block along, the hub going on with a stand-in
// (main_leaves in greenlet.cpp) until it runs main again.
//
// The life of a hand-off:
//  1. hub thread, in a signal handler on the running greenlet G's stack
//     (hand_off_running): a carrier is reserved, G is counted away and the
//     hub greenlet is switched to (G's context is saved by that switch);
//  2. hub thread, in the hub greenlet (dispatch_hand_off, right after the
//     switch returned in Hub::run): the carrier is given G (started first if
//     it is new) and the hub goes on;
//  3. carrier: G's block is lent the carrier's tid and malloc tcache and its
//     t_state points at the carrier's ThreadState, so the runtime's
//     thread-locals as seen from G are the carrier's; then it switches to G,
//     which returns from hand_off_running on the carrier;
//  4. carrier, when G calls come_back(): the switch lands back in the
//     carrier's loop, which restores G's block and posts G to its hub's async
//     watcher; the hub puts G in its run queue (Hub::came_back).
// Only G's own code runs on the carrier: the embedder brings G back before
// any of its own code or the runtime's runs for G (the shim: at every
// interposer's entry and at the end of a thread's start routine).
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <vector>

#include "greenshim/cold.hpp"
#include "internal.hpp"
#include "os_sync.hpp"

namespace greenshim {

using detail::Runtime;
using detail::ThreadState;
using detail::ThreadTls;

namespace {

struct Carrier {
    detail::OsCondition cv;
    Greenlet* job = nullptr;  // under the registry's lock
    Hub* from = nullptr;
    bool started = false;     // its OS thread exists (set by the hub that starts it)
    bool busy = false;        // under the registry's lock: reserved or carrying
    bool for_blocked = false; // under the registry's lock: busy for a greenlet blocked in a system call
    void* slot = nullptr;     // the embedder's (CarrierHooks)
};

// Process-wide, under one lock held for a few loads and stores; it may be
// taken in hand_off_running's signal handler, which runs only where the
// hub's thread holds nothing of the runtime's.
//
// Two budgets. At most `max` carriers carry greenlets that compute (the
// spares: as many as there are CPUs besides the hubs'). A greenlet caught
// blocked in a system call (in libc, or a raw one) uses no CPU: it gets a
// carrier beyond those, up to kBlockedCarriers more, as an OS thread of its
// own would wait in the kernel; else every greenlet of a hub could end up
// waiting behind one blocked there (four threads each fwrite to a full
// pipe whose reader is on their hub, with one spare: all four hung).
//
// `staged`: a greenlet a hub took from its run queue for the next carrier
// that comes free (Hub::hand_off_ready, when every carrier is busy). A
// carrier's tick sees it (carrier_awaited) and gives back the greenlet it
// carries to take the staged one at once: the threads that compute take
// turns on the carriers without a carrier waiting for the hub, which may be
// busy running one of them itself.
struct Registry {
    detail::OsMutex mu;
    std::vector<Carrier*> all;
    unsigned max = 0;
    Hub::CarrierHooks hooks;
    Greenlet* staged = nullptr;
    Hub* staged_from = nullptr;
    unsigned all_max() const noexcept { return max ? max + detail::kBlockedCarriers : 0; }
};
Registry* g_registry = nullptr;
Registry* volatile g_parents_registry = nullptr;  // (carriers_after_fork_child; volatile: a store nothing reads is kept)
// Carriers reserved or carrying greenlets that compute, not blocked ones
// (changed under the lock; a hint read without it).
std::atomic<unsigned> g_busy{0};
std::atomic<bool> g_staged_hint{false};  // staged != nullptr

// c's greenlet came back (or never went): c is free, under the lock.
void release(Carrier& c) noexcept {
    c.busy = false;
    if (!std::exchange(c.for_blocked, false)) g_busy.fetch_sub(1, std::memory_order_relaxed);
}

void carry(ThreadState& t, Carrier& c, Greenlet& g, Hub& from) {
    Greenlet::Impl& gi = detail::impl_of(g);
    ThreadTls::Lent lent;
    ThreadTls::lend(gi.tls, lent);
    ThreadState*& its_state = ThreadTls::in(gi.tls, detail::t_state);
    ThreadState* home = its_state;
    its_state = &t;
    t.carrying_for = &from;
    if (g_registry->hooks.start) g_registry->hooks.start(&c.slot);
    Runtime::jump(g);  // back when g calls come_back()
    if (g_registry->hooks.stop) g_registry->hooks.stop(&c.slot);
    t.carrying_for = nullptr;
    its_state = home;
    ThreadTls::give_back(gi.tls, lent);
}

void* carrier_main(void* arg) {
    auto* c = static_cast<Carrier*>(arg);
    detail::t_internal = 1;  // its own code's libc calls go straight to libc
    detail::OwnThread own;
    ThreadState& t = detail::ts();
    Registry& r = *g_registry;
    Greenlet* g = nullptr;
    Hub* from = nullptr;
    for (;;) {
        {
            std::unique_lock<detail::OsMutex> lk(r.mu);
            if (g) {  // the one it carried came back: a staged one next, if any
                // (One that was blocked leaves room for a staged one only
                // within the budget of those that compute.)
                if (r.staged && (!c->for_blocked || g_busy.load(std::memory_order_relaxed) < r.max)) {
                    c->job = std::exchange(r.staged, nullptr);
                    c->from = r.staged_from;
                    g_staged_hint.store(false, std::memory_order_relaxed);
                    if (std::exchange(c->for_blocked, false)) g_busy.fetch_add(1, std::memory_order_relaxed);
                } else {
                    release(*c);
                }
            }
            // Idle for kHelperIdleSeconds (not reserved meanwhile): it ends,
            // so the process goes back to its own threads when nothing
            // computes any more.
            while (!c->job) {
                if (!c->cv.wait_ns(lk, std::int64_t(detail::kHelperIdleSeconds) * 1000000000) && !c->job &&
                    !c->busy) {
                    std::erase(r.all, c);
                    lk.unlock();
                    if (r.hooks.retire) r.hooks.retire(&c->slot);
                    delete c;
                    return nullptr;
                }
            }
            g = std::exchange(c->job, nullptr);
            from = c->from;
        }
        carry(t, *c, *g, *from);
        detail::post_came_back(*from, g);  // (the hub may run it at once: only the pointer is kept)
    }
    return nullptr;
}

bool start(Carrier& c) noexcept {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 128 * 1024);  // its loop only: greenlets run on their own stacks
    sigset_t all, old;
    sigfillset(&all);
    // But the faults: a carried thread's own (a stack overflow, a bad
    // pointer) must reach their handlers (the shim's overflow report was lost
    // for a recursion carried past GREENSHIM_HANDOFF).
    let_faults_through(all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  // a new thread inherits it: signals are the program's threads'
    pthread_t th;
    bool ok = pthread_create(&th, &attr, carrier_main, &c) == 0;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_attr_destroy(&attr);
    if (ok) {
        c.started = true;
        detail::bump(detail::g_counters.carriers);
    }
    return ok;
}

}  // namespace

namespace detail {

void* carrier_reserve(bool blocked) noexcept {
    Registry* r = g_registry;
    if (!r || r->max == 0) return nullptr;
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(r->mu);
    if (!blocked && g_busy.load(std::memory_order_relaxed) >= r->max) return nullptr;
    auto take = [blocked](Carrier* c) {
        c->busy = true;
        c->for_blocked = blocked;
        if (!blocked) g_busy.fetch_add(1, std::memory_order_relaxed);
        return c;
    };
    for (Carrier* c : r->all)
        if (!c->busy) return take(c);
    if (r->all.size() >= r->all_max()) return nullptr;
    auto* c = new (std::nothrow) Carrier;
    if (!c) return nullptr;
    try {
        r->all.push_back(c);
    } catch (...) {
        delete c;
        return nullptr;
    }
    return take(c);
}

bool carrier_may_be_had() noexcept {
    Registry* r = g_registry;
    return r && g_busy.load(std::memory_order_relaxed) < r->max;
}

bool carrier_give(void* carrier, Greenlet* g, Hub* from) noexcept {
    auto* c = static_cast<Carrier*>(carrier);
    InternalScope internal;
    std::unique_lock<detail::OsMutex> lk(g_registry->mu);
    if (!c->started && !start(*c)) {
        release(*c);
        return false;
    }
    c->job = g;
    c->from = from;
    lk.unlock();
    c->cv.notify_one();
    return true;
}

bool carrier_stage(Greenlet* g, Hub* from) noexcept {
    Registry* r = g_registry;
    if (!r || r->max == 0) return false;
    InternalScope internal;
    std::lock_guard<detail::OsMutex> lk(r->mu);
    if (r->staged) return false;
    r->staged = g;
    r->staged_from = from;
    g_staged_hint.store(true, std::memory_order_relaxed);
    return true;
}

bool carrier_staged() noexcept { return g_staged_hint.load(std::memory_order_relaxed); }

void carriers_after_fork_child() noexcept {
    // The carriers did not come along, and their lock may have.
    if (!g_registry) return;
    auto* r = new (std::nothrow) Registry;
    if (!r) return;
    r->max = g_registry->max;
    r->hooks = g_registry->hooks;
    // The old one is the parent's copy (its lock may be held, its carriers'
    // condition variables mid-use): left as it is, and still pointed to (not
    // a leak to a leak checker).
    g_parents_registry = g_registry;
    g_registry = r;
    g_busy.store(0, std::memory_order_relaxed);
    g_staged_hint.store(false, std::memory_order_relaxed);
    g_counters.carriers.store(0, std::memory_order_relaxed);
}

}  // namespace detail

GREENSHIM_STARTUP_CODE void Hub::set_carriers(unsigned max, CarrierHooks hooks) noexcept {
    // The first registry in static storage: this runs in the preload's
    // constructor, in every process, where an allocation would fault in the
    // code of operator new and malloc's for this alone. (A fork child's is
    // allocated: carriers_after_fork_child.)
    alignas(Registry) static unsigned char first[sizeof(Registry)];
    if (!g_registry) g_registry = new (first) Registry;
    g_registry->max = max;
    g_registry->hooks = hooks;
}

bool Hub::hand_off_running(bool blocked) noexcept {
    if (!can_preempt()) return false;
    ThreadState& t = *detail::t_state;
    Greenlet& g = *t.current;
    Greenlet::Impl& gi = detail::impl_of(g);
    if (g.is_main() ? !t.stand_in || worker_ || &g != t.main.get() : !gi.tls) return false;
    void* c = detail::carrier_reserve(blocked);
    if (!c) return false;
    if (!gi.tls) detail::main_leaves(t, gi);  // (main: it takes the OS thread's block along)
    ++away_;
    detail::bump(hand_offs_);
    hand_off_g_ = &g;
    hand_off_to_ = c;
    detail::bump(switches_);
    running_.store(hub_greenlet_.get(), std::memory_order_relaxed);
    Runtime::jump(*hub_greenlet_);  // returns on the carrier
    return true;
}

bool Hub::let_main_be_handed_off() noexcept {
    ThreadState* t = detail::t_state;
    if (!t || t->hub != this || worker_) return false;
    if (t->stand_in) return true;
    // The shared errno and exception globals move with the block
    // (main_leaves): only those at the same place in every block.
    ThreadTls* own = t->os_tls;
    if (!ThreadTls::own_tls_found() || !ThreadTls::in_static_tls(own, t->errno_at) ||
        !ThreadTls::in_static_tls(own, t->eh_ours) || (t->eh_program && !ThreadTls::in_static_tls(own, t->eh_program)))
        return false;
    InternalScope internal;
    t->stand_in = ThreadTls::create();
    return t->stand_in != nullptr;
}

// In the hub greenlet, right after the switch from hand_off_running: the
// greenlet's context is saved now, so a carrier may resume it.
void Hub::dispatch_hand_off() noexcept {
    Greenlet* g = std::exchange(hand_off_g_, nullptr);
    void* c = std::exchange(hand_off_to_, nullptr);
    if (detail::carrier_give(c, g, this)) return;
    came_back(*g);  // no thread to be had: it runs here again
}

// At the start of the hub's pass, while queued greenlets may be resumed by a
// carrier: the first of them goes to a carrier that may be had, or, with
// every carrier busy and others left to run here, is staged for the next
// carrier that comes free (see Registry).
// The queue is walked once per hand-off.
void Hub::hand_off_ready() noexcept {
    while (carriable_ready_ != 0) {
        bool now = detail::carrier_may_be_had();
        // Staged only while this thread keeps others to run: the last one
        // runs here rather than wait for a carrier.
        if (!now && (detail::carrier_staged() || ready_count_ < 2)) return;
        Greenlet* prev;
        Greenlet* g = first_carriable(prev);
        if (!g) return;
        void* c = now ? detail::carrier_reserve(false) : nullptr;
        if (!c && !detail::carrier_stage(g, this)) return;
        unlink_carriable(*g, prev);
        Runtime::set_state(*g, GreenletState::running);
        ++away_;
        detail::bump(hand_offs_);
        if (!c) return;  // staged: the next carrier that comes free takes it
        if (!detail::carrier_give(c, g, this)) came_back(*g);
    }
}

void Hub::came_back(Greenlet& g) noexcept {
    --away_;
    Greenlet::Impl& im = detail::impl_of(g);
    im.wake = Wake::event;
    Runtime::set_state(g, GreenletState::ready);
    push_ready(g);
    if (im.carriable) ++carriable_ready_;
}

void Hub::come_back(bool carriable) noexcept {
    ThreadState* t = detail::t_state;
    if (!t || !t->carrying_for) return;
    Hub* home = t->carrying_for;  // (a main greenlet's Impl::hub is not set)
    Greenlet::Impl& im = detail::impl_of(*t->current);
    im.carriable = carriable;  // (read by the hub once the carrier posted it)
    Runtime::jump(*t->main);  // to the carrier's loop; back here on the hub's thread, or on a carrier
    home->resumed_from_queue(im);
}

Hub* Hub::carried_from() noexcept {
    ThreadState* t = detail::t_state;
    return t ? t->carrying_for : nullptr;
}

bool Hub::carrier_awaited() noexcept { return detail::carrier_staged(); }

}  // namespace greenshim
