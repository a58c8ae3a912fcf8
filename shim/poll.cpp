// poll, select and epoll_wait: ask the kernel without waiting; if nothing is
// ready, park on every fd involved (an epoll fd is itself pollable) and ask
// again when one wakes us.
#include <signal.h>

#include <cstring>
#include <vector>

#include "shim.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

Deadline deadline_ms(int timeout_ms) noexcept {
    return timeout_ms < 0 ? kForever : deadline_after_ns(std::int64_t(timeout_ms) * 1000000);
}

// (valid times only: checked by the callers)
Deadline deadline_ts(const struct timespec* ts) noexcept {
    if (!ts) return kForever;
    return deadline_after_ns(ns_saturating(ts->tv_sec, ts->tv_nsec));
}

// select's timeval: microseconds beyond a second are carried over, as
// glibc and Linux do.
Deadline deadline_tv(const struct timeval* tv) noexcept {
    if (!tv) return kForever;
    std::int64_t sec = tv->tv_sec, usec = tv->tv_usec;
    if (usec >= 1000000) {
        sec = sec > INT64_MAX - usec / 1000000 ? INT64_MAX : sec + usec / 1000000;
        usec %= 1000000;
    }
    return deadline_after_ns(ns_saturating(sec, usec * 1000));
}

WaitSite g_poll{"poll/select/epoll_wait", "poll"};

short wait_events(short ev) noexcept {
    short w = 0;
    if (ev & (POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND | POLLRDHUP)) w |= kReadable;
    if (ev & (POLLOUT | POLLWRNORM | POLLWRBAND)) w |= kWritable;
    return w;
}

// The generic loop: try(0 timeout) until it reports something or time is
// up, parking on every fd involved in between. poll & co. are never
// restarted after a handler (Interruptible::always). With no fd and no
// deadline only a signal can end the call: when nothing else can run either,
// block() makes the real call, which sleeps in the kernel until one comes.
// mask: the call's own signal mask (pselect, ppoll, epoll_pwait), in force
// for the whole wait (WaitMask); nullptr: the thread's.
template <class Try, class Build, class Block>
int wait_loop(Deadline deadline, const sigset_t* mask, Try&& try_now, Build&& build, Block&& block) {
    WaitMask waiting(mask);
    std::vector<FdWait> waits;
    for (;;) {
        int r = unless_tick_eintr(try_now);
        if (r != 0) return r;
        waits.clear();
        build(waits);
        int p = park_as(g_poll, -1, cancellable(Interruptible::always), EndsBy::signal_only,
                        [&](Hub& hub) { return hub.wait_fds(waits.data(), waits.size(), deadline); });
        if (p == -ETIMEDOUT) return try_now();  // time is up: one last look, as the kernel would
        if (p == -EDEADLK) return block();
        if (p < 0 && p != -EBADF) {  // closed meanwhile: the next look reports POLLNVAL/EBADF
            errno = -p;
            return -1;
        }
    }
}

int do_poll(struct pollfd* fds, nfds_t n, Deadline deadline, const sigset_t* mask) {
    static const struct timespec zero = {0, 0};
    return wait_loop(
        deadline, mask, [&] { return mask ? REAL(ppoll)(fds, n, &zero, mask) : REAL(poll)(fds, n, 0); },
        [&](std::vector<FdWait>& w) {
            for (nfds_t i = 0; i < n; ++i) {
                short ev = wait_events(fds[i].events);
                if (fds[i].fd >= 0 && ev) w.push_back({fds[i].fd, ev, 0});
            }
        },
        [&] { return REAL(ppoll)(fds, n, nullptr, mask); });
}

// The words of an fd set the kernel reads for select(n): n bits, and no more
// than the process may have fds (sets bigger than FD_SETSIZE are fine when
// the caller allocated them; the kernel ignores bits past its fd table).
std::size_t select_words(int n) noexcept {
    if (n <= 0) return 0;
    std::size_t bits = std::size_t(n);
    if (bits > FD_SETSIZE) {
        constexpr std::size_t kMost = 1 << 24;  // fds; the kernel's own limit is 2^20 by default
        struct rlimit rl;
        std::size_t cap = FD_SETSIZE;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > cap) cap = rl.rlim_cur < kMost ? rl.rlim_cur : kMost;
        if (bits > cap) bits = cap;
    }
    return (bits + NFDBITS - 1) / NFDBITS;
}

bool in_set(const fd_mask* set, int fd) noexcept { return (set[fd / NFDBITS] >> (fd % NFDBITS)) & 1; }

int do_select(int n, fd_set* r, fd_set* w, fd_set* e, Deadline deadline, const sigset_t* mask) {
    // The kernel overwrites the sets with its answer: keep the caller's, to
    // ask again with them after each wake.
    std::size_t words = select_words(n);
    fd_mask local[3 * FD_SETSIZE / NFDBITS];
    std::vector<fd_mask> big(words > FD_SETSIZE / NFDBITS ? 3 * words : 0);
    fd_mask* saved = big.empty() ? local : big.data();
    fd_set* sets[3] = {r, w, e};
    auto copy = [&](bool restore) {
        for (int i = 0; i < 3; ++i) {
            if (!sets[i]) continue;
            fd_mask* keep = saved + i * words;
            if (restore) std::memcpy(sets[i], keep, words * sizeof(fd_mask));
            else std::memcpy(keep, sets[i], words * sizeof(fd_mask));
        }
    };
    copy(false);
    int bits = int(words * NFDBITS) < n ? int(words * NFDBITS) : n;
    int res = wait_loop(
        deadline, mask,
        [&] {
            copy(true);
            struct timespec zero = {0, 0};
            return REAL(pselect)(n, r, w, e, &zero, mask);
        },
        [&](std::vector<FdWait>& out) {
            for (int fd = 0; fd < bits; ++fd) {
                short ev = 0;
                if ((r && in_set(saved, fd)) || (e && in_set(saved + 2 * words, fd))) ev |= kReadable;
                if (w && in_set(saved + words, fd)) ev |= kWritable;
                if (ev) out.push_back({fd, ev, 0});
            }
        },
        [&] {
            copy(true);
            return REAL(pselect)(n, r, w, e, nullptr, mask);
        });
    // Linux leaves the sets as the caller passed them on every error (EINTR
    // included), and callers rely on it: CPython retries an interrupted
    // select with the same sets, so cleared ones would wait on nothing.
    if (res < 0) {
        int err = errno;
        copy(true);
        errno = err;
    }
    return res;
}

int do_epoll_wait(int epfd, struct epoll_event* ev, int max, Deadline deadline, const sigset_t* mask) {
    return wait_loop(
        deadline, mask, [&] { return mask ? REAL(epoll_pwait)(epfd, ev, max, 0, mask) : REAL(epoll_wait)(epfd, ev, max, 0); },
        [&](std::vector<FdWait>& w) { w.push_back({epfd, kReadable, 0}); },
        [&] { return mask ? REAL(epoll_pwait)(epfd, ev, max, -1, mask) : REAL(epoll_wait)(epfd, ev, max, -1); });
}

void remaining(Deadline deadline, struct timeval* tv) noexcept {
    std::int64_t left = deadline - monotonic_ns();
    if (left < 0) left = 0;
    tv->tv_sec = time_t(left / 1000000000);
    tv->tv_usec = suseconds_t(left % 1000000000 / 1000);
}

}  // namespace

SHIM_EXPORT int poll(struct pollfd* fds, nfds_t n, int timeout) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(poll)(fds, n, timeout);
    coop_tick(hub);
    if (timeout == 0) return unless_tick_eintr([&] { return REAL(poll)(fds, n, 0); });
    return do_poll(fds, n, deadline_ms(timeout), nullptr);
}

SHIM_EXPORT int ppoll(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(ppoll)(fds, n, ts, mask);
    coop_tick(hub);
    if (ts && ts->tv_sec == 0 && ts->tv_nsec == 0) return unless_tick_eintr([&] { return REAL(ppoll)(fds, n, ts, mask); });
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L)) {
        errno = EINVAL;
        return -1;
    }
    return do_poll(fds, n, deadline_ts(ts), mask);
}

SHIM_EXPORT int select(int n, fd_set* r, fd_set* w, fd_set* e, struct timeval* tv) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(select)(n, r, w, e, tv);
    coop_tick(hub);
    if (tv && tv->tv_sec == 0 && tv->tv_usec == 0) return unless_tick_eintr([&] { return REAL(select)(n, r, w, e, tv); });
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0)) {
        errno = EINVAL;
        return -1;
    }
    Deadline d = deadline_tv(tv);
    int res = do_select(n, r, w, e, d, nullptr);
    if (tv) remaining(d, tv);  // Linux reports the time not slept
    return res;
}

SHIM_EXPORT int pselect(int n, fd_set* r, fd_set* w, fd_set* e, const struct timespec* ts, const sigset_t* mask) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(pselect)(n, r, w, e, ts, mask);
    coop_tick(hub);
    if (ts && ts->tv_sec == 0 && ts->tv_nsec == 0) return unless_tick_eintr([&] { return REAL(pselect)(n, r, w, e, ts, mask); });
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L)) {
        errno = EINVAL;
        return -1;
    }
    return do_select(n, r, w, e, deadline_ts(ts), mask);
}

SHIM_EXPORT int epoll_wait(int epfd, struct epoll_event* ev, int max, int timeout) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(epoll_wait)(epfd, ev, max, timeout);
    coop_tick(hub);
    if (timeout == 0) return unless_tick_eintr([&] { return REAL(epoll_wait)(epfd, ev, max, 0); });
    return do_epoll_wait(epfd, ev, max, deadline_ms(timeout), nullptr);
}

SHIM_EXPORT int epoll_pwait(int epfd, struct epoll_event* ev, int max, int timeout, const sigset_t* mask) {
    SHIM_CANCEL_POINT;
    Hub* hub;
    if (!may_park(hub)) return REAL(epoll_pwait)(epfd, ev, max, timeout, mask);
    coop_tick(hub);
    if (timeout == 0) return unless_tick_eintr([&] { return REAL(epoll_pwait)(epfd, ev, max, 0, mask); });
    return do_epoll_wait(epfd, ev, max, deadline_ms(timeout), mask);
}

SHIM_EXPORT int __poll_chk(struct pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
    SHIM_CANCEL_POINT;
    if (fdslen / sizeof(*fds) < n) __chk_fail();
    return poll(fds, n, timeout);
}
SHIM_EXPORT int __ppoll_chk(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask,
                            size_t fdslen) {
    SHIM_CANCEL_POINT;
    if (fdslen / sizeof(*fds) < n) __chk_fail();
    return ppoll(fds, n, ts, mask);
}

// A hub's epoll fd (libev's, while the runtime makes its loop) is placed
// out of the program's way (own_fd_made); the program's own pass through.
SHIM_EXPORT int epoll_create1(int flags) {
    SHIM_ENTER;
    int fd = REAL(epoll_create1)(flags);
    return hub_making_own_fds() ? own_fd_made(fd, OwnFd::loop) : fd;
}
SHIM_EXPORT int epoll_create(int size) {
    SHIM_ENTER;
    int fd = REAL(epoll_create)(size);
    return hub_making_own_fds() ? own_fd_made(fd, OwnFd::loop) : fd;
}

// libev's own epoll_ctl (a hub's, inside its loop): EBADF for the fd means it
// was closed where the shim could not see it (a raw system call, an io_uring
// close) or on another hub while this one remade its epoll set, which re-adds
// every armed watcher's fd. libev asserts on EBADF; on ENOENT it drops the
// fd's watchers with an error event (fd_kill), which wakes their waiters to
// retry and meet EBADF themselves, as without the shim. The program's own
// calls pass untouched.
SHIM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event* event) {
    SHIM_ENTER;
    int r = REAL(epoll_ctl)(epfd, op, fd, event);
    if (r != 0 && errno == EBADF && hub_making_own_fds() && is_own_fd(epfd)) errno = ENOENT;
    return r;
}
