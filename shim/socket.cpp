// Socket calls. Every socket made here is non-blocking underneath; data calls
// use MSG_DONTWAIT, so they never block the thread even on a socket whose
// O_NONBLOCK is not ours (inherited, or cleared by a child before exec).
#include <netinet/in.h>

#include <cstring>

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
        return REAL(recvfrom)(fd, static_cast<char*>(buf) + off, k, fl, addr, alen);
    });
}

ssize_t do_sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr, socklen_t alen) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(sendto)(fd, buf, n, flags, addr, alen);
    return write_all(f, buf, n, send_deadline(f), [&](const char* p, size_t k) {
        return REAL(sendto)(fd, p, k, flags | MSG_DONTWAIT, addr, alen);
    });
}

int register_new(int fd, int type) {
    if (fd >= 0) fd_created(fd, true, is_stream(type), (type & SOCK_NONBLOCK) != 0);
    return fd;
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
    int r = int(retry_io(g, kReadable, recv_deadline(f),
                         [&] { return REAL(accept4)(fd, addr, alen, flags | SOCK_NONBLOCK); }));
    if (r < 0) return r;
    fd_created(r, true, f.st ? f.st->stream : true, (flags & SOCK_NONBLOCK) != 0);
    // Accepted sockets inherit the listener's timeouts, as in the kernel.
    if (FdState* s = fd_slot(r); s && f.st) {
        s->rcvtimeo_ns = f.st->rcvtimeo_ns;
        s->sndtimeo_ns = f.st->sndtimeo_ns;
    }
    return r;
}

int do_connect(int fd, const struct sockaddr* addr, socklen_t alen) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass) return REAL(connect)(fd, addr, alen);
    bool borrowed = f.st && f.st->kind != FdKind::owned;
    int fl = 0;
    if (borrowed) {  // only for the call itself: a fresh socket is not shared in practice
        fl = REAL(fcntl)(fd, F_GETFL);
        if (fl >= 0) REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK);
    }
    int r = REAL(connect)(fd, addr, alen);
    int err = errno;
    if (borrowed && fl >= 0) REAL(fcntl)(fd, F_SETFL, fl);
    if (r == 0 || err != EINPROGRESS) {
        errno = err;
        return r;
    }
    // The kernel gives up a blocking connect after SO_SNDTIMEO with EINPROGRESS.
    // Writable means connected or failed; a wake alone means neither (and
    // SO_ERROR is 0 while the handshake is still on): wait again.
    Deadline d = send_deadline(f);
    do {
        if (park_until_ready(fd, kWritable, d) < 0) {
            if (errno == EAGAIN) errno = EINPROGRESS;
            return -1;
        }
    } while (!ready_now(fd, kWritable));
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (REAL(getsockopt)(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) return -1;
    if (soerr) {
        errno = soerr;
        return -1;
    }
    return 0;
}

std::int64_t timeval_ns(const void* val, socklen_t len, int optname) {
    // SO_RCVTIMEO_NEW/SO_SNDTIMEO_NEW take 64-bit fields on every ABI.
    if ((optname == SO_RCVTIMEO_NEW || optname == SO_SNDTIMEO_NEW) && len >= 16) {
        const long long* t = static_cast<const long long*>(val);
        return t[0] * 1000000000LL + t[1] * 1000LL;
    }
    if (len < socklen_t(sizeof(struct timeval))) return 0;
    const struct timeval* tv = static_cast<const struct timeval*>(val);
    return std::int64_t(tv->tv_sec) * 1000000000LL + std::int64_t(tv->tv_usec) * 1000LL;
}

}  // namespace

SHIM_EXPORT int socket(int domain, int type, int protocol) {
    if (!may_park()) return REAL(socket)(domain, type, protocol);
    int r = REAL(socket)(domain, type | SOCK_NONBLOCK, protocol);
    return register_new(r, type);
}

SHIM_EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) {
    if (!may_park()) return REAL(socketpair)(domain, type, protocol, sv);
    int r = REAL(socketpair)(domain, type | SOCK_NONBLOCK, protocol, sv);
    if (r == 0) {
        register_new(sv[0], type);
        register_new(sv[1], type);
    }
    return r;
}

SHIM_EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* alen) { return do_accept(fd, addr, alen, 0); }
SHIM_EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* alen, int flags) {
    return do_accept(fd, addr, alen, flags);
}
SHIM_EXPORT int connect(int fd, const struct sockaddr* addr, socklen_t alen) { return do_connect(fd, addr, alen); }

SHIM_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    return do_recvfrom(fd, buf, n, flags, nullptr, nullptr);
}
SHIM_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    return do_recvfrom(fd, buf, n, flags, addr, alen);
}
SHIM_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
    return do_sendto(fd, buf, n, flags, nullptr, 0);
}
SHIM_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr,
                           socklen_t alen) {
    return do_sendto(fd, buf, n, flags, addr, alen);
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
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
        struct msghdr m = {};
        m.msg_iov = c.v;
        m.msg_iovlen = size_t(c.k);
        ssize_t r = retry_io(f, kReadable, d, [&] { return REAL(recvmsg)(fd, &m, fl); });
        if (r <= 0) break;  // EOF, error or timeout: report what came
        c.advance(size_t(r));
    }
    return ssize_t(c.done);
}

// fds sent with SCM_RIGHTS leave for a program that knows nothing of our
// O_NONBLOCK: they get back the mode this program set.
void release_passed_fds(const struct msghdr* msg) {
    if (!msg || !msg->msg_control) return;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(const_cast<struct msghdr*>(msg)); c;
         c = CMSG_NXTHDR(const_cast<struct msghdr*>(msg), c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (size_t i = 0; i < n; ++i) fd_release(fds[i]);
    }
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
    if (config().enabled && msg && msg->msg_controllen) release_passed_fds(msg);
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT)) return REAL(sendmsg)(fd, msg, flags);
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

SHIM_EXPORT int recvmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags, struct timespec* timeout) {
    IoFd f = io_fd(fd);
    if (f.mode == IoMode::pass || (flags & MSG_DONTWAIT) || timeout) return REAL(recvmmsg)(fd, vec, vlen, flags, timeout);
    // Blocking recvmmsg waits for the first message, then (without
    // MSG_WAITFORONE) for the rest of vlen.
    unsigned got = 0;
    Deadline d = recv_deadline(f);
    while (got < vlen) {
        int r = int(retry_io(f, kReadable, d, [&] {
            return ssize_t(REAL(recvmmsg)(fd, vec + got, vlen - got, (flags & ~MSG_WAITFORONE) | MSG_DONTWAIT, nullptr));
        }));
        if (r < 0) return got ? int(got) : -1;
        got += unsigned(r);
        if (flags & MSG_WAITFORONE) break;
    }
    return int(got);
}

SHIM_EXPORT int sendmmsg(int fd, struct mmsghdr* vec, unsigned int vlen, int flags) {
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

SHIM_EXPORT int shutdown(int fd, int how) { return REAL(shutdown)(fd, how); }

extern "C" void __chk_fail(void) __attribute__((noreturn));
SHIM_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    if (n > buflen) __chk_fail();
    return recv(fd, buf, n, flags);
}
SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, struct sockaddr* addr,
                                   socklen_t* alen) {
    if (n > buflen) __chk_fail();
    return recvfrom(fd, buf, n, flags, addr, alen);
}
SHIM_EXPORT ssize_t sendfile64(int out, int in, off_t* offset, size_t count) { return sendfile(out, in, offset, count); }
