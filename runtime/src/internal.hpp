// Runtime-internal state shared by greenlet.cpp, hub.cpp and stack.cpp.
#pragma once

#include <ev.h>

#include <any>
#include <cassert>
#include <atomic>
#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <unordered_map>
#include <vector>

#include "greenshim/greenlet.hpp"
#include "greenshim/diag.hpp"
#include "greenshim/hub.hpp"
#include "greenshim/thread_state.hpp"
#include "sanitizers.hpp"
#include "thread_tls.hpp"

#define GREENSHIM_TLS __attribute__((tls_model("initial-exec")))

namespace greenshim {
namespace detail {

// A parked greenlet's entry in a WaitQueue or an fd watcher's waiter list.
// Lives on the parked greenlet's stack for the duration of the wait.
// While one is open, the runtime makes or closes its loop's own fds
// (making_loop_fds, thread_state.hpp); `on` false: a no-op.
struct LoopFdsScope {
    explicit LoopFdsScope(bool on = true) noexcept : on_(on) {
        if (on_) ++t_loop_fds;
    }
    ~LoopFdsScope() {
        if (on_) --t_loop_fds;
    }
    LoopFdsScope(const LoopFdsScope&) = delete;
    LoopFdsScope& operator=(const LoopFdsScope&) = delete;
    bool on_;
};

struct WaitNode {
    Greenlet* g = nullptr;
    WaitNode* prev = nullptr;
    WaitNode* next = nullptr;
    // Written under the list's guard; read without it by a waiter leaving a
    // WaitQueue (WaitQueue::wait): false, stored last (release) by the waker
    // that unlinked it, means nobody touches the node any more.
    std::atomic<bool> linked{false};
    int fd = -1;
    short events = 0;
    short revents = 0;
};

// Doubly linked FIFO of WaitNodes (used by WaitQueue and by fd watchers).
struct NodeList {
    static void push_back(WaitNode*& head, WaitNode*& tail, WaitNode& n) noexcept {
        assert(!n.linked && "a WaitNode is in one list at a time");
        n.prev = tail;
        n.next = nullptr;
        if (tail) tail->next = &n; else head = &n;
        tail = &n;
        n.linked.store(true, std::memory_order_relaxed);
    }
    static void unlink(WaitNode*& head, WaitNode*& tail, WaitNode& n) noexcept {
        if (!n.linked.load(std::memory_order_relaxed)) return;
        if (n.prev) n.prev->next = n.next; else head = n.next;
        if (n.next) n.next->prev = n.prev; else tail = n.prev;
        n.prev = n.next = nullptr;
        n.linked.store(false, std::memory_order_release);
    }
};

// Per-thread free list of greenlet stacks: mmap'd with a PROT_NONE guard page
// below the usable part. Per thread, so no lock is ever taken.
class StackPool {
public:
    boost::context::stack_context allocate(std::size_t size);
    void deallocate(boost::context::stack_context& sc) noexcept;
    // deallocate() into the calling thread's pool, or unmapped when the
    // thread has no runtime state (a greenlet's last reference dropped there).
    static void release(boost::context::stack_context& sc) noexcept;
    void drain() noexcept;
    StackPoolStats stats() const noexcept { return {mapped_, free_.size(), reused_}; }

private:
    void valgrind_register(const boost::context::stack_context& sc);
    void valgrind_deregister(const boost::context::stack_context& sc) noexcept;

    std::vector<boost::context::stack_context> free_;
    std::unordered_map<void*, unsigned> valgrind_ids_;  // under valgrind: stack top -> its stack id
    std::size_t pooled_bytes_ = 0;
    std::size_t mapped_ = 0;
    std::size_t reused_ = 0;
};

// libstdc++'s per-thread "exceptions being handled" state, which must follow
// each greenlet (a catch block that switches would otherwise see another
// greenlet's exception on `throw;`). Layout of __cxa_eh_globals. A process
// may hold two libstdc++s, each with its own (the preload's private copy and
// the program's libstdc++.so, shim/cxxabi.cpp): a greenlet keeps both.
struct EhGlobals {
    void* caught = nullptr;
    unsigned int uncaught = 0;
};
struct EhState {
    EhGlobals ours;     // the libstdc++ this runtime was linked with
    EhGlobals program;  // the process's (global scope's) when it is another one
};

// ThreadStateHead (thread_state.hpp): current, hub and main_token, read
// inline by the shim.
struct ThreadState : ThreadStateHead {
    Greenlet* from = nullptr;  // who switched to the greenlet now resuming
    // A switch is under way: from the leaving side's first change of
    // current/from to the arriving side's bookkeeping (after_resume,
    // switch_end), the state says one greenlet while another's stack runs,
    // and parts of that run in the program's code (switch_to's inline
    // path). A signal handler must not take the thread back meanwhile
    // (Hub::can_preempt). Written with signal fences: only this OS thread's
    // handlers read it.
    bool switching = false;
    std::shared_ptr<Greenlet> main;
    std::any xfer_value;             // value carried by the switch in progress
    std::exception_ptr xfer_error;   // exception carried by it
    StackPool pool;
    std::size_t alive = 0;           // started, not dead, not main
    Greenlet* live_head = nullptr;   // those greenlets, linked through Impl::live_*
    // A greenlet's reference taken while it was parked, dropped at the next
    // switch (off its stack): an abandoned raw greenlet is then unwound.
    std::shared_ptr<Greenlet> release_later;
    // The OS thread's own thread-locals (its TCB), which every greenlet
    // without a block of its own runs with.
    ThreadTls* os_tls = nullptr;
    // Where the OS thread's errno and libstdc++ exception globals are (ours,
    // and the program's when it is another libstdc++, else null): what a
    // greenlet without thread-locals of its own saves and restores at each
    // switch, found once instead of by a call each time.
    int* errno_at = nullptr;
    EhGlobals* eh_ours = nullptr;
    EhGlobals* eh_program = nullptr;
    // The block the hub runs with while the OS thread's main greenlet, which
    // shares the OS thread's own block, is on a carrier (main_leaves): made
    // once, where allocating is allowed (Hub::let_main_be_handed_off).
    // nullptr: main is never handed off.
    ThreadTls* stand_in = nullptr;
    // On a carrier (carrier.cpp) while it carries a greenlet: that greenlet's
    // hub. The carried greenlet's block points its t_state here meanwhile.
    Hub* carrying_for = nullptr;
};

// ThreadState::switching, set and cleared around a switch.
inline void begin_switch(ThreadState& t) noexcept {
    t.switching = true;
    std::atomic_signal_fence(std::memory_order_seq_cst);
}
inline void end_switch(ThreadState& t) noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t.switching = false;
}

// (t_state, t_internal: declared in thread_state.hpp.)
}  // namespace detail
extern std::atomic<std::uint64_t> g_signal_generation;
namespace detail {
ThreadState& init_thread_state();
// The OS thread's main greenlet m leaves for a carrier (Hub::hand_off_running,
// right before the switch to the hub): it takes the OS thread's own block as
// its own, and the stand-in becomes the block every greenlet without one of
// its own (the hub) runs with, taking the OS thread's tid, malloc tcache and
// the runtime's thread-locals. No allocation (a signal handler calls it).
void main_leaves(ThreadState& t, Greenlet::Impl& m) noexcept;
// m is about to run on its OS thread again (the switch to it: Runtime::jump
// and finish): it shares the OS thread's block again, the stand-in is put
// aside. Its errno and exception globals, left in that block, are the ones
// the switch restores.
void main_returns(ThreadState& t, Greenlet::Impl& m) noexcept;
inline ThreadState& ts() {
    ThreadState* t = t_state;
    return t ? *t : init_thread_state();
}

// Process-wide counters (diag.cpp). Plain relaxed stores where one thread
// writes; an RMW only where several may.
struct Counters {
    std::atomic<std::uint64_t> spawned{0};
    std::atomic<std::uint64_t> alive{0};
    std::atomic<std::uint64_t> peak_alive{0};
    // The helper pool (pool.cpp), written under its lock.
    std::atomic<std::uint64_t> helpers{0};
    std::atomic<std::uint64_t> peak_helpers{0};
    std::atomic<std::uint64_t> helper_jobs{0};
    // Carriers started (carrier.cpp; by the hub's thread).
    std::atomic<std::uint64_t> carriers{0};
};
extern Counters g_counters;
// The runtime's own OS threads (pool helpers, carriers, the monitor) while
// they run (diag.cpp): deadlock detection does not take them for threads of
// the program's that could still wake someone.
extern std::atomic<int> g_own_threads;
struct OwnThread {
    OwnThread() noexcept { g_own_threads.fetch_add(1); }
    ~OwnThread() { g_own_threads.fetch_sub(1); }
    OwnThread(const OwnThread&) = delete;
    OwnThread& operator=(const OwnThread&) = delete;
};
// Whether anything outside the calling hub, which idle_begin found the last
// one awake, could still wake one of its greenlets: another hub that is not
// idle or a wake on its way (a hub registered, or a wake posted, since
// idle_begin looked), or an OS thread that is neither a hub's nor one of
// the runtime's own (an allocator's background thread made with libc's
// pthread_create, one made before the runtime was loaded). Looked at in
// one hold of the registry's lock, which hub_register takes: a thread that
// made its first hub between two separate looks was once neither an idle
// hub nor a foreign thread, and a deadlock was reported with it running
// (diag.cpp; reads /proc/self/stat).
bool others_could_wake() noexcept;
// How long an idle helper thread waits for work before it ends.
inline constexpr int kHelperIdleSeconds = 2;
// Carriers for greenlets blocked in a system call, beyond the spares (as
// many as the helper pool's threads: pool.cpp).
inline constexpr unsigned kBlockedCarriers = 128;
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
void greenlet_started() noexcept;  // diag.cpp: spawned, alive, peak
void greenlet_ended() noexcept;
// The trace (diag.cpp): whether site's parks are traced, and the lines.
extern std::atomic<bool> g_tracing;
bool site_traced(WaitSite& site) noexcept;
void trace_park(Greenlet& g, Deadline deadline) noexcept;
void trace_wake(Greenlet& g) noexcept;
void count_park(Greenlet& g) noexcept;
// Hub registry for stats and the monitor (diag.cpp).
void hub_register(Hub* h) noexcept;
void hub_unregister(Hub* h) noexcept;
bool timing_enabled() noexcept;

struct Runtime {
    // Switch to target (already chosen and alive); returns when someone
    // switches back. Saves/restores errno. Caller sets its own state first.
    static void jump(Greenlet& target);
    static void ensure_fiber(Greenlet& target);
    static void after_resume(boost::context::fiber&& f) noexcept;
    static boost::context::fiber finish(Greenlet& g, std::any result, std::exception_ptr err);
    // Destroys g's suspended fiber: resumes it to unwind its stack
    // (forced_unwind) and comes back when the stack is freed.
    static void unwind(Greenlet& g) noexcept;
    static Greenlet& first_live(Greenlet& g) noexcept;
    static void set_state(Greenlet& g, GreenletState s) noexcept { g.state_.store(s, std::memory_order_relaxed); }
    // parked -> ready, for exactly one of the wakers that race (a timer, a
    // waker on the greenlet's hub, one on another hub).
    static bool claim_parked(Greenlet& g) noexcept {
        GreenletState p = GreenletState::parked;
        return g.state_.compare_exchange_strong(p, GreenletState::ready, std::memory_order_acq_rel,
                                                std::memory_order_relaxed);
    }
    // The OS thread's list of live greenlets. counted: also the process's
    // spawned/alive counts (false: a greenlet moving between hubs, which
    // leaves one thread's list for another's: Hub::share_ready).
    static void live_link(Greenlet& g, bool counted = true) noexcept;
    static void live_unlink(Greenlet& g, bool counted = true) noexcept;
    // A thread's main greenlet, constructed at where with its Impl at impl.
    static Greenlet* construct_main(void* where, Greenlet::Impl* impl) {
        return new (where) Greenlet(Greenlet::Token{}, impl);
    }
    static std::shared_ptr<Greenlet> make(Greenlet::Fn fn, std::string name, std::size_t stack,
                                          std::shared_ptr<Greenlet> parent);
    static Greenlet::Impl& impl(const Greenlet& g) noexcept { return *g.impl_; }
    static Hub::Async& async(Hub& h) noexcept { return *h.async_; }
};
// A greenlet's runtime-internal state (fiber, hub links, diagnostics).
inline Greenlet::Impl& impl_of(const Greenlet& g) noexcept { return Runtime::impl(g); }

// Boost's fiber is its fcontext_t (the saved stack pointer) and nothing else:
// the inline switch (switch_begin/switch_end), the run queue's prefetch and
// the dump of a suspended greenlet read or set it as such. Null: running, or
// never started.
static_assert(sizeof(boost::context::fiber) == sizeof(void*), "Boost's fiber is one fcontext_t");
inline void* fcontext_of(const boost::context::fiber& f) noexcept {
    void* p;
    std::memcpy(&p, static_cast<const void*>(&f), sizeof p);
    return p;
}
inline void set_fcontext(boost::context::fiber& f, void* p) noexcept {
    std::memcpy(static_cast<void*>(&f), &p, sizeof p);
}

// A call handed to the helper pool (pool.cpp) by a parked greenlet. It lives
// in that greenlet's frame, and so do the buffers fn reads and writes (a
// read's destination, getaddrinfo's result): the frame must not end while a
// helper thread still uses it. run_blocking waits for `done` whatever wakes
// it; the destructor checks that it did, so a path that breaks the rule
// aborts loudly instead of letting a helper write into a freed stack.
struct PoolJob {
    std::function<void()> fn;
    Hub* hub;
    Greenlet* waiter;
    bool submitted = false;  // handed to a helper thread
    bool done = false;       // set by the hub, in its async callback
    PoolJob(std::function<void()> f, Hub* h, Greenlet* w) : fn(std::move(f)), hub(h), waiter(w) {}
    PoolJob(const PoolJob&) = delete;
    PoolJob& operator=(const PoolJob&) = delete;
    ~PoolJob() {
        if (submitted && !done) in_flight_abandoned();
    }
    [[noreturn]] static void in_flight_abandoned() noexcept;
};
// async.cpp: a pool thread hands a finished job back to its hub (any thread).
void post_done(Hub& hub, PoolJob* j);
// After fork() in the child: the pool's threads and the async state's lock
// did not come along.
void pool_after_fork_child() noexcept;
void async_after_fork_child(Hub::Async* a) noexcept;
// async.cpp: a greenlet of hub, claimed ready by a thread that is not
// hub's, handed to hub's run queue (counted in flight until it is queued).
void post_woken(Hub& hub, Greenlet& g);
// diag.cpp: the hubs' idle book, for deadlock detection across hubs. A hub
// with nothing to run and nothing its loop could wake asks idle_begin:
// false if it is the last such hub and no wake is in flight to any hub (a
// deadlock: nothing left can wake anyone); otherwise it is counted idle
// until idle_end, after its blocking poll. always_mark: counted idle even
// when it is the last (a worker hub, which reports nothing itself).
bool idle_begin(Hub* h, bool always_mark = false) noexcept;
void idle_end(Hub* h) noexcept;
void registry_after_fork_child(Hub* h) noexcept;
extern std::atomic<long> g_wakes_in_flight;
void poke(Hub& hub) noexcept;  // async.cpp
// diag.cpp: fd was closed; each hub but `except` whose fd_bit_ is in hubs is
// told (async.cpp's post_closed_fd).
void post_fd_closed(std::uint32_t hubs, int fd, Hub* except) noexcept;
void post_closed_fd(Hub& hub, int fd) noexcept;
// diag.cpp: a second hub was ever made, or an fd was closed on a thread with
// no hub (never cleared: fd numbers' generations are kept, hub.cpp).
extern std::atomic<bool> g_several_hubs;
void set_process_hub(Hub* h) noexcept;  // async.cpp: a fork's child, whichever hub forked
// carrier.cpp: a carrier gives a greenlet back to its hub (any thread).
void post_came_back(Hub& hub, Greenlet* g);
// carrier.cpp: hand_off_running's choice of a carrier (nullptr: none may be
// had), and the hub's giving it the greenlet (false: it could not start).
// blocked: for a greenlet blocked in a system call (Registry's budgets).
void* carrier_reserve(bool blocked) noexcept;
bool carrier_may_be_had() noexcept;  // a hint: one for a greenlet that computes
bool carrier_stage(Greenlet* g, Hub* from) noexcept;  // false: one is staged already
bool carrier_staged() noexcept;  // a hint
bool carrier_give(void* carrier, Greenlet* g, Hub* from) noexcept;
void carriers_after_fork_child() noexcept;

}  // namespace detail

struct Greenlet::Impl {
    boost::context::fiber ctx;               // this greenlet's suspended context
    boost::context::stack_context stack{};   // its stack once started
    detail::ThreadTls* tls = nullptr;        // its own thread-locals (set_own_thread_locals), or the OS thread's
    // With tls placed in the top of its stack's mapping (as glibc places a
    // thread's): that whole mapping, `stack` being the part below the block.
    // Taken from the pool by set_own_thread_locals, given back with the block
    // (drop_thread_locals), after the fiber that ran on it is gone. size 0: none.
    boost::context::stack_context mapping{};
    const void* owner_token = nullptr;       // a main greenlet's owner id (its OS thread's main_token)
    bool fiber_created = false;
    int saved_errno = 0;
    detail::EhState saved_eh;
#if GREENSHIM_ASAN
    detail::StackRange asan_stack;      // its stack (main's: told by ASan when main switches away)
    detail::StackRange asan_unwind_to;  // while being unwound: the stack of whoever destroys it
#endif
    Greenlet* live_prev = nullptr;
    Greenlet* live_next = nullptr;
    // Hub bookkeeping.
    Hub* hub = nullptr;
    Greenlet* next_ready = nullptr;
    // Where the greenlet queued after this one keeps what it touches first
    // when it runs (its Impl, its saved stack context, its thread-locals),
    // noted by push_ready for pop_ready's prefetch. Hints only: a stale one
    // (the queue changed behind them) costs a useless prefetch.
    const void* next_impl = nullptr;
    const void* next_sp = nullptr;
    const void* next_tls = nullptr;
    Wake wake = Wake::none;
    bool loop_wakeable = false;   // the loop itself could wake it (fd or timer)
    // Ready in its hub's queue, suspended where a carrier may resume it (in a
    // signal handler, at a point of the program's own code: preempt_running,
    // come_back(true)); counted in the hub's carriable_ready_.
    bool carriable = false;
    bool homed = false;            // counted in its hub's homed_ (make_home) until it ends
    // Parked in a wait that may end on another hub (park_releasing: a
    // WaitQueue wait, a sleep, a one-fd wait): from its park on, what runs on
    // its stack holds nothing of its hub's but its deadline's timer, the
    // hub's waiter count and fd_node, so once woken it may be given to an
    // idle hub (Hub::share_ready), which undoes those. Cleared as soon as it runs.
    bool movable = false;
    int last_fd = -1;              // its last one-fd wait's fd, on its hub (Hub::give_away)
    detail::WaitNode* fd_node = nullptr;  // a one-fd wait's node, in its hub's watcher of the fd (Hub::wait_fd)
    bool parked_timed = false;     // its last park had a deadline (a timer in its hub's loop)
    bool moved = false;            // given away since its park: its park leaves its old hub alone
    bool moving = false;           // given away, on its way to the taker (take_woken)
    unsigned pins = 0;             // StayOnHub objects alive on its stack
    InterruptMask interrupt_mask = 0;     // which interrupts end its wait (InterruptScope)
    std::uint64_t signal_generation = 0;  // signals notified when it parked
    std::uint64_t signals_since = 0;      // SignalsSince: the count at its making, plus 1 (0: none)
    // Hub::interrupt_for_good: a park whose interrupt_mask has one of these
    // bits ends at once. Written by any thread, read by its own at each park.
    std::atomic<InterruptMask> kept_interrupts{0};
    Deadline deadline = kForever;
    ev_timer timer;
    // Keeps a spawned or parked greenlet alive until it dies; released by the
    // greenlet that runs next, off the dead greenlet's stack.
    std::shared_ptr<Greenlet> keepalive;
    // Diagnostics (diag.hpp): what it waits on, and the code it started at.
    WaitSite* site = nullptr;
    std::intptr_t wait_arg = -1;
    void* entry = nullptr;
    bool is_hub = false;
    void (*adopt)(Greenlet&) = nullptr;  // Hub::start: run on its hub's thread before it first runs
    Deadline parked_at = 0;  // monotonic_ns() when it parked, if tracing
};

}  // namespace greenshim
