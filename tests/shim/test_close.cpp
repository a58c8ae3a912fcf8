// close while another greenlet is parked on the fd, fd number reuse, and the
// errno of calls on bad fds.
#include <poll.h>
#include <sys/uio.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

TEST_SUITE("close") {

TEST_CASE("close while parked: the parked read is -1/EBADF; the reused fd number works normally") {
    int old_r = -1;
    {
        Pipe p;
        old_r = p.r;
        Stopwatch sw;
        auto closer = spawn([&] {
            usleep(50000);
            return close(p.r);
        });
        char buf[8];
        Res r = call([&] { return read(p.r, buf, sizeof buf); });
        CHECK(r.r == -1);
        CHECK(r.err == EBADF);
        CHECK(sw.elapsed() >= 0.05);
        CHECK(closer.value() == 0);
        p.r = -1;  // closed by the greenlet
    }
    // The lowest free number is the one just closed: a new pipe gets it.
    Pipe q;
    CHECK(q.r == old_r);
    Stopwatch sw;
    auto w = spawn([&] {
        usleep(80000);
        return write(q.w, "fresh", 5);
    });
    char buf[8];
    CHECK(read(q.r, buf, sizeof buf) == 5);  // parks again, on the new pipe
    CHECK(std::string(buf, 5) == "fresh");
    CHECK(sw.elapsed() >= 0.08);
    CHECK(w.value() == 5);
    CHECK_FALSE(nonblock_view(q.r));
}

TEST_CASE("close while parked in recv on a socket") {
    SockPair s;
    auto closer = spawn([&] {
        usleep(40000);
        return close(s.b);
    });
    char buf[8];
    Res r = call([&] { return recv(s.b, buf, sizeof buf, 0); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    CHECK(closer.value() == 0);
    s.b = -1;
}

TEST_CASE("a reused fd number whose old file is still open (and readable) elsewhere") {
    Pipe p;
    int keep = dup(p.r);  // the old pipe's read side stays open under another number
    REQUIRE(keep >= 0);
    int num = p.r;
    auto closer = spawn([&] {
        usleep(30000);
        return close(p.r);
    });
    char buf[16];
    Res r = call([&] { return read(p.r, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    CHECK(closer.value() == 0);
    p.r = -1;
    // The old pipe becomes readable; a new pipe takes the number.
    CHECK(write(p.w, "old", 3) == 3);
    Pipe q;
    CHECK(q.r == num);
    auto w = spawn([&] {
        usleep(60000);
        return write(q.w, "new", 3);
    });
    Stopwatch sw;
    CHECK(read(q.r, buf, sizeof buf) == 3);  // the new pipe's data, not the old one's
    CHECK(std::string(buf, 3) == "new");
    CHECK(sw.elapsed() >= 0.06);
    CHECK(w.value() == 3);
    CHECK(read(keep, buf, sizeof buf) == 3);
    CHECK(std::string(buf, 3) == "old");
    close(keep);
}

TEST_CASE("dup2 onto a number another greenlet is parked on") {
    Pipe p, other;
    auto swapper = spawn([&] {
        usleep(30000);
        return dup2(other.r, p.r);
    });
    char buf[8];
    Res r = call([&] { return read(p.r, buf, sizeof buf); });
    // The parked read ends (the shim cannot keep waiting on a file the number
    // no longer names); the number now reads from `other`.
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    CHECK(swapper.value() == p.r);
    auto w = spawn([&] {
        usleep(30000);
        return write(other.w, "dup2", 4);
    });
    CHECK(read(p.r, buf, sizeof buf) == 4);
    CHECK(std::string(buf, 4) == "dup2");
    CHECK(w.value() == 4);
}

}  // TEST_SUITE close

TEST_SUITE("errno") {

TEST_CASE("bad fds: EBADF from read/write/close/fcntl/recv/send") {
    char buf[8] = {};
    Res r;
    r = call([&] { return read(-1, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return write(-1, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return close(12345); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return close(-1); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return read(12345, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return fcntl(12345, F_GETFL); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return recv(12345, buf, sizeof buf, 0); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return send(12345, buf, sizeof buf, 0); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    iovec v{buf, sizeof buf};
    r = call([&] { return readv(-1, &v, 1); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
}

TEST_CASE("closed fds: EBADF, and a double close is EBADF") {
    Pipe p;
    int fd = p.r;
    CHECK(close(fd) == 0);
    p.r = -1;
    char buf[4];
    Res r = call([&] { return read(fd, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return close(fd); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
}

TEST_CASE("wrong direction and wrong kind") {
    Pipe p;
    char buf[4] = {};
    Res r = call([&] { return read(p.w, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return write(p.r, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EBADF);
    r = call([&] { return recv(p.r, buf, sizeof buf, 0); });
    CHECK(r.r == -1);
    CHECK(r.err == ENOTSOCK);
    r = call([&] { return send(p.w, buf, sizeof buf, 0); });
    CHECK(r.r == -1);
    CHECK(r.err == ENOTSOCK);
    r = call([&] { return accept(p.r, nullptr, nullptr); });
    CHECK(r.r == -1);
    CHECK(r.err == ENOTSOCK);
    // accept on a socket that is not listening.
    SockPair s;
    r = call([&] { return accept(s.a, nullptr, nullptr); });
    CHECK(r.r == -1);
    CHECK(r.err == EINVAL);
    // read on an unconnected TCP socket.
    int t = socket(AF_INET, SOCK_STREAM, 0);
    r = call([&] { return read(t, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == ENOTCONN);
    r = call([&] { return write(t, buf, sizeof buf); });
    CHECK(r.r == -1);
    CHECK(r.err == EPIPE);
    close(t);
}

TEST_CASE("poll(NULL, 0, 50) sleeps about 50 ms and returns 0") {
    Stopwatch sw;
    Res r = call([&] { return poll(nullptr, 0, 50); });
    double t = sw.elapsed();
    CHECK(r.r == 0);
    CHECK(t >= 0.05);
    CHECK(t < 1.0);
}

}  // TEST_SUITE errno
