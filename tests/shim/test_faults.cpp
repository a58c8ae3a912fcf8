// Semantics that must hold whatever the kernel does within its rights:
// meaningful on their own (suite shim), and the robustness suite runs them
// again under GREENSHIM_FAULTS=SEED:1, where every wait may wake spuriously,
// every ready call may meet EAGAIN or EINTR first, and every transfer the
// kernel may shorten is shortened.
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

TEST_SUITE("faults") {

// A blocking connect returns when the connection is made, never on a mere
// wake: here the listener's accept queue is full, so the SYN is dropped and
// retried by the kernel (after ~1 s) once a greenlet has made room.
TEST_CASE("a connect that waits returns only once connected") {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(l >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(l, 0) == 0);  // room for one connection
    int port = local_port(l);
    int first = tcp_connect(port);
    REQUIRE(first >= 0);
    Stopwatch sw;
    double accepted_at = -1;
    auto acceptor = spawn([&] {
        greenshim::sleep(0.2);
        accepted_at = sw.elapsed();
        return accept(l, nullptr, nullptr);
    });
    int c = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(c >= 0);
    sockaddr_in to = loopback(port);
    Res r = call([&] { return connect(c, reinterpret_cast<sockaddr*>(&to), sizeof to); });
    double connected_at = sw.elapsed();
    CHECK(r.r == 0);
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    CHECK(getpeername(c, reinterpret_cast<sockaddr*>(&peer), &len) == 0);
    INFO("accepted the first at " << accepted_at << " s, connect returned at " << connected_at << " s");
    CHECK(accepted_at >= 0.2);
    CHECK(connected_at >= accepted_at);
    int s1 = acceptor.value();
    CHECK(s1 >= 0);
    int s2 = accept(l, nullptr, nullptr);
    CHECK(s2 >= 0);
    CHECK(write(c, "x", 1) == 1);
    char ch = 0;
    CHECK(read(s2, &ch, 1) == 1);
    CHECK(ch == 'x');
    for (int fd : {first, c, s1, s2, l}) close(fd);
}

// Writes of at most PIPE_BUF bytes to a pipe are atomic: two writers'
// blocks never interleave, even when the pipe is full and they wait.
TEST_CASE("pipe writes of PIPE_BUF bytes from two greenlets stay whole") {
    Pipe p;
    constexpr int kBlocks = 64;
    auto writer = [&](char c) {
        std::vector<char> block(PIPE_BUF, c);
        int ok = 0;
        for (int i = 0; i < kBlocks; ++i) ok += write(p.w, block.data(), block.size()) == ssize_t(block.size());
        return ok;
    };
    auto wa = spawn([&] { return writer('a'); });
    auto wb = spawn([&] { return writer('b'); });
    std::vector<char> all = read_n(p.r, std::size_t(2 * kBlocks * PIPE_BUF));
    CHECK(wa.value() == kBlocks);
    CHECK(wb.value() == kBlocks);
    REQUIRE(all.size() == std::size_t(2 * kBlocks * PIPE_BUF));
    int mixed = 0;
    for (std::size_t b = 0; b < all.size(); b += PIPE_BUF)
        for (std::size_t i = b + 1; i < b + PIPE_BUF; ++i)
            if (all[i] != all[b]) {
                ++mixed;
                break;
            }
    CHECK(mixed == 0);
}

// A blocking send on a stream socket transfers everything, and the reader
// gets every byte in order, however the transfers are cut.
TEST_CASE("a 2 MiB blocking send and writev on a stream socket arrive whole and in order") {
    SockPair s;
    auto data = pattern(2 << 20, 7);
    auto w = spawn([&] {
        ssize_t a = send(s.a, data.data(), 1 << 20, 0);
        iovec iov[3] = {{data.data() + (1 << 20), 1000}, {data.data() + (1 << 20) + 1000, 0},
                        {data.data() + (1 << 20) + 1000, (1 << 20) - 1000}};
        ssize_t b = writev(s.a, iov, 3);
        return a + b;
    });
    auto got = read_n(s.b, data.size());
    CHECK(w.value() == ssize_t(data.size()));
    CHECK(got == data);
}

}  // TEST_SUITE faults
