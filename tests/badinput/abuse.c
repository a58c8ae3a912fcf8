// Bad arguments to every family of interposed calls: one line per case with
// the return value and the errno (or returned error code) by name. The output
// must be the same unpatched and under libgreenshim.so (tests/badinput).
//
// Every case runs twice: on the main thread ("main") and on a thread made
// with pthread_create ("thread"), because under the shim they take different
// paths (main greenlet vs greenlet thread). Nothing printed depends on timing
// or on fd numbers (the shim's hub has fds of its own). Calls that would
// block forever are only made where something will answer them: a helper
// thread acts after a short delay, and the result is the same whichever comes
// first. alarm() turns a hang into a visible failure.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The arguments are bad on purpose: no warning for each.
#pragma GCC diagnostic ignored "-Wnonnull"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Wstringop-overread"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const char* ctx = "main";

static const char* errname(int e) {
    if (e == 0) return "0";
    const char* n = strerrorname_np(e);
    return n ? n : "E?";
}

// A call returning -1 and errno.
#define ERR(name, expr)                                                                  \
    do {                                                                                 \
        errno = 0;                                                                       \
        long r_ = (long)(expr);                                                          \
        int e_ = errno;                                                                  \
        printf("%-6s %-58s = %ld%s%s\n", ctx, name, r_, r_ == -1 ? " " : "", r_ == -1 ? errname(e_) : ""); \
    } while (0)
// A call returning a new fd (its number is not printed), or -1 and errno.
#define FD(name, expr)                                                                   \
    do {                                                                                 \
        errno = 0;                                                                       \
        int r_ = (expr);                                                                 \
        int e_ = errno;                                                                  \
        if (r_ >= 0) {                                                                   \
            printf("%-6s %-58s = fd\n", ctx, name);                                     \
            close(r_);                                                                   \
        } else {                                                                         \
            printf("%-6s %-58s = %d %s\n", ctx, name, r_, errname(e_));                 \
        }                                                                                \
    } while (0)
// A call returning 0 or an error number (pthreads, clock_nanosleep).
#define RC(name, expr)                                                                   \
    do {                                                                                 \
        int r_ = (expr);                                                                 \
        printf("%-6s %-58s = %s\n", ctx, name, errname(r_));                            \
    } while (0)

// ---- helpers ----

static void must(int ok, const char* what) {
    if (!ok) {
        fprintf(stderr, "abuse: setup failed: %s: %s\n", what, strerror(errno));
        exit(3);
    }
}

// An fd number that is certainly not open: made high, then closed.
static int closed_fd(void) {
    int p[2];
    must(pipe(p) == 0, "pipe");
    int d = fcntl(p[0], F_DUPFD, 700);
    must(d >= 0, "F_DUPFD");
    close(p[0]);
    close(p[1]);
    close(d);
    return d;
}

// The same for a socket the shim saw made (then forgot on close).
static int closed_socket_fd(void) {
    int sv[2];
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    int d = fcntl(sv[0], F_DUPFD, 710);
    must(d >= 0, "F_DUPFD");
    close(sv[0]);
    close(sv[1]);
    close(d);
    return d;
}

static void pair(int type, int sv[2]) { must(socketpair(AF_UNIX, type, 0, sv) == 0, "socketpair"); }
static void mkpipe(int p[2]) { must(pipe(p) == 0, "pipe"); }
static void close2(int p[2]) {
    close(p[0]);
    close(p[1]);
}
static void set_nonblock(int fd) { must(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, "F_SETFL"); }

// A helper thread that waits a little, then does something a waiting call
// needs. Whatever comes first, the waiter sees the same result.
struct delayed {
    pthread_t th;
    void (*fn)(void*);
    void* arg;
};
static void* delayed_main(void* p) {
    struct delayed* d = p;
    usleep(30000);
    d->fn(d->arg);
    return NULL;
}
static void delayed_start(struct delayed* d, void (*fn)(void*), void* arg) {
    d->fn = fn;
    d->arg = arg;
    must(pthread_create(&d->th, NULL, delayed_main, d) == 0, "pthread_create");
}
static void delayed_join(struct delayed* d) { must(pthread_join(d->th, NULL) == 0, "pthread_join"); }

static void write_byte(void* fd) { must(write(*(int*)fd, "x", 1) == 1, "write"); }
static void post_sem(void* s) { must(sem_post(s) == 0, "sem_post"); }

struct cond_pair {
    pthread_mutex_t m;
    pthread_cond_t c;
    int flag;
};
static void signal_cond(void* p) {
    struct cond_pair* cp = p;
    pthread_mutex_lock(&cp->m);
    cp->flag = 1;
    pthread_cond_signal(&cp->c);
    pthread_mutex_unlock(&cp->m);
}

static struct timespec ts(time_t s, long ns) {
    struct timespec t = {s, ns};
    return t;
}
static const time_t kHugeSeconds = (time_t)1 << 62;  // valid, and far beyond any int64 of nanoseconds

// ---- close ----

static void cases_close(void) {
    int p[2];
    ERR("close(-1)", close(-1));
    ERR("close(12345)", close(12345));
    ERR("close(INT_MAX)", close(INT_MAX));
    ERR("close(never opened fd 900)", close(900));
    ERR("close(closed fd)", close(closed_fd()));
    ERR("close(closed socket fd)", close(closed_socket_fd()));
    mkpipe(p);
    ERR("close(pipe) first", close(p[0]));
    ERR("close(pipe) again", close(p[0]));
    close(p[1]);
    int sv[2];
    pair(SOCK_STREAM, sv);
    ERR("close(socket) first", close(sv[0]));
    ERR("close(socket) again", close(sv[0]));
    close(sv[1]);
}

// ---- read / write family on fds that are not open ----

static void io_on(const char* what, int fd) {
    char buf[16] = "hello";
    char name[96];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    struct sockaddr_un sa = {AF_UNIX, "x"};
#define N(call) (snprintf(name, sizeof name, call "(%s)", what), name)
    ERR(N("read"), read(fd, buf, sizeof buf));
    ERR(N("write"), write(fd, buf, 5));
    ERR(N("recv"), recv(fd, buf, sizeof buf, 0));
    ERR(N("send"), send(fd, buf, 5, 0));
    ERR(N("recvfrom"), recvfrom(fd, buf, sizeof buf, 0, NULL, NULL));
    ERR(N("sendto"), sendto(fd, buf, 5, 0, (struct sockaddr*)&sa, sizeof sa));
    ERR(N("recvmsg"), recvmsg(fd, &msg, 0));
    ERR(N("sendmsg"), sendmsg(fd, &msg, 0));
    ERR(N("readv"), readv(fd, &iov, 1));
    ERR(N("writev"), writev(fd, &iov, 1));
    ERR(N("pread"), pread(fd, buf, sizeof buf, 0));
    ERR(N("pwrite"), pwrite(fd, buf, 5, 0));
    ERR(N("accept"), accept(fd, NULL, NULL));
    ERR(N("connect"), connect(fd, (struct sockaddr*)&sa, sizeof sa));
    ERR(N("fcntl F_GETFL"), fcntl(fd, F_GETFL));
    ERR(N("fcntl F_SETFL"), fcntl(fd, F_SETFL, O_NONBLOCK));
    int one = 1;
    ERR(N("ioctl FIONBIO"), ioctl(fd, FIONBIO, &one));
    ERR(N("shutdown"), shutdown(fd, SHUT_RDWR));
    ERR(N("fsync"), fsync(fd));
    ERR(N("flock"), flock(fd, LOCK_EX));
    ERR(N("lockf"), lockf(fd, F_LOCK, 0));
    ERR(N("dup"), dup(fd));
    ERR(N("sendfile"), sendfile(fd, 0, NULL, 1));
    struct pollfd pfd = {fd, POLLIN, 0};
    ERR(N("poll revents"), poll(&pfd, 1, 100) == 1 ? pfd.revents : -2);
#undef N
}

static void cases_bad_fds(void) {
    io_on("-1", -1);
    io_on("12345", 12345);
    io_on("closed", closed_fd());
    io_on("closed socket", closed_socket_fd());
    io_on("INT_MAX", INT_MAX);
}

// ---- NULL and absurd buffers on pipes and sockets ----

static const char* kind_name(int kind) {
    switch (kind) {
    case 0: return "pipe";
    case 1: return "stream";
    default: return "dgram";
    }
}

// fds[0] reads, fds[1] writes.
static void make(int kind, int fds[2]) {
    if (kind == 0) mkpipe(fds);
    else pair(kind == 1 ? SOCK_STREAM : SOCK_DGRAM, fds);
}

static int readable(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0);
}

// Data waiting at f[0] (a datagram is consumed even by a read that fails:
// send another).
static void fill(int f[2]) {
    if (!readable(f[0])) must(write(f[1], "hello", 5) == 5, "write");
}

static void null_buffers(int kind) {
    int f[2];
    char name[96];
    char buf[16];
    const char* k = kind_name(kind);
#define N(call) (snprintf(name, sizeof name, call, k), name)
    make(kind, f);
    ERR(N("%s read(NULL, 0) empty"), read(f[0], NULL, 0));
    ERR(N("%s readv(iov, 0) empty"), readv(f[0], (struct iovec*)buf, 0));
    ERR(N("%s write(NULL, 4)"), write(f[1], NULL, 4));
    ERR(N("%s write(NULL, 0)"), write(f[1], NULL, 0));
    ERR(N("%s readable now"), readable(f[0]));
    if (readable(f[0])) ERR(N("%s read it"), read(f[0], buf, sizeof buf));
    fill(f);
    ERR(N("%s read(NULL, 4) with data"), read(f[0], NULL, 4));
    fill(f);
    ERR(N("%s read(NULL, 0) with data"), read(f[0], NULL, 0));
    fill(f);
    ERR(N("%s recv(NULL, 4) with data"), recv(f[0], NULL, 4, 0));
    fill(f);
    ERR(N("%s recv(NULL, 0, MSG_PEEK) with data"), recv(f[0], NULL, 0, MSG_PEEK));
    fill(f);
    ERR(N("%s recvfrom(NULL, 4) with data"), recvfrom(f[0], NULL, 4, 0, NULL, NULL));
    fill(f);
    ERR(N("%s recv(NULL, 4, MSG_WAITALL) with data"), recv(f[0], NULL, 4, MSG_WAITALL));
    struct iovec iov = {NULL, 4};
    fill(f);
    ERR(N("%s readv({NULL, 4}) with data"), readv(f[0], &iov, 1));
    fill(f);
    ERR(N("%s readv(NULL, 1) with data"), readv(f[0], NULL, 1));
    fill(f);
    ERR(N("%s read(buf, SIZE_MAX) with data"), read(f[0], buf, SIZE_MAX));
    fill(f);
    ERR(N("%s read(buf, SSIZE_MAX) with data"), read(f[0], buf, SSIZE_MAX));
    fill(f);
    ERR(N("%s read(0x1, 4) with data"), read(f[0], (void*)1, 4));
    fill(f);
    ERR(N("%s read 16 (the data)"), read(f[0], buf, sizeof buf));
    ERR(N("%s write(buf, SIZE_MAX)"), write(f[1], buf, SIZE_MAX));
    ERR(N("%s write(buf, SSIZE_MAX)"), write(f[1], buf, SSIZE_MAX));
    ERR(N("%s send(NULL, 4)"), send(f[1], NULL, 4, 0));
    ERR(N("%s sendto(NULL, 4)"), sendto(f[1], NULL, 4, 0, NULL, 0));
    ERR(N("%s writev(NULL, 1)"), writev(f[1], NULL, 1));
    ERR(N("%s writev({NULL, 4})"), writev(f[1], &iov, 1));
    struct iovec two[2] = {{"ab", 2}, {NULL, 4}};
    ERR(N("%s writev({ab, 2}, {NULL, 4})"), writev(f[1], two, 2));
    ERR(N("%s write 3"), write(f[1], "end", 3));
    ERR(N("%s read what came"), read(f[0], buf, sizeof buf));
    set_nonblock(f[0]);
    ERR(N("%s read(NULL, 4) empty, O_NONBLOCK"), read(f[0], NULL, 4));
    ERR(N("%s recv(NULL, 4) empty, O_NONBLOCK"), recv(f[0], NULL, 4, 0));
    ERR(N("%s readv({NULL, 4}) empty, O_NONBLOCK"), readv(f[0], &iov, 1));
    ERR(N("%s recv(NULL, 4, MSG_DONTWAIT) empty"), recv(f[0], NULL, 4, MSG_DONTWAIT));
    close(f[1]);
    if (kind != 2) {
        ERR(N("%s read(NULL, 4) at EOF"), read(f[0], NULL, 4));
        ERR(N("%s recv(NULL, 4) at EOF"), recv(f[0], NULL, 4, 0));
    }
    close(f[0]);
    // the reader gone: EPIPE (SIGPIPE is ignored)
    make(kind, f);
    close(f[0]);
    ERR(N("%s write 5, reader closed"), write(f[1], "hello", 5));
    ERR(N("%s write(NULL, 4), reader closed"), write(f[1], NULL, 4));
    close(f[1]);
    // fds from the same family for the wrong job
    make(kind, f);
    ERR(N("%s read on the write end"), read(f[1], buf, 0));
    ERR(N("%s write on the read end"), write(f[0], "x", 1));
    ERR(N("%s send(MSG_OOB)"), send(f[1], "x", 1, MSG_OOB));
    ERR(N("%s recv(MSG_OOB)"), recv(f[0], buf, 1, MSG_OOB));
    ERR(N("%s pread"), pread(f[0], buf, 1, 0));
    ERR(N("%s pwrite"), pwrite(f[1], buf, 1, 0));
    ERR(N("%s pread at -1"), pread(f[0], buf, 1, -1));
    ERR(N("%s lseek"), lseek(f[0], 0, SEEK_SET));
    close2(f);
#undef N
}

// A zero-length read on a datagram socket with nothing queued returns 0 at
// once (the kernel answers before looking at the queue); recv blocks.
static void zero_length_datagram(void) {
    int f[2];
    char buf[4];
    struct iovec iov = {buf, 0};
    pair(SOCK_DGRAM, f);
    ERR("dgram read(buf, 0) empty", read(f[0], buf, 0));
    ERR("dgram readv({buf, 0}) empty", readv(f[0], &iov, 1));
    ERR("dgram readv(iov, 0) empty", readv(f[0], &iov, 0));
    close2(f);
}

// ---- vectors ----

static void vectors(int kind) {
    int f[2];
    char name[96];
    char buf[8] = "abcdefg";
    struct iovec iov[2] = {{buf, 4}, {buf + 4, 4}};
    static struct iovec many[IOV_MAX + 1];
    for (int i = 0; i <= IOV_MAX; ++i) many[i] = (struct iovec){buf, 1};
    const char* k = kind_name(kind);
#define N(call) (snprintf(name, sizeof name, call, k), name)
    make(kind, f);
    ERR(N("%s writev(iovcnt -1)"), writev(f[1], iov, -1));
    ERR(N("%s writev(iovcnt 0)"), writev(f[1], iov, 0));
    ERR(N("%s readable now"), readable(f[0]));
    if (readable(f[0])) ERR(N("%s read it"), read(f[0], buf, sizeof buf));
    ERR(N("%s writev(iovcnt IOV_MAX+1)"), writev(f[1], many, IOV_MAX + 1));
    ERR(N("%s writev(iovcnt INT_MAX)"), writev(f[1], iov, INT_MAX));
    ERR(N("%s writev(iovcnt INT_MIN)"), writev(f[1], iov, INT_MIN));
    ERR(N("%s writev(iovcnt 2)"), writev(f[1], iov, 2));
    ERR(N("%s readv(iovcnt -1)"), readv(f[0], iov, -1));
    ERR(N("%s readv(iovcnt 0) with data"), readv(f[0], iov, 0));
    ERR(N("%s readv(iovcnt IOV_MAX+1)"), readv(f[0], many, IOV_MAX + 1));
    ERR(N("%s readv(iovcnt INT_MAX)"), readv(f[0], iov, INT_MAX));
    struct iovec huge = {buf, SIZE_MAX};
    ERR(N("%s readv({buf, SIZE_MAX})"), readv(f[0], &huge, 1));
    struct iovec over[2] = {{buf, SSIZE_MAX}, {buf, SSIZE_MAX}};
    ERR(N("%s readv(lengths overflow ssize_t)"), readv(f[0], over, 2));
    ERR(N("%s writev(lengths overflow ssize_t)"), writev(f[1], over, 2));
    ERR(N("%s readv(iovcnt 2)"), readv(f[0], iov, 2));
    close2(f);
#undef N
}

// ---- msghdr ----

static void messages(int kind) {
    int f[2];
    char name[96];
    char buf[8] = "abcdefg";
    struct iovec iov = {buf, 4};
    const char* k = kind_name(kind);
#define N(call) (snprintf(name, sizeof name, call, k), name)
    make(kind, f);
    struct msghdr m = {0};
    ERR(N("%s sendmsg(NULL msg)"), sendmsg(f[1], NULL, 0));
    m.msg_iov = NULL;
    m.msg_iovlen = 1;
    ERR(N("%s sendmsg(msg_iov NULL, iovlen 1)"), sendmsg(f[1], &m, 0));
    m.msg_iov = &iov;
    m.msg_iovlen = 1025;
    ERR(N("%s sendmsg(iovlen 1025)"), sendmsg(f[1], &m, 0));
    m.msg_iovlen = (size_t)-1;
    ERR(N("%s sendmsg(iovlen SIZE_MAX)"), sendmsg(f[1], &m, 0));
    m.msg_iovlen = 1;
    m.msg_control = (void*)1;
    m.msg_controllen = 64;
    ERR(N("%s sendmsg(bad msg_control)"), sendmsg(f[1], &m, 0));
    m.msg_control = buf;
    m.msg_controllen = 4;  // shorter than a cmsghdr
    ERR(N("%s sendmsg(short msg_control)"), sendmsg(f[1], &m, 0));
    m.msg_control = NULL;
    m.msg_controllen = 0;
    m.msg_name = (void*)1;
    m.msg_namelen = 16;
    ERR(N("%s sendmsg(bad msg_name)"), sendmsg(f[1], &m, 0));
    m.msg_name = NULL;
    m.msg_namelen = 0;
    ERR(N("%s sendmsg(flags 0xdead0000)"), sendmsg(f[1], &m, (int)0xdead0000));
    ERR(N("%s sendmsg ok"), sendmsg(f[1], &m, 0));
    ERR(N("%s recvmsg(NULL msg)"), recvmsg(f[0], NULL, 0));
    ERR(N("%s recvmsg(NULL msg, MSG_WAITALL)"), recvmsg(f[0], NULL, MSG_WAITALL));
    m.msg_iov = NULL;
    ERR(N("%s recvmsg(msg_iov NULL, iovlen 1)"), recvmsg(f[0], &m, 0));
    m.msg_iov = &iov;
    m.msg_iovlen = 1025;
    ERR(N("%s recvmsg(iovlen 1025)"), recvmsg(f[0], &m, 0));
    m.msg_iovlen = 1;
    m.msg_control = (void*)1;
    m.msg_controllen = 64;
    ERR(N("%s recvmsg(bad msg_control)"), recvmsg(f[0], &m, 0));
    m.msg_control = NULL;
    m.msg_controllen = 0;
    ERR(N("%s recvmsg ok, flags"), recvmsg(f[0], &m, 0) * 1000 + m.msg_flags);
    struct mmsghdr mm = {0};
    mm.msg_hdr.msg_iov = &iov;
    mm.msg_hdr.msg_iovlen = 1;
    ERR(N("%s sendmmsg(NULL, 1)"), sendmmsg(f[1], NULL, 1, 0));
    ERR(N("%s sendmmsg(vlen 0)"), sendmmsg(f[1], &mm, 0, 0));
    ERR(N("%s recvmmsg(NULL, 1)"), recvmmsg(f[0], NULL, 1, 0, NULL));
    ERR(N("%s recvmmsg(vlen 0)"), recvmmsg(f[0], &mm, 0, 0, NULL));
    struct timespec bad = ts(0, 1000000000L);
    ERR(N("%s recvmmsg(bad timeout)"), recvmmsg(f[0], &mm, 1, 0, &bad));
    close2(f);
#undef N
}

// ---- socket options and calls ----

static void sockets(void) {
    int f[2];
    char buf[8];
    pair(SOCK_STREAM, f);
    struct timeval tv = {0, 2000000};
    ERR("setsockopt SO_RCVTIMEO usec 2000000", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    ERR("setsockopt SO_RCVTIMEO NULL", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, NULL, sizeof tv));
    ERR("setsockopt SO_RCVTIMEO len 3", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, 3));
    // A negative timeout is accepted and means "do not wait at all".
    tv = (struct timeval){-1, 0};
    ERR("setsockopt SO_RCVTIMEO -1 s", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    ERR("recv, SO_RCVTIMEO -1 s, empty", recv(f[0], buf, sizeof buf, 0));
    ERR("read, SO_RCVTIMEO -1 s, empty", read(f[0], buf, sizeof buf));
    // A huge timeout is forever (here: until the delayed write)
    tv = (struct timeval){LONG_MAX, 999999};
    ERR("setsockopt SO_RCVTIMEO LONG_MAX s", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    struct delayed d;
    delayed_start(&d, write_byte, &f[1]);
    ERR("recv, SO_RCVTIMEO LONG_MAX s, data later", recv(f[0], buf, sizeof buf, 0));
    delayed_join(&d);
    tv = (struct timeval){(time_t)1 << 62, 0};
    ERR("setsockopt SO_RCVTIMEO 2^62 s", setsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    delayed_start(&d, write_byte, &f[1]);
    ERR("recv, SO_RCVTIMEO 2^62 s, data later", recv(f[0], buf, sizeof buf, 0));
    delayed_join(&d);
    tv = (struct timeval){-5, 0};
    ERR("setsockopt SO_SNDTIMEO -5 s", setsockopt(f[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    ERR("getsockopt SO_RCVTIMEO NULL len", getsockopt(f[0], SOL_SOCKET, SO_RCVTIMEO, &tv, NULL));
    ERR("setsockopt bad level", setsockopt(f[0], 12345, 1, &tv, sizeof tv));
    ERR("shutdown how 7", shutdown(f[0], 7));
    close2(f);

    FD("socket(family 12345)", socket(12345, SOCK_STREAM, 0));
    FD("socket(type 12345)", socket(AF_UNIX, 12345, 0));
    FD("socket(AF_INET, protocol 12345)", socket(AF_INET, SOCK_STREAM, 12345));
    ERR("socketpair(AF_INET)", socketpair(AF_INET, SOCK_STREAM, 0, f));
    ERR("socketpair(NULL sv)", socketpair(AF_UNIX, SOCK_STREAM, 0, NULL));
    ERR("socketpair(type 12345)", socketpair(AF_UNIX, 12345, 0, f));
    ERR("pipe(NULL)", pipe(NULL));
    ERR("pipe2(flags 12345)", pipe2(f, 12345));
    ERR("pipe2(NULL)", pipe2(NULL, 0));
    FD("eventfd(0, flags 12345)", eventfd(0, 12345));
    FD("timerfd_create(clock 12345)", timerfd_create(12345, 0));
    FD("timerfd_create(flags 12345)", timerfd_create(CLOCK_MONOTONIC, 12345));

    // accept and connect on things that cannot
    int p[2];
    mkpipe(p);
    struct sockaddr_un sa = {AF_UNIX, ""};
    socklen_t len = sizeof sa;
    ERR("accept(pipe)", accept(p[0], NULL, NULL));
    ERR("connect(pipe)", connect(p[0], (struct sockaddr*)&sa, sizeof sa));
    FD("open(/dev/null)", open("/dev/null", O_RDONLY));
    int devnull = open("/dev/null", O_RDONLY);
    ERR("accept(/dev/null)", accept(devnull, NULL, NULL));
    ERR("connect(/dev/null)", connect(devnull, (struct sockaddr*)&sa, sizeof sa));
    close(devnull);
    close2(p);
    pair(SOCK_STREAM, f);
    ERR("accept(connected socket)", accept(f[0], NULL, NULL));
    ERR("accept4(connected socket, flags 12345)", accept4(f[0], NULL, NULL, 12345));
    ERR("connect(connected socket)", connect(f[0], (struct sockaddr*)&sa, sizeof sa));
    close2(f);
    pair(SOCK_DGRAM, f);
    ERR("accept(dgram)", accept(f[0], NULL, NULL));
    close2(f);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    ERR("accept(unbound stream socket)", accept(s, NULL, NULL));
    ERR("connect(NULL, 16)", connect(s, NULL, 16));
    ERR("connect(NULL, 0)", connect(s, NULL, 0));
    ERR("connect(addr, 0)", connect(s, (struct sockaddr*)&sa, 0));
    ERR("connect(addr, -1)", connect(s, (struct sockaddr*)&sa, (socklen_t)-1));
    struct sockaddr_in in = {AF_INET, htons(1), {htonl(INADDR_LOOPBACK)}};
    ERR("connect(AF_INET addr to unix socket)", connect(s, (struct sockaddr*)&in, sizeof in));
    strcpy(sa.sun_path, "/nonexistent/greenshim-badinput");
    ERR("connect(no such path)", connect(s, (struct sockaddr*)&sa, sizeof sa));
    close(s);

    // TCP on loopback: refused, and accept with a bad address length pointer
    int l = socket(AF_INET, SOCK_STREAM, 0);
    must(l >= 0, "socket");
    struct sockaddr_in bound = {AF_INET, 0, {htonl(INADDR_LOOPBACK)}};
    must(bind(l, (struct sockaddr*)&bound, sizeof bound) == 0, "bind");
    socklen_t blen = sizeof bound;
    must(getsockname(l, (struct sockaddr*)&bound, &blen) == 0, "getsockname");
    s = socket(AF_INET, SOCK_STREAM, 0);
    ERR("connect(bound, not listening: refused)", connect(s, (struct sockaddr*)&bound, sizeof bound));
    ERR("connect again after refusal", connect(s, (struct sockaddr*)&bound, sizeof bound));
    close(s);
    must(listen(l, 4) == 0, "listen");
    s = socket(AF_INET, SOCK_STREAM, 0);
    ERR("connect(listening)", connect(s, (struct sockaddr*)&bound, sizeof bound));
    ERR("connect(listening) again", connect(s, (struct sockaddr*)&bound, sizeof bound));
    struct sockaddr_in peer;
    ERR("accept(addr, NULL addrlen), pending", accept(l, (struct sockaddr*)&peer, NULL));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    ERR("connect(listening) #2", connect(s, (struct sockaddr*)&bound, sizeof bound));
    len = (socklen_t)-1;
    FD("accept(addr, addrlen -1), pending", accept(l, (struct sockaddr*)&peer, &len));
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    ERR("connect(listening) #3", connect(s, (struct sockaddr*)&bound, sizeof bound));
    FD("accept(addr, bad addrlen ptr), pending", accept(l, (struct sockaddr*)&peer, (socklen_t*)1));
    close(s);
    // negative timeouts on a listener and a connecting socket: no waiting at all
    tv = (struct timeval){-1, 0};
    ERR("setsockopt(listener, SO_RCVTIMEO -1 s)", setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    FD("accept, SO_RCVTIMEO -1 s, nobody", accept(l, NULL, NULL));
    close(l);
    l = socket(AF_INET, SOCK_STREAM, 0);
    bound.sin_port = 0;
    must(bind(l, (struct sockaddr*)&bound, sizeof bound) == 0, "bind");
    blen = sizeof bound;
    must(getsockname(l, (struct sockaddr*)&bound, &blen) == 0, "getsockname");
    must(listen(l, 4) == 0, "listen");
    s = socket(AF_INET, SOCK_STREAM, 0);
    ERR("setsockopt SO_SNDTIMEO -1 s", setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    int r = connect(s, (struct sockaddr*)&bound, sizeof bound);
    // (on loopback the handshake may finish within the call: either answer is the kernel's)
    printf("%-6s %-58s = %s\n", ctx, "connect, SO_SNDTIMEO -1 s: 0 or EINPROGRESS",
           r == 0 || errno == EINPROGRESS ? "yes" : errname(errno));
    close(s);
    close(l);
}

// A unix listener whose backlog is full: a blocking connect waits for room.
static int busy_listener = -1;
static void accept_one(void* arg) {
    (void)arg;
    int c = accept(busy_listener, NULL, NULL);
    must(c >= 0, "accept");
    close(c);
}

static void busy_unix_listener(void) {
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {AF_UNIX, ""};
    // an abstract name, unique to this process and context
    snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "greenshim-badinput-%d-%s", (int)getpid(), ctx);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
    must(bind(l, (struct sockaddr*)&sa, len) == 0, "bind");
    must(listen(l, 0) == 0, "listen");
    int a = socket(AF_UNIX, SOCK_STREAM, 0), b = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
    ERR("unix connect, backlog 0, first", connect(a, (struct sockaddr*)&sa, len));
    set_nonblock(b);
    ERR("unix connect, backlog full, O_NONBLOCK", connect(b, (struct sockaddr*)&sa, len));
    busy_listener = l;
    struct delayed d;
    delayed_start(&d, accept_one, NULL);
    int e = socket(AF_UNIX, SOCK_STREAM, 0);
    ERR("unix connect, backlog full, accepted later", connect(e, (struct sockaddr*)&sa, len));
    delayed_join(&d);
    struct timeval tv = {0, 20000};
    int g = socket(AF_UNIX, SOCK_STREAM, 0);
    ERR("setsockopt SO_SNDTIMEO 20 ms", setsockopt(g, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    ERR("unix connect, backlog full, SO_SNDTIMEO 20 ms", connect(g, (struct sockaddr*)&sa, len));
    close(a);
    close(b);
    close(c);
    close(e);
    close(g);
    close(l);
}

// An fd closed behind the shim's back (a raw syscall) and its number reused
// for something else: the shim must notice, not act on what it knew.
static void behind_the_back(void) {
    int f[2];
    char buf[8];
    pair(SOCK_STREAM, f);
    int num = f[0];
    must(syscall(SYS_close, num) == 0, "close");
    ERR("read(socket closed by raw syscall)", read(num, buf, sizeof buf));
    int n = open("/dev/zero", O_RDONLY);  // (the lowest free number: likely num itself)
    must(n >= 0, "open");
    if (n != num) {
        must(syscall(SYS_dup3, n, num, 0) == num, "dup3");
        close(n);
    }
    ERR("read(number reused for /dev/zero)", read(num, buf, sizeof buf));
    ERR("recv(number reused for /dev/zero)", recv(num, buf, sizeof buf, 0));
    ERR("write(number reused for /dev/zero, read-only)", write(num, buf, 1));
    close(num);
    close(f[1]);
}

// Regular files and directories (GREENSHIM_FILE_IO=pool runs these on helper threads).
static void files(void) {
    char buf[16];
    char path[64];
    snprintf(path, sizeof path, "/tmp/greenshim-badinput-%d-%s", (int)getpid(), ctx);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    must(fd >= 0, "open");
    ERR("file write 5", write(fd, "hello", 5));
    ERR("file pread(NULL, 4)", pread(fd, NULL, 4, 0));
    ERR("file pread(buf, 4, -1)", pread(fd, buf, 4, -1));
    ERR("file pwrite(NULL, 4)", pwrite(fd, NULL, 4, 0));
    ERR("file read(NULL, 4) at 0", (lseek(fd, 0, SEEK_SET), read(fd, NULL, 4)));
    ERR("file read(buf, SIZE_MAX)", read(fd, buf, SIZE_MAX));
    ERR("file write(NULL, 4)", write(fd, NULL, 4));
    struct iovec iov = {NULL, 4};
    ERR("file readv({NULL, 4})", readv(fd, &iov, 1));
    ERR("file readv(iovcnt -1)", readv(fd, &iov, -1));
    ERR("file writev(iovcnt IOV_MAX+1)", writev(fd, &iov, IOV_MAX + 1));
    ERR("file preadv(iovcnt -1)", preadv(fd, &iov, -1, 0));
    ERR("file fsync", fsync(fd));
    ERR("file fdatasync", fdatasync(fd));
    ERR("file recv", recv(fd, buf, 4, 0));
    ERR("file accept", accept(fd, NULL, NULL));
    ERR("file flock(LOCK_EX)", flock(fd, LOCK_EX));
    ERR("file flock(LOCK_EX|LOCK_NB) again", flock(fd, LOCK_EX | LOCK_NB));
    ERR("file flock(LOCK_UN)", flock(fd, LOCK_UN));
    ERR("file lockf(F_LOCK, len -1)", lockf(fd, F_LOCK, -1));
    ERR("file lockf(F_ULOCK)", lockf(fd, F_ULOCK, 0));
    close(fd);
    fd = open(path, O_RDONLY);
    ERR("file write on O_RDONLY", write(fd, "x", 1));
    ERR("file fsync on O_RDONLY", fsync(fd));
    close(fd);
    unlink(path);
    fd = open("/tmp", O_RDONLY | O_DIRECTORY);
    ERR("directory read", read(fd, buf, sizeof buf));
    ERR("directory write", write(fd, "x", 1));
    ERR("directory pread", pread(fd, buf, 1, 0));
    close(fd);
    FD("open(NULL)", open(NULL, O_RDONLY));
    FD("open(bad flags 0xffffffff)", open("/dev/null", (int)0xffffffff));
    FD("open(no such file)", open("/nonexistent/greenshim", O_RDONLY));
    FD("open(O_CREAT in a missing dir)", open("/nonexistent/greenshim", O_CREAT | O_WRONLY, 0600));
    FD("openat(bad dirfd, relative)", openat(12345, "x", O_RDONLY));
    FD("openat(closed dirfd, relative)", openat(closed_fd(), "x", O_RDONLY));
    FD("openat(-1, relative)", openat(-1, "x", O_RDONLY));
    FD("open(O_TMPFILE without mode bits in a missing dir)", open("/nonexistent", O_TMPFILE | O_RDWR, 0600));
}

// More vector and message abuse: pointers the kernel must judge.
static void bad_pointers(void) {
    int f[2];
    pair(SOCK_STREAM, f);
    must(write(f[1], "hello", 5) == 5, "write");
    ERR("stream readv(bad iov ptr, 1) with data", readv(f[0], (struct iovec*)1, 1));
    ERR("stream writev(bad iov ptr, 1)", writev(f[1], (struct iovec*)1, 1));
    ERR("stream recvmsg(bad msg ptr) with data", recvmsg(f[0], (struct msghdr*)1, 0));
    // (not sendmsg with a bad msghdr pointer: the shim reads msg_controllen
    // before the kernel, and crashes where the kernel says EFAULT)
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.space;
    m.msg_controllen = sizeof ctl.space;
    ctl.h.cmsg_level = SOL_SOCKET;
    ctl.h.cmsg_type = SCM_RIGHTS;
    ctl.h.cmsg_len = 4;  // shorter than its own header
    ERR("sendmsg(SCM_RIGHTS, cmsg_len 4)", sendmsg(f[1], &m, 0));
    ctl.h.cmsg_len = 1 << 30;  // longer than the buffer
    ERR("sendmsg(SCM_RIGHTS, cmsg_len 2^30)", sendmsg(f[1], &m, 0));
    ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
    int bad = -1;
    memcpy(CMSG_DATA(&ctl.h), &bad, sizeof bad);
    ERR("sendmsg(SCM_RIGHTS, fd -1)", sendmsg(f[1], &m, 0));
    bad = closed_fd();
    memcpy(CMSG_DATA(&ctl.h), &bad, sizeof bad);
    ERR("sendmsg(SCM_RIGHTS, closed fd)", sendmsg(f[1], &m, 0));
    m.msg_controllen = (size_t)1 << 40;
    ERR("sendmsg(msg_controllen 2^40)", sendmsg(f[1], &m, 0));
    m.msg_control = (void*)1;
    m.msg_controllen = 64;
    ERR("sendmsg(bad msg_control ptr)", sendmsg(f[1], &m, 0));
    close2(f);
}

// select on an fd number past FD_SETSIZE, in a set as big as it needs.
static void select_big_fd(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 2048) {
        printf("%-6s %-58s = skipped (hard RLIMIT_NOFILE below 2048)\n", ctx, "select, fd 1100 in a big set");
        return;
    }
    struct rlimit raised = {2048, rl.rlim_max};
    must(setrlimit(RLIMIT_NOFILE, &raised) == 0, "setrlimit");
    int p[2];
    mkpipe(p);
    int hi = fcntl(p[0], F_DUPFD, 1100);
    must(hi >= 1100, "F_DUPFD");
    static fd_set big[2];
    memset(big, 0, sizeof big);
    big[hi / FD_SETSIZE].fds_bits[(hi % FD_SETSIZE) / (8 * (int)sizeof(fd_mask))] |=
        (fd_mask)1 << (hi % (8 * (int)sizeof(fd_mask)));
    struct delayed d;
    delayed_start(&d, write_byte, &p[1]);
    ERR("select, fd 1100 in a big set, data later", select(hi + 1, &big[0], NULL, NULL, NULL));
    delayed_join(&d);
    close(hi);
    close2(p);
    setrlimit(RLIMIT_NOFILE, &rl);
}

// ---- poll, select, epoll ----

static void polling(void) {
    int p[2];
    mkpipe(p);
    must(write(p[1], "x", 1) == 1, "write");  // p[0] is readable from now on
    struct pollfd ready = {p[0], POLLIN, 0};
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    ERR("poll(NULL, 1, 100)", poll(NULL, 1, 100));
    ERR("poll(NULL, 0, 10)", poll(NULL, 0, 10));
    ERR("poll(fds, RLIMIT_NOFILE+1, 100)", poll(&ready, (nfds_t)rl.rlim_cur + 1, 100));
    ERR("poll(fds, ULONG_MAX, 100)", poll(&ready, (nfds_t)-1, 100));
    ERR("poll(ready, 1, -5)", poll(&ready, 1, -5));
    ERR("poll(ready, 1, INT_MIN)", poll(&ready, 1, INT_MIN));
    struct pollfd neg = {-1, POLLIN, 0};
    ERR("poll({-1}, 1, 10)", poll(&neg, 1, 10));
    struct pollfd none = {p[0], 0, 0};
    ERR("poll({ready fd, events 0}, 1, 10)", poll(&none, 1, 10));
    struct pollfd closed = {closed_fd(), POLLIN, 0};
    ERR("poll({closed}) revents", poll(&closed, 1, 100) * 1000 + closed.revents);
    struct pollfd bogus = {p[1], (short)0xffff, 0};
    ERR("poll({write end, events 0xffff}) revents", poll(&bogus, 1, 100) * 100000 + (bogus.revents & 0xffff));
    struct timespec bad = ts(0, 1000000000L), negts = ts(-1, 0), negns = ts(0, -1), zero = ts(0, 0);
    ERR("ppoll(ready, tv_nsec 1e9)", ppoll(&ready, 1, &bad, NULL));
    ERR("ppoll(ready, tv_sec -1)", ppoll(&ready, 1, &negts, NULL));
    ERR("ppoll(ready, tv_nsec -1)", ppoll(&ready, 1, &negns, NULL));
    ERR("ppoll(NULL, 1, 10 ms)", ppoll(NULL, 1, &(struct timespec){0, 10000000}, NULL));
    ERR("ppoll(NULL, 1, zero)", ppoll(NULL, 1, &zero, NULL));
    ERR("ppoll(NULL fds, 1, bad ts)", ppoll(NULL, 1, &bad, NULL));

    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timeval tv = {1, 0};
    ERR("select(-1)", select(-1, &r, NULL, NULL, &tv));
    ERR("select(INT_MIN)", select(INT_MIN, &r, NULL, NULL, &tv));
    // Bigger than FD_SETSIZE: fine, if the sets are that big.
    static fd_set big[4];
    memset(big, 0, sizeof big);
    FD_SET(p[0], &big[0]);
    tv = (struct timeval){1, 0};
    ERR("select(FD_SETSIZE+1, big set, ready)", select(FD_SETSIZE + 1, &big[0], NULL, NULL, &tv));
    tv = (struct timeval){-1, 0};
    FD_SET(p[0], &r);
    ERR("select(tv_sec -1)", select(p[0] + 1, &r, NULL, NULL, &tv));
    tv = (struct timeval){0, -1};
    FD_SET(p[0], &r);
    ERR("select(tv_usec -1)", select(p[0] + 1, &r, NULL, NULL, &tv));
    tv = (struct timeval){0, 1500000};
    FD_SET(p[0], &r);
    ERR("select(tv_usec 1500000), ready", select(p[0] + 1, &r, NULL, NULL, &tv));
    tv = (struct timeval){0, 10000};
    ERR("select(0, NULL sets, 10 ms)", select(0, NULL, NULL, NULL, &tv));
    tv = (struct timeval){0, 10000};
    // (not a bad non-NULL set pointer: the shim must copy the sets before the
    // kernel reads them, and crashes where the kernel says EFAULT)
    int c = closed_fd();
    fd_set cs;
    FD_ZERO(&cs);
    FD_SET(c, &cs);
    tv = (struct timeval){1, 0};
    ERR("select({closed fd})", select(c + 1, &cs, NULL, NULL, &tv));
    FD_SET(p[0], &r);
    ERR("pselect(tv_nsec 1e9)", pselect(p[0] + 1, &r, NULL, NULL, &bad, NULL));
    FD_SET(p[0], &r);
    ERR("pselect(tv_sec -1)", pselect(p[0] + 1, &r, NULL, NULL, &negts, NULL));

    int ep = epoll_create1(0);
    must(ep >= 0, "epoll_create1");
    struct epoll_event ev = {EPOLLIN, {0}};
    must(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "epoll_ctl");
    struct epoll_event out[4];
    ERR("epoll_wait(-1)", epoll_wait(-1, out, 4, 100));
    ERR("epoll_wait(closed)", epoll_wait(closed_fd(), out, 4, 100));
    ERR("epoll_wait(pipe fd)", epoll_wait(p[0], out, 4, 100));
    ERR("epoll_wait(maxevents 0)", epoll_wait(ep, out, 0, 100));
    ERR("epoll_wait(maxevents -1)", epoll_wait(ep, out, -1, 100));
    ERR("epoll_wait(maxevents INT_MAX)", epoll_wait(ep, out, INT_MAX, 100));
    ERR("epoll_wait(NULL events)", epoll_wait(ep, NULL, 4, 100));
    ERR("epoll_wait(NULL events, maxevents 0)", epoll_wait(ep, NULL, 0, 100));
    ERR("epoll_wait(ready, timeout -5)", epoll_wait(ep, out, 4, -5));
    ERR("epoll_pwait(maxevents -1)", epoll_pwait(ep, out, -1, 100, NULL));
    ERR("epoll_pwait(ready, timeout INT_MIN)", epoll_pwait(ep, out, 4, INT_MIN, NULL));
    ERR("epoll_ctl(bad op)", epoll_ctl(ep, 12345, p[0], &ev));
    ERR("epoll_ctl(add itself)", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    FD("epoll_create(0)", epoll_create(0));
    FD("epoll_create1(12345)", epoll_create1(12345));
    close(ep);
    close2(p);

    // Huge timeouts are forever: the data arrives later and is seen.
    struct delayed d;
    mkpipe(p);
    struct pollfd pf = {p[0], POLLIN, 0};
    delayed_start(&d, write_byte, &p[1]);
    ERR("poll(INT_MAX ms), data later", poll(&pf, 1, INT_MAX));
    delayed_join(&d);
    close2(p);
    mkpipe(p);
    struct timespec huge = ts(kHugeSeconds, 0);
    pf.fd = p[0];
    delayed_start(&d, write_byte, &p[1]);
    ERR("ppoll(2^62 s), data later", ppoll(&pf, 1, &huge, NULL));
    delayed_join(&d);
    close2(p);
    mkpipe(p);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv = (struct timeval){kHugeSeconds, 0};
    delayed_start(&d, write_byte, &p[1]);
    ERR("select(2^62 s), data later", select(p[0] + 1, &r, NULL, NULL, &tv));
    delayed_join(&d);
    close2(p);
    mkpipe(p);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv = (struct timeval){LONG_MAX, 999999};
    delayed_start(&d, write_byte, &p[1]);
    ERR("select(LONG_MAX s), data later", select(p[0] + 1, &r, NULL, NULL, &tv));
    delayed_join(&d);
    close2(p);
    mkpipe(p);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    delayed_start(&d, write_byte, &p[1]);
    ERR("pselect(2^62 s), data later", pselect(p[0] + 1, &r, NULL, NULL, &huge, NULL));
    delayed_join(&d);
    close2(p);
}

// ---- sleeps ----

static void sleeps(void) {
    struct timespec t;
    t = ts(0, 1000000000L);
    ERR("nanosleep(tv_nsec 1e9)", nanosleep(&t, NULL));
    t = ts(0, -1);
    ERR("nanosleep(tv_nsec -1)", nanosleep(&t, NULL));
    t = ts(-1, 0);
    ERR("nanosleep(tv_sec -1)", nanosleep(&t, NULL));
    t = ts(LONG_MIN, 0);
    ERR("nanosleep(tv_sec LONG_MIN)", nanosleep(&t, NULL));
    ERR("nanosleep(NULL)", nanosleep(NULL, NULL));
    ERR("nanosleep(bad ptr)", nanosleep((struct timespec*)1, NULL));
    t = ts(0, 1000);
    ERR("nanosleep(1 us)", nanosleep(&t, NULL));
    ERR("nanosleep(1 us, bad rem ptr)", nanosleep(&t, (struct timespec*)1));
    t = ts(0, 0);
    ERR("nanosleep(0)", nanosleep(&t, NULL));
    t = ts(0, 1000);
    RC("clock_nanosleep(clock 12345)", clock_nanosleep(12345, 0, &t, NULL));
    RC("clock_nanosleep(clock -1)", clock_nanosleep(-1, 0, &t, NULL));
    RC("clock_nanosleep(CLOCK_THREAD_CPUTIME_ID)", clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &t, NULL));
    RC("clock_nanosleep(CLOCK_MONOTONIC_RAW)", clock_nanosleep(CLOCK_MONOTONIC_RAW, 0, &t, NULL));
    RC("clock_nanosleep(CLOCK_REALTIME_COARSE)", clock_nanosleep(CLOCK_REALTIME_COARSE, 0, &t, NULL));
    RC("clock_nanosleep(flags 0x7ffffffe, 1 us)", clock_nanosleep(CLOCK_MONOTONIC, 0x7ffffffe, &t, NULL));
    RC("clock_nanosleep(flags -1: absolute, past)", clock_nanosleep(CLOCK_MONOTONIC, -1, &t, NULL));
    RC("clock_nanosleep(NULL)", clock_nanosleep(CLOCK_MONOTONIC, 0, NULL, NULL));
    RC("clock_nanosleep(bad ptr)", clock_nanosleep(CLOCK_MONOTONIC, 0, (struct timespec*)1, NULL));
    RC("clock_nanosleep(bad clock, NULL)", clock_nanosleep(12345, 0, NULL, NULL));
    t = ts(0, 1000000000L);
    RC("clock_nanosleep(tv_nsec 1e9)", clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL));
    RC("clock_nanosleep(abs, tv_nsec 1e9)", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &t, NULL));
    RC("clock_nanosleep(bad clock, tv_nsec 1e9)", clock_nanosleep(12345, 0, &t, NULL));
    t = ts(-1, 0);
    RC("clock_nanosleep(tv_sec -1)", clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL));
    RC("clock_nanosleep(abs, tv_sec -1)", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &t, NULL));
    t = ts(0, 0);
    RC("clock_nanosleep(abs, 0)", clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &t, NULL));
    ERR("sleep(0)", sleep(0));
    ERR("usleep(0)", usleep(0));
    ERR("usleep(1)", usleep(1));
}

// ---- threads ----

static int release_fd = -1;
static void* wait_release(void* arg) {
    (void)arg;
    char c;
    return read(release_fd, &c, 1) == 1 ? NULL : (void*)1;
}
static int waiting_fd = -1;  // (its own: the detached one above may still be on its way to release_fd)
static void* wait_byte(void* arg) {
    (void)arg;
    char c;
    return read(waiting_fd, &c, 1) == 1 ? NULL : (void*)1;
}
static int quick_done_fd = -1;
static void* quick_signal(void* arg) {
    must(write(quick_done_fd, "x", 1) == 1, "write");
    return arg;
}

static void threads(void) {
    pthread_t self = pthread_self();
    RC("pthread_join(self)", pthread_join(self, NULL));
    RC("pthread_tryjoin_np(self)", pthread_tryjoin_np(self, NULL));
    struct timespec bad = ts(0, 1000000000L);
    RC("pthread_timedjoin_np(self, bad time)", pthread_timedjoin_np(self, NULL, &bad));
    RC("pthread_kill(self, 12345)", pthread_kill(self, 12345));
    RC("pthread_kill(self, -1)", pthread_kill(self, -1));
    RC("pthread_kill(self, 0)", pthread_kill(self, 0));
    RC("pthread_kill(self, 32: glibc's own)", pthread_kill(self, 32));
    RC("pthread_kill(self, 33: glibc's own)", pthread_kill(self, 33));
    RC("pthread_setname_np(self, 16+ chars)", pthread_setname_np(self, "a-name-far-too-long-for-it"));
    char nm[32] = "";
    RC("pthread_getname_np(self)", pthread_getname_np(self, nm, sizeof nm));
    printf("%-6s %-58s = %s\n", ctx, "  the name", nm);
    RC("pthread_getname_np(self, len 15)", pthread_getname_np(self, nm, 15));
    RC("pthread_getname_np(self, len 1)", pthread_getname_np(self, nm, 1));
    RC("pthread_getname_np(self, len 0)", pthread_getname_np(self, nm, 0));

    // A running thread (it waits on a pipe until released).
    int p[2];
    mkpipe(p);
    release_fd = p[0];
    pthread_t running;
    must(pthread_create(&running, NULL, wait_release, NULL) == 0, "pthread_create");
    RC("pthread_tryjoin_np(running)", pthread_tryjoin_np(running, NULL));
    // (not pthread_timedjoin_np with tv_nsec out of range: glibc 2.36 spins
    // forever on it, retrying the futex wait that says EINVAL)
    struct timespec past = ts(1, 0);
    RC("pthread_timedjoin_np(running, past)", pthread_timedjoin_np(running, NULL, &past));
    struct timespec neg = ts(-1, 0);
    RC("pthread_timedjoin_np(running, tv_sec -1)", pthread_timedjoin_np(running, NULL, &neg));
    RC("pthread_clockjoin_np(running, clock 12345)", pthread_clockjoin_np(running, NULL, 12345, &past));
    RC("pthread_clockjoin_np(running, CPU clock)", pthread_clockjoin_np(running, NULL, CLOCK_PROCESS_CPUTIME_ID, &past));
    RC("pthread_kill(running, 12345)", pthread_kill(running, 12345));
    RC("pthread_kill(running, 0)", pthread_kill(running, 0));
    RC("pthread_detach(running)", pthread_detach(running));
    RC("pthread_detach(running) again", pthread_detach(running));
    RC("pthread_join(detached, running)", pthread_join(running, NULL));
    RC("pthread_tryjoin_np(detached, running)", pthread_tryjoin_np(running, NULL));
    must(write(p[1], "x", 1) == 1, "write");  // it ends, detached
    // (a detached thread that has ended is gone: joining it is undefined)

    // A thread that has ended but is not joined yet.
    int q[2];
    mkpipe(q);
    quick_done_fd = q[1];
    pthread_t ended;
    must(pthread_create(&ended, NULL, quick_signal, (void*)7) == 0, "pthread_create");
    char c;
    must(read(q[0], &c, 1) == 1, "read");
    RC("pthread_kill(ended or ending, 0)", pthread_kill(ended, 0));
    RC("pthread_kill(ended or ending, 32: glibc's own)", pthread_kill(ended, 32));
    void* ret = NULL;
    RC("pthread_join(ended)", pthread_join(ended, &ret));
    printf("%-6s %-58s = %ld\n", ctx, "  its result", (long)ret);
    close2(q);

    // A thread still running (it waits for a byte, so it cannot have ended
    // before the timed join looks, whatever the scheduling): a deadline in
    // the past times out; then it is released and joined.
    int w[2];
    mkpipe(w);
    waiting_fd = w[0];
    must(pthread_create(&ended, NULL, wait_byte, NULL) == 0, "pthread_create");
    RC("pthread_timedjoin_np(waiting, tv_sec -1)", pthread_timedjoin_np(ended, &ret, &neg));
    must(write(w[1], "x", 1) == 1, "write");
    RC("pthread_join(waiting)", pthread_join(ended, &ret));
    close2(w);
    // (joining a thread a second time is undefined: glibc may have reused it)

    pthread_attr_t a;
    pthread_attr_init(&a);
    RC("pthread_attr_setstacksize(1)", pthread_attr_setstacksize(&a, 1));
    RC("pthread_attr_setdetachstate(12345)", pthread_attr_setdetachstate(&a, 12345));
    pthread_attr_destroy(&a);
    close2(p);
}

// ---- locks ----

static pthread_mutex_t* held_by_other;
static int other_release_fd = -1, other_locked_fd = -1;
static void* hold_mutex(void* arg) {
    (void)arg;
    char c;
    pthread_mutex_lock(held_by_other);
    must(write(other_locked_fd, "x", 1) == 1, "write");
    must(read(other_release_fd, &c, 1) == 1, "read");
    pthread_mutex_unlock(held_by_other);
    return NULL;
}

static void locks(void) {
    pthread_mutexattr_t ma;
    pthread_mutex_t ec, rec, nm;
    pthread_mutexattr_init(&ma);
    RC("pthread_mutexattr_settype(12345)", pthread_mutexattr_settype(&ma, 12345));
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&ec, &ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rec, &ma);
    pthread_mutex_init(&nm, NULL);
    pthread_mutexattr_destroy(&ma);
    struct timespec bad = ts(0, 1000000000L), negns = ts(0, -1), past = ts(1, 0), neg = ts(-1, 0);

    RC("errorcheck unlock, unlocked", pthread_mutex_unlock(&ec));
    RC("recursive unlock, unlocked", pthread_mutex_unlock(&rec));
    RC("errorcheck timedlock(tv_nsec 1e9), unlocked", pthread_mutex_timedlock(&ec, &bad));
    RC("errorcheck timedlock(tv_nsec 1e9), held by me", pthread_mutex_timedlock(&ec, &bad));
    RC("errorcheck lock, held by me", pthread_mutex_lock(&ec));
    RC("errorcheck trylock, held by me", pthread_mutex_trylock(&ec));
    RC("errorcheck destroy, held", pthread_mutex_destroy(&ec));
    RC("errorcheck unlock", pthread_mutex_unlock(&ec));
    RC("errorcheck unlock again", pthread_mutex_unlock(&ec));
    RC("normal timedlock(tv_nsec 1e9), unlocked", pthread_mutex_timedlock(&nm, &bad));
    RC("normal timedlock(tv_nsec -1), held by me", pthread_mutex_timedlock(&nm, &negns));
    RC("normal timedlock(past), held by me", pthread_mutex_timedlock(&nm, &past));
    RC("normal timedlock(tv_sec -1), held by me", pthread_mutex_timedlock(&nm, &neg));
    RC("normal trylock, held by me", pthread_mutex_trylock(&nm));
    RC("normal clocklock(clock 12345), held by me", pthread_mutex_clocklock(&nm, 12345, &past));
    RC("normal clocklock(clock 12345, tv_nsec 1e9)", pthread_mutex_clocklock(&nm, 12345, &bad));
    RC("normal destroy, held", pthread_mutex_destroy(&nm));
    RC("normal unlock", pthread_mutex_unlock(&nm));
    RC("normal clocklock(clock 12345), unlocked", pthread_mutex_clocklock(&nm, 12345, &past));
    RC("normal clocklock(CPU clock), unlocked", pthread_mutex_clocklock(&nm, CLOCK_PROCESS_CPUTIME_ID, &past));
    RC("recursive lock", pthread_mutex_lock(&rec));
    RC("recursive timedlock(tv_nsec 1e9), held by me", pthread_mutex_timedlock(&rec, &bad));
    RC("recursive unlock", pthread_mutex_unlock(&rec));
    RC("recursive unlock", pthread_mutex_unlock(&rec));
    RC("recursive unlock, unlocked", pthread_mutex_unlock(&rec));

    // An errorcheck mutex another thread holds.
    int p[2], q[2];
    mkpipe(p);
    mkpipe(q);
    held_by_other = &ec;
    other_release_fd = p[0];
    other_locked_fd = q[1];
    pthread_t th;
    char c;
    must(pthread_create(&th, NULL, hold_mutex, NULL) == 0, "pthread_create");
    must(read(q[0], &c, 1) == 1, "read");
    RC("errorcheck unlock, held by another", pthread_mutex_unlock(&ec));
    RC("errorcheck trylock, held by another", pthread_mutex_trylock(&ec));
    RC("errorcheck timedlock(past), held by another", pthread_mutex_timedlock(&ec, &past));
    RC("errorcheck timedlock(tv_nsec 1e9), held by another", pthread_mutex_timedlock(&ec, &bad));
    struct timespec huge = ts(kHugeSeconds, 0);
    must(write(p[1], "x", 1) == 1, "write");
    RC("errorcheck timedlock(2^62 s), released later", pthread_mutex_timedlock(&ec, &huge));
    RC("errorcheck unlock", pthread_mutex_unlock(&ec));
    must(pthread_join(th, NULL) == 0, "join");
    close2(p);
    close2(q);
    pthread_mutex_destroy(&ec);
    pthread_mutex_destroy(&rec);
    pthread_mutex_destroy(&nm);

    // condition variables
    struct cond_pair cp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    pthread_mutex_lock(&cp.m);
    RC("cond_timedwait(tv_nsec 1e9)", pthread_cond_timedwait(&cp.c, &cp.m, &bad));
    RC("cond_timedwait(tv_nsec -1)", pthread_cond_timedwait(&cp.c, &cp.m, &negns));
    RC("cond_timedwait(past)", pthread_cond_timedwait(&cp.c, &cp.m, &past));
    RC("cond_timedwait(tv_sec -1)", pthread_cond_timedwait(&cp.c, &cp.m, &neg));
    RC("cond_clockwait(clock 12345)", pthread_cond_clockwait(&cp.c, &cp.m, 12345, &past));
    RC("cond_clockwait(CPU clock)", pthread_cond_clockwait(&cp.c, &cp.m, CLOCK_PROCESS_CPUTIME_ID, &past));
    RC("cond_clockwait(MONOTONIC, tv_nsec 1e9)", pthread_cond_clockwait(&cp.c, &cp.m, CLOCK_MONOTONIC, &bad));
    struct delayed d;
    delayed_start(&d, signal_cond, &cp);
    int r = 0;
    while (!cp.flag && r == 0) r = pthread_cond_timedwait(&cp.c, &cp.m, &huge);
    RC("cond_timedwait(2^62 s), signalled later", r);
    pthread_mutex_unlock(&cp.m);
    delayed_join(&d);
    pthread_mutexattr_t ea;
    pthread_mutexattr_init(&ea);
    pthread_mutexattr_settype(&ea, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&ec, &ea);
    pthread_mutexattr_destroy(&ea);
    RC("cond_timedwait(past), errorcheck mutex not held", pthread_cond_timedwait(&cp.c, &ec, &past));
    pthread_mutex_destroy(&ec);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    RC("pthread_condattr_setclock(12345)", pthread_condattr_setclock(&ca, 12345));
    RC("pthread_condattr_setclock(CPU clock)", pthread_condattr_setclock(&ca, CLOCK_PROCESS_CPUTIME_ID));
    pthread_condattr_destroy(&ca);

    // semaphores
    sem_t s;
    ERR("sem_init(SEM_VALUE_MAX+1)", sem_init(&s, 0, (unsigned)SEM_VALUE_MAX + 1));
    ERR("sem_init(0)", sem_init(&s, 0, 0));
    ERR("sem_trywait, 0", sem_trywait(&s));
    ERR("sem_timedwait(tv_nsec 1e9), 0", sem_timedwait(&s, &bad));
    ERR("sem_timedwait(tv_nsec -1), 0", sem_timedwait(&s, &negns));
    ERR("sem_timedwait(past), 0", sem_timedwait(&s, &past));
    ERR("sem_timedwait(tv_sec -1), 0", sem_timedwait(&s, &neg));
    ERR("sem_clockwait(clock 12345), 0", sem_clockwait(&s, 12345, &past));
    ERR("sem_clockwait(CPU clock), 0", sem_clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &past));
    ERR("sem_post", sem_post(&s));
    ERR("sem_timedwait(tv_nsec 1e9), 1", sem_timedwait(&s, &bad));
    ERR("sem_post", sem_post(&s));
    ERR("sem_clockwait(clock 12345), 1", sem_clockwait(&s, 12345, &past));
    delayed_start(&d, post_sem, &s);
    ERR("sem_timedwait(2^62 s), posted later", sem_timedwait(&s, &huge));
    delayed_join(&d);
    int v = -1;
    sem_getvalue(&s, &v);
    printf("%-6s %-58s = %d\n", ctx, "  sem value", v);
    sem_destroy(&s);
    ERR("sem_init(SEM_VALUE_MAX)", sem_init(&s, 0, SEM_VALUE_MAX));
    ERR("sem_post at SEM_VALUE_MAX", sem_post(&s));
    sem_destroy(&s);

    // rwlocks
    pthread_rwlock_t rw;
    pthread_rwlock_init(&rw, NULL);
    RC("rwlock timedrdlock(tv_nsec 1e9), free", pthread_rwlock_timedrdlock(&rw, &bad));
    RC("rwlock timedwrlock(tv_nsec -1), free", pthread_rwlock_timedwrlock(&rw, &negns));
    RC("rwlock clockrdlock(clock 12345), free", pthread_rwlock_clockrdlock(&rw, 12345, &past));
    RC("rwlock wrlock", pthread_rwlock_wrlock(&rw));
    RC("rwlock wrlock again", pthread_rwlock_wrlock(&rw));
    RC("rwlock rdlock while writing", pthread_rwlock_rdlock(&rw));
    RC("rwlock timedrdlock(past) while writing", pthread_rwlock_timedrdlock(&rw, &past));
    RC("rwlock trywrlock while writing", pthread_rwlock_trywrlock(&rw));
    RC("rwlock tryrdlock while writing", pthread_rwlock_tryrdlock(&rw));
    RC("rwlock unlock", pthread_rwlock_unlock(&rw));
    RC("rwlock rdlock", pthread_rwlock_rdlock(&rw));
    RC("rwlock trywrlock while reading", pthread_rwlock_trywrlock(&rw));
    RC("rwlock timedwrlock(tv_sec -1) while reading", pthread_rwlock_timedwrlock(&rw, &neg));
    RC("rwlock unlock", pthread_rwlock_unlock(&rw));
    pthread_rwlock_destroy(&rw);

    pthread_barrier_t b;
    RC("pthread_barrier_init(count 0)", pthread_barrier_init(&b, NULL, 0));
    RC("pthread_barrier_init(count 1)", pthread_barrier_init(&b, NULL, 1));
    RC("pthread_barrier_wait(count 1)", pthread_barrier_wait(&b) == PTHREAD_BARRIER_SERIAL_THREAD ? 0 : 1);
    pthread_barrier_destroy(&b);

    pthread_spinlock_t sl;
    RC("pthread_spin_init", pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE));
    RC("pthread_spin_trylock", pthread_spin_trylock(&sl));
    RC("pthread_spin_trylock, held", pthread_spin_trylock(&sl));
    RC("pthread_spin_unlock", pthread_spin_unlock(&sl));
    pthread_spin_destroy(&sl);

    // futexes through syscall()
    unsigned word = 1;
    ERR("futex WAIT, value differs", syscall(SYS_futex, &word, 0 /*FUTEX_WAIT*/, 0, NULL, NULL, 0));
    ERR("futex WAIT, bad timeout", syscall(SYS_futex, &word, 0, 1, &bad, NULL, 0));
    ERR("futex WAIT, bad timeout ptr", syscall(SYS_futex, &word, 0, 1, (struct timespec*)1, NULL, 0));
    ERR("futex WAIT_BITSET, bad timeout ptr", syscall(SYS_futex, &word, 9, 1, (struct timespec*)1, NULL, ~0u));
    ERR("futex WAIT, past-relative -1 s", syscall(SYS_futex, &word, 0, 1, &neg, NULL, 0));
    ERR("futex WAIT_BITSET, bitset 0", syscall(SYS_futex, &word, 9 /*FUTEX_WAIT_BITSET*/, 1, &past, NULL, 0));
    ERR("futex WAKE, nobody", syscall(SYS_futex, &word, 1 /*FUTEX_WAKE*/, 1, NULL, NULL, 0));
    ERR("futex bad op", syscall(SYS_futex, &word, 12345, 1, NULL, NULL, 0));
    ERR("futex WAIT, NULL addr", syscall(SYS_futex, NULL, 0, 1, NULL, NULL, 0));
    ERR("futex WAIT_PRIVATE, NULL addr", syscall(SYS_futex, NULL, 128, 1, NULL, NULL, 0));
    ERR("futex WAKE_PRIVATE, NULL addr", syscall(SYS_futex, NULL, 129, 1, NULL, NULL, 0));
    ERR("futex WAIT, misaligned addr", syscall(SYS_futex, (char*)&word + 1, 0, 1, NULL, NULL, 0));
    ERR("futex WAIT_BITSET, tv_sec -1", syscall(SYS_futex, &word, 9, 1, &neg, NULL, ~0u));
    struct timespec hugets = ts(kHugeSeconds, 0);
    ERR("futex WAIT, 2^62 s, value differs", syscall(SYS_futex, &word, 0, 0, &hugets, NULL, 0));
    ERR("syscall(-1)", syscall(-1));
}

// ---- processes ----

static pthread_t usr2_target;
static void send_usr2(void* arg) {
    (void)arg;
    must(pthread_kill(usr2_target, SIGUSR2) == 0, "pthread_kill");
}

static void processes(void) {
    int st = 0;
    siginfo_t si;
    ERR("waitpid(-12345)", waitpid(-12345, &st, 0));
    ERR("waitpid(-1), no children", waitpid(-1, &st, 0));
    ERR("waitpid(INT_MIN)", waitpid(INT_MIN, &st, 0));
    ERR("waitpid(self)", waitpid(getpid(), &st, 0));
    ERR("waitpid(options 0x12340000)", waitpid(-1, &st, 0x12340000));
    ERR("waitpid(options -1)", waitpid(-1, &st, -1));
    ERR("wait(NULL), no children", wait(NULL));
    ERR("wait4(-1, NULL, 0, bad rusage ptr)", wait4(-1, NULL, 0, (struct rusage*)1));
    ERR("waitid(P_ALL, NULL info)", waitid(P_ALL, 0, NULL, WEXITED));
    ERR("waitid(idtype 99)", waitid((idtype_t)99, 0, &si, WEXITED));
    ERR("waitid(options 0)", waitid(P_ALL, 0, &si, 0));
    ERR("waitid(P_PID 0)", waitid(P_PID, 0, &si, WEXITED));
    ERR("waitid(P_PIDFD -1)", waitid((idtype_t)3, (id_t)-1, &si, WEXITED));

    // a child that has exited: bad options still EINVAL, then reaped once
    pid_t child = fork();
    if (child == 0) _exit(3);
    must(child > 0, "fork");
    ERR("waitpid(child, options 0x12340000)", waitpid(child, &st, 0x12340000));
    ERR("waitpid(child, bad status ptr) ", waitpid(child, (int*)1, 0));
    ERR("waitpid(child) again", waitpid(child, &st, 0));
    ERR("kill(child, 12345)", kill(child, 12345));

    int p[2];
    mkpipe(p);
    ERR("dup2(fd, -1)", dup2(p[0], -1));
    ERR("dup2(-1, fd)", dup2(-1, p[0]));
    ERR("dup2(fd, INT_MAX)", dup2(p[0], INT_MAX));
    ERR("dup2(closed, closed)", dup2(closed_fd(), closed_fd()));
    FD("dup2(fd, fd)", dup(dup2(p[0], p[0])));
    ERR("dup3(fd, fd, 0)", dup3(p[0], p[0], 0));
    int c = closed_fd();
    ERR("dup3(fd, closed, 12345)", dup3(p[0], c, 12345));
    ERR("dup3(fd, -1, 0)", dup3(p[0], -1, 0));
    FD("dup(-1)", dup(-1));
    ERR("fcntl(fd, cmd 12345)", fcntl(p[0], 12345));
    ERR("fcntl(fd, cmd -1)", fcntl(p[0], -1));
    ERR("fcntl(fd, F_DUPFD, -1)", fcntl(p[0], F_DUPFD, -1));
    ERR("fcntl(fd, F_DUPFD, INT_MAX)", fcntl(p[0], F_DUPFD, INT_MAX));
    ERR("fcntl(fd, F_DUPFD_CLOEXEC, -5)", fcntl(p[0], F_DUPFD_CLOEXEC, -5));
    ERR("fcntl(pipe, F_GETFL) & (O_NONBLOCK|O_ACCMODE)", fcntl(p[0], F_GETFL) & (O_NONBLOCK | O_ACCMODE));
    ERR("fcntl(pipe, F_SETFL, -1)", fcntl(p[0], F_SETFL, -1));
    ERR("fcntl(pipe, F_GETFL) & (O_NONBLOCK|O_ACCMODE)", fcntl(p[0], F_GETFL) & (O_NONBLOCK | O_ACCMODE));
    ERR("fcntl(pipe, F_SETFL, 0)", fcntl(p[0], F_SETFL, 0));
    ERR("fcntl(pipe, F_SETLKW, NULL)", fcntl(p[0], F_SETLKW, NULL));
    struct flock fl = {.l_type = 12345, .l_whence = SEEK_SET};
    ERR("fcntl(pipe, F_SETLKW, type 12345)", fcntl(p[0], F_SETLKW, &fl));
    ERR("fcntl(pipe, F_SETFD, -1)", fcntl(p[0], F_SETFD, -1));
    ERR("fcntl(pipe, F_GETFD)", fcntl(p[0], F_GETFD));
    ERR("fcntl(pipe, F_SETFD, 0)", fcntl(p[0], F_SETFD, 0));
    ERR("ioctl(pipe, FIONBIO, NULL)", ioctl(p[0], FIONBIO, NULL));
    ERR("ioctl(pipe, FIONBIO, bad ptr)", ioctl(p[0], FIONBIO, (int*)1));
    ERR("ioctl(pipe, 0xdeadbeef)", ioctl(p[0], 0xdeadbeef, NULL));
    ERR("flock(pipe, 12345)", flock(p[0], 12345));
    ERR("lockf(pipe, 12345)", lockf(p[0], 12345, 0));
    ERR("sendfile(pipe, pipe)", sendfile(p[1], p[0], NULL, 1));
    ERR("sendfile(pipe, /dev/null, 0 bytes)", sendfile(p[1], 0, NULL, 0));
    close2(p);

    struct addrinfo* res = NULL;
    struct addrinfo hints = {0};
    RC("getaddrinfo(NULL, NULL) is EAI_NONAME", getaddrinfo(NULL, NULL, NULL, &res) == EAI_NONAME ? 0 : 1);
    hints.ai_family = 12345;
    RC("getaddrinfo(family 12345) is EAI_FAMILY", getaddrinfo("127.0.0.1", NULL, &hints, &res) == EAI_FAMILY ? 0 : 1);
    hints.ai_family = 0;
    hints.ai_flags = 0x7fff0000;
    RC("getaddrinfo(flags 0x7fff0000) is EAI_BADFLAGS",
       getaddrinfo("127.0.0.1", NULL, &hints, &res) == EAI_BADFLAGS ? 0 : 1);
    hints.ai_flags = AI_NUMERICHOST;
    RC("getaddrinfo(numeric, not a number) is EAI_NONAME",
       getaddrinfo("not-a-number", NULL, &hints, &res) == EAI_NONAME ? 0 : 1);
    hints.ai_flags = AI_NUMERICSERV;
    RC("getaddrinfo(numeric service, not a number) is EAI_NONAME",
       getaddrinfo("127.0.0.1", "http", &hints, &res) == EAI_NONAME ? 0 : 1);
    char host[64];
    RC("getnameinfo(salen 0) is EAI_FAMILY", getnameinfo(NULL, 0, host, sizeof host, NULL, 0, 0) == EAI_FAMILY ? 0 : 1);

    struct sigaction sa = {0};
    sa.sa_handler = SIG_IGN;
    ERR("sigaction(0)", sigaction(0, &sa, NULL));
    ERR("sigaction(SIGKILL)", sigaction(SIGKILL, &sa, NULL));
    ERR("sigaction(65)", sigaction(65, &sa, NULL));
    ERR("sigaction(-1)", sigaction(-1, &sa, NULL));
    ERR("sigprocmask(how 12345)", sigprocmask(12345, &sa.sa_mask, NULL));
    RC("pthread_sigmask(how 12345)", pthread_sigmask(12345, &sa.sa_mask, NULL));
    struct timespec bad = ts(0, 1000000000L);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    ERR("sigtimedwait(tv_nsec 1e9)", sigtimedwait(&set, NULL, &bad));
    struct timespec zero = ts(0, 0);
    ERR("sigtimedwait(0)", sigtimedwait(&set, NULL, &zero));
    struct timespec negts = ts(-1, 0);
    ERR("sigtimedwait(tv_sec -1)", sigtimedwait(&set, NULL, &negts));
    ERR("sigtimedwait(bad timeout ptr)", sigtimedwait(&set, NULL, (struct timespec*)1));
    // SIGUSR2 is blocked in every thread (main blocks it first): it waits
    // pending for sigtimedwait.
    struct timespec huge = ts(kHugeSeconds, 0);
    usr2_target = pthread_self();
    struct delayed d;
    delayed_start(&d, send_usr2, NULL);
    ERR("sigtimedwait(2^62 s), signal later", sigtimedwait(&set, NULL, &huge));
    delayed_join(&d);
    FD("signalfd(-1, NULL)", signalfd(-1, NULL, 0));
    FD("signalfd(-1, flags 12345)", signalfd(-1, &set, 12345));
}

static void all_cases(void) {
    cases_close();
    cases_bad_fds();
    for (int kind = 0; kind < 3; ++kind) null_buffers(kind);
    zero_length_datagram();
    for (int kind = 0; kind < 3; ++kind) vectors(kind);
    for (int kind = 1; kind < 3; ++kind) messages(kind);
    sockets();
    busy_unix_listener();
    behind_the_back();
    files();
    bad_pointers();
    polling();
    select_big_fd();
    sleeps();
    threads();
    locks();
    processes();
}

static void* thread_cases(void* arg) {
    (void)arg;
    ctx = "thread";
    all_cases();
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);  // for sigtimedwait (processes())
    alarm(60);  // a hang becomes a death by SIGALRM, which the comparison shows
    all_cases();
    pthread_t th;
    must(pthread_create(&th, NULL, thread_cases, NULL) == 0, "pthread_create");
    must(pthread_join(th, NULL) == 0, "pthread_join");
    ctx = "main";
    printf("done\n");
    return 0;
}
