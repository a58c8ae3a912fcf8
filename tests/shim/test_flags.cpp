// O_NONBLOCK as the program sees it: fcntl(F_GETFL/F_SETFL), ioctl(FIONBIO),
// the program's own non-blocking fds, and fds the shim did not see created.
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

namespace {

// True if a read on fd parks only the calling greenlet: another greenlet runs
// meanwhile (it writes to wfd after 50 ms, which completes the read).
// Guarded: a read that blocks the thread is interrupted by SIGALRM.
bool read_parks_greenlet(int fd, int wfd) {
    AlarmGuard guard(1.5);
    Stopwatch sw;
    double wrote_at = -1;
    auto w = spawn([&] {
        usleep(50000);
        wrote_at = sw.elapsed();
        return write(wfd, "p", 1);
    });
    char c;
    ssize_t n = read(fd, &c, 1);
    w.join();
    INFO("read returned " << n << ", writer ran at " << wrote_at << " s");
    return n == 1 && c == 'p' && wrote_at >= 0.05 && wrote_at < 1.0;
}

// A read on the program's own non-blocking fd: -1/EAGAIN at once. Guarded: if
// it parks instead, a write after 0.5 s ends it.
Res read_now(int fd, int wfd) {
    auto [in_time, res] = within(
        0.5,
        [fd] {
            char c;
            return call([&] { return read(fd, &c, 1); });
        },
        [wfd] { write(wfd, "r", 1); });
    if (!in_time) return {-2, 0};
    return res;
}

}  // namespace

TEST_SUITE("flags") {

TEST_CASE("F_GETFL of shim-made fds shows blocking (and the access mode) while their reads park") {
    Pipe p;
    SockPair s;
    CHECK_FALSE(nonblock_view(p.r));
    CHECK_FALSE(nonblock_view(p.w));
    CHECK((fcntl(p.r, F_GETFL) & O_ACCMODE) == O_RDONLY);
    CHECK((fcntl(p.w, F_GETFL) & O_ACCMODE) == O_WRONLY);
    CHECK_FALSE(nonblock_view(s.a));
    CHECK((fcntl(s.a, F_GETFL) & O_ACCMODE) == O_RDWR);
    int sk = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_FALSE(nonblock_view(sk));
    close(sk);
    int ev = eventfd(0, 0);
    CHECK_FALSE(nonblock_view(ev));
    close(ev);
    int tf = timerfd_create(CLOCK_MONOTONIC, 0);
    CHECK_FALSE(nonblock_view(tf));
    close(tf);
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    CHECK_FALSE(nonblock_view(fds[0]));
    CHECK((fcntl(fds[0], F_GETFD) & FD_CLOEXEC) != 0);
    close(fds[0]);
    close(fds[1]);

    CHECK(read_parks_greenlet(p.r, p.w));
    CHECK(read_parks_greenlet(s.b, s.a));
}

TEST_CASE("fds the program creates non-blocking: F_GETFL shows it, reads are EAGAIN at once") {
    Pipe p(O_NONBLOCK);
    CHECK(nonblock_view(p.r));
    CHECK(nonblock_view(p.w));
    Res r = read_now(p.r, p.w);
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);

    SockPair s(SOCK_STREAM | SOCK_NONBLOCK);
    CHECK(nonblock_view(s.a));
    r = read_now(s.b, s.a);
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);

    int ev = eventfd(0, EFD_NONBLOCK);
    CHECK(nonblock_view(ev));
    std::uint64_t v;
    Res e = call([&] { return read(ev, &v, sizeof v); });
    CHECK(e.r == -1);
    CHECK(e.err == EAGAIN);
    close(ev);
}

TEST_CASE("F_SETFL O_NONBLOCK: EAGAIN at once; clearing it makes reads wait again") {
    Pipe p;
    SockPair s;
    for (auto [rfd, wfd] : {std::pair{p.r, p.w}, std::pair{s.b, s.a}}) {
        int fl = fcntl(rfd, F_GETFL);
        REQUIRE(fl >= 0);
        CHECK(fcntl(rfd, F_SETFL, fl | O_NONBLOCK) == 0);
        CHECK(nonblock_view(rfd));
        Stopwatch sw;
        Res r = read_now(rfd, wfd);
        CHECK(r.r == -1);
        CHECK(r.err == EAGAIN);
        CHECK(sw.elapsed() < 0.4);
        CHECK(fcntl(rfd, F_SETFL, fl) == 0);
        CHECK_FALSE(nonblock_view(rfd));
        CHECK(read_parks_greenlet(rfd, wfd));
    }
}

TEST_CASE("ioctl(FIONBIO) switches the program's view and behaviour likewise") {
    Pipe p;
    SockPair s;
    for (auto [rfd, wfd] : {std::pair{p.r, p.w}, std::pair{s.b, s.a}}) {
        int on = 1;
        CHECK(ioctl(rfd, FIONBIO, &on) == 0);
        CHECK(nonblock_view(rfd));
        Res r = read_now(rfd, wfd);
        CHECK(r.r == -1);
        CHECK(r.err == EAGAIN);
        int off = 0;
        CHECK(ioctl(rfd, FIONBIO, &off) == 0);
        CHECK_FALSE(nonblock_view(rfd));
        CHECK(read_parks_greenlet(rfd, wfd));
    }
    int on = 1;
    Res bad = call([&] { return ioctl(12345, FIONBIO, &on); });
    CHECK(bad.r == -1);
    CHECK(bad.err == EBADF);
}

TEST_CASE("the program's own non-blocking socket: accept and send are EAGAIN at once") {
    Listener l;
    int fl = fcntl(l.fd, F_GETFL);
    CHECK(fcntl(l.fd, F_SETFL, fl | O_NONBLOCK) == 0);
    Stopwatch sw;
    Res r = call([&] { return accept(l.fd, nullptr, nullptr); });
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);
    CHECK(sw.elapsed() < 0.2);

    SockPair s(SOCK_STREAM | SOCK_NONBLOCK);
    std::vector<char> junk(1 << 16);
    long total = 0;
    Res w;
    for (int i = 0; i < 10000; ++i) {
        w = call([&] { return write(s.a, junk.data(), junk.size()); });
        if (w.r < 0) break;
        total += w.r;
    }
    // A non-blocking write to a full socket: -1/EAGAIN (after partial writes).
    CHECK(total > 0);
    CHECK(w.r == -1);
    CHECK(w.err == EAGAIN);
}

// O_NONBLOCK belongs to the open file description, which dup() shares.
// Regression test (this once failed): the shim keeps the program's
// O_NONBLOCK per fd number (FdState::user_nonblock; fd_copy copies a snapshot
// at dup time) and io.cpp do_fcntl(F_SETFL) / ioctl(FIONBIO) update only the
// fd they were called on. The dup keeps showing blocking and its read parks
// instead of -1/EAGAIN; clearing O_NONBLOCK through the dup leaves the
// original non-blocking.
TEST_CASE("dup shares O_NONBLOCK: F_SETFL on one fd shows and acts on its dup") {
    Pipe p;
    int d = dup(p.r);
    REQUIRE(d >= 0);
    CHECK(fcntl(p.r, F_SETFL, fcntl(p.r, F_GETFL) | O_NONBLOCK) == 0);
    CHECK(nonblock_view(d));
    Res r = read_now(d, p.w);
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);
    // And back.
    CHECK(fcntl(d, F_SETFL, fcntl(d, F_GETFL) & ~O_NONBLOCK) == 0);
    CHECK_FALSE(nonblock_view(p.r));
    CHECK(read_parks_greenlet(p.r, p.w));
    close(d);
}

TEST_CASE("fds made behind the shim's back (raw syscalls): reads park, flags stay untouched") {
    int fds[2];
    REQUIRE(syscall(SYS_pipe2, fds, 0) == 0);
    CHECK_FALSE(raw_nonblock(fds[0]));
    CHECK_FALSE(nonblock_view(fds[0]));
    CHECK(read_parks_greenlet(fds[0], fds[1]));
    // The shim must not have changed the kernel's flags of an fd it does not own.
    CHECK_FALSE(raw_nonblock(fds[0]));
    CHECK_FALSE(raw_nonblock(fds[1]));

    int sv[2];
    REQUIRE(syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(read_parks_greenlet(sv[1], sv[0]));
    CHECK_FALSE(raw_nonblock(sv[1]));
    for (int fd : {fds[0], fds[1], sv[0], sv[1]}) close(fd);
}

TEST_CASE("a raw-syscall fd the program made non-blocking: EAGAIN at once") {
    int fds[2];
    REQUIRE(syscall(SYS_pipe2, fds, O_NONBLOCK) == 0);
    CHECK(nonblock_view(fds[0]));
    Res r = read_now(fds[0], fds[1]);
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);
    close(fds[0]);
    close(fds[1]);
}

TEST_CASE("dup, dup2, dup3, F_DUPFD_CLOEXEC of a shim-made pipe: blocking view, reads park") {
    Pipe p;
    Pipe spare;  // a number to dup2/dup3 over
    int d1 = dup(p.r);
    int d2 = dup2(p.r, spare.r);
    int d3 = dup3(p.r, spare.w, O_CLOEXEC);
    int d4 = fcntl(p.r, F_DUPFD_CLOEXEC, 100);
    REQUIRE(d1 >= 0);
    CHECK(d2 == spare.r);
    CHECK(d3 == spare.w);
    CHECK(d4 >= 100);
    CHECK((fcntl(d3, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((fcntl(d4, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((fcntl(d1, F_GETFD) & FD_CLOEXEC) == 0);
    for (int d : {d1, d2, d3, d4}) {
        CAPTURE(d);
        CHECK_FALSE(nonblock_view(d));
        CHECK((fcntl(d, F_GETFL) & O_ACCMODE) == O_RDONLY);
        CHECK(read_parks_greenlet(d, p.w));
    }
    close(d1);
    close(d4);
}

TEST_CASE("a raw-syscall listener and socket: accept and connect park, flags left as they were") {
    int l = int(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    REQUIRE(l >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(l, 8) == 0);
    int port = local_port(l);
    int c = int(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    REQUIRE(c >= 0);
    Stopwatch sw;
    auto cl = spawn([&] {
        usleep(60000);
        sockaddr_in to = loopback(port);
        return connect(c, reinterpret_cast<sockaddr*>(&to), sizeof to);
    });
    int s = accept(l, nullptr, nullptr);
    CHECK(s >= 0);
    CHECK(sw.elapsed() >= 0.06);
    CHECK(cl.value() == 0);
    CHECK_FALSE(raw_nonblock(l));
    CHECK_FALSE(raw_nonblock(c));
    CHECK_FALSE(nonblock_view(s));
    CHECK(read_parks_greenlet(c, s));
    CHECK_FALSE(raw_nonblock(c));
    for (int fd : {l, c, s}) close(fd);
}

}  // TEST_SUITE flags
