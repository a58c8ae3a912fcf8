// libgreenshim.so internals: the real libc functions, the per-fd table and the
// one wait loop every interposer goes through.
//
// An interposer reads in a breath: decide the fd's mode (io_fd), try the real
// call, and if it says EAGAIN park the greenlet until the fd is ready
// (retry_io); the waiting itself lives only in wait.cpp.
//
// Stack budget. An interposer runs on the caller's stack, and a greenlet
// thread's may be as small as 16 KiB (GREENSHIM_STACK_SIZE's floor). The
// shim's frames plus the runtime's park stay under 4 KiB on every path
// (gcc -fstack-usage: about 2.3 KiB for the deepest, a MSG_WAITALL recvmsg
// that parks), leaving the program at least 12 KiB. Nothing sized by the
// caller goes on the stack: iovec arrays are worked through in windows of 64
// entries, select sets past FD_SETSIZE go to the heap. shim/meson.build makes
// any frame over 1.5 KiB a compile error (-Werror=stack-usage), and
// tests/fairness runs a 2 MiB writev of 1,024 iovecs at 16 KiB.
#pragma once

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <netdb.h>
#include <resolv.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <mqueue.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <optional>

#include "greenshim/cold.hpp"
#include "greenshim/diag.hpp"
#include "config.hpp"
#include "faults.hpp"
#include "greenshim/hub.hpp"
#include "greenshim/raw_syscall.hpp"
#include "greenshim/symbols.hpp"
#include "greenshim/thread_state.hpp"

#define SHIM_EXPORT extern "C" __attribute__((visibility("default")))
// glibc's, for the _FORTIFY_SOURCE variants (__read_chk, __poll_chk, ...).
extern "C" void __chk_fail(void) __attribute__((noreturn));

// glibc's C cleanup-handler calls (what pthread_cleanup_push expands to in C
// without -fexceptions); pthread.h declares them only for C.
extern "C" {
void __pthread_register_cancel(__pthread_unwind_buf_t* buf);
void __pthread_unregister_cancel(__pthread_unwind_buf_t* buf);
void __pthread_register_cancel_defer(__pthread_unwind_buf_t* buf);
void __pthread_unregister_cancel_restore(__pthread_unwind_buf_t* buf);
[[noreturn]] void __pthread_unwind_next(__pthread_unwind_buf_t* buf);
}

namespace greenshim::shim {

// ---- process policy the runtime leaves to the shim ----

// How a parked call reacts to a signal handler: the kernel's rules for a
// blocked system call, per call. As the runtime's InterruptMask bits (a
// handler without SA_RESTART, one with it; signal.cpp's on_signals).
inline constexpr InterruptMask kByHandler = 1;
inline constexpr InterruptMask kByRestartingHandler = 2;
// A pthread_cancel of the thread (thread.cpp), in the wait of a cancellation
// point (POSIX's list: read, accept, sleep, poll, sem_wait, pthread_join,
// pthread_cond_wait, ...). Never of a lock, a barrier or a futex.
inline constexpr InterruptMask kByCancel = 4;
enum class Interruptible : InterruptMask {
    no = 0,                            // never (lock waits; joins and condition waits: cancellable(no))
    unless_restart = kByHandler,       // EINTR unless the handler has SA_RESTART (read, accept, sem_wait...)
    always = kByHandler | kByRestartingHandler,  // EINTR whatever the flags (sleeps, poll, select, epoll_wait)
};
// The same mode in a cancellation point's wait: a cancellation ends it too.
constexpr Interruptible cancellable(Interruptible mode) noexcept {
    return Interruptible(InterruptMask(mode) | kByCancel);
}
constexpr bool by_handler(Interruptible mode) noexcept { return (InterruptMask(mode) & kByHandler) != 0; }

// The exit status of a process the shim ends because of a deadlock (every
// greenlet waits for another; nothing outside could wake any of them).
inline constexpr int kDeadlockExitStatus = 86;

// ---- the real functions, each resolved once with dlsym(RTLD_NEXT) ----

void* resolve(const char* name) noexcept;

// libgcc_s's unwinder, which the shim reaches through forwarders of its own
// (unwind.cpp): loaded now if it is not yet. Called where unwinding may
// follow (the first pthread_create, the monitor). Cost once loaded: a load.
void unwinder_load() noexcept;

template <class F>
inline F real_fn(F& slot, const char* name) noexcept {
    F f = __atomic_load_n(&slot, __ATOMIC_ACQUIRE);
    if (__builtin_expect(f == nullptr, 0)) {
        f = reinterpret_cast<F>(resolve(name));
        __atomic_store_n(&slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

// (Defined in init.cpp, as start-up data: cold.hpp.)
#define GREENSHIM_REAL_SLOT(fn) extern decltype(&::fn) real_slot_##fn;
#define REAL(fn) (::greenshim::shim::real_fn(::greenshim::shim::real_slot_##fn, #fn))

// Every libc function the shim interposes or calls past its own interposers.
#define GREENSHIM_REAL_FUNCTIONS(X)                                                            \
    X(read) X(write) X(readv) X(writev) X(close) X(dup) X(dup2) X(dup3) X(fcntl) X(ioctl)       \
    X(pipe) X(pipe2) X(eventfd) X(timerfd_create) X(open) X(openat)                            \
    X(socket) X(socketpair) X(accept) X(accept4) X(connect) X(recv) X(recvfrom) X(recvmsg)      \
    X(recvmmsg) X(send) X(sendto) X(sendmsg) X(sendmmsg) X(sendfile) X(shutdown)              \
    X(setsockopt) X(getsockopt)                                                               \
    X(sleep) X(usleep) X(nanosleep) X(clock_nanosleep)                                        \
    X(poll) X(ppoll) X(select) X(pselect) X(epoll_wait) X(epoll_pwait) X(epoll_create)        \
    X(epoll_create1) X(epoll_ctl)                                                             \
    X(execve) X(execv) X(execvp) X(execvpe) X(fexecve) X(posix_spawn) X(posix_spawnp) X(fork)     \
    X(setuid) X(setgid) X(seteuid) X(setegid) X(setreuid) X(setregid) X(setresuid) X(setresgid) \
    X(setgroups)                                                                              \
    X(pthread_create) X(pthread_join) X(pthread_tryjoin_np) X(pthread_timedjoin_np)           \
    X(pthread_clockjoin_np) X(pthread_detach) X(pthread_self) X(pthread_exit) X(sched_yield)  \
    X(pthread_setname_np) X(pthread_getname_np) X(pthread_getattr_np) X(pthread_getschedparam) \
    X(pthread_setschedparam) X(pthread_setschedprio) X(pthread_getaffinity_np)                \
    X(pthread_setaffinity_np) X(pthread_getcpuclockid) X(pthread_kill) X(pthread_cancel) X(pthread_setcancelstate) X(pthread_setcanceltype) X(pthread_testcancel) \
    X(__pthread_register_cancel) X(__pthread_unregister_cancel) X(__pthread_register_cancel_defer) \
    X(__pthread_unregister_cancel_restore) X(__pthread_unwind_next)                          \
    X(pthread_mutex_init) X(pthread_mutex_destroy) X(pthread_mutex_lock) X(pthread_mutex_trylock) \
    X(pthread_mutex_timedlock) X(pthread_mutex_clocklock) X(pthread_mutex_unlock)             \
    X(pthread_mutex_consistent) X(pthread_cond_init) X(pthread_cond_destroy)                  \
    X(pthread_cond_signal) X(pthread_cond_broadcast) X(pthread_cond_wait)                     \
    X(pthread_cond_timedwait) X(pthread_cond_clockwait) X(pthread_rwlock_init)                \
    X(pthread_rwlock_destroy) X(pthread_rwlock_rdlock) X(pthread_rwlock_tryrdlock)            \
    X(pthread_rwlock_timedrdlock) X(pthread_rwlock_clockrdlock) X(pthread_rwlock_wrlock)      \
    X(pthread_rwlock_trywrlock) X(pthread_rwlock_timedwrlock) X(pthread_rwlock_clockwrlock)   \
    X(pthread_rwlock_unlock) X(sem_init) X(sem_destroy) X(sem_post) X(sem_wait) X(sem_trywait) \
    X(sem_timedwait) X(sem_clockwait) X(sem_getvalue) X(pthread_barrier_init)                 \
    X(pthread_barrier_destroy) X(pthread_barrier_wait) X(pthread_once) X(syscall)              \
    X(pthread_key_create) X(pthread_key_delete) X(pthread_getspecific) X(pthread_setspecific)  \
    X(sigaction) X(raise) X(pause) X(sigsuspend) X(sigtimedwait) X(signalfd) X(pthread_sigmask) X(sigprocmask)                           \
    X(waitpid) X(wait4) X(waitid) X(ptrace) X(getaddrinfo) X(getnameinfo) X(gethostbyname)              \
    X(gethostbyname2) X(gethostbyname_r) X(gethostbyname2_r) X(gethostbyaddr)                 \
    X(gethostbyaddr_r) X(res_query) X(res_search) X(res_querydomain)                         \
    X(pread) X(pwrite) X(preadv) X(pwritev) X(fsync) X(fdatasync)                             \
    X(fclose) X(fdopen) X(close_range) X(closefrom) X(flock) X(lockf) X(popen) X(pclose)      \
    X(system) X(fgets) X(fgetc) X(getc) X(getchar) X(fread) X(getdelim) X(getline)          \
    X(msgrcv) X(msgsnd) X(semtimedop) X(mq_receive) X(mq_timedreceive) X(mq_send) X(mq_timedsend)
GREENSHIM_REAL_FUNCTIONS(GREENSHIM_REAL_SLOT)

// ---- a greenlet's non-blocking socket attempts ----
// glibc's recvfrom/sendto are cancellation points: once the process has a
// second OS thread (a second hub, a carrier, a helper) each call flips the
// thread's asynchronous-cancel state around the syscall, two atomic
// read-modify-writes (1.2% of an echo server's CPU with two hubs). A
// greenlet's attempt (MSG_DONTWAIT) never blocks and a greenlet thread is
// never cancelled (pthread_cancel: ENOTSUP), so it makes the syscall itself,
// when the next recvfrom and sendto are libc's own (raw_sockio_init, at
// start-up). Another preloaded library's after ours is called as before.
extern bool g_raw_sockio;
void raw_sockio_init() noexcept;
inline ssize_t raw_result(long r) noexcept {
    if (__builtin_expect(r < 0 && r > -4096, 0)) {
        errno = int(-r);
        return -1;
    }
    return ssize_t(r);
}
inline ssize_t nb_recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) noexcept {
    if (__builtin_expect(g_raw_sockio, 1))
        return raw_result(detail::raw_syscall(SYS_recvfrom, fd, long(buf), long(n), flags, long(addr), long(alen)));
    return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
}
inline ssize_t nb_sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr,
                         socklen_t alen) noexcept {
    if (__builtin_expect(g_raw_sockio, 1))
        return raw_result(detail::raw_syscall(SYS_sendto, fd, long(buf), long(n), flags, long(addr), long(alen)));
    return REAL(sendto)(fd, buf, n, flags, addr, alen);
}

// ---- configuration (the table: config.hpp; read in init.cpp) ----

// Read once, on first use (init.cpp); then a load and a compare.
extern Config g_config;
extern int g_config_state;  // 0 not read, 1 reading, 2 read
const Config& config_first() noexcept;
inline const Config& config() noexcept {
    if (__builtin_expect(__atomic_load_n(&g_config_state, __ATOMIC_ACQUIRE) == 2, 1)) return g_config;
    return config_first();
}
// The one warning for a bad GREENSHIM_* value: "greenshim: ignoring NAME=VALUE
// (expected ...)", the value shown short and printable.
void warn_ignored(const char* name, const char* value, const char* expected) noexcept;

// True when this call may park: the shim is enabled and we are not inside the
// hub itself (libev's own epoll_wait/read/write must reach the kernel), in a
// signal handler, or in the runtime's own work (its helper threads).
// Inline: every interposed call asks (signal.cpp's depth, the runtime's
// thread state: thread_state.hpp).
extern thread_local int t_signal_depth __attribute__((tls_model("initial-exec")));  // signal.cpp
bool in_signal_handler_slow() noexcept;  // signal.cpp: handlers left by siglongjmp dropped first
inline bool in_signal_handler() noexcept { return t_signal_depth != 0 && in_signal_handler_slow(); }
extern thread_local bool t_carried __attribute__((tls_model("initial-exec")));  // (stall.cpp; below)

// vfork's child (process.cpp). Until it execs or exits it runs in its
// parent's memory, on the calling thread's stack and thread-locals, while
// that thread waits in the kernel; other OS threads of the parent run on. So
// in the child the shim changes nothing it shares with the parent: no park,
// no hub, no fd table entry, no signal handler or mask of the shim's. The
// interposers it calls become the libc calls (may_park is false; the fd
// lifecycle calls below do nothing; the signal calls, fcntl, ioctl and the
// setxid family go to libc at once), and its exec releases what the new
// program inherits from a record of the child's own (vfork_child_*), which
// the parent reads when vfork returns. Cost: one thread-local load.
struct VforkRecord;
extern thread_local VforkRecord* t_vfork __attribute__((tls_model("initial-exec")));
inline bool in_vfork_child() noexcept { return __builtin_expect(t_vfork != nullptr, 0); }
// The child made fd `to` a copy of `from` (dup, dup2, dup3, F_DUPFD), or made
// fd inheritable (from == to: F_SETFD, FIONCLEX): its exec looks at it.
void vfork_child_copied(int from, int to) noexcept;
// Before the child's exec: what the new program inherits gets its blocking
// mode back, as fd_release_for_exec does in a fork's child.
void vfork_child_release_for_exec() noexcept;

inline bool may_park(Hub*& hub) noexcept {
    hub = nullptr;
    // (t_carried here: a call made on a carrier inside a dlopen, which stays
    // there: come_back_from_carrier)
    if (!config().enabled || greenshim::detail::internal() || in_signal_handler() || t_carried || in_vfork_child())
        return false;
    hub = greenshim::detail::existing_hub();
    return !hub || greenshim::detail::state_head()->current != &hub->greenlet();  // (not in the hub itself)
}
inline bool may_park() noexcept {
    Hub* hub;
    return may_park(hub);
}
// Handlers run so far (signal.cpp), for a wait that yields instead of
// parking: interrupted_since() says whether one that ran since the mark
// interrupts the current greenlet's wait in that mode, as on_signals (signal.cpp)
// would have had it been parked.
struct SignalMark {
    std::uint64_t restart, norestart;
};
SignalMark signal_mark() noexcept;
bool interrupted_since(const SignalMark& mark, Interruptible mode) noexcept;
// For a call that waits with a signal mask of its own (sigsuspend, pselect,
// ppoll, epoll_pwait), as the kernel keeps it for the whole wait: mask is
// the calling thread's for the life of the object (nullptr: unchanged), and
// a park meanwhile ends with EINTR if a handler ran since the object was
// made, including one the new mask let through as it changed (SignalsSince:
// a signal already pending when the call came). Before, the mask was only
// the quick first look's, and make -j waited on in pselect with SIGCHLD
// blocked; nginx's master slept on in sigsuspend after its SIGCHLD handler
// had run. signal.cpp.
class WaitMask {
public:
    explicit WaitMask(const sigset_t* mask) noexcept;
    ~WaitMask();
    WaitMask(const WaitMask&) = delete;
    WaitMask& operator=(const WaitMask&) = delete;

private:
    std::optional<SignalsSince> since_;  // (made before the mask changes)
    sigset_t old_;
    bool set_ = false;
};
// Async-signal-safe: has the hub call sync_after_handlers() (and the signal
// callback) at its next turn. For a sem_post made in a signal handler.
void wake_hub_from_handler() noexcept;
// signal.cpp: sig to this OS thread, its handler run before it returns, also
// on a worker hub's OS thread (which blocks the program's signals). 0 or an errno.
int raise_here(int sig) noexcept;
// sync.cpp, in the hub greenlet after handlers ran: wakes the greenlets
// waiting on a semaphore a handler posted.
void sync_after_handlers(Hub& hub) noexcept;
// sync.cpp: a greenlet thread ends; robust mutexes it holds become
// owner-dead, as the kernel makes them when a thread dies.
void sync_thread_exiting(Greenlet& g) noexcept;
// In a fork's child: the sync tables' locks another OS thread may have held.
void sync_after_fork_child() noexcept;
// sync.cpp, at start-up: tells the runtime when a hub may not give its
// threads to another (Hub::set_share_check).
void sync_init() noexcept;
// signal.cpp: at start-up, SIGSEGV and SIGBUS go to the shim's stack overflow
// report (the program's handlers are chained); the main thread, and each other
// OS thread when it starts greenlet threads, gets a sigaltstack for it (none
// if the program set one).
void hold_fault_signals() noexcept;
void ensure_signal_stack() noexcept;
// signal.cpp: takes sig for the shim, as SIGSEGV is taken: its kernel handler
// is own (SA_SIGINFO, SA_ONSTACK, SA_RESTART, every signal blocked while it
// runs); the program's sigaction() of sig sees and changes only the program's
// own disposition. own hands a signal that is not its business to
// pass_signal_to_program, which does what the kernel would have done with the
// program's disposition. False (nothing changed) if the shim is disabled, sig
// is held already, or two are (the most it holds besides the faults).
// on_stack: the handler runs on the signal stack (SA_ONSTACK), as the fault
// handlers do; false: on the interrupted stack (the stall tick, whose frame
// must stay with the greenlet it interrupts).
bool hold_signal(int sig, void (*own)(int, siginfo_t*, void*), bool on_stack = true) noexcept;
void pass_signal_to_program(int sig, siginfo_t* info, void* uctx) noexcept;


// ---- per OS thread (thread.cpp) ----
//
// The shim's state that belongs to the OS thread, shared by its greenlets:
// not in thread_local variables, which a greenlet thread with thread-locals
// of its own (GREENSHIM_THREAD_LOCALS) sees its own copy of. It hangs on the
// OS thread's hub (Hub::embedder_data).
struct OsThreadSync;  // sync.cpp: process-shared objects in use, semaphore waiters
struct StallTicker;   // stall.cpp: the timer that looks for a greenlet that never waits
struct OsThread {
    OsThreadSync* sync = nullptr;
    StallTicker* ticker = nullptr;
};
// This OS thread's; made (with its hub) if `make`, else nullptr if none yet.
// nullptr when out of memory.
OsThread* os_thread(bool make) noexcept;

// ---- the program's code and the shim's (stall.cpp) ----
//
// A greenlet thread that runs without ever making a call that could wait (a
// CPU loop, a spin on a flag, a blocking call the shim does not see) would
// keep every other thread of its OS thread from running. A timer signal on
// that OS thread looks every GREENSHIM_HANDOFF/2 ms: a greenlet that has run
// that long without a switch is taken back (Hub::preempt_running) if the
// signal caught it in the program's own code: outside every interposer (the
// depth below is 0) and outside libc, the loader and the allocator (where it
// may hold a lock another thread of the same OS thread needs).
//
// How deep the current greenlet thread is in the shim: every exported
// interposer counts itself (SHIM_ENTER), and a greenlet thread starts at 1
// (the TLS image's value: the runtime's own start-up code of a greenlet) until
// its start routine runs as ProgramCode. Each greenlet thread has its own
// thread-locals, so its own count (only then does stall.cpp take threads back).
// Cost: an increment and a decrement of a thread-local per interposed call
// (and the two carrier flags below, a load each).
extern thread_local int t_shim_depth __attribute__((tls_model("initial-exec")));
// The current greenlet thread runs on a carrier OS thread (stall.cpp: it was
// handed off, Hub::hand_off_running), not on its hub's: the shim's state and
// the runtime's are the hub's thread's alone, so the first interposer it
// calls, or the end of its start routine, brings it back first
// (come_back_from_carrier: returns on the hub's thread, in the run queue's
// turn). Cost: a thread-local load per interposed call (this flag, a copy of
// Hub::carried_from() != nullptr, is one load where that is two).
extern thread_local bool t_carried __attribute__((tls_model("initial-exec")));
// caller: the interposed call's return address (nullptr: none, the end of a
// start routine), where a hand-back (below) would resume the thread.
void come_back_from_carrier(const void* caller = nullptr) noexcept;
// Set by come_back_from_carrier when the thread had computed a whole
// hand-off period on its carrier: the interposer's return (back to depth 0)
// hands it to a free carrier again at once (hand_back_to_carrier). Never
// when the call was made by libc, the loader, the allocator or our own code
// (the tick's rule: a thread moves only in the program's own code): a
// malloc replacement's lock taken by that call would go along to the
// carrier, and the thread's next call there (its next lock, or the unlock)
// brought it back to the hub's run queue holding it, while the hub ran
// another thread spinning for that lock, never to give the hub back
// (mutex_spin_until): every hub hung (jemalloc, GREENSHIM_HUBS=2).
extern thread_local bool t_hand_back __attribute__((tls_model("initial-exec")));
void hand_back_to_carrier() noexcept;
struct ShimCall {
    // (always inline: __builtin_return_address(0) is then the interposer's)
    __attribute__((always_inline)) ShimCall() noexcept {
        ++t_shim_depth;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        // (Only at the outermost call: one the shim or the runtime makes
        // inside a call that stays on the carrier, the allocator's, stays
        // too. The runtime's spin for a wait queue's lock, a sched_yield
        // made through our syscall(), inside jemalloc's pthread_mutex_trylock,
        // took the thread back to its hub's run queue holding jemalloc's
        // lock, while the hub ran a thread that spun for it: every hub hung,
        // alloc-jemalloc-background, 1 run in ~200.)
        if (__builtin_expect(t_carried, 0) && t_shim_depth == 1) come_back_from_carrier(__builtin_return_address(0));
    }
    ~ShimCall() {
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        --t_shim_depth;
        if (__builtin_expect(t_hand_back, 0) && t_shim_depth == 0) hand_back_to_carrier();
    }
    ShimCall(const ShimCall&) = delete;
    ShimCall& operator=(const ShimCall&) = delete;
};
// The first statement of every exported interposer.
#define SHIM_ENTER ::greenshim::shim::ShimCall shim_call_
// The first statement of an interposer that is a cancellation point (see
// CancelPoint): declared after the ShimCall, so that it acts first.
#define SHIM_CANCEL_POINT SHIM_ENTER; ::greenshim::shim::CancelPoint cancel_point_
// The program's own code called from the shim's (a thread's start routine):
// the depth is 0 meanwhile. Also a libc function an interposer calls for the
// program that may block inside libc, where no interposer sees (stdio's read
// of a line that arrives in pieces: call_libc): the stall tick may then hand
// the thread to a carrier while it blocks, and it comes back as the call
// returns, before the interposer goes on.
struct ProgramCode {
    int saved = t_shim_depth;
    bool libc;
    explicit ProgramCode(bool libc_call = false) noexcept : libc(libc_call) {
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        t_shim_depth = 0;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
    }
    ~ProgramCode() {
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        t_shim_depth = saved;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        // (For a libc call, a caller in the shim's own code: no hand-back to
        // a carrier as the interposer returns, come_back_from_carrier.)
        if (__builtin_expect(t_carried, 0))
            come_back_from_carrier(libc ? reinterpret_cast<const void*>(&come_back_from_carrier) : nullptr);
    }
    ProgramCode(const ProgramCode&) = delete;
    ProgramCode& operator=(const ProgramCode&) = delete;
};
// The real function, called for the program where it may block inside libc
// (see ProgramCode). Only where the interposer holds nothing of the shim's
// across the call.
template <class Real, class... Args>
auto call_libc(Real real, Args... args) {
    ProgramCode libc(/*libc_call=*/true);
    return real(args...);
}
// At start-up, in the main thread: its code is the program's (depth 0), and
// the tick signal is taken (hold_signal).
void stall_init() noexcept;
using greenshim::detail::module_holds;  // (greenshim/symbols.hpp)
using greenshim::detail::module_named;
// fork() child: the parent's timer did not come along (POSIX timers are not
// inherited); the next pthread_create starts one.
void stall_after_fork_child() noexcept;
// Before a call the shim makes in the kernel because nothing else on this OS
// thread could ever run (wake_result's -EDEADLK): no tick until the hub gets
// control again (the tick would interrupt that call).
void stall_quiet() noexcept;
// A call the shim passes to the kernel that cannot block but that a signal
// handler still interrupts whatever its SA_RESTART (poll, select and
// epoll_wait with a zero timeout): one that came back with EINTR when no
// handler of the program's ran (the stall tick's) is made again.
bool handlers_ran_since(const SignalMark& mark) noexcept;  // signal.cpp
template <class Call>
inline auto unless_tick_eintr(Call&& call) -> decltype(call()) {
    SignalMark mark = signal_mark();
    for (;;) {
        auto r = call();
        if (!(r == -1 && errno == EINTR) || handlers_ran_since(mark)) return r;
    }
}
// After pthread_create made a greenlet thread with thread-locals of its own
// (only those keep their own depth) on hub's OS thread: starts the tick there
// (once per OS thread) if GREENSHIM_HANDOFF is on.
void stall_watch(Hub& hub) noexcept;
int stall_tick_signal() noexcept;  // the stall timer's signal (worker hubs keep it unblocked)
int stall_rerun_signal() noexcept;  // the tick's rerun on the interrupted stack (the same)
int dump_signal() noexcept;        // greenrun --dump's (report.cpp; worker hubs keep it unblocked for their part)
// Whether caller (a return address) is in the code of a malloc replacement
// loaded as a library (stall.cpp): a lock or futex wait made there never
// parks (sync.cpp), so no greenlet is ever parked holding an allocator's
// lock, and a malloc or free the hub makes (which cannot park) never waits
// for one that only its own parked greenlet could let go. Two compares.
bool from_allocator(const void* caller) noexcept;
// stall.cpp: this OS thread holds glibc's loader lock (a thread of it is in
// a dlopen or dlclose): no thread of it may move to another OS thread, or
// the unlock, made on another tid, would fail.
bool loader_lock_here() noexcept;

// ---- diagnostics (report.cpp) ----

// Starts what the configuration asks for (stats at exit, trace, monitor), and
// sets the hub's stranded handler (report.cpp).
void start_diagnostics() noexcept;
// Nothing can ever wake a greenlet again: prints every greenlet and where it
// waits, then exits with kDeadlockExitStatus. what: the call the main
// greenlet waits in (Wake::deadlock), or nullptr when main is not waiting
// (the hub found it stranded: see on_stranded in report.cpp).
[[noreturn]] void deadlock_exit(const char* what) noexcept;

// ---- the per-fd table (fd.cpp) ----

enum class FdKind : std::uint8_t {
    unknown = 0,  // not seen yet: discovered on first use
    plain,        // regular file, directory, block device: never blocks, pass through
    owned,        // made by the shim (socket, accept, pipe, ...): real O_NONBLOCK set by us
    borrowed,     // inherited or made behind our back: its O_NONBLOCK is not ours to change
};

struct FdState {
    FdKind kind = FdKind::unknown;
    bool user_nonblock = false;   // the program's view of O_NONBLOCK
    bool socket = false;
    bool stream = false;          // SOCK_STREAM: blocking sends transfer everything
    bool shared = false;          // another fd number refers to the same description (dup)
    bool drained = false;         // the last read came back short: the buffer is empty
    std::uint32_t group = 0;      // identifies the description among this process's fds
    std::int64_t rcvtimeo_ns = 0; // SO_RCVTIMEO (0 = none, negative = do not wait)
    std::int64_t sndtimeo_ns = 0; // SO_SNDTIMEO
};
// fd.cpp takes zero-filled pages for the table without constructing them:
// an FdState{} must be all zero bits (every member's default 0, unknown = 0).
static_assert(std::is_aggregate_v<FdState> && std::is_trivially_copyable_v<FdState>);
static_assert([] {
    constexpr FdState d{};
    return d.kind == FdKind::unknown && FdKind::unknown == FdKind{} && !d.user_nonblock && !d.socket && !d.stream &&
           !d.shared && !d.drained && d.group == 0 && d.rcvtimeo_ns == 0 && d.sndtimeo_ns == 0 &&
           sizeof(FdState) == 32;  // (a new member: add it above)
}());

// The entry for fd (nullptr if fd < 0 or absurdly large). Never discovers.
FdState* fd_slot(int fd) noexcept;
// The same, read only: nullptr too where no entry was ever made.
const FdState* fd_peek(int fd) noexcept;
// A pipe end gets a blocking description of its own in place (exec); false
// if fd is no pipe or that cannot be done.
bool reopen_pipe_blocking(int fd) noexcept;
// The entry, discovered (fstat, F_GETFL) if unknown; nullptr if fd is invalid.
FdState* fd_known(int fd) noexcept;
// The fd lifecycle: fd.cpp owns the table and the hub's watchers of each
// fd, and every event in an fd's life is one call:
//   fd_created    the shim made it (O_NONBLOCK set underneath: see OwnedFds)
//   fd_copy       dup/dup2/dup3 made newfd share oldfd's description
//   fd_replacing  dup2/dup3 is about to put another description on newfd
//   fd_closing    we are about to close it
//   fd_forget     it was closed behind our back (inside libc), or its number
//                 now means something we did not make: discovered on next use
//   fd_release    its description is shared with another program
// closing, forgetting and replacing wake the greenlets waiting on the fd
// (EBADF) and drop its watcher, so a reused number starts clean.
// What a creating call makes.
struct FdMade {
    bool socket;
    bool stream;  // SOCK_STREAM or a pipe: blocking writes transfer everything
};
// Proof that the real call that made an fd was given its non-blocking flag:
// only OwnedFds can make one, and fd_created takes nothing else, so an fd
// cannot enter the table as owned (non-blocking underneath) by a comment.
class MadeNonBlocking {
    MadeNonBlocking() = default;
    friend struct OwnedFds;
};
void fd_created(int fd, FdMade what, bool user_nonblock, MadeNonBlocking) noexcept;

// The one way the shim makes an fd it owns: make(flags) is the real call
// (socket, accept4, eventfd, ...), and it always gets `nonblock` (that
// call's spelling of O_NONBLOCK: SOCK_NONBLOCK, EFD_NONBLOCK, ...) added to
// the program's flags. The fd is then recorded as owned, with the program's
// own choice (flags & nonblock) kept as its view of O_NONBLOCK.
struct OwnedFds {
    template <class Make>
    static int make(int flags, int nonblock, FdMade what, Make&& make_fd) noexcept {
        int fd = make_fd(flags | nonblock);
        if (fd >= 0) fd_created(fd, what, (flags & nonblock) != 0, MadeNonBlocking{});
        return fd;
    }
    // The same for a call that fills a pair and returns 0 (pipe2, socketpair).
    template <class Make>
    static int make_pair(int flags, int nonblock, FdMade what, int fds[2], Make&& make_fds) noexcept {
        int r = make_fds(flags | nonblock);
        if (r != 0) return r;
        for (int i = 0; i < 2; ++i) fd_created(fds[i], what, (flags & nonblock) != 0, MadeNonBlocking{});
        return r;
    }
};
// One past the highest fd number the table has room for now (fds beyond
// were never seen).
int fd_table_size() noexcept;
void fd_forget(int fd) noexcept;
void fd_closing(int fd) noexcept;
void fd_replacing(int newfd) noexcept;

// The shim's own fds, kept out of the program's way: each hub's epoll fd
// and eventfd (made by libev while the runtime says so:
// greenshim::detail::making_loop_fds()) and the pidfds a waitpid parks on.
// own_fd_made moves a new one up, out of the numbers a program expects to
// get (the lowest free ones): to the first free number from
// min(RLIMIT_NOFILE, 4096) - 64 up, as valgrind keeps its own near the top.
// A program cannot close one: close() fails with EBADF, as for a number that
// is not open, close_range and closefrom leave them, dup2/dup3 onto one fails
// with EBUSY. Only the shim closes them (own_fd_closing, then the real
// close). In a fork's child, those the child's one thread does not use are
// closed (own_fds_after_fork_child): the other hubs' (their OS threads did
// not come along) and every pidfd (the forking thread is not in a waitpid).
// Up to 256 are guarded at once; one made beyond that is moved up all the same.
enum class OwnFd : std::uint8_t {
    loop,      // a hub's: stays with its OS thread over a fork
    child_wait // a waitpid's pidfd: the waiting thread's, gone in a fork's child
};
int own_fd_made(int fd, OwnFd what) noexcept;
// True while this OS thread's hub makes or closes its loop's own fds (inside
// libev: greenshim::detail::making_loop_fds()), unless a signal handler runs
// meanwhile: its calls are the program's.
inline bool hub_making_own_fds() noexcept { return greenshim::detail::making_loop_fds() && !in_signal_handler(); }
bool is_own_fd(int fd) noexcept;
void own_fd_closing(int fd) noexcept;
void own_fds_after_fork_child() noexcept;
// close_range(first, last, flags), leaving the shim's own fds open.
int close_range_sparing_own_fds(unsigned first, unsigned last, int flags) noexcept;
// newfd now refers to oldfd's open file description.
void fd_copy(int oldfd, int newfd) noexcept;
// The program changed O_NONBLOCK through fd: every fd of the same
// description sees it (O_NONBLOCK belongs to the description, not the number).
void fd_set_user_nonblock(int fd, bool on) noexcept;

// ---- how an interposer should perform I/O on an fd ----

enum class IoMode : std::uint8_t {
    pass,     // just call the real function (program wants non-blocking, or fd never blocks)
    nbfd,     // owned non-socket: the real call cannot block, EAGAIN means wait
    socket,   // socket: use MSG_DONTWAIT so the real call cannot block
    probe,    // borrowed non-socket: poll first, call when ready
};

struct IoFd {
    int fd;
    IoMode mode;
    FdState* st;
};

// Chooses the mode for an operation on fd (cost: a table lookup; an fstat and
// fcntl the first time an unknown fd is used).
IoFd io_fd(int fd) noexcept;

// Runs a regular-file call on the helper pool when GREENSHIM_FILE_IO=pool
// (errno carried back), else right here. fd < 0: not about an fd (open).
template <class Call>
inline auto file_call(int fd, Call&& call) -> decltype(call()) {
    if (!config().file_io_pool || !may_park()) return call();
    if (fd >= 0) {
        FdState* s = fd_known(fd);
        if (!s || s->kind != FdKind::plain) return call();
    }
    decltype(call()) r{};
    int err = 0;
    static WaitSite waiting{"file I/O (helper thread)", "pool"};
    WaitScope what(waiting, fd);
    greenshim::detail::current_hub().run_blocking([&] {
        r = call();
        err = errno;
    });
    errno = err;
    return r;
}

// ---- cancellation (thread.cpp) ----
//
// pthread_cancel of a greenlet thread (or of the main thread) is deferred,
// as glibc's default: it acts at a cancellation point, the exported calls
// that begin with SHIM_CANCEL_POINT, when it is the outermost interposer.
// At the call's start if one is pending; during its wait (a wait of a
// cancellable() mode ends with EINTR, the call returns through its own code,
// and its CancelPoint ends the thread instead of returning); and in
// pthread_testcancel. A call that did not have to wait returns its result,
// as glibc's does when the syscall completes. The thread then ends as
// pthread_exit(PTHREAD_CANCELED) ends it: cleanup handlers, C++ frames'
// cleanups, thread-specific data destructors.
//
// Set by the first pthread_cancel of a greenlet thread: until then a
// cancellation point costs one load and a branch at its start and end.
extern std::atomic<bool> g_cancels_sent;
// A park of mode ended with Wake::interrupted: if a cancellation of the
// calling thread did it, the call's CancelPoint ends the thread.
void note_cancel_wake(Interruptible mode) noexcept;
// close() without its cancellation point: for a close made inside another
// interposer (io.cpp).
int close_fd(int fd) noexcept;
// Whether a wait of the current call was ended by a cancellation (a wait
// that loops over spurious wakes ends the call instead).
bool cancel_woke() noexcept;

struct Cancellation;
class CancelPoint {
public:
    CancelPoint() {
        if (__builtin_expect(g_cancels_sent.load(std::memory_order_relaxed), 0)) begin();
    }
    // Acts (unwinds the thread) if the call's wait was ended by a cancellation.
    // (A cancellation sent while the call waited, the process's first, finds
    // no thread_ here: end() looks it up.)
    ~CancelPoint() noexcept(false) {
        if (__builtin_expect(g_cancels_sent.load(std::memory_order_relaxed), 0)) end();
    }
    CancelPoint(const CancelPoint&) = delete;
    CancelPoint& operator=(const CancelPoint&) = delete;

private:
    void begin();
    void end();
    Cancellation* thread_ = nullptr;
};

// ---- the one wait (wait.cpp) ----
//
// Every park an interposer makes goes through park_as(), and its outcome
// becomes the call's result in one place (wake_result), the way libdill ends
// every wait through one resume path that carries -errno.

// What besides the awaited event could end a wait; it decides what a
// deadlock (nothing left that could ever wake the main greenlet) means.
enum class EndsBy : std::uint8_t {
    other_thread,  // a lock, a join, an fd, a child: the deadlock is reported and
                   // the process exits with kDeadlockExitStatus
    signal_only,   // pause, an endless sleep, poll on nothing: the thread has
                   // nothing else to do, so the caller makes the real blocking
                   // call and sleeps in the kernel as unpatched (-EDEADLK)
};

// A park's outcome as the call's result: 0 when woken by what it waited for
// (or spuriously: the caller looks again); otherwise a negative errno:
// -ETIMEDOUT (the deadline passed), -EBADF (the fd was closed meanwhile),
// -EINTR (a signal handler interrupted it, as its Interruptible mode allows),
// -EDEADLK (a signal_only wait that nothing but a signal can end).
// what: the call, named in a deadlock report.
int wake_result(Wake w, const char* what, EndsBy ends) noexcept;

// Parks through wait(Hub&) (one of the Hub's waits, returning a Wake) with
// site/arg recorded for the trace, stats and reports, and mode as the
// greenlet's Interruptible mode; then wake_result(). -ENOMEM if the wait
// could not be set up. The form without a site is for a wait made of several
// parks whose caller holds the WaitScope.
template <class Wait>
int park_as(Interruptible mode, EndsBy ends, const char* what, Wait&& wait) noexcept {
    Wake w;
    try {
        InterruptScope interruptible{InterruptMask(mode)};
        w = wait(greenshim::detail::current_hub());
    } catch (...) {
        return -ENOMEM;
    }
    if (__builtin_expect(w == Wake::interrupted && g_cancels_sent.load(std::memory_order_relaxed), 0)) note_cancel_wake(mode);
    return wake_result(w, what, ends);
}
template <class Wait>
int park_as(WaitSite& site, std::intptr_t arg, Interruptible mode, EndsBy ends, Wait&& wait) noexcept {
    // (The site stays set through wake_result: a deadlock report shows this
    // greenlet waiting in it.)
    ParkScope scope(site, arg, InterruptMask(mode));
    Wake w;
    try {
        w = wait(greenshim::detail::current_hub());
    } catch (...) {
        return -ENOMEM;
    }
    if (__builtin_expect(w == Wake::interrupted && g_cancels_sent.load(std::memory_order_relaxed), 0)) note_cancel_wake(mode);
    return wake_result(w, site.call, ends);
}

// Parks the current greenlet until fd is ready for events (kReadable /
// kWritable) or the deadline passes. 0 when probably ready (the fd may
// still turn out not to be: check, and wait again); -1 with errno EAGAIN
// (timeout), EBADF (closed meanwhile) or EINTR (interrupted).
// A wait on an fd with a deadline (SO_RCVTIMEO) is one the kernel never
// restarts after a signal; without one it restarts if the handler has SA_RESTART.
int park_until_ready(int fd, int events, Deadline deadline) noexcept;
// The same where the kernel's own wait restarts after a handler with
// SA_RESTART even with a deadline (a POSIX message queue's): mode says.
int park_until_ready(int fd, int events, Deadline deadline, Interruptible mode) noexcept;

// ---- the cooperative budget (wait.cpp) ----
//
// A thread whose interposed calls keep completing without parking (a loop
// over a ready fd, select on a writable socket, a poll with a zero timeout, a
// non-blocking read that keeps saying EAGAIN) never gives the hub or another
// thread a turn: on one OS thread that starves every other thread, timers
// included. As tokio's coop budget and gevent's select do, such a thread
// gives way: after kCoopBudget calls in a row with no switch of its hub in
// between, the next call first yields (the thread goes to the back of the run
// queue, and the hub polls the loop with a zero timeout before it runs
// again). Only before a call, so one thread's own calls keep their order.
// Cost: a thread-local load and a compare per call (Hub::charge_call); a yield (two switches
// and one epoll_wait) per kCoopBudget calls, skipped when no other greenlet
// could run (Hub::alone).
inline constexpr unsigned kCoopBudget = 128;

// Yields unless no other greenlet could run. Only after may_park() said yes.
void coop_give_way(Hub& hub) noexcept;

// Called at the start of every interposed call that could have waited,
// once may_park() said yes (hub: what may_park(hub) found).
inline void coop_tick(Hub* hub) noexcept {
    if (hub && hub->charge_call(kCoopBudget)) coop_give_way(*hub);
}

// True if fd is ready for events right now (poll with a zero timeout).
bool ready_now(int fd, int events) noexcept;

// Fault injection (faults.hpp): true, with errno EAGAIN or EINTR, when this
// try on fd is to fail spuriously. EAGAIN only while fd is ready for events.
inline bool injected_failure(int fd, int events) noexcept {
    faults::Failure f = faults::failure();
    if (f == faults::Failure::none || (f == faults::Failure::eagain && !ready_now(fd, events))) return false;
    faults::injected(f);
    errno = f == faults::Failure::eagain ? EAGAIN : EINTR;
    return true;
}

// The one retry loop: op() performs the call so that it cannot block; on
// EAGAIN, park until ready. A probe-mode fd (blocking underneath) is polled
// before each try, and after each wake too: another greenlet woken by the
// same readiness may have taken the data, and a blocking call would then stop
// the thread.
// Under fault injection a try may instead meet a spurious EAGAIN (parks like
// a real one) or an EINTR no signal caused (tried again at once, as the kernel
// restarts a call no handler interrupted). A real EINTR means a handler
// without SA_RESTART ran: the program sees it.
template <class Op>
inline auto retry_io(const IoFd& f, int events, Deadline deadline, Op&& op) -> decltype(op()) {
    bool injected = false;  // at most one injected failure per call: any RATE makes progress
    for (;;) {
        while (f.mode == IoMode::probe && !ready_now(f.fd, events)) {
            if (park_until_ready(f.fd, events, deadline) < 0) return -1;
        }
        decltype(op()) r;
        if (faults::active() && !injected && (injected = injected_failure(f.fd, events))) {
            if (errno == EINTR) continue;
            r = -1;
        } else {
            r = op();
        }
        if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return r;
        if (park_until_ready(f.fd, events, deadline) < 0) return -1;
    }
}

// sec + nsec in nanoseconds; a time too long for int64 (valid to the kernel,
// e.g. 2^62 seconds) is INT64_MAX, which every deadline treats as never.
// sec >= 0; |nsec| < 1e9.
inline std::int64_t ns_saturating(std::int64_t sec, std::int64_t nsec) noexcept {
    if (sec > (INT64_MAX - 999999999) / 1000000000) return INT64_MAX;
    return sec * 1000000000 + nsec;
}

// For waits whose end no fd reports (a file lock another greenlet holds,
// room in a unix listener's backlog, a process-shared semaphore or mutex
// that another process may release): try_once() makes the call without
// blocking; while busy(errno) says so, park on a timer that backs off, and
// try again. Ends with the call's result; at the deadline with the last
// try's error; with EINTR if a signal interrupts (Backoff::interruptible).
//
// How it waits between tries: yield to the other greenlets and retry for
// the first spin_ns (a release that comes within microseconds is seen within
// microseconds), then park on a timer of first_ns, doubling up to max_ns.
// libev's epoll backend sleeps in whole milliseconds: a timer shorter than
// 1 ms fires after about 1 ms unless something else wakes the loop. With a
// queue, the park is on it too: a release made in this process notifies it,
// the waiter retries at once and its back-off starts again from first_ns
// (progress is being made). A park with a timer is never a deadlock.
struct Backoff {
    std::int64_t first_ns;
    std::int64_t max_ns;
    std::int64_t spin_ns = 0;
    // true: as the kernel treats a blocked call, EINTR whatever SA_RESTART says
    // when the wait has a deadline (the kernel never restarts a timed wait),
    // else unless the handler has SA_RESTART. false: never (mutex locks).
    bool interruptible = true;
    WaitQueue* queue = nullptr;
    // The wait of a cancellation point (lockf, a unix connect, a
    // process-shared sem_wait): a cancellation ends it too (EINTR).
    bool cancellation_point = false;
    // A wait the kernel never restarts after a handler, SA_RESTART or not
    // (System V IPC: signal(7)): EINTR even without a deadline.
    bool never_restarted = false;
};
// File locks, a full unix backlog: 1 ms backing off to 50 ms.
inline constexpr Backoff kSlowBackoff{1000000, 50000000};
// Objects another process may release, seen only by trying again (glibc's
// process-shared ones, sync.cpp; System V IPC, ipc.cpp): yield for 50 us,
// then 1 ms backing off to 2 ms (libev's epoll sleeps in whole ms).
inline constexpr Backoff kSharedBackoff{1000000, 2000000, 50000, true, nullptr};

template <class Try, class Busy>
int retry_with_backoff(Deadline deadline, Try&& try_once, Busy&& busy, const Backoff& how = kSlowBackoff) {
    std::int64_t backoff = how.first_ns;
    std::int64_t spin_until = how.spin_ns > 0 ? monotonic_ns() + how.spin_ns : 0;
    Interruptible mode = !how.interruptible ? Interruptible::no
                         : deadline == kForever && !how.never_restarted ? Interruptible::unless_restart
                                                                        : Interruptible::always;
    if (how.cancellation_point) mode = cancellable(mode);
    // A handler that runs while the greenlet yields, or is ready to run after
    // a timer, interrupts the call too, as it would the blocked call.
    SignalMark mark = signal_mark();
    for (;;) {
        int r = try_once();
        if (r >= 0 || !busy(errno)) return r;
        int err = errno;
        std::int64_t now = monotonic_ns();
        if (deadline != kForever && now >= deadline) return r;
        int w = -ETIMEDOUT;
        if (now < spin_until) {
            InterruptScope interruptible{InterruptMask(mode)};
            greenshim::detail::current_hub().yield();
        } else {
            Deadline next = deadline_after_ns(backoff);
            if (deadline < next) next = deadline;
            w = park_as(mode, EndsBy::other_thread, "a wait retried on a timer", [&](Hub& hub) {
                return how.queue ? how.queue->wait(next) : hub.sleep_until(next);
            });
            backoff = backoff * 2 > how.max_ns ? how.max_ns : backoff * 2;
        }
        if (w == -EINTR || interrupted_since(mark, mode)) {
            errno = EINTR;
            return -1;
        }
        if (w == 0) backoff = how.first_ns;  // released in this process: progress
        errno = err;
    }
}

// A time whose nanoseconds are out of range (EINVAL for the timed waits);
// nullptr is none, so not bad.
inline bool bad_time(const struct timespec* t) noexcept { return t && (t->tv_nsec < 0 || t->tv_nsec >= 1000000000L); }

// Whether the kernel can read the timespec at ts (wait.cpp). A call that
// reads a caller's time before the kernel does asks this first, so that a
// bad pointer is the kernel's EFAULT, never a crash of ours (one cheap
// syscall; only on paths that wait anyway).
bool kernel_reads(const struct timespec* ts) noexcept;

// The deadline for an absolute time on clock (pthread timed waits); nullptr
// means never. A time already past is now.
Deadline deadline_at(clockid_t clock, const struct timespec* abstime) noexcept;

// Skipping a read the loop knows would fail: a read on a stream socket that
// came back short (fewer bytes than asked) emptied the socket buffer, so the
// next read would almost surely fail with EAGAIN. It waits for readiness
// first instead (if data came meanwhile the loop reports it at once). In
// ping-pong traffic this saves one failed read per message.
inline int wait_if_drained(const IoFd& f, Deadline deadline) noexcept {
    if (!f.st || !f.st->drained) return 0;
    f.st->drained = false;
    return park_until_ready(f.fd, kReadable, deadline);
}
inline void note_read(const IoFd& f, ssize_t r, size_t asked) noexcept {
    if (f.st && f.st->stream) f.st->drained = r > 0 && size_t(r) < asked;
}

// Deadlines from SO_RCVTIMEO / SO_SNDTIMEO.
Deadline recv_deadline(const IoFd& f) noexcept;
Deadline send_deadline(const IoFd& f) noexcept;

// A description about to be shared with another program (fork, exec,
// posix_spawn, popen, SCM_RIGHTS) gets back the blocking mode this program
// set, and the shim stops relying on O_NONBLOCK for it (fd.cpp).
void fd_release(int fd) noexcept;
void fd_release_inheritable() noexcept;  // every fd without FD_CLOEXEC
void fd_release_for_exec() noexcept;      // the same before exec; pipes get descriptions of their own

}  // namespace greenshim::shim
