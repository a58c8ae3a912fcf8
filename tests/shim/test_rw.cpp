// read/write/readv/writev/send/sendmsg on pipes and sockets: the results a
// blocking program sees, including blocking writes that transfer everything.
#include <sys/uio.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

namespace {
constexpr std::size_t kBig = 4u << 20;  // 4 MiB: far more than any socket or pipe buffer
}

TEST_SUITE("rw") {

TEST_CASE("read/write on a socketpair, both directions") {
    SockPair s;
    CHECK(write(s.a, "hello", 5) == 5);
    char buf[16] = {};
    CHECK(read(s.b, buf, sizeof buf) == 5);
    CHECK(std::string(buf, 5) == "hello");
    CHECK(write(s.b, "back", 4) == 4);
    CHECK(read(s.a, buf, sizeof buf) == 4);
    CHECK(std::string(buf, 4) == "back");
    // A read asks for less than is there: the rest stays for the next read.
    CHECK(write(s.a, "0123456789", 10) == 10);
    CHECK(read(s.b, buf, 4) == 4);
    CHECK(std::string(buf, 4) == "0123");
    CHECK(read(s.b, buf, sizeof buf) == 6);
    CHECK(std::string(buf, 6) == "456789");
}

TEST_CASE("read/write on a pipe; zero-length calls return 0 at once") {
    Pipe p;
    CHECK(write(p.w, "pipe!", 5) == 5);
    char buf[16];
    CHECK(read(p.r, buf, sizeof buf) == 5);
    CHECK(std::string(buf, 5) == "pipe!");
    Stopwatch sw;
    CHECK(read(p.r, buf, 0) == 0);  // empty pipe, count 0: no wait
    CHECK(write(p.w, buf, 0) == 0);
    CHECK(sw.elapsed() < 0.5);
}

TEST_CASE("a read parks until another greenlet writes (pipe and socketpair)") {
    Pipe p;
    SockPair s;
    for (auto [rfd, wfd] : {std::pair{p.r, p.w}, std::pair{s.b, s.a}}) {
        Stopwatch sw;
        double wrote_at = 0;
        auto w = spawn([&, wfd = wfd] {
            usleep(100000);
            wrote_at = sw.elapsed();
            return write(wfd, "abc", 3);
        });
        char buf[8];
        ssize_t n = read(rfd, buf, sizeof buf);
        double t = sw.elapsed();
        CHECK(n == 3);
        CHECK(std::string(buf, 3) == "abc");
        CHECK(t >= 0.1);
        CHECK(t >= wrote_at);
        CHECK(t < 2.0);
        CHECK(w.value() == 3);
    }
}

TEST_CASE("writev gathers and readv scatters, with empty and partially filled iovecs") {
    Pipe p;
    SockPair s;
    for (auto [rfd, wfd] : {std::pair{p.r, p.w}, std::pair{s.b, s.a}}) {
        char ab[] = "ab", cdefg[] = "cdefg";
        iovec out[3] = {{ab, 2}, {nullptr, 0}, {cdefg, 5}};
        CHECK(writev(wfd, out, 3) == 7);
        char x[3], y[2], z[10] = {};
        iovec in[3] = {{x, 3}, {y, 2}, {z, 10}};
        // Room for 15, 7 available: a blocking readv returns what is there.
        CHECK(readv(rfd, in, 3) == 7);
        CHECK(std::string(x, 3) == "abc");
        CHECK(std::string(y, 2) == "de");
        CHECK(std::string(z, 2) == "fg");

        // Less room than data: readv fills the iovecs, the rest stays queued.
        CHECK(write(wfd, "0123456789", 10) == 10);
        iovec in2[2] = {{x, 3}, {y, 2}};
        CHECK(readv(rfd, in2, 2) == 5);
        CHECK(std::string(x, 3) == "012");
        CHECK(std::string(y, 2) == "34");
        char rest[16];
        CHECK(read(rfd, rest, sizeof rest) == 5);
        CHECK(std::string(rest, 5) == "56789");

        // writev with no iovecs writes nothing.
        CHECK(writev(wfd, out, 0) == 0);
    }
}

TEST_CASE("readv parks until another greenlet writes") {
    SockPair s;
    Stopwatch sw;
    auto w = spawn([&] {
        usleep(80000);
        return write(s.a, "xyz", 3);
    });
    char a[2], b[8];
    iovec in[2] = {{a, 2}, {b, 8}};
    CHECK(readv(s.b, in, 2) == 3);
    CHECK(sw.elapsed() >= 0.08);
    CHECK(std::string(a, 2) == "xy");
    CHECK(b[0] == 'z');
    CHECK(w.value() == 3);
}

TEST_CASE("writev with more than IOV_MAX iovecs is EINVAL") {
    SockPair s;
    std::vector<iovec> v(IOV_MAX + 1, iovec{const_cast<char*>("x"), 1});
    Res r = call([&] { return writev(s.a, v.data(), int(v.size())); });
    CHECK(r.r == -1);
    CHECK(r.err == EINVAL);
}

TEST_CASE("a blocking write of 4 MiB transfers everything while another greenlet reads") {
    auto data = pattern(kBig, 3);
    SUBCASE("socketpair, write()") {
        SockPair s;
        auto rd = spawn([&] { return read_n(s.b, kBig); });
        CHECK(write(s.a, data.data(), kBig) == ssize_t(kBig));
        CHECK((rd.value() == data));
    }
    SUBCASE("pipe, write()") {
        Pipe p;
        auto rd = spawn([&] { return read_n(p.r, kBig); });
        CHECK(write(p.w, data.data(), kBig) == ssize_t(kBig));
        CHECK((rd.value() == data));
    }
    SUBCASE("socketpair, send()") {
        SockPair s;
        auto rd = spawn([&] { return read_n(s.b, kBig); });
        CHECK(send(s.a, data.data(), kBig, 0) == ssize_t(kBig));
        CHECK((rd.value() == data));
    }
    SUBCASE("socketpair, sendmsg() with three iovecs") {
        SockPair s;
        auto rd = spawn([&] { return read_n(s.b, kBig); });
        iovec v[3] = {{data.data(), 1000}, {data.data() + 1000, kBig / 2}, {data.data() + 1000 + kBig / 2, 0}};
        v[2].iov_len = kBig - 1000 - kBig / 2;
        msghdr m{};
        m.msg_iov = v;
        m.msg_iovlen = 3;
        CHECK(sendmsg(s.a, &m, 0) == ssize_t(kBig));
        CHECK((rd.value() == data));
        // The caller's iovecs are left as they were.
        CHECK(v[0].iov_base == data.data());
        CHECK(v[0].iov_len == 1000);
        CHECK(v[1].iov_len == kBig / 2);
    }
    SUBCASE("socketpair, writev() with odd-sized iovecs") {
        SockPair s;
        auto rd = spawn([&] { return read_n(s.b, kBig); });
        iovec v[4] = {{data.data(), 1},
                      {data.data() + 1, 65537},
                      {data.data() + 65538, kBig - 65538 - 3},
                      {data.data() + kBig - 3, 3}};
        CHECK(writev(s.a, v, 4) == ssize_t(kBig));
        CHECK((rd.value() == data));
    }
    SUBCASE("TCP loopback, write()") {
        Listener l;
        auto cl = spawn([&] { return tcp_connect(l.port); });
        int srv = accept(l.fd, nullptr, nullptr);
        REQUIRE(srv >= 0);
        int c = cl.value();
        REQUIRE(c >= 0);
        auto rd = spawn([&] { return read_n(c, kBig); });
        CHECK(write(srv, data.data(), kBig) == ssize_t(kBig));
        CHECK((rd.value() == data));
        close(srv);
        close(c);
    }
}

TEST_CASE("recv(MSG_WAITALL) of 4 MiB gathers everything another greenlet writes") {
    auto data = pattern(kBig, 5);
    SockPair s;
    auto wr = spawn([&] { return write(s.a, data.data(), kBig); });
    std::vector<char> got(kBig);
    CHECK(recv(s.b, got.data(), kBig, MSG_WAITALL) == ssize_t(kBig));
    CHECK((got == data));
    CHECK(wr.value() == ssize_t(kBig));
}

TEST_CASE("datagram sockets: one write is one message, a read parks for the next message") {
    SockPair s(SOCK_DGRAM);
    auto w = spawn([&] {
        usleep(50000);
        write(s.a, "one", 3);
        write(s.a, "two!", 4);
        return write(s.a, "abcdef", 6);
    });
    char buf[64];
    CHECK(read(s.b, buf, sizeof buf) == 3);
    CHECK(std::string(buf, 3) == "one");
    CHECK(read(s.b, buf, sizeof buf) == 4);
    CHECK(std::string(buf, 4) == "two!");
    // A short buffer truncates the datagram; the rest is gone.
    CHECK(read(s.b, buf, 3) == 3);
    CHECK(std::string(buf, 3) == "abc");
    CHECK(w.value() == 6);
    Res r = call([&] { return recv(s.b, buf, sizeof buf, MSG_DONTWAIT); });
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);
}

TEST_CASE("UDP: recvfrom parks until a datagram arrives and reports the sender") {
    int rx = socket(AF_INET, SOCK_DGRAM, 0);
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    REQUIRE(rx >= 0);
    REQUIRE(tx >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(bind(rx, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(bind(tx, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    sockaddr_in to = loopback(local_port(rx));
    Stopwatch sw;
    auto w = spawn([&] {
        usleep(60000);
        return sendto(tx, "dgram", 5, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    });
    char buf[32];
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    CHECK(recvfrom(rx, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen) == 5);
    CHECK(sw.elapsed() >= 0.06);
    CHECK(std::string(buf, 5) == "dgram");
    CHECK(flen == sizeof from);
    CHECK(ntohs(from.sin_port) == local_port(tx));
    CHECK(w.value() == 5);
    close(rx);
    close(tx);
}

}  // TEST_SUITE
