// The one place where an interposed call waits: park the calling greenlet on
// the hub until its fd is ready or its deadline passes.
#include <poll.h>

#include <cstdio>
#include <cstdlib>

#include "shim.hpp"

namespace greenshim::shim {


int park_until_ready(int fd, int events, Deadline deadline) noexcept {
    // Readiness is a hint (epoll may report an fd another greenlet drains
    // first): every caller checks, and comes back if it was not ready.
    if (faults::active() && faults::spurious_wake(fd, events)) return 0;
    Wake w;
    try {
        InterruptScope interruptible(deadline == kForever ? Interruptible::unless_restart : Interruptible::always);
        w = Hub::current().wait_fd(fd, events, deadline);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
    switch (w) {
    case Wake::none:
    case Wake::event: return 0;
    case Wake::timeout: errno = EAGAIN; return -1;
    case Wake::closed: errno = EBADF; return -1;
    case Wake::interrupted: errno = EINTR; return -1;
    case Wake::deadlock: break;
    }
    std::fprintf(stderr, "greenshim: deadlock: the main greenlet waits on fd %d and nothing can wake it\n", fd);
    std::abort();
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
    std::int64_t ns = (std::int64_t(abstime->tv_sec) - now.tv_sec) * 1000000000 + (abstime->tv_nsec - now.tv_nsec);
    return ns <= 0 ? monotonic_ns() : deadline_after_ns(ns);
}

void fd_closing(int fd) noexcept {
    if (Hub* hub = Hub::existing()) hub->fd_closed(fd);
}

}  // namespace greenshim::shim
