// The one place where an interposed call waits: park the calling greenlet on
// the hub until its fd is ready or its deadline passes.
#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>

#include <cstdio>
#include <cstdlib>

#include "shim.hpp"

namespace greenshim::shim {


namespace {
// What a greenlet parked here waits for, for the trace, stats and reports.
WaitSite g_read{"read", "io", WaitSite::Arg::fd};
WaitSite g_write{"write", "io", WaitSite::Arg::fd};
WaitSite g_socket_read{"socket read", "socket", WaitSite::Arg::fd};
WaitSite g_socket_write{"socket write", "socket", WaitSite::Arg::fd};

WaitSite& site_for(int fd, int events) noexcept {
    FdState* st = fd_slot(fd);
    bool socket = st && st->socket;
    if (events & kReadable) return socket ? g_socket_read : g_read;
    return socket ? g_socket_write : g_write;
}
}  // namespace

int wake_result(Wake w, const char* what, EndsBy ends) noexcept {
    switch (w) {
    case Wake::none:
    case Wake::event: return 0;
    case Wake::timeout: return -ETIMEDOUT;
    case Wake::closed: return -EBADF;
    case Wake::interrupted: return -EINTR;
    case Wake::deadlock: break;
    }
    if (ends == EndsBy::signal_only) {
        stall_quiet();  // the caller sleeps in the kernel next
        return -EDEADLK;
    }
    deadlock_exit(what);
}

int park_until_ready(int fd, int events, Deadline deadline) noexcept {
    return park_until_ready(fd, events, deadline,
                            deadline == kForever ? Interruptible::unless_restart : Interruptible::always);
}

int park_until_ready(int fd, int events, Deadline deadline, Interruptible mode) noexcept {
    // Readiness is a hint (epoll may report an fd another greenlet drains
    // first): every caller checks, and comes back if it was not ready.
    if (faults::active() && faults::spurious_wake(fd, events)) return 0;
    int r = park_as(site_for(fd, events), fd, cancellable(mode), EndsBy::other_thread,
                    [&](Hub& hub) { return hub.wait_fd(fd, events, deadline); });
    if (r == 0) return 0;
    errno = r == -ETIMEDOUT ? EAGAIN : -r;
    return -1;
}

void coop_give_way(Hub& hub) noexcept {
    if (hub.alone()) return;  // (the caller checked may_park)
    int saved = errno;
    try {
        hub.yield();  // (the switches it makes give the next call a fresh budget)
    } catch (...) {
    }
    errno = saved;
}

bool ready_now(int fd, int events) noexcept {
    struct pollfd p = {fd, short(((events & kReadable) ? POLLIN : 0) | ((events & kWritable) ? POLLOUT : 0)), 0};
    // An error or hangup counts as ready: the real call will report it.
    return REAL(poll)(&p, 1, 0) != 0;
}

Deadline deadline_at(clockid_t clock, const struct timespec* abstime) noexcept {
    if (!abstime) return kForever;
    struct timespec now;
    clock_gettime(clock, &now);
    if (abstime->tv_sec < now.tv_sec) return monotonic_ns();
    std::int64_t ns = ns_saturating(std::int64_t(abstime->tv_sec) - now.tv_sec, abstime->tv_nsec - now.tv_nsec);
    return ns <= 0 ? monotonic_ns() : deadline_after_ns(ns);
}

bool kernel_reads(const struct timespec* ts) noexcept {
    // A futex wait on a word that does not match reads its timeout first,
    // then returns at once: EAGAIN, EINVAL for a malformed time, or EFAULT.
    int word = 0, saved = errno;
    long r = REAL(syscall)(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, ts, nullptr, 0);
    bool ok = !(r < 0 && errno == EFAULT);
    errno = saved;
    return ok;
}

}  // namespace greenshim::shim
