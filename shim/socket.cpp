// Socket calls. Every socket made here is non-blocking underneath; data calls
// use MSG_DONTWAIT, so they never block the thread even on a socket whose
// O_NONBLOCK is not ours (inherited, or cleared by a child before exec).
#include <netinet/in.h>

#include <sys/uio.h>

#include <cstring>
#include <vector>

#include "shim.hpp"
#include "transfer.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

bool is_stream(int type) noexcept { return (type & 0xf) == SOCK_STREAM; }

// recv-like calls: MSG_DONTWAIT passes straight through; MSG_WAITALL on a
// stream socket gathers until full, EOF, error or timeout.
template <class Op>  // op(offset, k) -> ssize_t, receives at most k bytes into the buffer at offset
ssize_t recv_loop(const IoFd& f, size_t n, int flags, Op&& op) {
    Deadline d = recv_deadline(f);
    bool waitall = (flags & MSG_WAITALL) && f.st && f.st->stream && !(flags & MSG_PEEK);
    if (!(flags & MSG_PEEK) && wait_if_drained(f, d) < 0) return -1;
    size_t done = 0;
    do {
        // A peek shows what is there: never shortened by fault injection.
        ssize_t r = (flags & MSG_PEEK) ? retry_io(f, kReadable, d, [&] { return op(done, n - done); })
                                       : read_some(f, n - done, d, [&](size_t k) { return op(done, k); });
        if (r < 0) return done ? ssize_t(done) : -1;
        if (r == 0) break;
        done += size_t(r);
    } while (waitall && done < n);
    if (!(flags & MSG_PEEK)) note_read(f, ssize_t(done), n);
    return ssize_t(done);
}

ssize_t do_recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
    int fl = (flags & ~MSG_WAITALL) | MSG_DONTWAIT;
    return recv_loop(f, n, flags, [&](size_t off, size_t k) {
        return nb_recvfrom(fd, static_cast<char*>(buf) + off, k, fl, addr, alen);
    });
}

ssize_t do_sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr, socklen_t alen) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(sendto)(fd, buf, n, flags, addr, alen);
    return write_all(f, buf, n, send_deadline(f), [&](const char* p, size_t k) {
        return nb_sendto(fd, p, k, flags | MSG_DONTWAIT, addr, alen);
    });
}

int do_accept(int fd, struct sockaddr* addr, socklen_t* alen, int flags) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) {
        int r = REAL(accept4)(fd, addr, alen, flags);
        if (r >= 0) fd_forget(r);
        return r;
    }
    // accept has no MSG_DONTWAIT: a listening socket whose O_NONBLOCK is not
    // ours is polled before each try.
    IoFd g = f;
    if (f.st && f.st->kind != FdKind::owned) g.mode = IoMode::probe;
    int r = OwnedFds::make(flags, SOCK_NONBLOCK, {true, f.st ? f.st->stream : true}, [&](int fl) {
        return int(retry_io(g, kReadable, recv_deadline(f), [&] { return REAL(accept4)(fd, addr, alen, fl); }));
    });
    if (r < 0) return r;
    // Accepted sockets inherit the listener's timeouts, as in the kernel.
    if (FdState* s = fd_slot(r); s && f.st) {
        s->rcvtimeo_ns = f.st->rcvtimeo_ns;
        s->sndtimeo_ns = f.st->sndtimeo_ns;
    }
    return r;
}

// connect without blocking: a socket whose O_NONBLOCK is not ours gets it
// only for the call itself (a fresh socket is not shared in practice).
int connect_now(const IoFd& f, const struct sockaddr* addr, socklen_t alen) {
    bool borrowed = f.st && f.st->kind != FdKind::owned;
    int fl = borrowed ? REAL(fcntl)(f.fd, F_GETFL) : -1;
    if (fl >= 0) REAL(fcntl)(f.fd, F_SETFL, fl | O_NONBLOCK);
    int r = REAL(connect)(f.fd, addr, alen);
    int err = errno;
    if (fl >= 0) REAL(fcntl)(f.fd, F_SETFL, fl);
    errno = err;
    return r;
}

bool is_unix(int fd) noexcept {
    int domain = 0, saved = errno;
    socklen_t len = sizeof domain;
    bool yes = REAL(getsockopt)(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
    errno = saved;
    return yes;
}

int do_connect(int fd, const struct sockaddr* addr, socklen_t alen) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return REAL(connect)(fd, addr, alen);
    int r = connect_now(f, addr, alen);
    Deadline d = send_deadline(f);
    // A unix listener with a full backlog: a blocking connect waits for room
    // (until SO_SNDTIMEO, then EAGAIN), which no fd of ours reports.
    if (r < 0 && errno == EAGAIN && is_unix(fd)) {
        Backoff how = kSlowBackoff;
        how.cancellation_point = true;
        return retry_with_backoff(d, [&] { return connect_now(f, addr, alen); }, [](int e) { return e == EAGAIN; }, how);
    }
    while (r < 0 && (errno == EINPROGRESS || errno == EALREADY)) {
        // The kernel gives up a blocking connect after SO_SNDTIMEO with EINPROGRESS.
        if (park_until_ready(fd, kWritable, d) < 0) {
            if (errno == EAGAIN) errno = EINPROGRESS;
            return -1;
        }
        // Asking again ends the attempt as a blocking connect does: 0 with
        // the socket connected, or the error with the socket unconnected
        // (SO_ERROR alone would leave it "connecting": a later connect would
        // say 0 instead of EISCONN, or ECONNABORTED instead of trying again).
        r = connect_now(f, addr, alen);
    }
    return r;
}

// SO_RCVTIMEO / SO_SNDTIMEO in FdState terms, as the kernel reads them:
// 0 is none (wait forever); a negative time is accepted and means "do not
// wait at all" (-1 here); a time beyond int64 nanoseconds is forever.
std::int64_t timeout_ns(long long sec, long long usec) {
    if (sec < 0) return -1;
    if (sec >= INT64_MAX / 1000000000 - 1) return 0;
    return sec * 1000000000LL + usec * 1000LL;
}

std::int64_t timeval_ns(const void* val, socklen_t len, int optname) {
    // SO_RCVTIMEO_NEW/SO_SNDTIMEO_NEW take 64-bit fields on every ABI.
    if ((optname == SO_RCVTIMEO_NEW || optname == SO_SNDTIMEO_NEW) && len >= 16) {
        const long long* t = static_cast<const long long*>(val);
        return timeout_ns(t[0], t[1]);
    }
    if (len < socklen_t(sizeof(struct timeval))) return 0;
    const struct timeval* tv = static_cast<const struct timeval*>(val);
    return timeout_ns(tv->tv_sec, tv->tv_usec);
}

}  // namespace

SHIM_EXPORT int socket(int domain, int type, int protocol) {
    SHIM_ENTER;
    if (!may_park()) return REAL(socket)(domain, type, protocol);
    return OwnedFds::make(type, SOCK_NONBLOCK, {true, is_stream(type)},
                          [&](int t) { return REAL(socket)(domain, t, protocol); });
}

SHIM_EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) {
    SHIM_ENTER;
    if (!may_park()) return REAL(socketpair)(domain, type, protocol, sv);
    return OwnedFds::make_pair(type, SOCK_NONBLOCK, {true, is_stream(type)}, sv,
                               [&](int t) { return REAL(socketpair)(domain, t, protocol, sv); });
}

SHIM_EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* alen) { SHIM_CANCEL_POINT; return do_accept(fd, addr, alen, 0); }
SHIM_EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* alen, int flags) {
    SHIM_CANCEL_POINT;
    return do_accept(fd, addr, alen, flags);
}
SHIM_EXPORT int connect(int fd, const struct sockaddr* addr, socklen_t alen) { SHIM_CANCEL_POINT; return do_connect(fd, addr, alen); }

SHIM_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    SHIM_CANCEL_POINT;
    return do_recvfrom(fd, buf, n, flags, nullptr, nullptr);
}
SHIM_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    SHIM_CANCEL_POINT;
    return do_recvfrom(fd, buf, n, flags, addr, alen);
}
SHIM_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
    SHIM_CANCEL_POINT;
    return do_sendto(fd, buf, n, flags, nullptr, 0);
}
SHIM_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr,
                           socklen_t alen) {
    SHIM_CANCEL_POINT;
    return do_sendto(fd, buf, n, flags, addr, alen);
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
    SHIM_CANCEL_POINT;
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(recvmsg)(fd, msg, flags);
    Deadline d = recv_deadline(f);
    int fl = (flags & ~MSG_WAITALL) | MSG_DONTWAIT;
    ssize_t first = retry_io(f, kReadable, d, [&] { return REAL(recvmsg)(fd, msg, fl); });
    bool waitall = (flags & MSG_WAITALL) && f.st && f.st->stream && !(flags & MSG_PEEK);
    if (first <= 0 || !waitall || msg->msg_iovlen > 1024) return first;
    // MSG_WAITALL on a stream: gather the rest into what is left of the
    // vector (control data came with the first piece).
    IovCursor c(msg->msg_iov, int(msg->msg_iovlen));
    c.advance(size_t(first));
    while (c.done < c.total) {
        ssize_t r = retry_io(f, kReadable, d, [&] {
            return c.with_limit(c.total - c.done, [&](struct iovec* v, int k) {
                struct msghdr m = {};
                m.msg_iov = v;
                m.msg_iovlen = size_t(k);
                return REAL(recvmsg)(fd, &m, fl);
            });
        });
        if (r <= 0) break;  // EOF, error or timeout: report what came
        c.advance(size_t(r));
    }
    return ssize_t(c.done);
}

namespace {
// Copies n bytes from the caller's memory without trusting the pointer:
// false if any of it is not readable (the kernel will say EFAULT).
bool copy_in(void* to, const void* from, size_t n) {
    struct iovec local = {to, n}, remote = {const_cast<void*>(from), n};
    ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (r == ssize_t(n)) return true;
    if (r < 0 && (errno == ENOSYS || errno == EPERM)) {  // not allowed here: trust it
        std::memcpy(to, from, n);
        return true;
    }
    return false;
}

// fds sent with SCM_RIGHTS leave for a program that knows nothing of our
// O_NONBLOCK: they get back the mode this program set. The control data is
// read before the kernel has checked it, so through a copy (copy_in); a
// size no kernel accepts (beyond optmem_max) is left to the kernel to refuse.
void release_passed_fds(const struct msghdr* msg) {
    constexpr size_t kMaxControl = 1 << 20;
    if (!msg || !msg->msg_control || msg->msg_controllen > kMaxControl) return;
    size_t len = msg->msg_controllen;
    char small[512];
    std::vector<char> big(len > sizeof small ? len : 0);
    char* copy = big.empty() ? small : big.data();
    int saved = errno;
    bool ok = copy_in(copy, msg->msg_control, len);
    errno = saved;
    if (!ok) return;
    struct msghdr m = {};
    m.msg_control = copy;
    m.msg_controllen = len;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        // a header whose length the kernel will refuse (EINVAL): nothing is sent
        if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > len - size_t(reinterpret_cast<char*>(c) - copy)) return;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (size_t i = 0; i < n; ++i) fd_release(fds[i]);
    }
}
}  // namespace

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
    SHIM_CANCEL_POINT;
    if (config().enabled && msg && msg->msg_controllen) release_passed_fds(msg);
    IoFd f = io_fd(fd);
    // (no msghdr: EFAULT at once)
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT) || !msg) return REAL(sendmsg)(fd, msg, flags);
    if (!sends_everything(f) || msg->msg_iovlen > 1024 || msg->msg_controllen)
        return retry_io(f, kWritable, send_deadline(f),
                        [&] { return REAL(sendmsg)(fd, msg, flags | MSG_DONTWAIT); });
    return writev_all(f, msg->msg_iov, int(msg->msg_iovlen), send_deadline(f), [&](struct iovec* v, int k) {
        struct msghdr m = *msg;
        m.msg_iov = v;
        m.msg_iovlen = size_t(k);
        return REAL(sendmsg)(fd, &m, flags | MSG_DONTWAIT);
    });
}

// recvmmsg's timeout bounds the whole call once the first message is in
// (recvmmsg(2)): the kernel waits for the first as a blocking recvmsg does,
// checks the time only after each message, and so may wait for ever for the
// second. Here the waits after the first end at the deadline, with the count
// received so far, as the man page describes; the time left is written back.
namespace {
int recvmmsg_until(const IoFd& f, struct mmsghdr* vec, unsigned vlen, int flags, Deadline until) {
    unsigned got = 0;
    Deadline first = recv_deadline(f);
    while (got < vlen) {
        Deadline d = got == 0 ? first : (until < first ? until : first);
        int r = int(retry_io(f, kReadable, d, [&] {
            return ssize_t(REAL(recvmmsg)(f.fd, vec + got, vlen - got, (flags & ~MSG_WAITFORONE) | MSG_DONTWAIT, nullptr));
        }));
        if (r < 0) return got ? int(got) : -1;
        got += unsigned(r);
        if ((flags & MSG_WAITFORONE) || (until != kForever && monotonic_ns() >= until)) break;
    }
    return int(got);
}
}  // namespace

SHIM_EXPORT int recvmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags, struct timespec* timeout) {
    SHIM_CANCEL_POINT;
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(recvmmsg)(fd, vec, vlen, flags, timeout);
    if (!timeout) return recvmmsg_until(f, vec, vlen, flags, kForever);
    if (!kernel_reads(timeout)) return REAL(recvmmsg)(fd, vec, vlen, flags, timeout);  // EFAULT, from the kernel
    if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L) {
        errno = EINVAL;
        return -1;
    }
    Deadline until = deadline_after_ns(ns_saturating(timeout->tv_sec, timeout->tv_nsec));
    int r = recvmmsg_until(f, vec, vlen, flags, until);
    int err = errno;
    std::int64_t left = until == kForever ? 0 : until - monotonic_ns();
    if (until != kForever) {
        if (left < 0) left = 0;
        timeout->tv_sec = time_t(left / 1000000000);
        timeout->tv_nsec = long(left % 1000000000);
    }
    errno = err;
    return r;
}

SHIM_EXPORT int sendmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags) {
    SHIM_CANCEL_POINT;
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(sendmmsg)(fd, vec, vlen, flags);
    unsigned sent = 0;
    Deadline d = send_deadline(f);
    while (sent < vlen) {
        int r = int(retry_io(f, kWritable, d,
                             [&] { return ssize_t(REAL(sendmmsg)(fd, vec + sent, vlen - sent, flags | MSG_DONTWAIT)); }));
        if (r < 0) return sent ? int(sent) : -1;
        sent += unsigned(r);
    }
    return int(sent);
}

SHIM_EXPORT ssize_t sendfile(int out, int in, off_t* offset, size_t count) {
    SHIM_ENTER;
    IoFd f = io_fd(out);
    if (f.mode == IoMode::pass) return REAL(sendfile)(out, in, offset, count);
    // sendfile has no MSG_DONTWAIT: an fd whose O_NONBLOCK is not ours is polled first.
    IoFd g = f;
    if (f.st && f.st->kind != FdKind::owned) g.mode = IoMode::probe;
    if (g.mode == IoMode::socket) g.mode = IoMode::nbfd;
    static const char no_buffer = 0;  // sendfile reads from `in`, not from memory
    return write_all(g, &no_buffer, count, send_deadline(f),
                     [&](const char*, size_t k) { return REAL(sendfile)(out, in, offset, k); });
}

SHIM_EXPORT int setsockopt(int fd, int level, int optname, const void* val, socklen_t len) {
    SHIM_ENTER;
    int r = REAL(setsockopt)(fd, level, optname, val, len);
    if (r == 0 && level == SOL_SOCKET && val &&
        (optname == SO_RCVTIMEO_OLD || optname == SO_SNDTIMEO_OLD || optname == SO_RCVTIMEO_NEW ||
         optname == SO_SNDTIMEO_NEW)) {
        if (FdState* s = fd_known(fd)) {
            std::int64_t ns = timeval_ns(val, len, optname);
            if (optname == SO_RCVTIMEO_OLD || optname == SO_RCVTIMEO_NEW) s->rcvtimeo_ns = ns;
            else s->sndtimeo_ns = ns;
        }
    }
    return r;
}

SHIM_EXPORT int shutdown(int fd, int how) { SHIM_ENTER; return REAL(shutdown)(fd, how); }

SHIM_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    SHIM_CANCEL_POINT;
    if (n > buflen) __chk_fail();
    return recv(fd, buf, n, flags);
}
SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, struct sockaddr* addr,
                                   socklen_t* alen) {
    SHIM_CANCEL_POINT;
    if (n > buflen) __chk_fail();
    return recvfrom(fd, buf, n, flags, addr, alen);
}
SHIM_EXPORT ssize_t sendfile64(int out, int in, off_t* offset, size_t count) { SHIM_ENTER; return sendfile(out, in, offset, count); }
