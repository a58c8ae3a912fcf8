// The hub: a libev loop in a greenlet, a FIFO run queue, and park().
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>

#include "greenshim/cold.hpp"
#include "internal.hpp"
#include "os_sync.hpp"

namespace greenshim {

using detail::NodeList;
using detail::Runtime;
using detail::ts;
using detail::WaitNode;

std::int64_t monotonic_ns() noexcept {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return std::int64_t(t.tv_sec) * 1000000000 + t.tv_nsec;
}

Deadline deadline_after_ns(std::int64_t ns) noexcept {
    if (ns < 0) return kForever;
    std::int64_t now = monotonic_ns();
    return ns > kForever - now ? kForever : now + ns;
}

Deadline deadline_after(double seconds) noexcept {
    if (seconds < 0 || seconds != seconds) return kForever;
    if (seconds >= 9.2e9) return kForever;
    return deadline_after_ns(static_cast<std::int64_t>(seconds * 1e9));
}

const char* to_string(Wake w) noexcept {
    switch (w) {
    case Wake::none: return "none";
    case Wake::event: return "event";
    case Wake::timeout: return "timeout";
    case Wake::closed: return "closed";
    case Wake::interrupted: return "interrupted";
    case Wake::deadlock: return "deadlock";
    }
    return "?";
}

namespace {
// The spin locks WaitQueue::Guard takes, one cache line each, picked by the
// queue's address. (Not a global the header could name: the runtime's
// library and the shim each carry one, and a program linking the first with
// the second preloaded would have two, which ASan reports as an ODR
// violation.)
struct alignas(64) LockWord {
    std::atomic<int> word{0};
};
GREENSHIM_COLD_BSS LockWord g_queue_locks[64];

// Per fd number: the hubs that made a watcher of it since its last close
// (each hub's fd_bit_, set always: a hub made later may close it), and,
// once there are several hubs (or a close on a thread with none), its
// generation, bumped by every close (fd_closed, fd_closed_off_hub). A hub's watcher
// made before its number was closed (or reused) on another hub is stale:
// that hub's epoll set may have lost it with the file, so fd_watch makes it
// again; and the closer tells each hub in the mask at once (on_async stops
// the watcher), since libev re-adds every armed watcher's fd when it makes
// its epoll set again and asserts on a closed one (EBADF). Chunks are
// installed with a compare-and-swap and never freed. Generation 0 for a
// number never closed.
struct FdNumber {
    std::atomic<std::uint32_t> gen{0};
    std::atomic<std::uint32_t> hubs{0};
};
constexpr std::size_t kGenChunkBits = 12, kGenChunks = 1024;  // 4M fds
GREENSHIM_COLD_BSS std::atomic<FdNumber*> g_fd_numbers[kGenChunks];

FdNumber* fd_number(int fd, bool make) noexcept {
    std::size_t c = std::size_t(fd) >> kGenChunkBits;
    if (c >= kGenChunks) return nullptr;
    FdNumber* chunk = g_fd_numbers[c].load(std::memory_order_acquire);
    if (!chunk && make) {
        InternalScope internal;
        auto* fresh = new (std::nothrow) FdNumber[std::size_t(1) << kGenChunkBits]();
        if (!fresh) return nullptr;
        if (g_fd_numbers[c].compare_exchange_strong(chunk, fresh)) chunk = fresh;
        else delete[] fresh;
    }
    return chunk ? &chunk[std::size_t(fd) & ((std::size_t(1) << kGenChunkBits) - 1)] : nullptr;
}

std::uint32_t fd_generation(int fd) noexcept {
    if (!detail::g_several_hubs.load(std::memory_order_relaxed)) return 0;
    FdNumber* n = fd_number(fd, false);
    return n ? n->gen.load() : 0;
}

std::atomic<unsigned> g_hubs_made{0};
}  // namespace

// An fd's ev_io and the nodes of greenlets waiting on it. The watcher stays
// armed after it fires so that the next wait on the same fd costs no
// epoll_ctl; it is narrowed or stopped only when it fires with nobody waiting
// for what it reports.
struct Hub::FdWatcher {
    ev_io io;
    Hub* hub;
    WaitNode* head = nullptr;
    WaitNode* tail = nullptr;
    std::uint32_t gen = 0;  // its fd number's generation when it was made

    static void on_ready(struct ev_loop*, ev_io* w, int revents) {
        auto* self = reinterpret_cast<FdWatcher*>(w);
        int ready = revents & (EV_READ | EV_WRITE);
        int ready_poll = ((ready & EV_READ) ? kReadable : 0) | ((ready & EV_WRITE) ? kWritable : 0);
        bool anyone = false;
        int still_wanted = 0;
        for (WaitNode* n = self->head; n; n = n->next) {
            short hit = short(n->events & ready_poll);
            if (hit) {
                n->revents = short(n->revents | hit);
                anyone = true;
                self->hub->schedule(*n->g, Wake::event);
            } else if (n->revents == 0) {
                still_wanted |= n->events;
            }
        }
        if (anyone) return;  // keep armed: the woken greenlets usually wait again
        int want = ((still_wanted & kReadable) ? EV_READ : 0) | ((still_wanted & kWritable) ? EV_WRITE : 0);
        if (want == (self->io.events & (EV_READ | EV_WRITE))) return;
        struct ev_loop* loop = self->hub->loop_;
        ev_io_stop(loop, &self->io);
        if (want) {
            ev_io_set(&self->io, self->io.fd, want);
            ev_io_start(loop, &self->io);
        }
    }
};

namespace {
void on_timer(struct ev_loop* loop, ev_timer* w, int) {
    auto* g = static_cast<Greenlet*>(w->data);
    Greenlet::Impl& im = detail::impl_of(*g);
    std::int64_t left = im.deadline - monotonic_ns();
    if (left > 0) {  // never wake early, whatever the loop's cached time says
        ev_timer_set(w, double(left) / 1e9, 0.);
        ev_timer_start(loop, w);
        return;
    }
    im.hub->schedule(*g, Wake::timeout);
}
}  // namespace

// (The out-of-line forms of thread_state.hpp's, for programs that link the runtime.)
Hub* Hub::existing() noexcept { return detail::existing_hub(); }

Hub& Hub::current() {
    detail::ThreadState& t = ts();
    if (!t.hub) {
        // The hub allocates (its loop, its greenlet); a lock that malloc
        // takes meanwhile must not come back here: while it is being made,
        // the thread is the runtime's and interposed calls go to libc.
        InternalScope setting_up;
        t.hub = new Hub();
    }
    return *t.hub;
}

namespace {
// libev's memory (its loops, fd table, pending lists, timer heap) comes from
// mmap, never from malloc: libev grows its timer heap inside a park (a timed
// wait's ev_timer_start), and the park may be a wait inside the program's
// allocator (a futex its spin lock waits on, which the shim emulates:
// tcmalloc's with two hubs), which malloc there would enter again. A block
// is whole pages, its first 16 bytes a mark and its size; a realloc that
// still fits stays. libev asks rarely (its arrays grow by doubling). The
// allocator is one per copy of libev. Ours is private (runtime/meson.build);
// a build that links libev.so shares it with the program, and there a block
// made before the first hub set it (a program's own libev loop) is told apart
// by the mark, read only in its own page, and goes back to realloc/free.
void* libev_memory(void* ptr, long size) noexcept {
    constexpr std::size_t kHead = 16;
    constexpr std::uint64_t kMark = 0x6772656e6c696276ULL;  // "grenlibv"
    constexpr std::size_t page = 4096;  // (x86-64; no static initialiser in here)
    char* old = nullptr;
    std::size_t had = 0;
    if (ptr) {
        auto at = reinterpret_cast<std::uintptr_t>(ptr);
        char* base = static_cast<char*>(ptr) - kHead;
        if ((at & (page - 1)) != kHead || *reinterpret_cast<std::uint64_t*>(base) != kMark)
            return size > 0 ? std::realloc(ptr, std::size_t(size)) : (std::free(ptr), nullptr);  // not ours
        old = base;
        had = reinterpret_cast<std::size_t*>(base)[1];
    }
    if (size <= 0) {
        if (old) munmap(old, had);
        return nullptr;
    }
    std::size_t want = (std::size_t(size) + kHead + page - 1) / page * page;
    if (old && want <= had) return ptr;
    void* m = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;  // (libev reports it and aborts)
    static_cast<std::uint64_t*>(m)[0] = kMark;
    static_cast<std::size_t*>(m)[1] = want;
    if (old) {
        std::memcpy(static_cast<char*>(m) + kHead, ptr, had - kHead);
        munmap(old, had);
    }
    return static_cast<char*>(m) + kHead;
}
}  // namespace

Hub::Hub() {
    ev_set_allocator(libev_memory);  // (the same pointer each time: no race to guard)
    detail::ThreadState& t = ts();
    main_ = t.main.get();
    state_ = &t;
    tid_ = int(::syscall(SYS_gettid));
    window_at_ = monotonic_ns();
    fd_bit_ = 1u << (g_hubs_made.fetch_add(1, std::memory_order_relaxed) % 32);  // (beyond 32, two hubs share one)
    {
        detail::LoopFdsScope making;
        loop_ = ev_loop_new(unsigned(EVBACKEND_EPOLL) | unsigned(EVFLAG_NOENV) | unsigned(EVFLAG_NOSIGMASK));
        if (!loop_) loop_ = ev_loop_new(unsigned(EVFLAG_AUTO) | unsigned(EVFLAG_NOENV) | unsigned(EVFLAG_NOSIGMASK));
    }
    if (!loop_) throw std::runtime_error("greenshim: cannot create the event loop");
    ev_set_userdata(loop_, this);
    hub_greenlet_ = Runtime::make([this](std::any) -> std::any { run(); return {}; }, "hub", 256 * 1024,
                                  t.main);
    detail::impl_of(*hub_greenlet_).is_hub = true;
    thread_ = pthread_self();
    start_async();
    detail::hub_register(this);
}

Hub::~Hub() {
    detail::hub_unregister(this);
    stop_async();
    for (std::size_t i = 0; i < fds_cap_; ++i) {
        if (fds_[i]) {
            ev_io_stop(loop_, &fds_[i]->io);
            delete fds_[i];
        }
    }
    delete[] fds_;
    fds_ = nullptr;
    fds_cap_ = 0;
    detail::LoopFdsScope closing;
    ev_loop_destroy(loop_);  // closes the epoll fd: close() may reach us again
}

bool Hub::in_hub() const noexcept {
    detail::ThreadState* t = detail::t_state;
    return t && t->current == hub_greenlet_.get();
}

void Hub::push_ready(Greenlet& g) {
    Greenlet::Impl& im = detail::impl_of(g);
    assert(g.state() == GreenletState::ready && im.next_ready == nullptr && ready_tail_ != &g &&
           "a greenlet is queued once, when it becomes ready");
    im.next_ready = nullptr;
    if (ready_tail_) {
        Greenlet::Impl& prev = detail::impl_of(*ready_tail_);
        prev.next_ready = &g;
        prev.next_impl = &im;
        prev.next_sp = detail::fcontext_of(im.ctx);
        prev.next_tls = im.tls;
    } else {
        ready_head_ = &g;
    }
    ready_tail_ = &g;
    ++ready_count_;
}

namespace {
// What a greenlet touches first when the hub resumes it, fetched into the
// cache while the one before it runs: with thousands of connections each
// greenlet's Impl, the top of its stack (the frames it returns through) and
// its thread-locals have left the cache since it last ran, and the misses
// were a tenth of the hub's CPU at 10,000 connections (jump_fcontext and
// pop_ready). The thread-locals a greenlet touches first (its block's and
// the shim's: note_hot_thread_local) are lines of their own in each block;
// fetched too (with 14 lines of frames, not 6), `read` no longer stalls on
// its way back, and echo at 1,000 connections did ~5% more messages (42
// paired rounds: median 1.058, mean 1.038). A prefetch never faults: a
// stale hint is harmless. (Always
// inlined: GCC's IPA takes a function that only prefetches for one without
// side effects, and drops the call.)
[[gnu::always_inline]] inline void prefetch_lines(const void* p, int lines) noexcept {
    for (int i = 0; i < lines; ++i) __builtin_prefetch(static_cast<const char*>(p) + 64 * i);
}
// The lines of the hot thread-locals (note_hot_thread_local), as offsets from
// the thread pointer: the same in every block (one static TLS layout). Written
// before any greenlet runs, by the shim's constructor (start-up data: cold.hpp).
constexpr int kMaxHotTlsLines = 4;
GREENSHIM_STARTUP_DATA std::ptrdiff_t g_hot_tls_line[kMaxHotTlsLines];
GREENSHIM_STARTUP_DATA std::atomic<int> g_hot_tls_lines{0};
[[gnu::always_inline]] inline void prefetch_next(const Greenlet* g, const Greenlet::Impl& before) noexcept {
    prefetch_lines(g, 2);
    if (before.next_impl) prefetch_lines(before.next_impl, 5);
    // The frames right above the switch, up through the interposer that
    // parked: ~0.8 KiB for a read (Hub::park_releasing up to read()).
    if (before.next_sp) prefetch_lines(before.next_sp, 14);
    if (const char* tp = static_cast<const char*>(before.next_tls)) {
        prefetch_lines(tp - 128, 3);  // errno, the TCB's header and stack guard
        const int n = g_hot_tls_lines.load(std::memory_order_acquire);
        for (int i = 0; i < n; ++i) __builtin_prefetch(tp + g_hot_tls_line[i]);
    }
}
}  // namespace

GREENSHIM_STARTUP_CODE void Hub::note_hot_thread_local(const void* addr) noexcept {
    // (A block's thread pointer is aligned to the TLS alignment, at least a
    // line: a line offset here is one in every block.)
    std::ptrdiff_t off = static_cast<const char*>(addr) - reinterpret_cast<const char*>(detail::ThreadTls::current());
    std::ptrdiff_t line = off >= 0 ? off / 64 * 64 : -((-off + 63) / 64 * 64);
    if (line >= -128 && line < 64) return;  // prefetched anyway
    const int n = g_hot_tls_lines.load(std::memory_order_relaxed);
    for (int i = 0; i < n; ++i)
        if (g_hot_tls_line[i] == line) return;
    if (n == kMaxHotTlsLines) return;
    g_hot_tls_line[n] = line;
    g_hot_tls_lines.store(n + 1, std::memory_order_release);
}

Greenlet* Hub::pop_ready() {
    Greenlet* g = ready_head_;
    if (!g) return nullptr;
    Greenlet::Impl& im = detail::impl_of(*g);
    ready_head_ = im.next_ready;
    if (ready_head_) prefetch_next(ready_head_, im);
    else ready_tail_ = nullptr;
    im.next_ready = nullptr;
    --ready_count_;
    return g;
}

// ---- the spawn queue (start_anywhere): new threads for whichever hub ----
// An intrusive FIFO through Impl::next_ready (a queued greenlet is in no run
// queue), under its own lock; the count is read without it.
namespace {
struct SpawnQueue {
    detail::OsMutex mu;
    Greenlet* head = nullptr;
    Greenlet* tail = nullptr;
};
SpawnQueue g_spawn;
std::atomic<unsigned> g_spawn_count{0};
std::atomic<unsigned> g_spawn_poke_turn{0};
constexpr unsigned kMaxSpawnBatch = 64;
inline bool spawn_pending() noexcept { return g_spawn_count.load(std::memory_order_relaxed) != 0; }
// Hubs asleep in a blocking poll (poll_idle): a busy hub shares its run
// queue with them (share_ready).
std::atomic<unsigned> g_idle_pollers{0};
GREENSHIM_STARTUP_DATA std::atomic<Hub::ShareCheck> g_share_check{nullptr};  // (cold.hpp: set by the shim's constructor)
}  // namespace

void Hub::run() {
    for (;;) {
        detail::bump(turn_);
        // New threads: this hub's share when it has nothing else, one a pass
        // while it is busy (as Go's P looks at the global queue).
        // (An idle hub always takes one: work first, balance second.)
        if (__builtin_expect(spawn_pending(), 0)) {
            bool idle = ready_count_ == 0;
            take_spawned(idle ? kMaxSpawnBatch : 1, idle);
        }
        // Another hub sleeps in its poll while this one has a queue: give it
        // some (as an idle Go P steals half of a busy one's run queue).
        if (__builtin_expect(g_idle_pollers.load(std::memory_order_relaxed) != 0, 0) && ready_count_ >= 2)
            share_ready();
        // Threads that compute: a preempted one goes to a hub with a shorter
        // queue (as Go puts a preempted goroutine on the global run queue),
        // so that they take turns on every hub, not only on the one they
        // were started on.
        load_hint_.store(ready_count_, std::memory_order_relaxed);
        if (__builtin_expect(carriable_ready_ != 0, 0) && ready_count_ >= 2) share_preempted();
        if (__builtin_expect(when_back_.load(std::memory_order_relaxed) != nullptr, 0)) {
            if (auto fn = when_back_.exchange(nullptr, std::memory_order_relaxed)) fn(*this);
        }
        // (A hand-off made before the hub first ran: main switched straight to
        // the greenlet, next_after_park.)
        if (__builtin_expect(hand_off_g_ != nullptr, 0)) dispatch_hand_off();
        if (__builtin_expect(carriable_ready_ != 0, 0)) hand_off_ready();
        // Run what was ready when this pass began; what they wake runs next
        // pass. (A member: next_after_park runs one of them for the pass.)
        for (pass_left_ = ready_count_; pass_left_ > 0;) {
            Greenlet* g = pop_ready();
            if (!g) break;
            --pass_left_;
            detail::bump(switches_);
            running_.store(g, std::memory_order_relaxed);
            Runtime::set_state(*hub_greenlet_, GreenletState::suspended);
            Runtime::jump(*g);
            if (__builtin_expect(hand_off_g_ != nullptr, 0)) dispatch_hand_off();
            if (poll_now_) break;  // (a park found the poll due: poll before the rest)
        }
        pass_left_ = 0;  // (a pass cut short: what is left waits for the next)
        // Never idle while the spawn queue holds work (a thread the pass just
        // made): take it first. (Its maker's hub always comes here before it
        // could go idle, so the queue never strands a thread.)
        if (ready_count_ == 0 && __builtin_expect(spawn_pending(), 0) && take_spawned(kMaxSpawnBatch, true) != 0) continue;
        if (ready_count_ == 0 && loop_waiters_ == 0 && pool_waiters_ == 0 && away_ == 0) {
            run_loop(EVRUN_NOWAIT);  // deliver what is already pending (a signal, say)
            if (ready_count_ == 0) nothing_to_do();
            continue;
        }
        bool idle = ready_count_ == 0;
        if (idle || yielded_ || poll_now_ || poll_due()) {
            if (idle) poll_idle(EVRUN_ONCE);
            else run_loop(EVRUN_NOWAIT);
            unpolled_passes_ = 0;
            unpolled_since_ = 0;
            poll_now_ = false;
        }
        yielded_ = false;
    }
}

// While greenlets are runnable, the hub runs them and polls the loop only
// now and then (as Go's scheduler polls its netpoller when a P runs out of
// work, and otherwise only now and then): a hand-off between two threads
// (one parks, the other was woken) then costs no syscall. A pass in which a
// greenlet yielded (sleep(0), sched_yield, the cooperative budget) polls:
// a yield promises the loop a look before the yielder runs again. The
// bound: every kPollCheckPasses passes it reads the clock, and once
// kMaxPollDelayNs have passed since the first such read after a poll, it
// polls without blocking. So fd readiness, timers and
// signals wait behind runnable greenlets for at most about kMaxPollDelayNs
// plus 2 x kPollCheckPasses passes. Cost per pass: an increment and a
// compare; a clock read (~20-30 ns) every kPollCheckPasses passes (every
// kPollCheckSwitches direct switches, next_after_park: ~5 ns a round trip
// of a condition variable's ping-pong when it was every 8).
bool Hub::poll_due() noexcept {
    if (++unpolled_passes_ % kPollCheckPasses != 0) return false;
    return poll_clock_due();
}

bool Hub::poll_clock_due() noexcept {
    std::int64_t now = monotonic_ns();
    if (unpolled_since_ == 0) {
        unpolled_since_ = now;
        return false;
    }
    return now - unpolled_since_ >= kMaxPollDelayNs;
}

// A blocking poll: the hub has nothing to run (idle_polling() says so to a
// signal handler meanwhile).
void Hub::poll_idle(int flags) {
    // (Counted first: a hub seen asleep is counted, share_ready's hint.)
    bool blocking = !(flags & EVRUN_NOWAIT);
    if (blocking) g_idle_pollers.fetch_add(1, std::memory_order_relaxed);
    idle_polling_.store(true, std::memory_order_seq_cst);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    // A thread queued meanwhile by a hub that saw this one awake (so did not
    // wake it: start_anywhere): look, do not sleep. (Both sides store, then
    // load, sequentially consistent: one of them sees the other.)
    if (__builtin_expect(g_spawn_count.load(std::memory_order_seq_cst) != 0, 0) && (worker_ || this == process_hub()))
        flags = EVRUN_NOWAIT;
    bool may_sleep = !(flags & EVRUN_NOWAIT);
    std::int64_t t0 = may_sleep ? monotonic_ns() : 0;
    run_loop(flags);
    if (may_sleep) idle_ns_ += monotonic_ns() - t0;  // (two clock reads, against an epoll_wait that may sleep: saturated())
    if (blocking) g_idle_pollers.fetch_sub(1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    idle_polling_.store(false, std::memory_order_relaxed);
}

bool Hub::can_preempt() const noexcept {
    detail::ThreadState* t = detail::t_state;
    if (!t || t->hub != this || t->switching) return false;  // (a switch under way: ThreadState::switching)
    Greenlet* g = t->current;
    if (!g || g == hub_greenlet_.get() || g->state() != GreenletState::running) return false;
    // Not while it runs with another block than its own (OsThreadLocalsScope:
    // a fork or setuid made as the OS thread): resumed, by the hub or a
    // carrier, it would get its own back in the middle of that call (a
    // setgid blocked in glibc's broadcast was handed off so, and main, at
    // home meanwhile, then ran on the hub's thread as the carrier's).
    detail::ThreadTls* own = detail::impl_of(*g).tls;
    return detail::ThreadTls::current() == (own ? own : t->os_tls);
}

bool Hub::preempt_running() noexcept {
    if (!can_preempt()) return false;
    detail::bump(preemptions_);
    Greenlet& self = detail::current_greenlet();
    Greenlet::Impl& im = detail::impl_of(self);
    if (im.tls && !self.is_main()) {  // a carrier may resume it (it has its own thread-locals)
        im.carriable = true;
        ++carriable_ready_;
    }
    yield();
    resumed_from_queue(im);
    return true;
}

// A greenlet that waited in the queue as carriable, now running again: if
// the hub ran it (a hand-off clears the mark, and a carrier touches nothing
// of the hub's), it is no longer counted.
void Hub::resumed_from_queue(Greenlet::Impl& im) noexcept {
    if (!im.carriable) return;
    im.carriable = false;
    --carriable_ready_;
}

namespace {
GREENSHIM_STARTUP_DATA std::atomic<StrandedHandler> g_stranded{nullptr};  // (cold.hpp: set by the shim's constructor)
}  // namespace

GREENSHIM_STARTUP_CODE void Hub::set_stranded_handler(StrandedHandler h) noexcept { g_stranded.store(h); }

void Hub::nothing_to_do() {
    if (worker_) {
        worker_idle();
        return;
    }
    // The main greenlet is gone and no other is alive (a child forked from
    // another greenlet, once that one ends): the thread's work is done.
    bool finished = main_->dead() && ts().alive <= 1;
    // Otherwise only a signal could still wake anyone: wait for one if a
    // handler is installed.
    if (!finished && signals_can_wake()) {
        poll_idle(EVRUN_ONCE);
        return;
    }
    // Or another hub, or a wake on its way here, still could: wait for it.
    // (With one hub, idle_begin says no at once.)
    if (!finished && detail::idle_begin(this)) {
        poll_idle(EVRUN_ONCE);
        detail::idle_end(this);
        return;
    }
    // Every hub is idle and no wake is on its way, as idle_begin saw it. A
    // hub made since, or an OS thread that is neither a hub's nor the
    // runtime's (an allocator's background thread, which its creator waits
    // for on a condition variable the new thread signals before it ever
    // waits itself), may still wake someone: look again every
    // kForeignRecheckNs while there is one (unpatched, such a process would
    // not be told of a deadlock either). (jemalloc's background thread made
    // the process's first hub, and the main thread its own just after: a
    // deadlock was reported in about 1 run in 10 under two hubs.)
    if (!finished && detail::others_could_wake()) {
        ev_once(loop_, -1, 0, double(kForeignRecheckNs) / 1e9, [](int, void*) {}, nullptr);
        poll_idle(EVRUN_ONCE);
        return;
    }
    // Nothing else will ever happen: tell the main greenlet, if it waits.
    if (main_->state() == GreenletState::parked) {
        schedule(*main_, Wake::deadlock);
        return;
    }
    if (StrandedHandler h = g_stranded.load()) h(*this, finished ? Stranded::finished : Stranded::deadlock);
    std::terminate();  // no handler, or it returned: nothing can go on
}

// (Not movable: a caller of park() may keep this hub's state on its stack.)
Wake Hub::park(Deadline deadline) { return park_releasing(deadline, nullptr, false); }

Wake Hub::park_releasing(Deadline deadline, WaitQueue::Guard* held, bool movable) {
    Greenlet& self = detail::current_greenlet();
    if (&self == hub_greenlet_.get()) {
        if (held) held->unlock();
        throw std::logic_error("greenshim: the hub greenlet cannot wait");
    }
    Greenlet::Impl& im = detail::impl_of(self);
    // A parked greenlet must outlive the wait even if its owner lets go.
    bool park_ref = !im.keepalive && !self.is_main();
    if (park_ref) im.keepalive = self.shared_from_this();
    im.hub = this;
    im.wake = Wake::none;
    im.signal_generation = g_signal_generation.load(std::memory_order_relaxed);
    if (__builtin_expect((im.signals_since != 0 && im.signal_generation >= im.signals_since && im.interrupt_mask != 0) ||
                             (im.kept_interrupts.load(std::memory_order_relaxed) & im.interrupt_mask) != 0,
                         0)) {  // (SignalsSince: a handler ran before the park could see it; interrupt_for_good)
        if (held) held->unlock();
        if (park_ref) im.keepalive.reset();
        return Wake::interrupted;
    }
    bool timed = deadline != kForever;
    if (timed) {
        std::int64_t left = deadline - monotonic_ns();
        if (left <= 0) {
            if (held) held->unlock();
            if (park_ref) im.keepalive.reset();
            return Wake::timeout;
        }
        im.deadline = deadline;
        im.timer.data = &self;
        ev_init(&im.timer, on_timer);
        im.timer.data = &self;
        ev_now_update(loop_);
        ev_timer_set(&im.timer, double(left) / 1e9, 0.);
        ev_timer_start(loop_, &im.timer);
    }
    bool wakeable = timed || im.loop_wakeable;
    if (wakeable) ++loop_waiters_;
    // What follows the switch below (and its callers) touches nothing of this
    // hub's but the timer, loop_waiters_ and fd_node, which share_ready
    // undoes if it gives it away. (A wait on several fds is not: their
    // nodes stay in this hub's watchers until it unwatches them.)
    im.movable = movable && (!im.loop_wakeable || im.fd_node);
    im.parked_timed = timed;
    Runtime::set_state(self, GreenletState::parked);
    // From here a waker on another hub may claim it: its wake is posted to
    // this hub, which takes it only after this switch.
    if (held) held->unlock();
    detail::bump(switches_);
    detail::count_park(self);
    if (__builtin_expect(detail::g_tracing.load(std::memory_order_relaxed), 0)) detail::trace_park(self, deadline);
    Runtime::jump(next_after_park());
    im.movable = false;
    if (__builtin_expect(im.moved, 0)) {
        im.moved = false;  // on another hub now: `this` is not ours (share_ready undid our part)
    } else {
        if (wakeable) --loop_waiters_;
        if (timed) ev_timer_stop(loop_, &im.timer);
    }
    if (__builtin_expect(detail::g_tracing.load(std::memory_order_relaxed), 0)) detail::trace_wake(self);
    Runtime::set_state(self, GreenletState::running);
    if (park_ref) ts().release_later = std::move(im.keepalive);
    return im.wake;
}

// Where a greenlet that parks goes: straight to the greenlet the hub would
// run next anyway, so that only the switch through the hub goes (one switch
// a hand-off instead of two; with own thread-locals one `wrfsbase` less).
// That is the head of the queue while the hub's pass has some left to run
// (the pass runs what was ready when it began, in order), or the only one
// ready between passes (a hand-off between two threads). Otherwise to the
// hub, which ends its pass (spawns, sharing, the loop's poll when due) and
// begins the next. (Jumping to the head whatever the pass said, tried
// first, ran what the pass woke before the loop was polled: CPython's
// ThreadingHTTPServer at 500 connections, p99 0.65-0.87 s against 0.05-0.41 s.)
Greenlet& Hub::next_after_park() noexcept {
    Greenlet* next = hub_greenlet_.get();
    Greenlet* head = nullptr;
    if (yielded_ || poll_now_ || hand_off_g_) {
        // the hub's: it polls, or hands off, before it runs anyone else
    } else if (pass_left_ > 0) {
        // The rest of the pass, in its order. (No clock read: the hub reads
        // none within a pass either. Polling in the middle of a long pass,
        // every kPollCheckSwitches, cut each pass of 1,000 echo connections
        // into short ones and cost more than the switch it saved.)
        if ((head = pop_ready())) --pass_left_;
    } else if (ready_count_ == 1) {
        // (A direct switch is ~0.1 us: the clock is read every
        // kPollCheckSwitches of them, not every kPollCheckPasses.)
        if (++unpolled_switches_ % kPollCheckSwitches == 0 && poll_clock_due()) poll_now_ = true;  // (the hub polls first)
        else head = pop_ready();
    }
    if (head) {
        next = head;
        detail::bump(turn_);  // the hub's turn in all but name (the monitor sees progress)
    }
    running_.store(next, std::memory_order_relaxed);
    return *next;
}

void Hub::schedule(Greenlet& g, Wake why) { wake_parked(g, why); }

bool Hub::wake_parked(Greenlet& g, Wake why) {
    if (!Runtime::claim_parked(g)) return false;
    deliver(g, why);
    return true;
}

// g was claimed (parked -> ready): into its hub's run queue.
void Hub::deliver(Greenlet& g, Wake why) {
    Greenlet::Impl& im = detail::impl_of(g);
    im.wake = why;
    Hub* home = im.hub;
    if (__builtin_expect(detail::t_state && detail::t_state->hub == home, 1)) home->push_ready(g);
    else detail::post_woken(*home, g);
}

// A wake another thread claimed for a greenlet of this hub (on_async).
void Hub::take_woken(Greenlet& g) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (__builtin_expect(!im.fiber_created, 0)) {
        make_home(g);  // started here by another hub
    } else if (__builtin_expect(im.moving, 0)) {  // given by another hub (share_ready)
        im.moving = false;
        Runtime::live_link(g, false);
        make_home(g);
        detail::bump(steals_);
    }
    push_ready(g);
}


StayOnHub::StayOnHub() noexcept : impl_(&detail::impl_of(detail::current_greenlet())) {
    ++static_cast<Greenlet::Impl*>(impl_)->pins;
}
StayOnHub::~StayOnHub() { --static_cast<Greenlet::Impl*>(impl_)->pins; }

SignalsSince::SignalsSince() noexcept {
    Greenlet::Impl& im = detail::impl_of(detail::current_greenlet());
    impl_ = &im;
    saved_ = im.signals_since;
    im.signals_since = g_signal_generation.load() + 1;
}
SignalsSince::~SignalsSince() { static_cast<Greenlet::Impl*>(impl_)->signals_since = saved_; }

InterruptScope::InterruptScope(InterruptMask accepts) noexcept {
    Greenlet::Impl& im = detail::impl_of(detail::current_greenlet());
    impl_ = &im;
    saved_ = im.interrupt_mask;
    im.interrupt_mask = accepts;
}
InterruptScope::~InterruptScope() { static_cast<Greenlet::Impl*>(impl_)->interrupt_mask = saved_; }

bool Hub::interrupt(Greenlet& g) {
    if (g.state() != GreenletState::parked) return false;
    schedule(g, Wake::interrupted);
    return true;
}

bool Hub::interrupt(Greenlet& g, InterruptMask kinds) {
    if (g.state() != GreenletState::parked) return false;
    if ((__atomic_load_n(&detail::impl_of(g).interrupt_mask, __ATOMIC_RELAXED) & kinds) == 0) return false;
    schedule(g, Wake::interrupted);
    return true;
}

void Hub::interrupt_for_good(Greenlet& g, InterruptMask kinds) {
    Greenlet::Impl& im = detail::impl_of(g);
    im.kept_interrupts.store(kinds, std::memory_order_seq_cst);
    if (kinds == 0) return;
    // One running (on another OS thread: not the caller) may be between its
    // park's look at kept_interrupts and its parked state: it parks within
    // nanoseconds, so look again for a while (about 20 us). The mask is the
    // parked greenlet's own, set before its park: read only to decide
    // whether to wake it.
    for (int look = 0;; ++look) {
        GreenletState s = g.state();
        if (s == GreenletState::parked) {
            if ((__atomic_load_n(&im.interrupt_mask, __ATOMIC_RELAXED) & kinds) != 0) wake_parked(g, Wake::interrupted);
            return;
        }
        if (s != GreenletState::running || &g == &detail::current_greenlet() || look == 2000) return;
        __builtin_ia32_pause();
    }
}

void Hub::yield() {
    Greenlet& self = detail::current_greenlet();
    if (&self == hub_greenlet_.get()) throw std::logic_error("greenshim: the hub greenlet cannot yield");
    Runtime::set_state(self, GreenletState::ready);
    detail::impl_of(self).wake = Wake::event;
    push_ready(self);
    yielded_ = true;
    detail::bump(switches_);
    running_.store(hub_greenlet_.get(), std::memory_order_relaxed);
    Runtime::jump(*hub_greenlet_);
    Runtime::set_state(self, GreenletState::running);
}

Wake Hub::sleep_until(Deadline deadline) { return park_releasing(deadline, nullptr, true); }

void Hub::fd_watch(WaitNode& n) {
    if (n.fd < 0) return;
    std::size_t fd = std::size_t(n.fd);
    if (fd >= fds_cap_) {
        std::size_t cap = fds_cap_ ? fds_cap_ : 64;
        while (cap <= fd) cap *= 2;
        auto** grown = new FdWatcher*[cap]();
        for (std::size_t i = 0; i < fds_cap_; ++i) grown[i] = fds_[i];
        delete[] fds_;
        fds_ = grown;
        fds_cap_ = cap;
    }
    FdWatcher*& w = fds_[fd];
    if (__builtin_expect(w && w->gen != fd_generation(n.fd), 0)) fd_drop(n.fd);  // closed elsewhere
    if (!w) {
        // The bit first, then the generation (both sequentially consistent):
        // a close on another hub either sees the bit and tells this hub, or
        // bumped the generation this watcher is made with.
        if (FdNumber* num = fd_number(n.fd, true)) num->hubs.fetch_or(fd_bit_);
        w = new FdWatcher;
        w->hub = this;
        w->gen = fd_generation(n.fd);
        ev_io_init(&w->io, FdWatcher::on_ready, n.fd, 0);
    }
    NodeList::push_back(w->head, w->tail, n);
    int want = ((n.events & kReadable) ? EV_READ : 0) | ((n.events & kWritable) ? EV_WRITE : 0);
    int armed = ev_is_active(&w->io) ? (w->io.events & (EV_READ | EV_WRITE)) : 0;
    if ((want & ~armed) == 0) return;
    if (armed) ev_io_stop(loop_, &w->io);
    ev_io_set(&w->io, n.fd, armed | want);
    ev_io_start(loop_, &w->io);
}

void Hub::fd_unwatch(WaitNode& n) {
    if (!n.linked.load(std::memory_order_relaxed)) return;
    assert(n.fd >= 0 && std::size_t(n.fd) < fds_cap_ && fds_[n.fd] && "a linked fd node has its fd's watcher");
    FdWatcher* w = fds_[n.fd];
    NodeList::unlink(w->head, w->tail, n);
}

// A watcher left with nobody waiting stays armed (fd_unwatch), so that the
// next wait on its fd costs no epoll_ctl. When the thread that waited on it
// leaves for another hub, it may close the fd there, and libev re-adds every
// armed watcher's fd when it recreates its epoll set (after a stale event),
// asserting on a closed one (EBADF). So give_away stops the watcher of the
// thread's last one-fd wait here if nobody waits on it (no syscall: libev
// leaves the fd in the epoll set until its next event).
void Hub::fd_stop_if_idle(int fd) noexcept {
    if (fd < 0 || std::size_t(fd) >= fds_cap_ || !fds_[fd]) return;
    FdWatcher* w = fds_[fd];
    if (!w->head && ev_is_active(&w->io)) ev_io_stop(loop_, &w->io);
}

void Hub::fd_closed(int fd, bool tell_others) {
    close_elsewhere(fd, this, tell_others);
    fd_drop(fd);
}

void Hub::fd_closed_off_hub(int fd, bool tell_others) noexcept { close_elsewhere(fd, nullptr, tell_others); }

// Other hubs' watchers of fd's number go stale (FdNumber): its generation
// moves on, and the hubs that made one are told (fd_closed_elsewhere),
// unless !tell (no lock, no allocation: a signal handler's close).
void Hub::close_elsewhere(int fd, Hub* here, bool tell) noexcept {
    if (fd < 0) return;
    if (!detail::g_several_hubs.load(std::memory_order_relaxed)) {
        // One hub: only a thread with none closes elsewhere. From its first
        // such close, numbers' generations are kept as with several hubs.
        if (here || g_hubs_made.load(std::memory_order_relaxed) == 0) return;
        detail::g_several_hubs.store(true);
    }
    FdNumber* num = fd_number(fd, tell);
    if (!num) return;
    num->gen.fetch_add(1);
    if (!tell) return;  // (the bits stay: a later close tells those hubs)
    if (std::uint32_t hubs = num->hubs.exchange(0)) detail::post_fd_closed(hubs, fd, here);
}

// Told by another hub's close (on_async): this hub's watcher of the number,
// if made before that close, goes now, its waiters woken as by fd_closed.
void Hub::fd_closed_elsewhere(int fd) {
    if (fd < 0 || std::size_t(fd) >= fds_cap_ || !fds_[fd]) return;
    if (fds_[fd]->gen != fd_generation(fd)) fd_drop(fd);
}

// This hub's watcher of fd goes, its waiters woken with Wake::closed.
void Hub::fd_drop(int fd) {
    if (fd < 0 || std::size_t(fd) >= fds_cap_ || !fds_[fd]) return;
    FdWatcher* w = fds_[fd];
    fds_[fd] = nullptr;
    while (WaitNode* n = w->head) {
        NodeList::unlink(w->head, w->tail, *n);
        n->revents = 0;
        schedule(*n->g, Wake::closed);
    }
    ev_io_stop(loop_, &w->io);
    delete w;
}

Wake Hub::wait_fds(FdWait* fds, std::size_t n, Deadline deadline) {
    Greenlet& self = detail::current_greenlet();
    if (&self == hub_greenlet_.get()) throw std::logic_error("greenshim: the hub greenlet cannot wait");
    WaitNode local[8];
    std::unique_ptr<WaitNode[]> heap;
    WaitNode* nodes = local;
    if (n > 8) {
        heap.reset(new WaitNode[n]);
        nodes = heap.get();
    }
    // Unlink whatever happens, including unwinding of a destroyed greenlet.
    struct Unwatch {
        Hub* hub;
        WaitNode* nodes;
        std::size_t n;
        ~Unwatch() {
            for (std::size_t i = 0; i < n; ++i) hub->fd_unwatch(nodes[i]);
            detail::impl_of(detail::current_greenlet()).loop_wakeable = false;
        }
    } guard{this, nodes, 0};
    for (std::size_t i = 0; i < n; ++i) {
        fds[i].revents = 0;
        nodes[i].g = &self;
        nodes[i].fd = fds[i].fd;
        nodes[i].events = fds[i].events;
        nodes[i].revents = 0;
        fd_watch(nodes[i]);
        guard.n = i + 1;
    }
    detail::impl_of(self).loop_wakeable = n > 0;
    Wake w = park(deadline);
    for (std::size_t i = 0; i < n; ++i) fds[i].revents = nodes[i].revents;
    return w;
}

// The one-fd wait every blocking read, write, accept and connect makes:
// wait_fds without its array of nodes and loops (~140 instructions less a
// wait, a tenth of an echoed message's).
Wake Hub::wait_fd(int fd, int events, Deadline deadline) {
    Greenlet& self = detail::current_greenlet();
    if (&self == hub_greenlet_.get()) throw std::logic_error("greenshim: the hub greenlet cannot wait");
    Greenlet::Impl& im = detail::impl_of(self);
    WaitNode node;
    node.g = &self;
    node.fd = fd;
    node.events = short(events);
    // Unlinked whatever happens, including unwinding of a destroyed greenlet.
    // (If share_ready gave it away, it unlinked the node: `hub`, the old
    // hub, is then not touched.)
    struct Unwatch {
        Hub* hub;
        WaitNode* node;
        Greenlet::Impl* im;
        ~Unwatch() {
            hub->fd_unwatch(*node);
            im->loop_wakeable = false;
            im->fd_node = nullptr;
        }
    } guard{this, &node, &im};
    fd_watch(node);
    im.loop_wakeable = true;
    im.fd_node = &node;
    im.last_fd = fd;
    return park_releasing(deadline, nullptr, true);
}

std::shared_ptr<Greenlet> Hub::spawn(Greenlet::Fn fn, std::string name, std::size_t stack_size) {
    auto g = make_greenlet(std::move(fn), std::move(name), stack_size);
    start(*g);
    return g;
}

std::shared_ptr<Greenlet> Hub::make_greenlet(Greenlet::Fn fn, std::string name, std::size_t stack_size) {
    auto g = Runtime::make(std::move(fn), std::move(name), stack_size, hub_greenlet_);
    detail::impl_of(*g).keepalive = g;
    detail::impl_of(*g).hub = this;
    return g;
}

void Hub::start(Greenlet& g, void (*adopt)(Greenlet&)) {
    Runtime::set_state(g, GreenletState::ready);
    detail::impl_of(g).adopt = adopt;
    if (detail::t_state && detail::t_state->hub == this) {
        make_home(g);
        push_ready(g);
        return;
    }
    detail::post_woken(*this, g);  // (take_woken makes it this hub's there)
}

// A greenlet that never ran, about to be queued here for the first time, on
// this hub's thread: this hub is its home and where it goes when it ends;
// its thread-locals block, made wherever its maker ran, becomes this OS
// thread's; then its adopt hook.
void Hub::make_home(Greenlet& g) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (im.hub != this) {
        im.hub = this;
        g.parent_ = hub_greenlet_;
    }
    if (!im.homed) {
        im.homed = true;
        homed_.fetch_add(1, std::memory_order_relaxed);
    }
    if (im.tls) detail::ThreadTls::rehome(im.tls);
    if (im.adopt) std::exchange(im.adopt, nullptr)(g);
}

// ---- several hubs ----
namespace {
constexpr unsigned kMaxWorkers = 1024;
GREENSHIM_COLD_BSS std::atomic<Hub*> g_workers[kMaxWorkers];
std::atomic<unsigned> g_worker_slots{0};  // taken (a slot may still be null)
std::atomic<unsigned> g_worker_count{0};  // registered

// The hubs that take new threads: the workers 0..n-1, then the process hub
// (hub_at(n, n)); n = spawn_hubs_less_one(). A slot not yet stored is null.
unsigned spawn_hubs_less_one() noexcept {
    unsigned n = g_worker_count.load(std::memory_order_acquire);
    return n > kMaxWorkers ? kMaxWorkers : n;
}
Hub* hub_at(unsigned k, unsigned n) noexcept {
    return k == n ? Hub::process_hub() : g_workers[k].load(std::memory_order_acquire);
}
}  // namespace

void Hub::run_worker() {
    Hub& h = current();
    h.worker_ = true;
    unsigned i = g_worker_slots.fetch_add(1);
    if (i < kMaxWorkers) {
        g_workers[i].store(&h);
        g_worker_count.fetch_add(1);  // (a slot not yet stored reads null: skipped)
    }
    for (;;) h.park(kForever);  // nothing wakes it: the hub runs the others meanwhile
}

Hub* Hub::worker(unsigned i) noexcept {
    if (i >= kMaxWorkers || i >= g_worker_slots.load(std::memory_order_acquire)) return nullptr;
    return g_workers[i].load(std::memory_order_acquire);
}

void Hub::start_anywhere(Greenlet& g, void (*adopt)(Greenlet&)) {
    unsigned n = spawn_hubs_less_one();
    Hub* here = detail::t_state ? detail::t_state->hub : nullptr;
    if (n == 0 && here) {
        here->start(g, adopt);
        return;
    }
    // A hub that does not take from the queue (an OS thread the program or a
    // library made: an allocator's background thread starting another; a
    // carrier) could not be counted on to take it before it goes idle: the
    // process hub gets it, through its async watcher, which wakes it.
    Hub* p = process_hub();
    if (!here || (!here->worker_ && here != p) || detail::t_state->carrying_for) {
        if (p) p->start(g, adopt);
        return;
    }
    Runtime::set_state(g, GreenletState::ready);
    Greenlet::Impl& im = detail::impl_of(g);
    im.adopt = adopt;
    im.next_ready = nullptr;
    {
        std::lock_guard<detail::OsMutex> lk(g_spawn.mu);
        if (g_spawn.tail) detail::impl_of(*g_spawn.tail).next_ready = &g;
        else g_spawn.head = &g;
        g_spawn.tail = &g;
        g_spawn_count.fetch_add(1, std::memory_order_seq_cst);
    }
    // Wake one hub asleep in its poll (in turn, not this one: it runs). None
    // asleep: the busy hubs take it, its maker's at the latest (Hub::run).
    unsigned first = g_spawn_poke_turn.fetch_add(1, std::memory_order_relaxed);
    for (unsigned i = 0; i <= n; ++i) {
        Hub* h = hub_at((first + i) % (n + 1), n);
        if (h && h != here && h->idle_polling_.load(std::memory_order_seq_cst)) {
            detail::poke(*h);
            return;
        }
    }
}

// How many new threads this hub may take now: up to its fair share of all
// the threads (those the hubs run and those queued), so that threads that
// never wait (which no hub can take from another once they ran) end up
// spread evenly (sysbench cpu --threads=8 on two hubs: 7 and 1 before);
// past it, none while another hub that could take them sleeps in its poll
// (it was woken for them), else one: the queue never waits for a hub that
// does not come.
unsigned Hub::spawn_allowance(unsigned queued) noexcept {
    unsigned n = spawn_hubs_less_one();
    unsigned total = queued, hubs = 0;
    bool other_idle = false;
    for (unsigned i = 0; i <= n; ++i) {
        Hub* h = hub_at(i, n);
        if (!h) continue;
        ++hubs;
        total += h->homed_.load(std::memory_order_relaxed);
        if (h != this && h->idle_polling_.load(std::memory_order_relaxed)) other_idle = true;
    }
    if (hubs == 0) return queued;
    unsigned fair = (total + hubs - 1) / hubs, mine = homed_.load(std::memory_order_relaxed);
    if (mine < fair) return fair - mine;
    return other_idle ? 0 : 1;
}

unsigned Hub::take_spawned(unsigned max, bool at_least_one) {
    if (!worker_ && this != process_hub()) return 0;  // (a hub of a thread the shim did not make)
    Greenlet* taken = nullptr;
    unsigned n = 0;
    {
        std::lock_guard<detail::OsMutex> lk(g_spawn.mu);
        unsigned queued = g_spawn_count.load(std::memory_order_relaxed);
        unsigned allowed = spawn_allowance(queued);
        if (allowed == 0 && at_least_one) allowed = 1;
        if (max > allowed) max = allowed;
        taken = g_spawn.head;
        Greenlet* last = nullptr;
        for (Greenlet* g = g_spawn.head; g && n < max; g = detail::impl_of(*g).next_ready) {
            last = g;
            ++n;
        }
        if (n == 0) return 0;
        g_spawn.head = detail::impl_of(*last).next_ready;
        if (!g_spawn.head) g_spawn.tail = nullptr;
        detail::impl_of(*last).next_ready = nullptr;
        g_spawn_count.fetch_sub(n, std::memory_order_relaxed);
    }
    while (taken) {
        Greenlet& g = *taken;
        Greenlet::Impl& im = detail::impl_of(g);
        taken = im.next_ready;
        im.next_ready = nullptr;
        if (im.hub != this) detail::bump(steals_);
        take_woken(g);  // made this hub's (its home, parent, thread-locals block), adopted, queued
    }
    return n;
}

// Gives the back half of the run queue's movable greenlets to a hub asleep
// in its poll. Only a greenlet that has its own thread-locals (its
// __thread variables, errno and thread pointer go with it; one sharing the
// OS thread's would find another thread's there) and was woken from a
// WaitQueue wait, a sleep or a one-fd wait (Impl::movable: nothing of this
// hub's on its stack but a deadline's timer, stopped here, loop_waiters_,
// counted down here, and the fd's node, unlinked here). Both stay in
// their order; the taker runs them in the order given. On this hub's thread:
// only it touches its queue.
GREENSHIM_STARTUP_CODE void Hub::set_share_check(ShareCheck check) noexcept { g_share_check.store(check); }

void Hub::share_ready() noexcept {
    if (!worker_ && this != process_hub()) return;  // (as take_spawned: the pool's hubs only)
    if (ShareCheck check = g_share_check.load(std::memory_order_relaxed); check && !check(*this)) return;
    unsigned n = spawn_hubs_less_one();
    Hub* to = nullptr;
    for (unsigned i = 0; i <= n && !to; ++i) {
        Hub* h = hub_at(i, n);
        if (h && h != this && h->idle_polling_.load(std::memory_order_relaxed)) to = h;
    }
    if (!to) return;
    std::size_t k = ready_count_, keep = (k + 1) / 2;
    int fd_gives = -1;  // (looked at once there is one: a clock read)
    for (std::size_t i = 0; i < k; ++i) {
        Greenlet* g = pop_ready();
        Greenlet::Impl& im = detail::impl_of(*g);
        bool keep_it = i < keep || !im.movable || im.pins || !im.tls || g->is_main() || im.carriable || im.is_hub;
        if (!keep_it && im.fd_node) {
            if (fd_gives < 0) fd_gives = saturated(monotonic_ns()) ? int(kFdShareMax) : 0;
            if (fd_gives == 0) keep_it = true;
            else --fd_gives;
        }
        if (keep_it) {
            push_ready(*g);
            continue;
        }
        // (Its park's part in this loop, which its own code would undo here.)
        if (im.parked_timed) ev_timer_stop(loop_, &im.timer);
        if (im.parked_timed || im.loop_wakeable) --loop_waiters_;
        if (im.fd_node) fd_unwatch(*im.fd_node);  // (give_away stops its watcher if left with nobody)
        im.moved = true;
        im.movable = false;  // (given once: it runs before it may move again)
        give_away(*g, *to);
    }
}

// g, out of this hub's run queue, to hub `to`'s (which makes it its own in
// take_woken). On this hub's thread.
void Hub::give_away(Greenlet& g, Hub& to) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    fd_stop_if_idle(std::exchange(im.last_fd, -1));
    Runtime::live_unlink(g, false);
    if (im.homed) {
        im.homed = false;
        homed_.fetch_sub(1, std::memory_order_relaxed);
    }
    im.moving = true;
    detail::post_woken(to, g);
}

// The first carriable greenlet of the run queue, and in prev the one queued
// before it (for unlink_carriable); nullptr if there is none. Walks the queue:
// called only while carriable_ready_ counts one.
Greenlet* Hub::first_carriable(Greenlet*& prev) noexcept {
    prev = nullptr;
    Greenlet* g = ready_head_;
    while (g && !detail::impl_of(*g).carriable) {
        prev = g;
        g = detail::impl_of(*g).next_ready;
    }
    if (!g) carriable_ready_ = 0;  // (cannot be: counted)
    return g;
}

// g (carriable, queued after prev) out of the run queue: no longer counted
// as ready nor as carriable.
void Hub::unlink_carriable(Greenlet& g, Greenlet* prev) noexcept {
    Greenlet::Impl& im = detail::impl_of(g);
    if (prev) detail::impl_of(*prev).next_ready = im.next_ready; else ready_head_ = im.next_ready;
    if (ready_tail_ == &g) ready_tail_ = prev;
    im.next_ready = nullptr;
    --ready_count_;
    --carriable_ready_;
    im.carriable = false;
}

bool Hub::saturated(std::int64_t now) noexcept {
    if (now - window_at_ >= kBusyWindowNs) {  // (the first window: from the hub's making)
        saturated_ = (idle_ns_ - window_idle_at_) * 4 < now - window_at_;
        window_at_ = now;
        window_idle_at_ = idle_ns_;
    }
    return saturated_;
}

// One thread that was preempted (Impl::carriable: suspended in the tick's
// handler, where a carrier may resume it too, so nothing of this hub's is
// on its stack) to the hub whose queue was shortest at its last pass, if
// that is at least 2 shorter than this one's (no back and forth). The tick's
// handler fixes its signal frame for the OS thread it returns on (stall.cpp).
void Hub::share_preempted() noexcept {
    if (!worker_ && this != process_hub()) return;  // (as share_ready)
    unsigned n = spawn_hubs_less_one();
    Hub* to = nullptr;
    std::size_t least = ready_count_;
    for (unsigned i = 0; i <= n; ++i) {
        Hub* h = hub_at(i, n);
        if (!h || h == this) continue;
        std::size_t l = h->idle_polling_.load(std::memory_order_relaxed) ? 0 : h->load_hint_.load(std::memory_order_relaxed);
        if (l < least) {
            least = l;
            to = h;
        }
    }
    if (!to || least + 2 > ready_count_) return;
    Greenlet* prev;
    Greenlet* g = first_carriable(prev);
    if (!g) return;
    Greenlet::Impl& im = detail::impl_of(*g);
    if (im.pins || g->is_main() || im.is_hub) return;
    unlink_carriable(*g, prev);  // (the taker counts it as carriable when it preempts it)
    give_away(*g, *to);
}

void Hub::notify_signal_all() noexcept {
    Hub* p = process_hub();
    if (p) p->notify_signal();
    else g_signal_generation.fetch_add(1);  // (counted all the same: SignalsSince, before the first hub)
    unsigned n = g_worker_count.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n && i < kMaxWorkers; ++i)
        if (Hub* w = g_workers[i].load(std::memory_order_acquire); w && w != p) w->notify_signal();
}

unsigned Hub::workers() noexcept { return g_worker_count.load(std::memory_order_relaxed); }

// A worker with nothing to do waits, counted idle, for whatever start() or a
// wake brings. When it is the last hub to go idle it reports nothing itself
// (its main greenlet waits for nothing): the process hub looks again and
// tells its main greenlet of the deadlock.
void Hub::worker_idle() {
    if (!detail::idle_begin(this, /*always_mark=*/true)) {
        if (Hub* p = process_hub(); p && p != this) detail::poke(*p);
    }
    poll_idle(EVRUN_ONCE);
    detail::idle_end(this);
}

// One ev_run, all of it the loop's to make and close fds in (LoopFdsScope):
// the first after a fork remakes the epoll fd and eventfd (ev_loop_fork),
// and any pass may remake the epoll set (libev closes its epoll fd and makes
// another when an event comes for an fd it cannot place, such as a number
// closed while a dup kept its file open). Nothing else opens or closes an fd
// in there: the loop's callbacks only schedule greenlets (a signal handler
// that runs meanwhile is told apart by the interposer: in_signal_handler).
//
// The first after a fork never blocks. The child inherits libev's wake-up
// flags as the parent left them: an async_pending set by one of the parent's
// helper threads (its eventfd written, not yet read) makes every
// ev_async_send in the child return at once, trusting that the handler will
// run. libev's fork pass queues that handler, but only runs it after the
// pass's poll, which a pending event does not shorten: a wake sent meanwhile
// by a helper thread, another hub or a signal handler slept up to libev's
// 59.7 s (a PostgreSQL backend's first lookup; tests/threads fork-wake).
// Without blocking, the handler runs and clears the flags; the hub's loop
// comes back here for the poll it wanted.
void Hub::run_loop(int flags) {
    detail::LoopFdsScope loop_fds;
    // (Before libev adds armed fds to its set. A waiter it wakes must not
    // wait for the poll: no blocking one then.)
    if (__builtin_expect(drain_closed_fds(), 0) && ready_count_ != 0) flags = EVRUN_NOWAIT;
    if (__builtin_expect(forked_, 0)) {
        forked_ = false;
        flags = EVRUN_NOWAIT;
    }
    ev_run(loop_, flags);
}

void Hub::after_fork_child() {
    // As POSIX keeps only the thread that called fork, the child keeps only
    // the greenlet that did: the others stay where they are, never to run
    // again (their memory is the child's copy; nothing unwinds them).
    detail::ThreadState& t = ts();
    Greenlet* me = t.current;
    for (Greenlet* g = t.live_head; g;) {
        Greenlet* next = detail::impl_of(*g).live_next;
        if (g != me && g != hub_greenlet_.get()) {
            Greenlet::Impl& im = detail::impl_of(*g);
            if (ev_is_active(&im.timer)) ev_timer_stop(loop_, &im.timer);
            Runtime::live_unlink(*g);
            Runtime::set_state(*g, GreenletState::dead);
        }
        g = next;
    }
    if (me != main_) Runtime::set_state(*main_, GreenletState::dead);
    while (pop_ready()) {
    }
    for (std::size_t i = 0; i < fds_cap_; ++i) {
        if (fds_[i]) {
            ev_io_stop(loop_, &fds_[i]->io);
            delete fds_[i];
            fds_[i] = nullptr;
        }
    }
    loop_waiters_ = 0;
    pool_waiters_ = 0;
    away_ = 0;  // (the carried ones are dead above: their carriers are not here)
    carriable_ready_ = 0;
    hand_off_g_ = nullptr;
    hand_off_to_ = nullptr;
    detail::pool_after_fork_child();
    detail::carriers_after_fork_child();
    detail::async_after_fork_child(async_);
    detail::registry_after_fork_child(this);
    // The workers' threads did not come along: this hub is the process's
    // only one now, and its main greenlet (dead above unless it forked) the
    // one whose end ends the process.
    for (auto& w : g_workers) w.store(nullptr, std::memory_order_relaxed);
    g_worker_slots.store(0);
    g_worker_count.store(0);
    // New threads not yet taken are the parent's, as its other threads.
    new (&g_spawn) SpawnQueue();
    g_spawn_count.store(0);
    // Nobody polls here but this thread, which forked outside its poll: a
    // count kept from the parent's idle workers would have this hub look for
    // an idle hub to share with on every pass, and count the child's own
    // future workers' polls one too many.
    g_idle_pollers.store(0, std::memory_order_relaxed);
    worker_ = false;
    detail::set_process_hub(this);
    // A Guard another OS thread held at the fork is nobody's in the child.
    for (auto& l : g_queue_locks) l.word.store(0, std::memory_order_relaxed);
    ev_loop_fork(loop_);  // (the next ev_run remakes the loop's fds: run_loop)
    forked_ = true;
}

// ---- WaitQueue ----

GREENSHIM_EXIT_CODE WaitQueue::~WaitQueue() {
    // Waiters of a queue that goes away would sleep forever: wake them.
    // (None, the usual case, a static's at exit: its lock word, one of the
    // shared array's, is not touched.)
    if (__atomic_load_n(&head_, __ATOMIC_ACQUIRE)) notify_all();
}

std::atomic<int>* WaitQueue::detail_lock_word(const void* q) noexcept {
    auto a = reinterpret_cast<std::uintptr_t>(q);
    return &g_queue_locks[(a >> 4 ^ a >> 10) & 63].word;
}

namespace {
// A spin lock is held for a few loads and stores, so a wait of seconds means
// its holder will never let go: most likely this very thread, which took a
// WaitQueue Guard while holding another that shares its spin lock (the two
// queues hashed to one of the 64), and spins on itself. Said once, on stderr,
// with the lock's address; the wait goes on (a holder stopped in a debugger
// lets go when resumed).
void say_stuck_spin(const std::atomic<int>& word) noexcept {
    static std::atomic<bool> said{false};
    if (said.exchange(true, std::memory_order_relaxed)) return;
    char line[240];
    int n = std::snprintf(line, sizeof line,
                          "greenshim: OS thread %ld has waited 2 s for spin lock %p (a WaitQueue Guard or SpinLock, "
                          "held for a few stores): a thread that takes a second Guard while holding one that shares "
                          "its lock waits on itself forever\n",
                          long(syscall(SYS_gettid)), static_cast<const void*>(&word));
    if (n > 0) (void)!::write(2, line, std::size_t(n) < sizeof line ? std::size_t(n) : sizeof line - 1);
}
constexpr std::int64_t kStuckSpinNs = 2'000'000'000;
}  // namespace

// A raw system call to yield: the shim interposes sched_yield. The clock is
// read only every 1,024 yields (a lock held that long is already a bug).
void SpinLock::wait_for(std::atomic<int>& word) noexcept {
    std::int64_t since = 0;
    unsigned yields = 0;
    for (unsigned spins = 0;; ++spins) {
        while (word.load(std::memory_order_relaxed) != 0) {
            if (++spins < 200) __builtin_ia32_pause();
            else {
                syscall(SYS_sched_yield);
                spins = 0;
                if ((++yields & 1023) == 0) {
                    std::int64_t now = monotonic_ns();
                    if (since == 0) since = now;
                    else if (now - since > kStuckSpinNs) say_stuck_spin(word);
                }
            }
        }
        if (word.exchange(1, std::memory_order_acquire) == 0) return;
    }
}

Wake WaitQueue::wait(Deadline deadline) {
    Guard held(*this);
    return wait(held, deadline);
}

Wake WaitQueue::wait(Guard& held, Deadline deadline) {
    Hub& hub = detail::current_hub();
    WaitNode node;
    node.g = &detail::current_greenlet();
    NodeList::push_back(head_, tail_, node);
    // Unlinked whatever happens (a waker unlinks the one it wakes; a
    // deadline, an interrupt or an unwind leaves it linked).
    struct Unlink {
        WaitQueue* q;
        WaitNode* n;
        Guard* held;
        ~Unlink() {
            if (!n->linked.load(std::memory_order_acquire)) return;  // a waker took it out
            held->lock();
            NodeList::unlink(q->head_, q->tail_, *n);
            held->unlock();
        }
    } guard{this, &node, &held};
    return hub.park_releasing(deadline, &held, true);
}

Greenlet* WaitQueue::wake_one() {
    Guard held(*this);
    return wake_one(held);
}

Greenlet* WaitQueue::wake_one(Guard&) {
    while (WaitNode* n = head_) {
        // Claimed before it is unlinked: once unlinked, its waiter may leave
        // without the Guard (the node and the wait are gone). A waiter whose
        // deadline already fired is on its way out: skip it so that the
        // notification is not lost.
        Greenlet* g = n->g;
        bool claimed = Runtime::claim_parked(*g);
        NodeList::unlink(head_, tail_, *n);
        if (claimed) {
            Hub::deliver(*g, Wake::event);
            return g;
        }
    }
    return nullptr;
}

std::size_t WaitQueue::notify_all() {
    Guard held(*this);
    return notify_all(held);
}

std::size_t WaitQueue::notify_all(Guard& held) {
    std::size_t k = 0;
    while (wake_one(held)) ++k;
    return k;
}

std::size_t WaitQueue::size() const noexcept {
    std::size_t k = 0;
    for (WaitNode* n = head_; n; n = n->next) ++k;
    return k;
}

}  // namespace greenshim
