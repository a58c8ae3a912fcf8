// greenshim runtime: the hub. Not installed: the interface an embedder (the
// shim) builds waits on. A program that links the runtime uses gevent.hpp.
//
// One Hub per OS thread that uses it (created on first use), like gevent's hub:
// a greenlet that runs a libev loop and a FIFO run queue. A greenlet that must
// wait *parks*: it records what would wake it (an fd becoming ready, a deadline,
// a WaitQueue notification) and switches to the hub. The hub runs every
// greenlet that was ready when it started a pass, then runs the libev loop once
// (without blocking if something is ready), whose callbacks put woken
// greenlets back in the run queue.
//
// Every wait in greenshim goes through Hub::park(); fd waits and sleeps are thin
// layers over it. The shim's interposers (read, accept, poll, ...) and the
// gevent-style API (gevent.hpp) both use these calls.
//
// Costs: park + wake = two greenlet switches and a queue push/pop. An fd wait
// keeps its ev_io watcher armed after it fires, so a socket that is waited on
// again and again costs no epoll_ctl per wait; a watcher is stopped only when it
// fires with nobody waiting. A deadline arms the greenlet's own ev_timer (a heap
// insert, no syscall).
//
// Across OS threads: a greenlet of one hub may wake a greenlet of another
// (schedule(), WaitQueue), and a thread without a hub may too; the wake is
// posted to the other hub's async watcher. The rest of a hub (its loop, its
// run queue, its fd watchers) belongs to its own OS thread.
//
// May not: be called from the hub greenlet itself (it would park the loop:
// std::logic_error), from a signal handler, or, but for waking, for another
// thread's hub.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>

#include "greenshim/clock.hpp"
#include "greenshim/greenlet.hpp"

struct ev_loop;

namespace greenshim {

// Why a parked greenlet resumed.
enum class Wake : std::uint8_t {
    none,         // a raw switch_to() resumed it, not the hub
    event,        // what it waited for happened (fd ready, notified)
    timeout,      // its deadline passed
    closed,       // the fd it waited on was closed (Hub::fd_closed)
    interrupted,  // Hub::interrupt(): a signal handler asked it to stop waiting
    deadlock,     // main greenlet only: nothing left that could ever wake it
};
GREENSHIM_API const char* to_string(Wake w) noexcept;

// Readiness bits for fd waits (the same values as POLLIN / POLLOUT).
inline constexpr int kReadable = 0x001;
inline constexpr int kWritable = 0x004;

// Which interrupts end a wait: a bit set whose meaning belongs to the
// embedder (the shim: bit 0 a signal handler without SA_RESTART, bit 1 one
// with it). The runtime only matches bits; 0 means nothing interrupts it.
using InterruptMask = std::uint8_t;

// Sets the current greenlet's InterruptMask for the life of the object.
class GREENSHIM_API InterruptScope {
public:
    explicit InterruptScope(InterruptMask accepts) noexcept;
    ~InterruptScope();
    InterruptScope(const InterruptScope&) = delete;
    InterruptScope& operator=(const InterruptScope&) = delete;

private:
    void* impl_;  // the greenlet's (its Impl): the destructor runs on the same greenlet
    InterruptMask saved_;
};

// For the life of the object, a park of the current greenlet that accepts an
// interrupt (a nonzero InterruptMask) ends at once, with Wake::interrupted,
// if a signal was notified (Hub::notify_signal) since the object was made.
// For a call that sets a signal mask of its own and waits until a handler
// runs (sigsuspend, pselect, ppoll, epoll_pwait): the handler of a signal
// the new mask lets through may run as the mask changes, before the park,
// which would otherwise take it for an earlier one and sleep on. Any
// signal counts, whatever its kind: for waits that every handler ends.
// Cost: an atomic load and two stores; a compare in each park it covers.
class GREENSHIM_API SignalsSince {
public:
    SignalsSince() noexcept;
    ~SignalsSince();
    SignalsSince(const SignalsSince&) = delete;
    SignalsSince& operator=(const SignalsSince&) = delete;

private:
    void* impl_;  // the greenlet's (its Impl): the destructor runs on the same greenlet
    std::uint64_t saved_;
};

struct WaitSite;
// WaitScope (diag.hpp) and InterruptScope in one, for a single park: the
// site, its argument and the mask set with one look-up of the current
// greenlet, and put back with none (each park of the shim makes both).
// Cost: a call, a thread-local load and six stores each way; nests.
class GREENSHIM_API ParkScope {
public:
    ParkScope(WaitSite& site, std::intptr_t arg, InterruptMask accepts) noexcept;
    ~ParkScope();
    ParkScope(const ParkScope&) = delete;
    ParkScope& operator=(const ParkScope&) = delete;

private:
    void* impl_;  // the greenlet's (its Impl): the destructor runs on the same greenlet
    WaitSite* saved_site_;
    std::intptr_t saved_arg_;
    InterruptMask saved_mask_;
};

// Keeps the current greenlet on its hub for the life of the object: a hub
// does not give it to another (Hub::share_ready) even if it parks in a
// WaitQueue wait meanwhile. For an embedder's per-OS-thread state that the
// greenlet's stack points into across a wait (the shim's list of semaphore
// waiters). Cost: a thread-local load and an increment; nests.
class GREENSHIM_API StayOnHub {
public:
    StayOnHub() noexcept;
    ~StayOnHub();
    StayOnHub(const StayOnHub&) = delete;
    StayOnHub& operator=(const StayOnHub&) = delete;

private:
    void* impl_;
};

// Zeroes the whole pages of [from, to) by giving them back to the kernel
// (MADV_DONTNEED: they read as zeros and hold no memory until written
// again) when the span lies in the running greenlet's own stack; false,
// nothing done, otherwise (another greenlet's stack, the heap, an OS
// thread's stack, no greenlet running, under valgrind or ASan, which would
// not know the bytes are now zero). `from` and `to` must be page-aligned.
// For a zero-fill of a large stack buffer (the shim's memset): greenlets
// all run their requests at once where real threads are often queued, so
// such a buffer otherwise stays resident in every thread's stack at the same
// moment. Cost: one madvise (about 1 us, more with pages to free), so only
// worth it for tens of KiB; the pages fault back in one by one as written.
// Only for memory the caller is about to own as zeros: whatever the span
// held is gone.
GREENSHIM_API bool discard_own_stack_pages(void* from, void* to) noexcept;

// Takes the synchronous fault signals out of a signal mask: a fault that is
// blocked kills the process without running any handler (the kernel's
// force_sig), so no mask the runtime or the shim sets for its own threads
// and handlers holds them back, and a stack overflow is still reported.
inline void let_faults_through(sigset_t& set) noexcept {
    for (int fault : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS}) sigdelset(&set, fault);
}

// What a hub found when it has nothing to run, nothing it watches could wake
// anyone, and its main greenlet cannot be told with Wake::deadlock because
// it is not parked (it finished, or it was switched away from by hand).
enum class Stranded : std::uint8_t {
    finished,  // the main greenlet is gone and no other greenlet is alive
    deadlock,  // greenlets wait, and nothing left could ever wake any of them
};
// What to do then is the program's policy (the shim exits, or reports the
// deadlock and exits). The handler runs in the hub greenlet and must not
// return; without one, or if it returns, the hub calls std::terminate().
using StrandedHandler = void (*)(Hub& hub, Stranded what);

// While one exists on an OS thread, that thread is doing the runtime's own
// work: interposed libc calls must go straight to libc (the shim checks
// runtime_internal()). Pool threads are internal for their whole life.
class GREENSHIM_API InternalScope {
public:
    InternalScope() noexcept;
    ~InternalScope();
    InternalScope(const InternalScope&) = delete;
    InternalScope& operator=(const InternalScope&) = delete;
};
GREENSHIM_API bool runtime_internal() noexcept;

namespace detail { struct Diag; struct ThreadState; }

struct FdWait {
    int fd;
    short events;   // kReadable | kWritable
    short revents;  // set on return: what was seen ready
};

// A spin lock for a few loads and stores, never held across a switch:
// spins on a plain load, then gives the CPU away (the holder's OS thread may
// have been preempted by the kernel). All-zero bytes are an unlocked one.
// Cost: an atomic exchange and a store (~2-5 ns) when uncontended. Usable
// with std::lock_guard. WaitQueue::Guard takes one of these words too. A
// wait of 2 s is said once on stderr: its holder never lets go, most likely
// the waiting thread itself (a second Guard sharing the lock of one it holds).
class GREENSHIM_API SpinLock {
public:
    void lock() noexcept {
        if (word_.exchange(1, std::memory_order_acquire) != 0) wait_for(word_);
    }
    void unlock() noexcept { word_.store(0, std::memory_order_release); }
    // In a fork's child, whoever held it is gone.
    void reset() noexcept { word_.store(0, std::memory_order_relaxed); }
    // Takes `word` (0: free, 1: held) once it is free; the slow path of lock().
    static void wait_for(std::atomic<int>& word) noexcept;

private:
    std::atomic<int> word_{0};
};

// A FIFO of greenlets parked until notified: the one primitive under joins,
// locks, condition variables and semaphores. The waiter and the waker may be
// on different hubs (OS threads): a waiter of another hub is woken through
// its hub's async watcher (Hub::schedule). All-zero bytes are an empty
// WaitQueue, so one may live inside a statically initialised C object (a
// pthread_mutex_t, say) that is never constructed.
//
// Its list is guarded by one of 64 spin locks, picked by the queue's
// address (Guard). A primitive built on it keeps its own state (a lock's
// owner, a semaphore's count) under the same Guard, so that a waiter's
// "check, then wait" and a waker's "change, then wake" cannot interleave
// across hubs: the waiter enqueues and parks with the Guard held, and it is
// released only once the greenlet is marked parked.
class GREENSHIM_API WaitQueue {
public:
    WaitQueue() = default;
    WaitQueue(const WaitQueue&) = delete;
    WaitQueue& operator=(const WaitQueue&) = delete;
    ~WaitQueue();

    // Holds the queue's spin lock. Held for a few loads and stores, never
    // across a switch: wait(Guard&) releases it as the greenlet parks.
    // Cost: an atomic exchange and a store (~2-5 ns) when uncontended; a
    // contended one spins, then yields the OS thread. May not: be taken
    // twice by one thread (two queues may share a lock: never hold two).
    class GREENSHIM_API Guard {
    public:
        explicit Guard(const WaitQueue& q) noexcept : word_(detail_lock_word(&q)) { lock(); }
        // Not taken yet: lock() or try_lock() it.
        enum Deferred { deferred };
        Guard(const WaitQueue& q, Deferred) noexcept : word_(detail_lock_word(&q)) {}
        ~Guard() { unlock(); }
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
        void lock() noexcept {
            if (word_->exchange(1, std::memory_order_acquire) != 0) SpinLock::wait_for(*word_);
            held_ = true;
        }
        void unlock() noexcept {
            if (!held_) return;
            held_ = false;
            word_->store(0, std::memory_order_release);
        }
        // At most `spins` tries: for a signal handler, which may have
        // interrupted this very thread holding the same spin lock.
        bool try_lock(unsigned spins) noexcept {
            for (unsigned i = 0;; ++i) {
                if (word_->load(std::memory_order_relaxed) == 0 &&
                    word_->exchange(1, std::memory_order_acquire) == 0) {
                    held_ = true;
                    return true;
                }
                if (i == spins) return false;
                __builtin_ia32_pause();
            }
        }
        bool held() const noexcept { return held_; }

    private:
        std::atomic<int>* word_;
        bool held_ = false;
    };

    // Parks the current greenlet until notify_*() picks it or the deadline passes.
    Wake wait(Deadline deadline = kForever);
    // The same with the queue's Guard held by the caller (who checked its
    // condition under it): enqueues, and releases it once the greenlet is
    // parked. Returns with it released.
    Wake wait(Guard& held, Deadline deadline = kForever);
    bool notify_one() { return wake_one() != nullptr; }  // wakes the longest waiter; false if none
    // Wakes the longest waiter and says which greenlet it was (nullptr if none):
    // lets a lock hand itself over to the greenlet it wakes. A waiter whose
    // deadline fired meanwhile is skipped, so no notification is lost.
    Greenlet* wake_one();
    Greenlet* wake_one(Guard& held);  // with the Guard held by the caller
    std::size_t notify_all();      // wakes every waiter
    std::size_t notify_all(Guard& held);
    // Hints without the Guard (exact with it held).
    bool empty() const noexcept { return head_ == nullptr; }
    std::size_t size() const noexcept;

private:
    friend class Hub;
    static std::atomic<int>* detail_lock_word(const void* q) noexcept;
    detail::WaitNode* head_ = nullptr;
    detail::WaitNode* tail_ = nullptr;
};

// For calls glibc must make as the OS thread itself, not as a greenlet with
// thread-locals of its own (fork, setuid and the rest of the setxid family:
// glibc signals its list of real threads, and a greenlet's block is not on
// it): while one exists, the OS thread's own thread-locals are current.
// after_fork_child() in a fork's child: the greenlet's block takes the
// child's tid. Cost: nothing for a greenlet without its own; two switches of
// the thread pointer otherwise. May not: park while it exists.
class GREENSHIM_API OsThreadLocalsScope {
public:
    OsThreadLocalsScope() noexcept;
    ~OsThreadLocalsScope();
    void after_fork_child() noexcept;
    OsThreadLocalsScope(const OsThreadLocalsScope&) = delete;
    OsThreadLocalsScope& operator=(const OsThreadLocalsScope&) = delete;

private:
    void* own_ = nullptr;  // the greenlet's block, while the OS thread's is current
};

class GREENSHIM_API Hub {
public:
    // This thread's hub, created on first use (an ev_loop with the epoll
    // backend and a greenlet with a 256 KiB stack).
    static Hub& current();
    // This thread's hub if it exists, else nullptr. Cost: a thread-local load.
    static Hub* existing() noexcept;

    // Parks the current greenlet until schedule() picks it or the deadline
    // passes. The basic wait; everything else is built on it.
    Wake park(Deadline deadline = kForever);
    // Puts a parked greenlet in its hub's run queue; a greenlet that is not
    // parked is left alone. The wake is claimed with a compare-and-swap
    // (parked -> ready), so of a timer, a waker on this hub and one on
    // another, exactly one wins. Cheap for a greenlet of the caller's own
    // hub: no switch happens here. One of another hub's (or a call from a
    // thread without a hub) is posted to that hub's async watcher: a lock,
    // a vector push and, if that hub is blocked in its poll, an eventfd
    // write (~1-5 us until it runs there).
    void schedule(Greenlet& g, Wake why = Wake::event);
    // Wakes g with Wake::interrupted if it is parked (whatever its
    // InterruptMask); false if it was not parked.
    bool interrupt(Greenlet& g);
    // The same only if its wait's InterruptMask has a bit of `kinds` (the
    // shim's pthread_kill: a handler with SA_RESTART interrupts only the
    // waits the kernel never restarts). Cost: a load more.
    bool interrupt(Greenlet& g, InterruptMask kinds);
    // Interrupts g for good with `kinds` (the embedder's bits; 0 takes it
    // back): if g is parked in a wait whose InterruptMask has one of them,
    // the wait ends with Wake::interrupted, as interrupt() ends it, and so
    // does every later wait of g's that accepts one, at once, without
    // parking. For a cancellation. Any thread. Cost: an atomic store and a
    // look at g (for a g of another OS thread's hub that is not parked, up
    // to ~20 us of looking again: it may be between its park's check and
    // its parked state); every park pays a load and a test for it.
    // Caveat: a wait begun on another hub just as that hub's OS thread was
    // preempted by the kernel, inside those few instructions, for longer
    // than the look, stays parked; the next one sees it.
    static void interrupt_for_good(Greenlet& g, InterruptMask kinds);

    // sleep(0): lets every other ready greenlet run once, then continues.
    void yield();
    // Sleeps until the deadline (Wake::timeout) unless interrupted.
    // sleep_until, wait_fd, run_blocking and WaitQueue::wait may return on
    // another hub (a greenlet with its own thread-locals, with several hubs:
    // start_anywhere): after them, look the hub up again.
    Wake sleep_until(Deadline deadline);

    // Parks until fd is ready for `events`, the deadline passes or the fd is
    // closed through fd_closed(). Does not do any I/O itself.
    Wake wait_fd(int fd, int events, Deadline deadline = kForever);
    // poll()-like: parks until any fd is ready; fills revents.
    Wake wait_fds(FdWait* fds, std::size_t n, Deadline deadline = kForever);
    // Must be called before an fd is closed: waiters wake with Wake::closed and
    // its watcher is dropped, so a reused fd number starts clean. With several
    // hubs, the others that made a watcher of the number are told too (a
    // mutex, an allocation and, if one sleeps in its poll, an eventfd write
    // each), unless !tell_others (in a signal handler): they then find their
    // watcher stale only when they next wait on the number.
    void fd_closed(int fd, bool tell_others = true);
    // The same from a thread with no hub (a helper, a thread the runtime did
    // not make): the hubs that made a watcher of the number are told.
    static void fd_closed_off_hub(int fd, bool tell_others = true) noexcept;

    // Runs fn on a pool of helper OS threads and parks the current greenlet
    // until it has run (gevent's threadpool). For libc calls that would block
    // the thread and have no readiness to wait for (DNS lookups, slow files).
    // fn must not touch greenlets or the hub: it runs on another OS thread.
    // Cost: a queue push, a futex wake, an eventfd write back; ~10-20 us.
    // Returns Wake::event once fn ran.
    Wake run_blocking(std::function<void()> fn);

    // Async-signal-safe: asks the hub to call the signal callback (in the hub
    // greenlet) at its next turn. Wakes the loop from any thread.
    void notify_signal() noexcept;
    // notify_signal() on the process hub and on every worker hub (a handler
    // may have posted a semaphore a greenlet of any hub waits on).
    // Async-signal-safe.
    static void notify_signal_all() noexcept;
    // Called in the hub greenlet after notify_signal(); one for the process,
    // set once by the shim.
    static void set_signal_callback(void (*cb)(Hub&)) noexcept;
    // Whether a signal handler is installed: then a hub with nothing to do
    // waits for a signal instead of calling the stranded handler.
    static void set_signals_can_wake(bool yes) noexcept;
    static bool signals_can_wake() noexcept;
    // Wakes, with Wake::interrupted, the greenlet an interrupt from outside
    // the thread goes to: the main greenlet while it lives (as Linux gives a
    // process-directed signal to the main thread), else the first other live
    // greenlet whose wait accepts it. Only a wait whose InterruptMask has a
    // bit of `kinds` and that began before the last notify_signal() (an
    // interrupt that came before a wait does not end it). False if none.
    bool interrupt_one(InterruptMask kinds);
    // One for the process; see Stranded.
    static void set_stranded_handler(StrandedHandler h) noexcept;
    // One for the process: asked on a hub's thread before it gives any of
    // its ready greenlets to another hub (share_ready); false keeps them all
    // (the embedder holds per-OS-thread state for some greenlet of that hub
    // that it cannot point out with StayOnHub). None set: true.
    using ShareCheck = bool (*)(Hub& hub);
    static void set_share_check(ShareCheck check) noexcept;
    // The hub of the first OS thread that made one (where signals go).
    static Hub* process_hub() noexcept;
    // A thread-local (addr: the calling thread's copy) that a greenlet with
    // thread-locals of its own touches as soon as it resumes: the hub
    // prefetches its line in the next greenlet's block, with the rest of what
    // that greenlet touches first (pop_ready). Up to 4 lines, the first
    // noted kept; call before any greenlet with thread-locals of its own runs
    // (a constructor). Each costs a prefetch per resume of such a greenlet.
    static void note_hot_thread_local(const void* addr) noexcept;

    // Spawns fn as a new greenlet whose parent is the hub, queued to run.
    std::shared_ptr<Greenlet> spawn(Greenlet::Fn fn, std::string name = {}, std::size_t stack_size = 0);

    // ---- several hubs: greenlets spread over OS threads (GREENSHIM_HUBS) ----
    // Makes fn a greenlet of this hub (its parent this hub's greenlet), not
    // queued yet: start() queues it. Any thread may make one for any hub.
    std::shared_ptr<Greenlet> make_greenlet(Greenlet::Fn fn, std::string name = {}, std::size_t stack_size = 0);
    // Queues g (made by make_greenlet on any hub, never run) to run here,
    // this hub becoming its home and its parent: straight into the
    // run queue on this hub's own OS thread, else through its async watcher
    // (a lock-free push and, if that hub sleeps in its poll, an eventfd
    // write; ~5-20 us until it runs there). There, before g ever runs, a
    // thread-locals block g was given (Greenlet::set_own_thread_locals, by
    // its maker) is made that OS thread's (ThreadTls::rehome: its tid and
    // malloc cache), then adopt, if given, runs, in the hub greenlet: it may
    // not allocate or take a lock a greenlet may hold (it cannot wait).
    // May not: start g twice.
    void start(Greenlet& g, void (*adopt)(Greenlet&) = nullptr);
    // Queues g (made by make_greenlet on any hub, never run) in the spawn
    // queue, from which the process hub and the workers take work: a hub
    // takes a batch whenever it runs out of greenlets to run, and one each
    // pass while busy, never past its fair share of all the threads unless
    // it has nothing else to run (spawn_allowance); one asleep in its poll
    // is woken for it. So a
    // new thread runs on whichever hub comes free first, and the hubs that
    // run out of work take (steal) the new threads queued by busy ones, as
    // Go's Ps take from its global run queue. The hub that takes it becomes
    // its home (its parent, thread-locals block and adopt as for start()).
    // A thread that has run moves only when its hub, with several ready,
    // sees another hub asleep in its poll: that one is given the back half
    // of the ready ones that have their own thread-locals and were woken
    // from a WaitQueue wait (a lock, a condition variable, a join, timed or
    // not), a sleep_until, a wait_fd or a run_blocking call (share_ready:
    // woken from a wait_fd, only while the giving hub spent less than a
    // quarter of its last 10 ms in its poll, and 16 at a time: their fds'
    // watchers move too); a
    // wait on several fds (wait_fds) or a bare park() holds its hub's state on
    // its stack, and stays.
    // So a thread that waits may come back from the wait on another hub: the
    // caller must not keep a Hub& across one (look again: Hub::current()).
    // A thread that computes and is preempted (the shim's stall tick) goes to
    // a hub with a queue shorter by 2 (share_preempted).
    // Cost: a lock, a push, a load per hub and maybe an eventfd
    // write; a load per pass for each hub while the queue is empty. With no
    // worker running, start() on the caller's hub.
    static void start_anywhere(Greenlet& g, void (*adopt)(Greenlet&) = nullptr);
    // Runs the calling OS thread as a worker hub until the process ends: the
    // hub is made and takes from the spawn queue (start_anywhere), and the
    // thread's main greenlet parks for good while the hub runs what start()
    // gives it. A worker never reports a deadlock itself: when every hub is
    // idle, it has the process hub look (which tells its main greenlet).
    // Never returns. The caller blocks the signals the program handles first
    // (process-directed signals go to the process hub's thread).
    [[noreturn]] static void run_worker();
    // The i-th worker hub started (0-based; nullptr if none such runs yet).
    static Hub* worker(unsigned i) noexcept;
    // Worker hubs running now (run_worker), and whether this is one.
    static unsigned workers() noexcept;
    bool is_worker() const noexcept { return worker_; }

    // The loop's greenlet and this thread's main greenlet.
    Greenlet& greenlet() noexcept { return *hub_greenlet_; }
    Greenlet& main() noexcept { return *main_; }
    // True while the hub greenlet itself runs (the libev loop or its
    // callbacks): a wait here is impossible.
    bool in_hub() const noexcept;

    struct ev_loop* loop() noexcept { return loop_; }
    std::size_t ready_count() const noexcept { return ready_count_; }
    // True when no other greenlet of this hub could run now or be woken by
    // the loop (nothing ready, nothing parked on an fd, a timer or the pool,
    // no signal handler that could interrupt a wait): a yield would come
    // straight back. Cost: four loads.
    bool alone() const noexcept {
        return ready_count_ == 0 && loop_waiters_ == 0 && pool_waiters_ == 0 && away_ == 0 && !signals_can_wake();
    }
    std::uint64_t switches() const noexcept { return switches_.load(std::memory_order_relaxed); }

    // The cooperative budget (a policy its caller applies; see the shim's
    // coop_tick). Counts one call of the running greenlet that could have
    // waited; true once `budget` such calls came in a row with no switch of
    // this hub in between: the caller should give way (yield) before the
    // call. Cost: a load and a compare; no syscall, no thread-local.
    bool charge_call(unsigned budget) noexcept {
        std::uint64_t s = switches_.load(std::memory_order_relaxed);
        if (s != coop_seen_) {  // parked or yielded since: a fresh budget
            coop_seen_ = s;
            coop_left_ = budget;
            return false;
        }
        if (--coop_left_ != 0) return false;
        coop_left_ = budget;
        return true;
    }

    // ---- taking the OS thread back from a greenlet that does not wait ----
    // The mechanism; when to use it is the embedder's policy (the shim's
    // stall.cpp: a timer signal on the hub's thread, every few ms).
    //
    // True while the hub is blocked in its loop's poll with nothing to run
    // (nobody to take the thread back from). Readable in a signal handler on
    // the hub's thread. Cost: a load.
    bool idle_polling() const noexcept { return idle_polling_.load(std::memory_order_relaxed); }
    // True from just before the loop's poll system call to just after it
    // (libev's release and acquire callbacks): a signal handler on the hub's
    // thread that sees it interrupted that call or libev's few instructions
    // around it, where the thread holds no lock of libc's, the loader's or
    // the allocator's (no greenlet is ever suspended inside them). Cost: a load.
    bool blocked_in_poll() const noexcept { return polling_.load(std::memory_order_relaxed); }
    // Called in a signal handler on this hub's OS thread that interrupted the
    // running greenlet where it holds nothing of the runtime's or of libc's
    // (the caller's to know: outside every interposed call, outside libc and
    // the loader). That greenlet goes to the back of the run queue as if it
    // had yielded, the hub polls the loop and runs the others, and this
    // returns, still in the handler, once the greenlet is run again: by the
    // hub, or by a carrier the hub handed it to meanwhile (carried_from()
    // then says so, and the caller makes the frame right as after
    // hand_off_running). The
    // caller first lifts the handler's mask (the others must run with the
    // thread's own). False, nothing done, unless can_preempt().
    // Cost: a yield (two switches) plus the caller's signal.
    // May not: be called from anywhere but such a handler.
    bool preempt_running() noexcept;
    // Whether the running greenlet is one preempt_running() could take the
    // thread back from: one of this hub's, not the hub itself.
    bool can_preempt() const noexcept;
    // Greenlets preempt_running() took the thread back from, so far.
    std::uint64_t preemptions() const noexcept { return preemptions_.load(std::memory_order_relaxed); }

    // ---- handing the running greenlet to a spare OS thread (carrier.cpp) ----
    // Go's sysmon gives the P of a goroutine that ran too long to another M;
    // here the greenlet goes to another OS thread (a *carrier*) and the hub
    // goes on at once with the others on its own. A carrier runs one greenlet
    // at a time, with that greenlet's own thread-locals (its block: the tid
    // and malloc's tcache word in it are the carrier's while it is carried),
    // until the greenlet comes back (come_back()): then it joins its hub's
    // run queue again and the carrier waits for the next.
    //
    // Called where preempt_running() may be (a signal handler on this hub's
    // thread that caught the running greenlet outside the runtime, libc and
    // the loader), or where it sits in a system call libc makes for the
    // program (it keeps running, so what of libc's it holds stays held by a
    // running thread), after the caller lifted the handler's mask. Returns true
    // on the carrier's OS thread, still in the handler: the caller must make
    // the signal frame right for that thread (its signal mask and sigaltstack
    // are restored from the frame). False at once, nothing done, unless
    // can_preempt(), the greenlet has its own thread-locals (or is the OS
    // thread's main greenlet, and let_main_be_handed_off() said yes), and a
    // carrier is idle or another may start (set_carriers' cap).
    // Cost: two switches, a futex wake, ~10 us; a thread start (~30 us) the
    // first time each carrier is needed. An idle carrier ends after 2 s.
    // Main's adds a copy of the runtime's thread-locals and, where wrfsbase
    // is not allowed, two arch_prctl calls (one to go, one to come back).
    // blocked: the greenlet sits in a system call (it uses no CPU there), so
    // it may have a carrier beyond set_carriers' cap, up to 128 more.
    bool hand_off_running(bool blocked = false) noexcept;
    // Lets hand_off_running() take this OS thread's main greenlet (the
    // program's main thread, which shares the OS thread's own thread-locals
    // with the hub): it leaves with that block, and the hub goes on with a
    // stand-in made now (~4.6 KiB, kept). On the hub's own OS thread, where
    // allocating is allowed, once or more. false (main stays: only preempted)
    // for a worker hub, or where thread-locals are not per greenlet.
    bool let_main_be_handed_off() noexcept;
    // On a carrier, from the carried greenlet, at a point where it holds
    // nothing of libc's (the caller's to know): back to its hub's run queue;
    // returns on the hub's OS thread once the hub runs it. A no-op elsewhere.
    // carriable: the caller is in a signal handler at a point of the
    // program's own code (as for preempt_running), so the hub may hand the
    // greenlet to a carrier again from its run queue; it then returns on that
    // carrier (carried_from() says which).
    static void come_back(bool carriable = false) noexcept;
    // On a carrier: the hub the carried greenlet belongs to; else nullptr.
    static Hub* carried_from() noexcept;
    // Whether a greenlet waits for a carrier (a hub staged it: every carrier
    // was busy). A hint, for a carrier's tick: the embedder's cue to bring
    // the carried greenlet back (come_back(true)), so that the threads that
    // compute take turns on the carriers. Cost: a load.
    static bool carrier_awaited() noexcept;
    // Set once, before any hand-off: at most max carriers for greenlets that
    // compute, and up to 128 more for blocked ones (0: none, no hand-off), and the embedder's calls on the carrier's OS thread before
    // each greenlet it carries (start), after (stop), and when the carrier
    // ends (retire: it ends after kHelperIdleSeconds without a greenlet to
    // carry), with the embedder's own word for that carrier (its timer, say).
    // Threads start with every signal blocked.
    struct CarrierHooks {
        void (*start)(void** slot) = nullptr;
        void (*stop)(void** slot) = nullptr;
        void (*retire)(void** slot) = nullptr;
    };
    static void set_carriers(unsigned max, CarrierHooks hooks) noexcept;
    // Greenlets handed to a carrier so far, and carried now.
    std::uint64_t hand_offs() const noexcept { return hand_offs_.load(std::memory_order_relaxed); }
    // Greenlets this hub took from the spawn queue that another hub made,
    // and ready ones another hub gave it (share_ready).
    std::uint64_t steals() const noexcept { return steals_.load(std::memory_order_relaxed); }
    std::size_t away() const noexcept { return away_; }
    // fn(hub) runs once, in the hub greenlet, when the hub next gets control
    // (its next pass: after a blocking poll, or once the running greenlet
    // parks or yields). Signal-safe: the shim's stall timer, stopped while
    // there is nothing it could do, is started again this way.
    void call_when_back(void (*fn)(Hub&)) noexcept { when_back_.store(fn, std::memory_order_relaxed); }

    // One pointer for the embedder's own per-OS-thread state (the shim's):
    // a thread_local of its would become per greenlet once greenlets have
    // thread-locals of their own. The runtime never touches it.
    void* embedder_data() const noexcept { return embedder_data_; }
    void set_embedder_data(void* p) noexcept { embedder_data_ = p; }

    // After fork() in the child: re-initialise the loop's kernel state.
    void after_fork_child();

    ~Hub();
    Hub(const Hub&) = delete;
    Hub& operator=(const Hub&) = delete;

    struct FdWatcher;
    struct Async;

private:
    Hub();
    void run();
    void start_async();
    void stop_async() noexcept;

    // park(), releasing `held` (if any) once the greenlet is marked parked.
    // movable: once woken, it may be given to another hub (share_ready):
    // after the switch, the caller and what called it touch nothing of this
    // hub's but what share_ready undoes (the deadline's timer, the waiter
    // count, a one-fd wait's node: Impl::fd_node).
    Wake park_releasing(Deadline deadline, WaitQueue::Guard* held, bool movable);
    // schedule(): true if it claimed g (g was parked).
    static bool wake_parked(Greenlet& g, Wake why);
    static void deliver(Greenlet& g, Wake why);  // g claimed: into its hub's run queue
    void push_ready(Greenlet& g);
    void take_woken(Greenlet& g) noexcept;  // async.cpp: a wake another thread posted
    void share_ready() noexcept;            // gives ready greenlets to an idle hub (Hub::run)
    void share_preempted() noexcept;        // gives a preempted thread to a less loaded hub (Hub::run)
    void give_away(Greenlet& g, Hub& to) noexcept;  // g, out of this run queue, to `to`'s
    void fd_stop_if_idle(int fd) noexcept;           // give_away: its last fd's watcher, if nobody waits on it
    Greenlet* first_carriable(Greenlet*& prev) noexcept;
    void unlink_carriable(Greenlet& g, Greenlet* prev) noexcept;
    Greenlet* pop_ready();
    Greenlet& next_after_park() noexcept;
    void dispatch_hand_off() noexcept;
    void hand_off_ready() noexcept;
    void resumed_from_queue(Greenlet::Impl& im) noexcept;
    void came_back(Greenlet& g) noexcept;
    void nothing_to_do();
    void fd_watch(detail::WaitNode& n);
    void fd_unwatch(detail::WaitNode& n);
    void fd_drop(int fd);
    static void close_elsewhere(int fd, Hub* here, bool tell) noexcept;
    void fd_closed_elsewhere(int fd);  // async.cpp: another hub's close of fd
    bool drain_closed_fds() noexcept;  // async.cpp: the closes told (post_closed_fd), done
    friend class WaitQueue;
    friend struct detail::Runtime;
    friend struct FdWatcher;

    struct ev_loop* loop_ = nullptr;
    std::shared_ptr<Greenlet> hub_greenlet_;
    Greenlet* main_ = nullptr;
    detail::ThreadState* state_ = nullptr;  // its OS thread's (the deadlock report reads an idle hub's)
    int tid_ = 0;                           // its OS thread's kernel id (the same report names it)
    Greenlet* ready_head_ = nullptr;
    Greenlet* ready_tail_ = nullptr;
    std::size_t ready_count_ = 0;
    std::size_t loop_waiters_ = 0;  // parked greenlets the loop could wake
    std::size_t pool_waiters_ = 0;  // parked in run_blocking
    std::uint64_t coop_seen_ = 0;   // charge_call: switches_ at the last call
    unsigned coop_left_ = 0;
    // Polling the loop while greenlets are runnable (poll_due in hub.cpp).
    static constexpr unsigned kPollCheckPasses = 8;
    static constexpr unsigned kPollCheckSwitches = 64;  // next_after_park's direct switches
    unsigned unpolled_switches_ = 0;
    bool poll_clock_due() noexcept;  // poll_due's clock part
    // nothing_to_do: how often a deadlock is looked for again while an OS
    // thread the runtime does not know of could still wake someone.
    static constexpr std::int64_t kForeignRecheckNs = 20'000'000;
    static constexpr std::int64_t kMaxPollDelayNs = 100'000;
    bool poll_due() noexcept;
    bool yielded_ = false;  // a greenlet yielded in this pass: poll after it
    bool poll_now_ = false;  // a park found the poll due (next_after_park): poll before the rest
    bool forked_ = false;    // a fork child whose loop has not run since (run_loop)
    std::size_t pass_left_ = 0;  // greenlets the hub's current pass has still to run
    unsigned unpolled_passes_ = 0;
    std::int64_t unpolled_since_ = 0;  // the first clock read since the last poll (0: none yet)
    // share_ready gives away threads woken from a wait on an fd only while
    // this hub is saturated: it spent less than a quarter of its last window
    // (kBusyWindowNs at least, from one look to the next) in blocking polls.
    // That is a lasting imbalance, not the brief idle moments of two busy
    // hubs: such a move costs an epoll_ctl or two on each hub. At most
    // kFdShareMax a time.
    static constexpr std::int64_t kBusyWindowNs = 10'000'000;
    static constexpr unsigned kFdShareMax = 16;
    bool saturated(std::int64_t now) noexcept;
    std::int64_t idle_ns_ = 0;         // time spent in blocking polls (poll_idle)
    std::int64_t window_at_ = 0;       // the window's start
    std::int64_t window_idle_at_ = 0;  // idle_ns_ then
    bool saturated_ = false;           // the last window's verdict
    Async* async_ = nullptr;
    void* embedder_data_ = nullptr;
    // preempt_running / call_when_back: written in signal handlers of this
    // hub's thread, read by the hub (atomics for the signal fence).
    std::atomic<bool> idle_polling_{false};
    // ready_count_ as of this hub's last pass, for other hubs to compare
    // (share_preempted); 0 while it sleeps in its poll.
    std::atomic<std::size_t> load_hint_{0};
    std::atomic<void (*)(Hub&)> when_back_{nullptr};
    std::atomic<std::uint64_t> preemptions_{0};
    // hand_off_running: the greenlet and its carrier, for the hub to give it
    // to once it has the greenlet's context (dispatch_hand_off); greenlets
    // carried now (they come back through the async watcher).
    Greenlet* hand_off_g_ = nullptr;
    void* hand_off_to_ = nullptr;
    std::size_t away_ = 0;
    std::size_t carriable_ready_ = 0;  // queued greenlets a carrier may resume (Impl::carriable)
    std::atomic<std::uint64_t> hand_offs_{0};
    void poll_idle(int flags);
    void run_loop(int flags);            // ev_run, the loop's fds its own to remake (LoopFdsScope)
    FdWatcher** fds_ = nullptr;  // indexed by fd, grown on demand
    std::size_t fds_cap_ = 0;
    std::uint32_t fd_bit_;       // this hub's bit in an fd number's mask of hubs (hub.cpp's FdNumber)
    bool worker_ = false;  // run_worker's hub
    void worker_idle();    // nothing_to_do for a worker
    // Takes up to max greenlets from the spawn queue (start_anywhere) into
    // this hub's run queue; how many. Only the process hub and workers take.
    unsigned take_spawned(unsigned max, bool at_least_one = false);
    unsigned spawn_allowance(unsigned queued) noexcept;
    void make_home(Greenlet& g) noexcept;  // a never-run greenlet becomes this hub's (start, take_woken)
    std::atomic<std::uint64_t> steals_{0};
    // Greenlets made this hub's (make_home) and not yet ended: the spawn
    // queue's fair shares are counted in them (take_spawned).
    std::atomic<unsigned> homed_{0};

    // Diagnostics (diag.hpp). Written by this hub's thread only; read by
    // runtime_stats() and the monitor from any thread.
    friend struct detail::Diag;
    std::atomic<std::uint64_t> switches_{0};
    std::atomic<std::uint64_t> parks_{0};
    std::atomic<std::uint64_t> turn_{0};       // bumped each pass of the loop
    std::atomic<bool> polling_{false};         // in the loop's poll system call (blocked_in_poll)
    std::atomic<Greenlet*> running_{nullptr};  // the greenlet the hub last switched to
    std::atomic<std::int64_t> wait_ns_{0};
    std::int64_t poll_started_ = 0;
    std::int64_t timing_since_ = 0;            // when its timing began (0: not timed; under the registry's lock)
    pthread_t thread_;
    Hub* registry_next_ = nullptr;
    bool idle_ = false;  // counted in the idle book (diag.cpp; under its lock)
};

}  // namespace greenshim
