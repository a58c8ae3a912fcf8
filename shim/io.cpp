// The read/write family, and the calls that make, copy and close fds.
#include <stdarg.h>
#include <stdio.h>
#include <linux/close_range.h>
#include <sys/file.h>

#include <climits>
#include <vector>

#include "shim.hpp"
#include "transfer.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

// A socket may have been closed inside libc (fclose of an fdopen'ed socket)
// and its number reused for something else behind our back: start over.
bool stale_socket(int fd) noexcept {
    if (errno != ENOTSOCK) return false;
    fd_forget(fd);
    return true;
}

// A read of nothing from a socket returns 0 at once, even from an empty
// datagram socket: the kernel answers before it looks at the queue (recv
// would wait for a datagram).
bool reads_nothing(const struct iovec* iov, int cnt) {
    for (int i = 0; i < cnt; ++i)
        if (iov[i].iov_len) return false;
    return true;
}

// Sizes recv/send would accept where read/write say EFAULT (see kMaxRwCount):
// the real read/write, polled first since the socket may really block.
ssize_t read_huge(const IoFd& f, void* buf, size_t n) {
    IoFd g = {f.fd, IoMode::probe, f.st};
    return retry_io(g, kReadable, recv_deadline(f), [&] { return REAL(read)(f.fd, buf, n); });
}

ssize_t do_read(int fd, void* buf, size_t n) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return file_call(fd, [&] { return REAL(read)(fd, buf, n); });
    if (f.mode == IoMode::socket) {
        if (n == 0) return REAL(read)(fd, buf, 0);  // never waits (reads_nothing)
        if (n > kMaxRwCount) return read_huge(f, buf, n);
        Deadline d = recv_deadline(f);
        if (wait_if_drained(f, d) < 0) return -1;
        ssize_t r = read_some(f, n, d, [&](size_t k) { return nb_recvfrom(fd, buf, k, MSG_DONTWAIT, nullptr, nullptr); });
        if (r < 0 && stale_socket(fd)) return do_read(fd, buf, n);
        note_read(f, r, n);
        return r;
    }
    return read_some(f, n, kForever, [&](size_t k) { return REAL(read)(fd, buf, k); });
}

ssize_t do_write(int fd, const void* buf, size_t n) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return file_call(fd, [&] { return REAL(write)(fd, buf, n); });
    if (f.mode == IoMode::socket) {
        if (n > kMaxRwCount) {  // see read_huge
            IoFd g = {fd, IoMode::probe, f.st};
            return write_all(g, buf, n, send_deadline(f), [&](const char* p, size_t k) { return REAL(write)(fd, p, k); });
        }
        ssize_t r = write_all(f, buf, n, send_deadline(f),
                              [&](const char* p, size_t k) { return nb_sendto(fd, p, k, MSG_DONTWAIT, nullptr, 0); });
        if (r < 0 && stale_socket(fd)) return do_write(fd, buf, n);
        return r;
    }
    return write_all(f, buf, n, kForever, [&](const char* p, size_t k) { return REAL(write)(fd, p, k); });
}

ssize_t do_readv(int fd, const struct iovec* iov, int cnt) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return REAL(readv)(fd, iov, cnt);
    if (f.mode == IoMode::socket) {
        // A count readv refuses (EINVAL; recvmsg would say EMSGSIZE), or none.
        if (cnt <= 0 || cnt > IOV_MAX) return REAL(readv)(fd, iov, cnt);
        struct msghdr m = {};
        m.msg_iov = const_cast<struct iovec*>(iov);
        m.msg_iovlen = size_t(cnt);
        ssize_t r = retry_io(f, kReadable, recv_deadline(f), [&] {
            ssize_t got = REAL(recvmsg)(fd, &m, MSG_DONTWAIT);
            // After EAGAIN the kernel has read the vector: it is safe to look at.
            if (got < 0 && errno == EAGAIN && reads_nothing(iov, cnt)) return ssize_t(0);
            return got;
        });
        if (r < 0 && stale_socket(fd)) return do_readv(fd, iov, cnt);
        return r;
    }
    return retry_io(f, kReadable, kForever, [&] { return REAL(readv)(fd, iov, cnt); });
}

ssize_t do_writev(int fd, const struct iovec* iov, int cnt) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return REAL(writev)(fd, iov, cnt);
    // EINVAL from the kernel; or no vector at all: writev returns 0 without
    // sending anything (sendmsg would send an empty datagram).
    if (cnt <= 0 || cnt > IOV_MAX) return REAL(writev)(fd, iov, cnt);
    if (f.mode == IoMode::socket) {
        ssize_t r = writev_all(f, iov, cnt, send_deadline(f), [&](struct iovec* v, int k) {
            struct msghdr m = {};
            m.msg_iov = v;
            m.msg_iovlen = size_t(k);
            return REAL(sendmsg)(fd, &m, MSG_DONTWAIT);
        });
        if (r < 0 && stale_socket(fd)) return do_writev(fd, iov, cnt);
        return r;
    }
    return writev_all(f, iov, cnt, kForever, [&](struct iovec* v, int k) { return REAL(writev)(fd, v, k); });
}

// A lock another greenlet of this process holds would never be released if
// the thread blocked in the kernel for it: try without waiting, backing off
// between tries (retry_with_backoff). 0, or -1 with errno (EINTR when a
// signal interrupts, as for the blocking call).
WaitSite g_file_lock{"flock/lockf/F_SETLKW (retrying)", "sync"};

// cancellation_point: lockf is one; flock and fcntl are not (fcntl is for
// F_SETLKW alone, which is left as not: a cancellation acts at the next point).
template <class Try>
int lock_wait(Try&& try_lock, bool cancellation_point = false) {
    WaitScope what(g_file_lock);
    Backoff how = kSlowBackoff;
    how.cancellation_point = cancellation_point;
    return retry_with_backoff(kForever, try_lock, [](int e) { return e == EAGAIN || e == EACCES || e == EWOULDBLOCK; }, how);
}

// fcntl: the program sees its own O_NONBLOCK; an owned fd stays non-blocking
// underneath.
int do_fcntl(int fd, int cmd, void* arg) {
    long iarg = long(reinterpret_cast<intptr_t>(arg));
    if (in_vfork_child()) {  // (shim.hpp) libc's, the copies and inheritable fds recorded for its exec
        int r = REAL(fcntl)(fd, cmd, arg);
        if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) vfork_child_copied(fd, r);
        if (r == 0 && cmd == F_SETFD && !(iarg & FD_CLOEXEC)) vfork_child_copied(fd, fd);
        return r;
    }
    switch (cmd) {
    case F_GETFL: {
        int r = REAL(fcntl)(fd, cmd);
        FdState* s = fd_slot(fd);
        if (r >= 0 && s && s->kind == FdKind::owned) r = s->user_nonblock ? (r | O_NONBLOCK) : (r & ~O_NONBLOCK);
        return r;
    }
    case F_SETFL: {
        FdState* s = fd_slot(fd);
        bool want_nb = (iarg & O_NONBLOCK) != 0;
        if (s && s->kind == FdKind::owned) {
            int r = REAL(fcntl)(fd, F_SETFL, int(iarg) | O_NONBLOCK);
            if (r == 0) fd_set_user_nonblock(fd, want_nb);
            return r;
        }
        int r = REAL(fcntl)(fd, F_SETFL, int(iarg));
        if (r == 0 && s && s->kind == FdKind::borrowed) fd_set_user_nonblock(fd, want_nb);
        return r;
    }
    case F_SETLKW:
    case F_OFD_SETLKW: {
        if (!may_park()) return REAL(fcntl)(fd, cmd, arg);
        int trycmd = cmd == F_SETLKW ? F_SETLK : F_OFD_SETLK;
        return lock_wait([&] { return REAL(fcntl)(fd, trycmd, arg); });
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int r = REAL(fcntl)(fd, cmd, int(iarg));
        if (r >= 0) fd_copy(fd, r);
        return r;
    }
    default:
        return REAL(fcntl)(fd, cmd, arg);
    }
}

}  // namespace

SHIM_EXPORT ssize_t read(int fd, void* buf, size_t n) { SHIM_CANCEL_POINT; return do_read(fd, buf, n); }
SHIM_EXPORT ssize_t write(int fd, const void* buf, size_t n) { SHIM_CANCEL_POINT; return do_write(fd, buf, n); }
SHIM_EXPORT ssize_t readv(int fd, const struct iovec* iov, int cnt) { SHIM_CANCEL_POINT; return do_readv(fd, iov, cnt); }
SHIM_EXPORT ssize_t writev(int fd, const struct iovec* iov, int cnt) { SHIM_CANCEL_POINT; return do_writev(fd, iov, cnt); }

int greenshim::shim::close_fd(int fd) noexcept {
    if (__builtin_expect(is_own_fd(fd), 0)) {
        if (!hub_making_own_fds()) {  // the shim's: not open, as far as the program knows
            errno = EBADF;
            return -1;
        }
        own_fd_closing(fd);
        return REAL(close)(fd);
    }
    fd_closing(fd);
    return REAL(close)(fd);
}

SHIM_EXPORT int close(int fd) {
    SHIM_CANCEL_POINT;
    return close_fd(fd);
}

SHIM_EXPORT int fclose(FILE* f) {
    SHIM_ENTER;
    int fd = f ? fileno(f) : -1;
    if (fd >= 0) fd_closing(fd);
    return REAL(fclose)(f);
}

namespace {
void copied(int oldfd, int newfd);

// close_range/closefrom close fds without close(): forget them all, and
// leave the shim's own open (is_own_fd).
int close_fds(unsigned int first, unsigned int last, int flags) noexcept {
    if (first > last) return REAL(close_range)(first, last, flags);  // (EINVAL, the kernel's)
    if (!(flags & CLOSE_RANGE_CLOEXEC)) {
        // (The size once: it scans the table's chunk directory from the top,
        // and asked per fd it made CPython's close_range in a spawned child
        // cost ~4 ms, 4,096 fds x 2,048 chunks.)
        unsigned int size = unsigned(fd_table_size());
        unsigned int end = last > size ? size : last;
        for (unsigned int fd = first; fd <= end && fd < size; ++fd)
            if (!is_own_fd(int(fd))) fd_closing(int(fd));
    }
    return close_range_sparing_own_fds(first, last, flags);
}
}  // namespace

SHIM_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    SHIM_ENTER;
    return close_fds(first, last, flags);
}
SHIM_EXPORT void closefrom(int lowfd) {
    SHIM_ENTER;
    if (close_fds(unsigned(lowfd < 0 ? 0 : lowfd), ~0U, 0) != 0) REAL(closefrom)(lowfd);  // (no close_range: libc's way)
}

SHIM_EXPORT int dup(int fd) {
    SHIM_ENTER;
    int r = REAL(dup)(fd);
    if (r >= 0) fd_copy(fd, r);
    return r;
}

namespace {
// dup2/dup3 onto one of the shim's own fds: EBUSY (Linux's answer for a
// number that is being opened meanwhile), rather than a hub's loop or a
// waitpid's pidfd lost.
bool onto_own_fd(int oldfd, int newfd) noexcept {
    if (oldfd == newfd || !is_own_fd(newfd)) return false;
    errno = EBUSY;
    return true;
}

// stdin, stdout and stderr are read and written by stdio through libc's
// internal calls, which never reach us: a description put there must block
// as the program believes (fd_release), or printf would meet EAGAIN.
void copied(int oldfd, int newfd) {
    fd_copy(oldfd, newfd);
    if (newfd <= 2) fd_release(newfd);
}
}  // namespace

SHIM_EXPORT int dup2(int oldfd, int newfd) {
    SHIM_ENTER;
    if (hub_making_own_fds()) return REAL(dup2)(oldfd, newfd);  // (libev's, after a fork: its eventfd remade in place)
    if (onto_own_fd(oldfd, newfd)) return -1;
    if (oldfd != newfd) fd_replacing(newfd);
    int r = REAL(dup2)(oldfd, newfd);
    if (r >= 0 && oldfd != newfd) copied(oldfd, newfd);
    return r;
}

SHIM_EXPORT int dup3(int oldfd, int newfd, int flags) {
    SHIM_ENTER;
    if (hub_making_own_fds()) return REAL(dup3)(oldfd, newfd, flags);  // (libev's, after a fork: its eventfd remade in place)
    if (onto_own_fd(oldfd, newfd)) return -1;
    if (oldfd != newfd) fd_replacing(newfd);
    int r = REAL(dup3)(oldfd, newfd, flags);
    if (r >= 0) copied(oldfd, newfd);
    return r;
}

// fdopen: the FILE reads and writes through libc's internal calls, so the
// fd must really block (stdio would otherwise see EAGAIN and report an error).
SHIM_EXPORT FILE* fdopen(int fd, const char* mode) {
    SHIM_ENTER;
    if (config().enabled) fd_release(fd);
    return REAL(fdopen)(fd, mode);
}

// glibc's eventfd_read/eventfd_write call read/write internally.
SHIM_EXPORT int eventfd_read(int fd, eventfd_t* value) { SHIM_CANCEL_POINT; return read(fd, value, sizeof *value) == sizeof *value ? 0 : -1; }
SHIM_EXPORT int eventfd_write(int fd, eventfd_t value) {
    SHIM_CANCEL_POINT;
    return write(fd, &value, sizeof value) == sizeof value ? 0 : -1;
}

// _FORTIFY_SOURCE builds (most distribution packages) call these checked
// variants instead; the check is glibc's, the call ours.
SHIM_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
    SHIM_CANCEL_POINT;
    if (n > buflen) __chk_fail();
    return read(fd, buf, n);
}
SHIM_EXPORT ssize_t __pread_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
    SHIM_CANCEL_POINT;
    if (n > buflen) __chk_fail();
    return pread(fd, buf, n, off);
}
SHIM_EXPORT ssize_t __pread64_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
    SHIM_CANCEL_POINT;
    if (n > buflen) __chk_fail();
    return pread(fd, buf, n, off);
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    return do_fcntl(fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, cmd);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    return do_fcntl(fd, cmd, arg);
}

SHIM_EXPORT int ioctl(int fd, unsigned long req, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, req);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    if (in_vfork_child()) {  // (shim.hpp)
        int r = REAL(ioctl)(fd, req, arg);
        if (r == 0 && req == FIONCLEX) vfork_child_copied(fd, fd);
        return r;
    }
    if (req == FIONBIO) {
        // The kernel goes first: it checks fd and reads *arg (EFAULT for a
        // bad pointer), then *arg is safe to read here.
        int r = REAL(ioctl)(fd, req, arg);
        FdState* s = fd_slot(fd);
        if (r != 0 || !s || s->kind == FdKind::unknown || s->kind == FdKind::plain) return r;
        bool on = *static_cast<int*>(arg) != 0;
        if (s->kind == FdKind::owned && !on) {  // ours stays non-blocking underneath
            int keep = 1;
            REAL(ioctl)(fd, FIONBIO, &keep);
        }
        fd_set_user_nonblock(fd, on);
        return r;
    }
    return REAL(ioctl)(fd, req, arg);
}

SHIM_EXPORT int pipe(int fds[2]) {
    SHIM_ENTER;
    if (!may_park()) return REAL(pipe)(fds);
    return OwnedFds::make_pair(0, O_NONBLOCK, {false, true}, fds, [&](int fl) { return REAL(pipe2)(fds, fl); });
}

SHIM_EXPORT int pipe2(int fds[2], int flags) {
    SHIM_ENTER;
    if (!may_park()) return REAL(pipe2)(fds, flags);
    return OwnedFds::make_pair(flags, O_NONBLOCK, {false, true}, fds, [&](int fl) { return REAL(pipe2)(fds, fl); });
}

SHIM_EXPORT int eventfd(unsigned int initval, int flags) {
    SHIM_ENTER;
    if (hub_making_own_fds()) return own_fd_made(REAL(eventfd)(initval, flags), OwnFd::loop);  // (libev's)
    if (!may_park()) return REAL(eventfd)(initval, flags);
    return OwnedFds::make(flags, EFD_NONBLOCK, {false, false}, [&](int fl) { return REAL(eventfd)(initval, fl); });
}

SHIM_EXPORT int timerfd_create(int clockid, int flags) {
    SHIM_ENTER;
    if (!may_park()) return REAL(timerfd_create)(clockid, flags);
    return OwnedFds::make(flags, TFD_NONBLOCK, {false, false},
                          [&](int fl) { return REAL(timerfd_create)(clockid, fl); });
}

// open/openat: the number may be one we knew as something else (closed inside
// libc): forget it, it is discovered on first use.
namespace {
int opened(int r) {
    if (r >= 0) fd_forget(r);
    return r;
}
mode_t mode_arg(int flags, va_list ap) { return (flags & (O_CREAT | O_TMPFILE)) ? mode_t(va_arg(ap, int)) : 0; }
}  // namespace

SHIM_EXPORT int open(const char* path, int flags, ...) {
    SHIM_CANCEL_POINT;
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(file_call(-1, [&] { return REAL(open)(path, flags, mode); }));
}

SHIM_EXPORT int open64(const char* path, int flags, ...) {
    SHIM_CANCEL_POINT;
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(file_call(-1, [&] { return REAL(open)(path, flags, mode); }));
}

SHIM_EXPORT int openat(int dirfd, const char* path, int flags, ...) {
    SHIM_CANCEL_POINT;
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(file_call(-1, [&] { return REAL(openat)(dirfd, path, flags, mode); }));
}

SHIM_EXPORT int openat64(int dirfd, const char* path, int flags, ...) {
    SHIM_CANCEL_POINT;
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(file_call(-1, [&] { return REAL(openat)(dirfd, path, flags, mode); }));
}

// Positioned I/O and syncs: only regular files, so only the file pool applies.
SHIM_EXPORT ssize_t pread(int fd, void* buf, size_t n, off_t off) {
    SHIM_CANCEL_POINT;
    return file_call(fd, [&] { return REAL(pread)(fd, buf, n, off); });
}
SHIM_EXPORT ssize_t pread64(int fd, void* buf, size_t n, off_t off) { SHIM_CANCEL_POINT; return pread(fd, buf, n, off); }
SHIM_EXPORT ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
    SHIM_CANCEL_POINT;
    return file_call(fd, [&] { return REAL(pwrite)(fd, buf, n, off); });
}
SHIM_EXPORT ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) { SHIM_CANCEL_POINT; return pwrite(fd, buf, n, off); }
SHIM_EXPORT ssize_t preadv(int fd, const struct iovec* iov, int cnt, off_t off) {
    SHIM_CANCEL_POINT;
    return file_call(fd, [&] { return REAL(preadv)(fd, iov, cnt, off); });
}
SHIM_EXPORT ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
    SHIM_CANCEL_POINT;
    return file_call(fd, [&] { return REAL(pwritev)(fd, iov, cnt, off); });
}
SHIM_EXPORT int fsync(int fd) { SHIM_CANCEL_POINT; return file_call(fd, [&] { return REAL(fsync)(fd); }); }
SHIM_EXPORT int fdatasync(int fd) { SHIM_CANCEL_POINT; return file_call(fd, [&] { return REAL(fdatasync)(fd); }); }

SHIM_EXPORT int flock(int fd, int op) {
    SHIM_ENTER;
    auto real = REAL(flock);
    if (!may_park() || (op & LOCK_NB) || (op & LOCK_UN)) return real(fd, op);
    return lock_wait([&] { return real(fd, op | LOCK_NB); });
}

// lockf(F_LOCK) waits inside libc (an internal fcntl): the same loop over F_TLOCK.
SHIM_EXPORT int lockf(int fd, int cmd, off_t len) {
    SHIM_CANCEL_POINT;
    auto real = REAL(lockf);
    if (!may_park() || cmd != F_LOCK) return real(fd, cmd, len);
    return lock_wait([&] { return real(fd, F_TLOCK, len); }, true);
}
SHIM_EXPORT int lockf64(int fd, int cmd, off_t len) { SHIM_CANCEL_POINT; return lockf(fd, cmd, len); }
