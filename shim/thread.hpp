// The shim's emulated pthread: what a pthread_t made by pthread_create points to.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <unwind.h>

#include <atomic>
#include <cstdint>

#include "greenshim/hub.hpp"

namespace greenshim::shim {

struct TsdEntry {
    std::uint64_t seq;  // the key's generation when the value was set
    void* value;
};

inline constexpr unsigned kTsdInline = 32;

struct Tsd {
    TsdEntry first[kTsdInline] = {};
    TsdEntry* rest = nullptr;  // keys from kTsdInline on, allocated on first use
};

// A thread's cancellation state (thread.cpp): pthread_cancel sets
// `requested` from any thread; the rest is the thread's own.
struct Cancellation {
    std::atomic<bool> requested{false};
    std::atomic<bool> disabled{false};  // PTHREAD_CANCEL_DISABLE (read by pthread_cancel)
    bool async = false;                 // PTHREAD_CANCEL_ASYNCHRONOUS (acted on as deferred)
    bool woke = false;                  // a wait of its current call was ended by the cancellation
    bool exiting = false;               // leaving (pthread_exit or a cancellation): acts on none
};

struct GThread {
    std::uintptr_t magic = 0;  // address ^ constant: tells our pthread_t from glibc's
    void* (*start)(void*) = nullptr;
    void* arg = nullptr;
    void* result = nullptr;
    Greenlet* greenlet = nullptr;  // until it finishes
    bool detached = false;
    bool finished = false;
    bool joining = false;
    bool stack_from_attr = false;  // its stack size is the pthread_attr_t's, not GREENSHIM_STACK_SIZE's
    char name[16] = {};
    sigset_t sigmask;  // its own view; the OS thread's mask is the main greenlet's
    bool owns_os_mask = false;  // it forked, in the child: the OS thread's mask is its (mask_op sets both)
    WaitQueue joiners;
    // Where its keys' values are (tsd.cpp): with a thread-locals block of
    // its own, in the block (tsd.cpp's thread_local, found when it starts:
    // already in its stack's top page, as glibc keeps a thread's first 32 in
    // its TCB); sharing the OS thread's, a Tsd of its own (tsd_allocated).
    Tsd* tsd = nullptr;
    bool tsd_allocated = false;
    // pthread_exit (thread.cpp): a forced unwind, as glibc's, that ends in
    // thread_main (exit_jump, at the start routine's caller, whose CFA is
    // exit_cfa) and on the way runs the C cleanup handlers
    // (pthread_cleanup_push) registered in `cleanups`, innermost first.
    _Unwind_Exception exit_unwind{};
    void* exit_value = nullptr;
    void* exit_jump[5] = {};
    std::uintptr_t exit_cfa = 0;
    __pthread_unwind_buf_t* cleanups = nullptr;
    Cancellation cancel;
};

// Ours, or nullptr for a real pthread_t.
GThread* gthread_of(pthread_t t) noexcept;
// The greenlet thread running now, or nullptr (main greenlet, real threads).
GThread* gthread_current() noexcept;
// fork() child bookkeeping: only the calling greenlet survives.
void threads_after_fork_child() noexcept;
// Whether greenlet threads get thread-locals of their own here (the default).
bool threads_own_thread_locals() noexcept;

// A new process starts with the signal mask of the thread that made it: the
// child of fork, exec's image, and the child of posix_spawn, popen and system
// (unless the spawn's attributes set one). A greenlet thread's mask is its
// own view (GThread::sigmask), while the OS thread's is the main greenlet's,
// or a worker hub's, which blocks the program's signals (start_workers).
// This makes the calling thread's mask the OS thread's for the life of the
// object, around such a call; the call must not park (nothing else may run
// on the OS thread meanwhile). signal.cpp.
class OsMaskOfThread {
public:
    OsMaskOfThread() noexcept;
    ~OsMaskOfThread();
    OsMaskOfThread(const OsMaskOfThread&) = delete;
    OsMaskOfThread& operator=(const OsMaskOfThread&) = delete;

private:
    bool set_ = false;
    sigset_t old_;
};
// In fork's child, the thread that forked is the only one left: its mask
// becomes the OS thread's, and stays so (signal.cpp).
void fork_child_takes_os_mask() noexcept;

}  // namespace greenshim::shim
