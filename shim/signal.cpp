// Signals. A handler the program installs runs through a trampoline that,
// after calling it, tells the hub; the hub then interrupts a parked greenlet
// exactly where the kernel would have interrupted a blocked thread: the main
// greenlet first, with EINTR if the call is one the kernel never restarts or
// the handler lacks SA_RESTART (Hub::interrupt_for_signal).
//
// sigaction() reports the program's own handler, never the trampoline.
#include <signal.h>
#include <sys/signalfd.h>

#include <atomic>
#include <cstring>

#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

struct Handler {
    std::atomic<void*> fn{nullptr};  // the program's handler; nullptr: not trampolined
    std::atomic<int> flags{0};       // the program's sa_flags
};
Handler g_handlers[NSIG];
std::atomic<std::uint64_t> g_pending_restart{0};    // signals whose handler had SA_RESTART
std::atomic<std::uint64_t> g_pending_norestart{0};  // signals whose handler had not
thread_local int t_in_handler = 0;

void trampoline(int sig, siginfo_t* info, void* uctx) {
    int saved = errno;
    Handler& h = g_handlers[sig];
    void* fn = h.fn.load(std::memory_order_acquire);
    int flags = h.flags.load(std::memory_order_relaxed);
    if (flags & SA_RESETHAND) h.fn.store(nullptr, std::memory_order_release);  // the kernel reset it too
    ++t_in_handler;
    if (fn) {
        if (flags & SA_SIGINFO) reinterpret_cast<void (*)(int, siginfo_t*, void*)>(fn)(sig, info, uctx);
        else reinterpret_cast<void (*)(int)>(fn)(sig);
    }
    --t_in_handler;
    std::uint64_t bit = std::uint64_t(1) << (sig & 63);
    (flags & SA_RESTART ? g_pending_restart : g_pending_norestart).fetch_or(bit);
    if (Hub* hub = Hub::process_hub()) hub->notify_signal();
    errno = saved;
}

// In the hub greenlet, after one or more handlers ran.
void on_signals(Hub& hub) {
    std::uint64_t nr = g_pending_norestart.exchange(0);
    std::uint64_t r = g_pending_restart.exchange(0);
    if (nr) hub.interrupt_for_signal(false);
    else if (r) hub.interrupt_for_signal(true);
}

bool is_trampoline(const struct sigaction& sa) {
    return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == trampoline;
}

int do_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    if (!config().enabled || sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
        return REAL(sigaction)(sig, act, old);
    struct sigaction current;
    if (REAL(sigaction)(sig, nullptr, &current) != 0) return -1;
    struct sigaction view = current;
    Handler& h = g_handlers[sig];
    if (is_trampoline(current)) {  // what the program installed, not our trampoline
        int flags = h.flags.load();
        view.sa_flags = flags;
        if (flags & SA_SIGINFO) view.sa_sigaction = reinterpret_cast<void (*)(int, siginfo_t*, void*)>(h.fn.load());
        else view.sa_handler = reinterpret_cast<void (*)(int)>(h.fn.load());
    }
    if (act) {
        void* fn = (act->sa_flags & SA_SIGINFO) ? reinterpret_cast<void*>(act->sa_sigaction)
                                                : reinterpret_cast<void*>(act->sa_handler);
        if (fn == reinterpret_cast<void*>(SIG_DFL) || fn == reinterpret_cast<void*>(SIG_IGN)) {
            if (REAL(sigaction)(sig, act, nullptr) != 0) return -1;
            h.fn.store(nullptr);
        } else {
            Hub::set_signal_callback(on_signals);
            Hub::set_signals_can_wake(true);
            h.flags.store(act->sa_flags);
            h.fn.store(fn);
            struct sigaction real = *act;
            real.sa_flags |= SA_SIGINFO;
            real.sa_sigaction = trampoline;
            if (REAL(sigaction)(sig, &real, nullptr) != 0) return -1;
        }
    }
    if (old) *old = view;
    return 0;
}

}  // namespace

namespace greenshim::shim {
bool in_signal_handler() noexcept { return t_in_handler != 0; }
}  // namespace greenshim::shim

SHIM_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    return do_sigaction(sig, act, old);
}

// glibc's signal() installs through its internal sigaction; ours keeps its
// BSD semantics (SA_RESTART) and goes through the trampoline.
SHIM_EXPORT sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    std::memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sig > 0 && sig < NSIG) sigaddset(&act.sa_mask, sig);
    if (do_sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

// pause/sigsuspend: the thread would sleep until a handler runs; the greenlet
// does, and the others run meanwhile.
SHIM_EXPORT int pause(void) {
    if (!may_park()) return REAL(pause)();
    InterruptScope interruptible(Interruptible::always);
    Hub& hub = Hub::current();
    while (hub.park(kForever) != Wake::interrupted) {
    }
    errno = EINTR;
    return -1;
}

SHIM_EXPORT int sigsuspend(const sigset_t* mask) {
    if (!may_park()) return REAL(sigsuspend)(mask);
    sigset_t old;
    if (pthread_sigmask(SIG_SETMASK, mask, &old) != 0) return -1;
    // A signal the new mask let through may already have run its handler.
    int r = pause();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return r;
}

// sigwaitinfo/sigtimedwait/sigwait: the signals are blocked; a signalfd shows
// when one is pending without blocking the thread.
SHIM_EXPORT int sigtimedwait(const sigset_t* set, siginfo_t* info, const struct timespec* timeout) {
    // (a timeout pointer the kernel cannot read goes to the kernel: EFAULT)
    if (!may_park() || (timeout && (!kernel_reads(timeout) || (timeout->tv_sec == 0 && timeout->tv_nsec == 0))))
        return REAL(sigtimedwait)(set, info, timeout);
    if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L)) {
        errno = EINVAL;
        return -1;
    }
    Deadline d = timeout ? deadline_after_ns(ns_saturating(timeout->tv_sec, timeout->tv_nsec)) : kForever;
    int fd = REAL(signalfd)(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return REAL(sigtimedwait)(set, info, timeout);
    static const struct timespec zero = {0, 0};
    int r;
    for (;;) {
        r = REAL(sigtimedwait)(set, info, &zero);
        if (r >= 0 || errno != EAGAIN) break;
        InterruptScope interruptible(Interruptible::always);
        if (park_until_ready(fd, kReadable, d) < 0) {
            r = -1;
            break;  // EAGAIN on timeout, as sigtimedwait says; EINTR
        }
    }
    int err = errno;
    fd_closing(fd);
    REAL(close)(fd);
    errno = err;
    return r;
}

SHIM_EXPORT int sigwaitinfo(const sigset_t* set, siginfo_t* info) { return sigtimedwait(set, info, nullptr); }

SHIM_EXPORT int sigwait(const sigset_t* set, int* sig) {
    siginfo_t info;
    int r;
    do r = sigtimedwait(set, &info, nullptr);
    while (r < 0 && errno == EINTR);  // sigwait never fails with EINTR
    if (r < 0) return errno;
    *sig = r;
    return 0;
}

SHIM_EXPORT int signalfd(int fd, const sigset_t* mask, int flags) {
    if (!may_park() || fd != -1) return REAL(signalfd)(fd, mask, flags);
    int r = REAL(signalfd)(fd, mask, flags | SFD_NONBLOCK);
    if (r >= 0) fd_created(r, false, false, flags & SFD_NONBLOCK);
    return r;
}

// Signal masks. The OS thread's mask belongs to the main greenlet: a greenlet
// thread's pthread_sigmask changes only its own recorded view (a thread that
// blocks everything, as CPython's faulthandler watchdog does, must not deaf
// the whole process). Signals are then delivered as Linux would to the main
// thread; a signal that only a greenlet thread unblocks stays pending.
namespace {
int mask_op(int how, const sigset_t* set, sigset_t* old, bool process) {
    GThread* t = config().enabled ? gthread_current() : nullptr;
    if (!t) return process ? REAL(sigprocmask)(how, set, old) : REAL(pthread_sigmask)(how, set, old);
    if (old) *old = t->sigmask;
    if (!set) return 0;
    switch (how) {
    case SIG_BLOCK: sigorset(&t->sigmask, &t->sigmask, set); break;
    case SIG_UNBLOCK:
        for (int s = 1; s < NSIG; ++s)
            if (sigismember(set, s)) sigdelset(&t->sigmask, s);
        break;
    case SIG_SETMASK: t->sigmask = *set; break;
    default:
        if (process) {
            errno = EINVAL;
            return -1;
        }
        return EINVAL;
    }
    sigdelset(&t->sigmask, SIGKILL);
    sigdelset(&t->sigmask, SIGSTOP);
    return 0;
}
}  // namespace

SHIM_EXPORT int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) { return mask_op(how, set, old, false); }
SHIM_EXPORT int sigprocmask(int how, const sigset_t* set, sigset_t* old) { return mask_op(how, set, old, true); }
