// pthreads as greenlets: pthread_create starts a greenlet on this OS thread's
// hub, and every call that takes a pthread_t understands the ones made here.
//
// A greenlet thread's pthread_t is the address of its GThread. Real threads
// (the process's main thread, threads made while the shim is disabled) keep
// glibc's pthread_t and go to the real functions.
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <unwind.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <utility>

#include "greenshim/diag.hpp"
#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace greenshim::shim {

namespace {
constexpr std::uintptr_t kMagic = 0x6772656e74687264ULL;  // "grenthrd"
// Greenlet threads not yet finished, changed and looked at under
// g_all_done's Guard (an OS thread of its own, with its hub, may start
// greenlet threads too); main's pthread_exit waits in g_all_done.
std::size_t g_live_threads = 0;
GREENSHIM_STARTUP_DATA WaitQueue g_all_done;  // (cold.hpp: its destructor reads it at every exit)
std::atomic<bool> g_workers_started{false};  // GREENSHIM_HUBS's workers (start_workers)

void free_thread(GThread* t) {
    t->magic = 0;
    if (t->tsd_allocated) delete t->tsd;
    delete t;
}
}  // namespace

GThread* gthread_of(pthread_t t) noexcept {
    auto* g = reinterpret_cast<GThread*>(t);
    if (!g) return nullptr;
    // A real pthread_t points at glibc's struct pthread, whose first word
    // points to itself; ours holds its address xor a constant.
    if (g->magic != (reinterpret_cast<std::uintptr_t>(g) ^ kMagic)) return nullptr;
    return g;
}

OsThread* os_thread(bool make) noexcept {
    try {
        Hub* hub = make ? &greenshim::detail::current_hub() : greenshim::detail::existing_hub();
        if (!hub) return nullptr;
        auto* o = static_cast<OsThread*>(hub->embedder_data());
        if (!o && make) {
            o = new OsThread;
            hub->set_embedder_data(o);  // (left behind if the OS thread ends: a few bytes)
        }
        return o;
    } catch (...) {
        return nullptr;
    }
}

GThread* gthread_current() noexcept {
    if (!greenshim::detail::existing_hub()) return nullptr;
    return static_cast<GThread*>(greenshim::detail::current_greenlet().user_data());
}

void tsd_run_destructors(GThread* t) noexcept;  // tsd.cpp
Tsd* tsd_of_running_thread() noexcept;           // tsd.cpp: its thread_local

// fork() child: only the calling greenlet lives on (and no worker hub).
void threads_after_fork_child() noexcept {
    g_live_threads = gthread_current() ? 1 : 0;
    g_workers_started.store(false);
}

namespace {

// The start routine's frame: its CFA (the caller's stack pointer at the
// call) is where a pthread_exit's unwind stops. Not inlined, so that it is a
// frame of its own whose cleanups (ProgramCode) the unwind runs.
__attribute__((noinline)) void* call_start(GThread* t) {
    t->exit_cfa = reinterpret_cast<std::uintptr_t>(__builtin_dwarf_cfa());
    ProgramCode program;  // stall.cpp may take the thread back in here
    return t->start(t->arg);
}

void thread_main(GThread* t) {
    // Its keys' values in its own block: found now, while the block is
    // current, so that a call made as the OS thread (fork's atfork handlers:
    // OsThreadLocalsScope) still finds them.
    if (!t->tsd) t->tsd = tsd_of_running_thread();
    void* result;
    // pthread_exit's unwind comes back here (exit_jump), with its value.
    if (__builtin_setjmp(t->exit_jump) == 0)
        result = call_start(t);
    else
        result = t->exit_value;
    // A C++ exception escaping a thread's start routine ends the process, as
    // with real threads: it is not caught above, so std::terminate runs.
    // Then glibc's order: thread_local destructors, then the keys'.
    Greenlet::run_thread_exit();
    tsd_run_destructors(t);
    sync_thread_exiting(greenshim::detail::current_greenlet());  // robust mutexes it holds: owner dead
    t->result = result;
    t->greenlet = nullptr;
    bool detached;
    {
        // A joiner may be a greenlet of another hub: once it sees `finished`
        // it frees t, so nothing here touches t after the Guard is let go,
        // unless t is detached (pthread_detach looks under the same Guard:
        // exactly one of the two frees it).
        WaitQueue::Guard held(t->joiners);
        t->finished = true;
        detached = t->detached;
        t->joiners.notify_all(held);
    }
    {
        WaitQueue::Guard held(g_all_done);
        if (--g_live_threads == 0) g_all_done.notify_all(held);
    }
    if (detached) free_thread(t);
}

}  // namespace

// Not with GREENSHIM_THREAD_LOCALS=shared, a sanitizer or a failed start-up
// check.
bool threads_own_thread_locals() noexcept {
    return !config().thread_locals_shared && !Greenlet::own_thread_locals_unsupported();
}

namespace {

// A greenlet thread gets thread-locals of its own, as a thread has, unless
// GREENSHIM_THREAD_LOCALS=shared or they cannot be had here: then it shares
// the OS thread's, with one warning line when a start-up check failed (not
// under a sanitizer, where sharing is the known way).
void give_own_thread_locals(Greenlet& g) noexcept {
    if (config().thread_locals_shared || g.set_own_thread_locals()) return;
    static bool looked = false;  // the answer does not change: look once
    if (looked) return;
    looked = true;
    const char* why = Greenlet::own_thread_locals_unsupported();
    if (!why || Greenlet::own_thread_locals_off_under_sanitizer()) return;  // (no why: out of memory)
    char line[300];
    std::snprintf(line, sizeof line, "greenshim: threads share thread-locals (__thread, errno): %s\n", why);
    write_fully(2, line, std::strlen(line));
}

std::size_t stack_size_for(const pthread_attr_t* attr, bool* from_attr) {
    std::size_t size = config().stack_size ? config().stack_size : kThreadStackDefault;
    *from_attr = false;
    if (attr) {
        std::size_t s = 0;
        void* addr = nullptr;
        // A caller-provided stack (pthread_attr_setstack) is not used: the
        // greenlet gets a pooled stack of the same size.
        if (pthread_attr_getstack(attr, &addr, &s) == 0 && addr && s) {
            *from_attr = true;
            return s;
        }
        if (pthread_attr_getstacksize(attr, &s) == 0 && s) {
            // glibc's default attr reports RLIMIT_STACK (8 MiB); only an
            // explicit size is honoured, found by comparing with a fresh attr.
            pthread_attr_t fresh;
            std::size_t dflt = 0;
            pthread_attr_init(&fresh);
            pthread_attr_getstacksize(&fresh, &dflt);
            pthread_attr_destroy(&fresh);
            if (s != dflt) {
                size = s;
                *from_attr = true;
            }
        }
    }
    if (size < std::size_t(PTHREAD_STACK_MIN)) size = PTHREAD_STACK_MIN;
    return size;
}

}  // namespace
}  // namespace greenshim::shim

namespace greenshim::shim {
// ---- several hubs (GREENSHIM_HUBS) ----
namespace {
void* worker_main(void*) {
    REAL(pthread_setname_np)(REAL(pthread_self)(), "greenshim-hub");
    // A sigaltstack, as the main thread's: for the overflow report of its
    // greenlets, and for its stall tick (stall.cpp: on it, the tick leaves
    // no frame on the stack of the greenlet it lands on).
    ensure_signal_stack();
    // Its stall tick now, while it may allocate (adopt_thread may not).
    if (threads_own_thread_locals()) stall_watch(greenshim::detail::current_hub());
    Hub::run_worker();
}

unsigned hubs_wanted() noexcept { return config().hubs == kHubsAuto ? usable_cpus() : config().hubs; }

// The workers start at the first pthread_create, one after the other, and
// that call waits until they run their loops (a process that never makes a
// thread pays nothing). Their OS threads block every signal but the faults,
// the stall tick and the dump's (whose other uses they pass to the main
// thread), so a signal sent to the process goes to the main thread, as with
// one hub. A raise() or pthread_kill() made by a thread of a worker lets its
// signal through for that call (raise_here, signal.cpp).
void start_workers() noexcept {
    if (g_workers_started.exchange(true)) return;
    unsigned want = hubs_wanted() - 1;
    sigset_t mask, old;
    sigfillset(&mask);
    let_faults_through(mask);
    sigdelset(&mask, stall_tick_signal());
    sigdelset(&mask, stall_rerun_signal());
    sigdelset(&mask, dump_signal());  // (the dump's request for a worker's part: on_dump_signal)
    REAL(pthread_sigmask)(SIG_SETMASK, &mask, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);  // the hub's set-up only: greenlets run on their own stacks
    unsigned started = 0;
    for (unsigned i = 0; i < want; ++i) {
        pthread_t th;
        if (REAL(pthread_create)(&th, &attr, worker_main, nullptr) != 0) break;
        ++started;
    }
    pthread_attr_destroy(&attr);
    REAL(pthread_sigmask)(SIG_SETMASK, &old, nullptr);
    while (Hub::workers() < started) REAL(sched_yield)();
}

// Runs on the hub the new thread was placed on, before it first runs: that
// OS thread's stall tick, which the creator (its own hub's) or the worker's
// start (a worker's) has made already, so that nothing here allocates: on
// another hub this runs in the hub greenlet, which cannot wait (the
// thread-locals block is made by the creator and moved without allocating,
// Hub::make_home).
void adopt_thread(Greenlet& g) noexcept {
    if (g.has_own_thread_locals()) stall_watch(greenshim::detail::current_hub());
}

}  // namespace
}  // namespace greenshim::shim

SHIM_EXPORT int pthread_create(pthread_t* out, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
    SHIM_ENTER;
    if (!may_park()) return REAL(pthread_create)(out, attr, start, arg);
    int detach = PTHREAD_CREATE_JOINABLE;
    if (attr && pthread_attr_getdetachstate(attr, &detach) != 0) return EINVAL;
    GThread* t = new (std::nothrow) GThread;
    // Key storage of its own, given back below if it gets a thread-locals
    // block (which has it): made first, where nothing is yet to undo.
    Tsd* tsd = t ? new (std::nothrow) Tsd : nullptr;
    if (!tsd) {
        delete t;
        return EAGAIN;
    }
    t->tsd = tsd;
    t->tsd_allocated = true;
    t->magic = reinterpret_cast<std::uintptr_t>(t) ^ kMagic;
    t->start = start;
    t->arg = arg;
    t->detached = detach == PTHREAD_CREATE_DETACHED;
    // A new thread starts with its creator's signal mask, and its name (the
    // kernel copies the creator's comm).
    if (GThread* creator = gthread_current()) {
        t->sigmask = creator->sigmask;
        std::memcpy(t->name, creator->name, sizeof t->name);
    } else {
        REAL(pthread_sigmask)(SIG_SETMASK, nullptr, &t->sigmask);
        REAL(pthread_getname_np)(REAL(pthread_self)(), t->name, sizeof t->name);
    }
    ensure_signal_stack();  // for the stack overflow report
    unwinder_load();        // here, on the creator's stack: a greenlet thread's exit unwinds (unwind.cpp)
    std::shared_ptr<Greenlet> g;
    Hub& hub = greenshim::detail::current_hub();
    if (config().hubs != 1) start_workers();
    try {
        g = hub.make_greenlet(
            [t](std::any) -> std::any {
                thread_main(t);
                return {};
            },
            {}, stack_size_for(attr, &t->stack_from_attr));
    } catch (...) {
        free_thread(t);
        return EAGAIN;
    }
    g->set_user_data(t);
    set_greenlet_entry(*g, reinterpret_cast<void*>(start));
    // Its thread-locals block, made here where waiting is allowed (the
    // allocator's locks), then moved to the hub it was placed on (Hub::start).
    give_own_thread_locals(*g);
    if (g->has_own_thread_locals()) {
        delete std::exchange(t->tsd, nullptr);  // (thread_main points it into the block)
        t->tsd_allocated = false;
        stall_watch(greenshim::detail::current_hub());
    }
    t->greenlet = g.get();
    {
        WaitQueue::Guard held(g_all_done);
        ++g_live_threads;
    }
    // The process has threads now, whatever the kernel says: libstdc++ and
    // glibc skip synchronisation while this is set (std::stop_token does).
    Greenlet::process_has_threads();
    *out = reinterpret_cast<pthread_t>(t);
    // With several hubs, the first hub to come free takes it (it may run,
    // and end, at once there).
    if (config().hubs == 1) hub.start(*g, adopt_thread);
    else Hub::start_anywhere(*g, adopt_thread);
    return 0;
}

namespace {
// join with a deadline: 0, EDEADLK, EINVAL, ESRCH-like errors, ETIMEDOUT, EBUSY.
// malformed_time: the caller's time is invalid; EINVAL only if the join would
// have to wait (glibc joins a thread that has ended without looking at it).
int join_until(pthread_t th, void** ret, Deadline deadline, bool try_only, bool malformed_time = false) {
    GThread* t = gthread_of(th);
    if (!t) return -1;  // not ours
    // (The thread's state is looked at under its joiners' Guard: it may end
    // on another hub.)
    WaitQueue::Guard held(t->joiners);
    if (try_only && !t->finished) return EBUSY;  // glibc's tryjoin looks at nothing else first
    if (t == gthread_current()) return EDEADLK;  // checked first, as glibc does
    if (t->detached || t->joining) return EINVAL;
    if (!t->finished) {
        if (try_only) return EBUSY;
        // (glibc 2.36 spins forever here instead: EINVAL is what POSIX allows)
        if (malformed_time) return EINVAL;
        t->joining = true;
        static WaitSite waiting{"pthread_join", "join"};
        while (!t->finished) {
            int r = park_as(waiting, -1, cancellable(Interruptible::no), EndsBy::other_thread,
                            [&](Hub&) { return t->joiners.wait(held, deadline); });
            held.lock();
            if ((r == -ETIMEDOUT || (r == -EINTR && cancel_woke())) && !t->finished) {
                t->joining = false;  // (a cancellation: the thread stays joinable, as glibc's)
                return r == -EINTR ? EINTR : ETIMEDOUT;
            }
        }
    }
    held.unlock();
    if (ret) *ret = t->result;
    free_thread(t);
    return 0;
}

}  // namespace

namespace {
// A thread the shim did not make (libc's pthread_create: an allocator's
// background thread, which jemalloc joins at exit): glibc's join blocks the
// OS thread until it ends, and its end may need another greenlet of this hub
// first (a lock it holds, a signal it sends). A helper thread waits in the
// join while this greenlet parks (any thread may join a joinable thread).
// A thread joining itself is glibc's to refuse (EDEADLK) at once.
template <class Join>
int join_os_thread(pthread_t th, Join&& join) {
    if (!may_park() || (!gthread_current() && pthread_equal(th, REAL(pthread_self)()))) return join();
    static WaitSite waiting{"pthread_join (an OS thread the shim did not make)", "join"};
    WaitScope what(waiting, -1);
    int r = 0;
    greenshim::detail::current_hub().run_blocking([&] { r = join(); });
    return r;
}
}  // namespace

SHIM_EXPORT int pthread_join(pthread_t th, void** ret) {
    SHIM_CANCEL_POINT;
    int r = join_until(th, ret, kForever, false);
    return r >= 0 ? r : join_os_thread(th, [&] { return REAL(pthread_join)(th, ret); });
}

SHIM_EXPORT int pthread_tryjoin_np(pthread_t th, void** ret) {
    SHIM_ENTER;
    int r = join_until(th, ret, kForever, true);
    return r >= 0 ? r : REAL(pthread_tryjoin_np)(th, ret);
}

SHIM_EXPORT int pthread_timedjoin_np(pthread_t th, void** ret, const struct timespec* abstime) {
    SHIM_CANCEL_POINT;
    if (!gthread_of(th)) return join_os_thread(th, [&] { return REAL(pthread_timedjoin_np)(th, ret, abstime); });
    bool malformed = bad_time(abstime);
    return join_until(th, ret, malformed ? kForever : deadline_at(CLOCK_REALTIME, abstime), false, malformed);
}

SHIM_EXPORT int pthread_clockjoin_np(pthread_t th, void** ret, clockid_t clock, const struct timespec* abstime) {
    SHIM_CANCEL_POINT;
    if (!gthread_of(th)) return join_os_thread(th, [&] { return REAL(pthread_clockjoin_np)(th, ret, clock, abstime); });
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) return EINVAL;
    bool malformed = bad_time(abstime);
    return join_until(th, ret, malformed ? kForever : deadline_at(clock, abstime), false, malformed);
}

SHIM_EXPORT int pthread_detach(pthread_t th) {
    SHIM_ENTER;
    GThread* t = gthread_of(th);
    if (!t) return REAL(pthread_detach)(th);
    bool finished;
    {
        WaitQueue::Guard held(t->joiners);
        if (t->detached) return EINVAL;
        t->detached = true;
        finished = t->finished;
    }
    if (finished) free_thread(t);
    return 0;
}

SHIM_EXPORT pthread_t pthread_self(void) {
    SHIM_ENTER;
    if (GThread* t = gthread_current()) return reinterpret_cast<pthread_t>(t);
    return REAL(pthread_self)();
}

SHIM_EXPORT int pthread_equal(pthread_t a, pthread_t b) { SHIM_ENTER; return a == b; }

namespace greenshim::shim {
namespace {
// pthread_exit in a greenlet thread unwinds it as glibc unwinds a thread: a
// forced unwind through libgcc_s (the unwinder the program's frames use), so
// that every C++ frame's cleanups run, `catch (...)` and
// `catch (abi::__forced_unwind&)` see it and must rethrow it, and C cleanup
// handlers (pthread_cleanup_push without -fexceptions: a jmp_buf registered
// with __pthread_register_cancel) run in their turn. glibc keeps those
// buffers in its struct pthread, which a greenlet thread does not have: they
// are kept in the GThread (the interposers below).
//
// The stop function is called before each frame is unwound, with the CFA of
// the frame below it: the caller's stack pointer at the call. So the frame
// whose locals hold a cleanup buffer is behind us once the CFA passes the
// buffer's address; then the handler runs (a longjmp into the buffer: the
// code pthread_cleanup_push expanded to calls it, then
// __pthread_unwind_next, which unwinds on from there). The start routine's
// caller, thread_main, is reached when the CFA reaches exit_cfa.
[[noreturn]] void jump_to(void* buf[5]) noexcept {
#if defined(__SANITIZE_ADDRESS__)
    __asan_handle_no_return();
#endif
    __builtin_longjmp(buf, 1);
}

_Unwind_Reason_Code exit_stop(int, _Unwind_Action actions, _Unwind_Exception_Class, _Unwind_Exception*,
                              _Unwind_Context* context, void* param) {
    auto* t = static_cast<GThread*>(param);
    std::uintptr_t cfa = _Unwind_GetCFA(context);
    bool end = actions & _UA_END_OF_STACK;  // (frames without unwind info from here on)
    if (__pthread_unwind_buf_t* c = t->cleanups; c && (end || cfa > reinterpret_cast<std::uintptr_t>(c)))
        std::longjmp(reinterpret_cast<__jmp_buf_tag*>(c->__cancel_jmp_buf), 1);
    if (end || cfa >= t->exit_cfa) jump_to(t->exit_jump);
    return _URC_NO_REASON;
}

// A catch (...) that ended without rethrowing: glibc's words and end.
void exit_not_rethrown(_Unwind_Reason_Code, _Unwind_Exception*) {
    static const char msg[] = "FATAL: exception not rethrown\n";
    write_fully(2, msg, sizeof msg - 1);
    std::abort();
}

[[noreturn]] void unwind_thread(GThread& t) {
    t.cancel.exiting = true;
#if defined(__SANITIZE_ADDRESS__)
    // The frames the unwind leaves behind (this one, pthread_exit's) keep
    // their redzones poisoned; the cleanups run below them. ASan does this
    // for a C++ throw itself (__cxa_throw), not for a forced unwind.
    __asan_handle_no_return();
#endif
    t.exit_unwind.exception_class = 0;  // (not one a catch clause can name, as glibc's)
    t.exit_unwind.exception_cleanup = exit_not_rethrown;
    _Unwind_ForcedUnwind(&t.exit_unwind, exit_stop, &t);
    jump_to(t.exit_jump);  // (only if the unwinder gave up)
}

// A hub's main greenlet (the program's main thread, or an OS thread of the
// program's that waited) leaves by pthread_exit or a cancellation: the
// process stays until the last thread ends (as with real threads), then
// exits with status 0. Its stack is not unwound.
[[noreturn]] void main_leaves() {
    static WaitSite waiting{"pthread_exit of main (waiting for the other threads)", "join"};
    WaitQueue::Guard held(g_all_done);
    while (g_live_threads > 0) {
        park_as(waiting, -1, Interruptible::no, EndsBy::other_thread, [&](Hub&) { return g_all_done.wait(held); });
        held.lock();
    }
    held.unlock();
    std::exit(0);
}

// A cleanup buffer's link to the one registered before it: glibc keeps it in
// the buffer's private words, which are ours for a greenlet thread.
__pthread_unwind_buf_t*& previous(__pthread_unwind_buf_t* buf) {
    return *reinterpret_cast<__pthread_unwind_buf_t**>(&buf->__pad[0]);
}

// A greenlet thread's pthread_cleanup_push and pop; false for a real thread
// (glibc keeps its buffers).
bool push_cleanup(__pthread_unwind_buf_t* buf) {
    GThread* t = gthread_current();
    if (!t) return false;
    previous(buf) = t->cleanups;
    t->cleanups = buf;
    return true;
}
bool pop_cleanup(__pthread_unwind_buf_t* buf) {
    GThread* t = gthread_current();
    if (!t) return false;
    t->cleanups = previous(buf);
    return true;
}
}  // namespace
}  // namespace greenshim::shim

SHIM_EXPORT void __pthread_register_cancel(__pthread_unwind_buf_t* buf) {
    SHIM_ENTER;
    if (!push_cleanup(buf)) REAL(__pthread_register_cancel)(buf);
}

SHIM_EXPORT void __pthread_unregister_cancel(__pthread_unwind_buf_t* buf) {
    SHIM_ENTER;
    if (!pop_cleanup(buf)) REAL(__pthread_unregister_cancel)(buf);
}

// pthread_cleanup_push_defer_np: cancellation is not emulated (ENOTSUP), so
// its type is nothing to save; the buffer is kept as above.
SHIM_EXPORT void __pthread_register_cancel_defer(__pthread_unwind_buf_t* buf) {
    SHIM_ENTER;
    if (!push_cleanup(buf)) REAL(__pthread_register_cancel_defer)(buf);
}

SHIM_EXPORT void __pthread_unregister_cancel_restore(__pthread_unwind_buf_t* buf) {
    SHIM_ENTER;
    if (!pop_cleanup(buf)) REAL(__pthread_unregister_cancel_restore)(buf);
}

// A C cleanup handler has run during a pthread_exit: on with the unwind.
SHIM_EXPORT void __pthread_unwind_next(__pthread_unwind_buf_t* buf) {
    GThread* t = nullptr;
    {
        SHIM_ENTER;
        t = gthread_current();
        if (t) t->cleanups = previous(buf);
    }
    if (!t) REAL(__pthread_unwind_next)(buf);
    unwind_thread(*t);
}

SHIM_EXPORT void pthread_exit(void* value) {
    GThread* t = nullptr;
    {
        SHIM_ENTER;
        t = gthread_current();
    }
    if (t) {
        t->exit_value = value;
        unwind_thread(*t);
    }
    SHIM_ENTER;
    if (may_park() && greenshim::detail::existing_hub() && &greenshim::detail::current_greenlet() == &greenshim::detail::existing_hub()->main())
        main_leaves();
    REAL(pthread_exit)(value);
    __builtin_unreachable();
}

SHIM_EXPORT int sched_yield(void) {
    SHIM_ENTER;
    if (!may_park()) return REAL(sched_yield)();
    greenshim::detail::current_hub().yield();
    return 0;
}

// pthread_yield is sched_yield. glibc 2.34 made it a compat symbol,
// pthread_yield@GLIBC_2.2.5, which binaries built against older glibc still
// import (Debian 12's sysbench); its body calls glibc's internal sched_yield,
// never ours, so a thread spinning on it would never let another run.
// shim/exports.map gives ours that version; <pthread.h> redirects the C++ name
// to sched_yield, hence the asm label.
SHIM_EXPORT int greenshim_pthread_yield(void) __asm__("pthread_yield");
SHIM_EXPORT int greenshim_pthread_yield(void) { SHIM_ENTER; return sched_yield(); }

SHIM_EXPORT int pthread_setname_np(pthread_t th, const char* name) {
    SHIM_ENTER;
    GThread* t = gthread_of(th);
    if (!t) return REAL(pthread_setname_np)(th, name);
    if (strlen(name) > 15) return ERANGE;
    strcpy(t->name, name);
    if (t->greenlet) t->greenlet->set_name(name);
    return 0;
}

SHIM_EXPORT int pthread_getname_np(pthread_t th, char* buf, size_t len) {
    SHIM_ENTER;
    GThread* t = gthread_of(th);
    if (!t) return REAL(pthread_getname_np)(th, buf, len);
    if (len < sizeof t->name) return ERANGE;  // as glibc: room for any name, whatever this one is
    strcpy(buf, t->name);
    return 0;
}

// The stack a greenlet thread runs on: runtimes (CPython among them) read
// their stack bounds from here.
SHIM_EXPORT int pthread_getattr_np(pthread_t th, pthread_attr_t* attr) {
    SHIM_ENTER;
    GThread* t = gthread_of(th);
    if (!t) return REAL(pthread_getattr_np)(th, attr);
    if (pthread_attr_init(attr) != 0) return ENOMEM;
    if (t->greenlet && t->greenlet->stack_bottom()) {
        char* bottom = static_cast<char*>(t->greenlet->stack_bottom());
        pthread_attr_setstack(attr, bottom, std::size_t(static_cast<char*>(t->greenlet->stack_top()) - bottom));
    }
    pthread_attr_setdetachstate(attr, t->detached ? PTHREAD_CREATE_DETACHED : PTHREAD_CREATE_JOINABLE);
    return 0;
}

// Greenlets share their OS thread's scheduling: these report the OS thread's
// and accept (ignore) changes for one greenlet.
SHIM_EXPORT int pthread_getschedparam(pthread_t th, int* policy, struct sched_param* param) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_getschedparam)(th, policy, param);
    return REAL(pthread_getschedparam)(REAL(pthread_self)(), policy, param);
}
SHIM_EXPORT int pthread_setschedparam(pthread_t th, int policy, const struct sched_param* param) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_setschedparam)(th, policy, param);
    return 0;
}
SHIM_EXPORT int pthread_setschedprio(pthread_t th, int prio) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_setschedprio)(th, prio);
    return 0;
}
SHIM_EXPORT int pthread_getaffinity_np(pthread_t th, size_t n, cpu_set_t* set) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_getaffinity_np)(th, n, set);
    return REAL(pthread_getaffinity_np)(REAL(pthread_self)(), n, set);
}
SHIM_EXPORT int pthread_setaffinity_np(pthread_t th, size_t n, const cpu_set_t* set) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_setaffinity_np)(th, n, set);
    return 0;
}
SHIM_EXPORT int pthread_getcpuclockid(pthread_t th, clockid_t* clock) {
    SHIM_ENTER;
    if (!gthread_of(th)) return REAL(pthread_getcpuclockid)(th, clock);
    return REAL(pthread_getcpuclockid)(REAL(pthread_self)(), clock);
}

namespace {
// Which waits of t's a signal sent to t interrupts, as in the kernel: none
// unless a handler runs for it (one t blocks stays pending, for its sigwait,
// sigtimedwait or signalfd; an ignored or default one interrupts nothing);
// with SA_RESTART, only those the kernel never restarts (a sleep, a poll,
// msgrcv), so that a read goes on waiting as it would unpatched.
InterruptMask handler_interrupts(GThread* t, int sig) noexcept {
    if (sigismember(&t->sigmask, sig) == 1) return 0;
    struct sigaction sa;
    if (sigaction(sig, nullptr, &sa) != 0) return 0;
    if (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN) return 0;
    return (sa.sa_flags & SA_RESTART) ? kByRestartingHandler : kByHandler;
}
}  // namespace

// Signals to a greenlet thread go to the OS thread that carries it; a parked
// target whose wait the handler interrupts is woken (EINTR) so that its
// handler's effect is seen promptly.
SHIM_EXPORT int pthread_kill(pthread_t th, int sig) {
    SHIM_ENTER;
    GThread* t = gthread_of(th);
    if (!t) return REAL(pthread_kill)(th, sig);
    // As glibc (2.34 on): the signals it keeps for itself are refused; a
    // thread that has ended (not joined yet) gets nothing, and that is not
    // an error, whatever the signal number.
    if (sig == __SIGRTMIN || sig == __SIGRTMIN + 1) return EINVAL;  // SIGCANCEL, SIGSETXID
    if (t->finished) return 0;
    if (sig < 0 || sig >= NSIG) return EINVAL;
    if (sig == 0) return 0;
    int r = raise_here(sig);
    InterruptMask kinds = r == 0 && t->greenlet ? handler_interrupts(t, sig) : 0;
    if (kinds != 0) {
        if (Hub* hub = greenshim::detail::existing_hub()) hub->interrupt(*t->greenlet, kinds);
    }
    return r;
}

// ---- cancellation (shim.hpp) ----
//
// The threads that can be cancelled here: greenlet threads (their GThread),
// and the OS thread of the process's first hub (the main thread, as a rule:
// the hub's main greenlet). glibc cannot be left to cancel that one: its
// SIGCANCEL handler would end whatever runs on the OS thread at libc's next
// cancellation point, the hub included (abort: "exception not rethrown").

namespace greenshim::shim {

std::atomic<bool> g_cancels_sent{false};

namespace {
Cancellation g_main_cancel;  // the process hub's main greenlet's

// The process hub's main greenlet, if the caller is it.
bool is_process_main() noexcept {
    Hub* hub = greenshim::detail::existing_hub();
    return hub && hub == Hub::process_hub() && &greenshim::detail::current_greenlet() == &hub->main();
}

// The calling thread's state, or nullptr (a thread the shim does not cancel).
Cancellation* current_cancellation() noexcept {
    if (GThread* t = gthread_current()) return &t->cancel;
    return is_process_main() ? &g_main_cancel : nullptr;
}

// Whether a cancellation is due now: asked for, enabled, not already acting.
bool cancel_due(const Cancellation& c) noexcept {
    return c.requested.load(std::memory_order_acquire) && !c.disabled && !c.exiting;
}

// The waits of g's cancellation points end (EINTR) while one is due.
void arm_cancel(const Cancellation& c, Greenlet* g) noexcept {
    if (g) Hub::interrupt_for_good(*g, cancel_due(c) ? kByCancel : 0);
}

// Ends the calling thread as pthread_exit(PTHREAD_CANCELED) does.
[[noreturn]] void act_on_cancel(Cancellation& c) {
    c.disabled = true;  // (as glibc: the cleanup handlers run with cancellation disabled)
    if (GThread* t = gthread_current()) {
        arm_cancel(c, t->greenlet);
        t->exit_value = PTHREAD_CANCELED;
        unwind_thread(*t);
    }
    c.exiting = true;
    arm_cancel(c, &greenshim::detail::current_greenlet());
    main_leaves();
}
}  // namespace

void note_cancel_wake(Interruptible mode) noexcept {
    if (!(InterruptMask(mode) & kByCancel)) return;
    if (Cancellation* c = current_cancellation(); c && cancel_due(*c)) c->woke = true;
}

bool cancel_woke() noexcept {
    Cancellation* c = current_cancellation();
    return c && c->woke;
}

// Only where the thread may park (not in the runtime's own work, a signal
// handler or the hub: a point inside one of those goes on to libc's call),
// and only in the outermost interposer: libev's eventfd write for a wake
// sent to another hub is our write(), called inside pthread_mutex_unlock
// (noexcept: nothing may unwind through it), and a nested point (usleep's
// nanosleep, sigwait's sigtimedwait) leaves it to its caller, which acts as
// it returns. The depth is the thread's own with its own thread-locals (the
// default): main's too when every greenlet thread has its own. Shared
// (GREENSHIM_THREAD_LOCALS=shared, a sanitizer build, a failed start-up
// check), it is the OS thread's, and not looked at.
bool outermost_point() noexcept {
    if (t_shim_depth == 1) return true;
    Greenlet& g = greenshim::detail::current_greenlet();
    return !(g.has_own_thread_locals() || (g.is_main() && threads_own_thread_locals()));
}

void CancelPoint::begin() {
    if (!outermost_point() || !may_park()) return;
    Cancellation* c = current_cancellation();
    if (!c || c->exiting) return;
    if (cancel_due(*c)) act_on_cancel(*c);
    c->woke = false;
    thread_ = c;
}

void CancelPoint::end() {
    if (!thread_ && (!outermost_point() || !may_park())) return;
    Cancellation* c = thread_ ? thread_ : current_cancellation();
    if (c && c->woke && cancel_due(*c)) act_on_cancel(*c);
}

}  // namespace greenshim::shim

// Deferred, as glibc's default: the thread acts on it at its next
// cancellation point (CancelPoint), or now if it is waiting in one.
SHIM_EXPORT int pthread_cancel(pthread_t th) {
    SHIM_ENTER;
    Cancellation* c;
    Greenlet* g;
    if (GThread* t = gthread_of(th)) {
        if (t->finished) return 0;  // (as glibc since 2.34: no error for a thread that has ended)
        c = &t->cancel;
        g = t->greenlet;
    } else if (Hub* main = Hub::process_hub(); main && pthread_equal(th, greenshim::hub_thread(*main)) && !main->main().dead()) {
        c = &g_main_cancel;
        g = &main->main();
    } else {
        return REAL(pthread_cancel)(th);
    }
    g_cancels_sent.store(true, std::memory_order_relaxed);
    if (c->requested.exchange(true)) return 0;
    // Its own: at its next cancellation point (POSIX; glibc acts at once
    // only for the asynchronous type, which is acted on as deferred here).
    if (c == current_cancellation()) return 0;
    if (!c->disabled) arm_cancel(*c, g);
    return 0;
}

SHIM_EXPORT int pthread_setcancelstate(int state, int* old) {
    SHIM_ENTER;
    Cancellation* c = current_cancellation();
    if (!c) return REAL(pthread_setcancelstate)(state, old);
    if (state != PTHREAD_CANCEL_ENABLE && state != PTHREAD_CANCEL_DISABLE) return EINVAL;
    if (old) *old = c->disabled ? PTHREAD_CANCEL_DISABLE : PTHREAD_CANCEL_ENABLE;
    if (c->exiting) return 0;  // (acting already: it stays disabled)
    c->disabled = state == PTHREAD_CANCEL_DISABLE;
    if (c->requested.load()) arm_cancel(*c, &greenshim::detail::current_greenlet());
    return 0;
}

SHIM_EXPORT int pthread_setcanceltype(int type, int* old) {
    SHIM_ENTER;
    Cancellation* c = current_cancellation();
    if (!c) return REAL(pthread_setcanceltype)(type, old);
    if (type != PTHREAD_CANCEL_DEFERRED && type != PTHREAD_CANCEL_ASYNCHRONOUS) return EINVAL;
    if (old) *old = c->async ? PTHREAD_CANCEL_ASYNCHRONOUS : PTHREAD_CANCEL_DEFERRED;
    c->async = type == PTHREAD_CANCEL_ASYNCHRONOUS;
    return 0;
}

SHIM_EXPORT void pthread_testcancel(void) {
    SHIM_CANCEL_POINT;
    if (!current_cancellation()) REAL(pthread_testcancel)();
}
