// greenshim runtime: greenlets.
//
// A Greenlet is a function running on its own stack (a Boost.Context fiber on an
// mmap'd stack with a PROT_NONE guard page below it). Control moves between
// greenlets only by explicit switches, with the semantics of Python's greenlet
// module:
//
//  * g->switch_to(v) runs g until it switches elsewhere; the value it receives
//    back is what the next greenlet to switch to us passes (or the return value
//    of a greenlet that dies while we are its first live ancestor).
//  * A fresh greenlet receives the first switch's value as its argument.
//  * When a greenlet's function returns, control goes to its parent (the first
//    ancestor that is not dead) with the return value. An exception escaping the
//    function is raised in that parent instead; GreenletExit counts as a normal
//    return with an empty value.
//  * A greenlet that is never switched back to is unwound when its last
//    shared_ptr goes: destructors on its stack run (Boost.Context's
//    forced_unwind), its stack returns to the pool, nothing leaks.
//
// Costs (measured on this 2-core VM, bench/results.md): a switch is a
// Boost.Context-style context jump plus saving errno and the C++ exception
// state. switch_to without a value, to a greenlet suspended in a switch, is
// inlined into the caller (two calls into the runtime around the jump): a
// round trip between two greenlets took 20.7 ns against 10.9 ns for a raw
// Boost.Context fiber (bench_switch). A switch that carries a value or an
// exception, starts a greenlet, or involves a greenlet with thread-locals of
// its own goes through the runtime, three calls deep: ~63 ns, most of it
// mispredicted returns (bench/analysis.md). Starting a greenlet takes a stack
// from a per-thread pool (an mmap + mprotect only when the pool is empty).
//
// Sanitizers (README, "Sanitizers"): in a build with -fsanitize=address each
// switch also tells ASan which stack it goes to (__sanitizer_start_switch_fiber
// and __sanitizer_finish_switch_fiber, two calls into the ASan runtime), and a
// stack in use is a LeakSanitizer root; the plain build compiles none of it.
// Under ASan's detect_stack_use_after_return a greenlet's locals live on ASan's
// fake stack, not within [stack_bottom(), stack_top()). Every build registers
// each stack with valgrind when it is mapped (a no-op outside valgrind).
//
// May not: switch between OS threads (a greenlet belongs to the thread that
// created it); switch to a greenlet the hub has parked (see hub.hpp) — such a
// greenlet is resumed only by the hub; catch(...) and swallow the unwinding of a
// greenlet being destroyed (rethrow what you catch).
#pragma once

#include <any>
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#define GREENSHIM_API __attribute__((visibility("default")))
// On the calls the inline switch makes from the program's code: called
// through the GOT (`call *GOT`) instead of a PLT stub, one jump less per call.
// Three calls a switch: bench_switch's round trip went from 26.4 to 21.7 ns
// with it (raw fiber 10.8) on a VM where indirect jumps are dear. GCC only.
#if defined(__GNUC__) && !defined(__clang__)
#define GREENSHIM_NOPLT __attribute__((noplt))
#else
#define GREENSHIM_NOPLT
#endif

#if defined(__x86_64__) && defined(__linux__)
#define GREENSHIM_INLINE_SWITCH 1
// (Not noexcept: a greenlet destroyed while suspended here is unwound from
// this call, Boost.Context's forced_unwind.)
extern "C" GREENSHIM_API GREENSHIM_NOPLT void* greenshim_jump_direct(void* to);
#else
#define GREENSHIM_INLINE_SWITCH 0
#endif

namespace greenshim {

class Hub;
class WaitQueue;
class Greenlet;

// Thrown into a greenlet to end it quietly; escaping its function it counts as a
// normal return (the parent receives an empty value).
struct GREENSHIM_API GreenletExit : std::exception {
    const char* what() const noexcept override { return "GreenletExit"; }
};

enum class GreenletState : std::uint8_t {
    fresh,      // created, never switched to
    running,    // the one greenlet running on this thread
    suspended,  // switched away from by an explicit switch_to()
    ready,      // in the hub's run queue
    parked,     // waiting in the hub for an fd, a timer or a wait queue
    dead,       // its function returned or raised
};

GREENSHIM_API const char* to_string(GreenletState s) noexcept;

namespace detail {
struct ThreadState;
struct WaitNode;
struct Runtime;

// switch_to's fast path, inlined into the caller so that the stack switch is
// made from the caller's own frame (greenlet.cpp says why that matters).
// switch_begin: if target can be resumed the plain way (it is suspended in a
// switch, and neither side has thread-locals of its own, nor is a value
// carried), does the leaving side's bookkeeping and returns target's saved
// context; else nullptr, and nothing was done. greenshim_jump_direct: the
// stack switch (x86-64). switch_arrived: the arriving side's bookkeeping in
// the common case (the one who switched to us lives on, nothing is carried
// or to free): true when done, else false, and nothing was done. A leaf that
// returns a bool, so the common switch builds no std::any. switch_end: the
// general arrival; returns what the switch that resumed us carries, or raises
// what it throws in.
GREENSHIM_API __attribute__((noinline)) GREENSHIM_NOPLT void* switch_begin(Greenlet& target) noexcept;
GREENSHIM_API __attribute__((noinline)) GREENSHIM_NOPLT bool switch_arrived(void* from_context) noexcept;
GREENSHIM_API __attribute__((noinline)) std::any switch_end(void* from_context);
}  // namespace detail

class GREENSHIM_API Greenlet : public std::enable_shared_from_this<Greenlet> {
public:
    using Fn = std::function<std::any(std::any)>;

    // A new greenlet whose parent is the current greenlet. stack_size 0 means
    // default_stack_size(); it is rounded up to whole pages.
    static std::shared_ptr<Greenlet> create(Fn fn, std::string name = {}, std::size_t stack_size = 0);
    // Convenience for functions that take and return nothing.
    static std::shared_ptr<Greenlet> create(std::function<void()> fn, std::string name = {},
                                            std::size_t stack_size = 0);

    // The greenlet running on this OS thread (the thread's main greenlet if no
    // other was switched to). Cost: a thread-local load.
    static Greenlet& current();
    // Who runs now, as a lock records its owner: the running greenlet's
    // address, but a per-thread token for the thread's main greenlet. Needs no
    // set-up (no allocation, no hub): on a thread the runtime has not seen yet
    // only its main greenlet can run, and the token stays main's once the
    // runtime sets the thread up. So a lock that an allocator takes inside
    // malloc can record its owner without reaching malloc. Cost: a
    // thread-local load or two.
    static const void* current_owner_id() noexcept;
    // What current_owner_id() says while this greenlet runs. Only for
    // greenlets of the calling OS thread (main's token is per thread).
    const void* owner_id() const noexcept;

    // Runs this greenlet; returns the value the next switch back to us carries.
    // Switching to a dead greenlet switches to its first live ancestor.
    // Inline: a switch without a value to a greenlet suspended in a switch
    // calls the stack switch from here (two calls around it), everything else
    // goes through switch_general(). Two overloads rather than a default
    // argument: the common call then has no std::any to build and destroy.
    __attribute__((always_inline)) std::any switch_to() {
#if GREENSHIM_INLINE_SWITCH
        if (void* to = detail::switch_begin(*this)) {
            void* from = greenshim_jump_direct(to);
            if (__builtin_expect(detail::switch_arrived(from), 1)) return {};
            return detail::switch_end(from);
        }
#endif
        return switch_general({});
    }
    std::any switch_to(std::any value) {
        if (!value.has_value()) return switch_to();
        return switch_general(std::move(value));
    }
    // Switches to this greenlet and raises e at its suspension point (a fresh
    // greenlet dies at once: e is then raised in its parent, unless it is
    // GreenletExit).
    std::any throw_in(std::exception_ptr e);
    std::any throw_in() { return throw_in(std::make_exception_ptr(GreenletExit{})); }

    bool dead() const noexcept { return state() == GreenletState::dead; }
    bool started() const noexcept { return state() != GreenletState::fresh; }
    // Another OS thread may read it (a hub waking a greenlet of another hub
    // claims it parked -> ready with a compare-and-swap); plain loads here.
    GreenletState state() const noexcept { return state_.load(std::memory_order_relaxed); }
    bool is_main() const noexcept { return is_main_; }

    Greenlet* parent() const noexcept { return parent_.get(); }
    // Re-parenting follows greenlet's rule: no cycles (std::invalid_argument).
    void set_parent(std::shared_ptr<Greenlet> p);

    std::uint64_t id() const noexcept { return id_; }
    const std::string& name() const noexcept { return name_; }
    void set_name(std::string n) { name_ = std::move(n); }
    std::size_t stack_size() const noexcept { return stack_size_; }
    // The usable stack of a started, not dead greenlet: [bottom, top). Main
    // greenlets report nullptr.
    void* stack_bottom() const noexcept;
    void* stack_top() const noexcept;

    // One pointer for whoever runs the greenlet (the shim keeps its pthread
    // emulation here). The runtime never touches it.
    void* user_data() const noexcept { return user_data_; }
    void set_user_data(void* p) noexcept { user_data_ = p; }

    // Thread-locals. A greenlet shares its OS thread's thread-locals
    // (__thread, thread_local, errno, glibc's per-thread state), as gevent's
    // greenlets do: switching between such greenlets changes no thread
    // pointer. set_own_thread_locals() gives this greenlet its own, as a
    // thread created by pthread_create has: a static TLS block, DTV and TCB
    // allocated the way glibc allocates a new thread's, switched to (the FS
    // base) whenever it runs; its C++ thread_local destructors run when its
    // function ends. Call it before the greenlet first runs, on its OS thread.
    // False if it cannot be done: started, a main or hub greenlet, out of
    // memory, or not supported here (own_thread_locals_unsupported() says
    // why: it relies on glibc 2.36's internals, checked at start-up, and is
    // off under sanitizers). The block sits at the top of the greenlet's
    // stack mapping, as glibc places a thread's (the mapping grows by its
    // size rounded up to pages: the stack keeps its size); only the DTV
    // (~300 B) is heap. Its stack is taken from this OS thread's pool here,
    // not at the first run. Costs (this VM): ~150 ns and one page touched
    // (the TCB and the static TLS of a C program: ~4.2 KiB, its lowest bytes
    // glibc's spare, untouched) per greenlet; +15 ns per
    // switch into or out of it (one wrfsbase; an arch_prctl system call
    // where the CPU or kernel does not allow wrfsbase, e.g. under valgrind
    // or in a VM that hides FSGSBASE: ~200 ns where system calls are cheap,
    // 3.5 us measured in a Firecracker VM whose getppid took 1 us; see
    // own_thread_locals_switch_by_syscall). May not: be moved to another OS
    // thread; call setuid & co. or fork through glibc directly (the shim
    // wraps them; see OsThreadLocalsScope in hub.hpp).
    bool set_own_thread_locals() noexcept;
    bool has_own_thread_locals() const noexcept;
    // nullptr when set_own_thread_locals() can work here, else why not.
    static const char* own_thread_locals_unsupported() noexcept;
    // True when that is by design (a sanitizer runtime is loaded), not
    // because a check of glibc's layout failed.
    static bool own_thread_locals_off_under_sanitizer() noexcept;
    // True when own thread-locals are supported here but each switch into or
    // out of a greenlet that has them is an arch_prctl system call (the CPU
    // or kernel does not allow wrfsbase: HWCAP2_FSGSBASE is not set).
    static bool own_thread_locals_switch_by_syscall() noexcept;
    // Tells glibc and libstdc++ the process has threads
    // (__libc_single_threaded = 0), as a greenlet thread's start must: they
    // skip synchronisation while it is set. The first call lets glibc finish
    // the set-up it defers to the first pthread_create first (its SIGSETXID
    // and SIGCANCEL handlers): a call of libc's pthread_create that fails
    // (a stack too large to map), once. Not in a signal handler.
    static void process_has_threads() noexcept;
    // Runs the running greenlet's thread-exit duties now, as glibc does for
    // an exiting thread: C++ thread_local destructors, glibc's own pthread
    // keys' destructors, glibc's per-thread buffers. Done anyway when its
    // function ends; idempotent; nothing for a greenlet that shares its OS
    // thread's thread-locals.
    static void run_thread_exit() noexcept;

    // The exception that ended this greenlet, if any (GreenletExit excluded).
    std::exception_ptr exception() const noexcept { return error_; }

    // Default stack size for greenlets created with stack_size 0: 256 KiB.
    static void set_default_stack_size(std::size_t bytes) noexcept;
    static std::size_t default_stack_size() noexcept;

    ~Greenlet();
    Greenlet(const Greenlet&) = delete;
    Greenlet& operator=(const Greenlet&) = delete;

    struct Impl;  // runtime-internal state (fiber, hub links); defined in the runtime's sources

private:
    struct Token {};

public:
    Greenlet(Token, Fn fn, std::string name, std::size_t stack_size, bool is_main);
    // A thread's main greenlet, its Impl constructed by the caller at impl
    // (runtime-internal storage that is not the heap: see greenlet.cpp).
    Greenlet(Token, Impl* impl);

private:
    friend struct detail::Runtime;
    friend class Hub;
    friend void* detail::switch_begin(Greenlet&) noexcept;

    std::any switch_general(std::any value);

    std::unique_ptr<Impl> impl_;
    std::shared_ptr<Greenlet> parent_;
    Fn fn_;
    std::string name_;
    std::exception_ptr error_;
    void* user_data_ = nullptr;
    std::uint64_t id_;
    std::size_t stack_size_;
    std::atomic<GreenletState> state_{GreenletState::fresh};
    bool is_main_ = false;
    bool impl_in_place_ = false;  // impl_ was not new'd: destroyed, not deleted
};

// Statistics of this thread's stack pool, for tests and benchmarks.
struct StackPoolStats {
    std::size_t mapped;   // stacks currently mmap'd (in use or pooled)
    std::size_t pooled;   // of those, free in the pool
    std::size_t reused;   // allocations served from the pool so far
};
GREENSHIM_API StackPoolStats stack_pool_stats() noexcept;

}  // namespace greenshim
