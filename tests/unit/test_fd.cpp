// fd waits: wait_readable/wait_writable, Hub::wait_fd/wait_fds, fd_closed, fd reuse.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;
using testutil::elapsed_s;
using testutil::FdPair;
using testutil::read_all;

namespace {

bool write_str(int fd, const std::string& s) {
    return ::write(fd, s.data(), s.size()) == ssize_t(s.size());
}

// Fills a non-blocking socket's send buffer; returns bytes written.
std::size_t fill(int fd) {
    static char junk[65536];
    std::size_t total = 0;
    for (;;) {
        ssize_t n = ::write(fd, junk, sizeof junk);
        if (n > 0) {
            total += std::size_t(n);
            continue;
        }
        break;
    }
    return total;
}

}  // namespace

TEST_SUITE("fd") {

TEST_CASE("wait_readable on an empty pipe times out with false, not early") {
    FdPair p = FdPair::pipe();
    std::int64_t t0 = monotonic_ns();
    CHECK_FALSE(wait_readable(p.r, 0.03));
    double e = elapsed_s(t0);
    CHECK(e >= 0.03);
    CHECK(e < 3.0);
    CHECK_FALSE(wait_readable(p.r, 0));  // zero timeout: a poll
    testutil::check_hub_idle();
}

TEST_CASE("wait_readable returns true when another greenlet writes") {
    FdPair p = FdPair::pipe();
    char c;
    REQUIRE(::read(p.r, &c, 1) == -1);  // nothing there yet
    auto writer = spawn([w = p.w] { return write_str(w, "ping"); });
    CHECK(wait_readable(p.r, 5));
    CHECK(read_all(p.r) == "ping");
    CHECK(writer.value());
    testutil::check_hub_idle();
}

TEST_CASE("a greenlet parked in wait_readable wakes when main writes") {
    FdPair p = FdPair::pipe();
    auto reader = spawn([r = p.r] {
        bool ok = wait_readable(r, 5);
        return ok ? read_all(r) : std::string("timeout");
    });
    greenshim::sleep(0);  // the reader runs and parks
    CHECK(reader.greenlet().state() == GreenletState::parked);
    CHECK(write_str(p.w, "hello"));
    CHECK(reader.value() == "hello");
}

TEST_CASE("several greenlets waiting on the same fd all wake") {
    FdPair p = FdPair::pipe();
    std::vector<Task<bool>> ts;
    for (int i = 0; i < 4; ++i) ts.push_back(spawn([r = p.r] { return wait_readable(r, 5); }));
    greenshim::sleep(0);
    int parked = 0;
    for (auto& t : ts) parked += t.greenlet().state() == GreenletState::parked ? 1 : 0;
    CHECK(parked == 4);
    CHECK(write_str(p.w, "x"));
    int woke = 0;
    for (auto& t : ts) woke += t.value() ? 1 : 0;
    CHECK(woke == 4);
}

TEST_CASE("wait_writable on a socketpair: ready at once, then blocked when full, then woken by a reader") {
    FdPair s = FdPair::socketpair();
    CHECK(wait_writable(s.w, 5));
    std::size_t written = fill(s.w);
    CHECK(written > 0);
    std::int64_t t0 = monotonic_ns();
    CHECK_FALSE(wait_writable(s.w, 0.03));
    CHECK(elapsed_s(t0) >= 0.03);
    auto drainer = spawn([r = s.r] { return read_all(r).size(); });
    CHECK(wait_writable(s.w, 5));
    CHECK(drainer.value() == written);
    testutil::check_hub_idle();
}

TEST_CASE("ping-pong over a socketpair between two greenlets (watchers stay armed)") {
    FdPair s = FdPair::socketpair();
    constexpr int kRounds = 300;
    auto side = [](int fd, bool starts) {
        int got = 0;
        char c = 'x';
        if (starts && ::write(fd, &c, 1) != 1) return -1;
        while (got < kRounds) {
            if (!wait_readable(fd, 5)) return -2;
            ssize_t n = ::read(fd, &c, 1);
            if (n != 1) continue;  // spurious wake: wait again
            ++got;
            if (!(starts && got == kRounds) && ::write(fd, &c, 1) != 1) return -3;
        }
        return got;
    };
    auto a = spawn(side, s.r, true);
    auto b = spawn(side, s.w, false);
    CHECK(a.value(30) == kRounds);
    CHECK(b.value(30) == kRounds);
}

TEST_CASE("Hub::wait_fd and wait_fds report revents") {
    Hub& hub = Hub::current();
    SUBCASE("wait_fd") {
        FdPair p = FdPair::pipe();
        CHECK(hub.wait_fd(p.r, kReadable, deadline_after(0.01)) == Wake::timeout);
        CHECK(write_str(p.w, "a"));
        CHECK(hub.wait_fd(p.r, kReadable, deadline_after(5)) == Wake::event);
        CHECK(hub.wait_fd(p.w, kWritable) == Wake::event);
    }
    SUBCASE("wait_fds: only the ready fd has revents") {
        FdPair p1 = FdPair::pipe(), p2 = FdPair::pipe();
        auto writer = spawn([w = p2.w] { return write_str(w, "z"); });
        FdWait fds[2] = {{p1.r, short(kReadable), 77}, {p2.r, short(kReadable), 77}};
        CHECK(hub.wait_fds(fds, 2, deadline_after(5)) == Wake::event);
        CHECK(fds[0].revents == 0);
        CHECK(fds[1].revents == kReadable);
        CHECK(writer.value());
    }
    SUBCASE("wait_fds: both directions of one socket") {
        FdPair s = FdPair::socketpair();
        FdWait one{s.r, short(kReadable | kWritable), 0};
        CHECK(hub.wait_fds(&one, 1, deadline_after(5)) == Wake::event);
        CHECK(one.revents == kWritable);
        CHECK(write_str(s.w, "d"));
        // Data is now readable too; readiness seen together.
        one.revents = 0;
        CHECK(hub.wait_fds(&one, 1, deadline_after(5)) == Wake::event);
        CHECK(one.revents == (kReadable | kWritable));
    }
    SUBCASE("wait_fds: timeout leaves revents empty") {
        FdPair p1 = FdPair::pipe(), p2 = FdPair::pipe();
        FdWait fds[2] = {{p1.r, short(kReadable), 5}, {p2.r, short(kReadable), 5}};
        std::int64_t t0 = monotonic_ns();
        CHECK(hub.wait_fds(fds, 2, deadline_after(0.02)) == Wake::timeout);
        CHECK(elapsed_s(t0) >= 0.02);
        CHECK(fds[0].revents == 0);
        CHECK(fds[1].revents == 0);
    }
    SUBCASE("wait_fds with more than 8 fds") {
        std::vector<FdPair> pipes;
        for (int i = 0; i < 12; ++i) pipes.push_back(FdPair::pipe());
        std::vector<FdWait> fds;
        for (auto& p : pipes) fds.push_back({p.r, short(kReadable), 0});
        auto writer = spawn([w = pipes[9].w] { return write_str(w, "9"); });
        CHECK(hub.wait_fds(fds.data(), fds.size(), deadline_after(5)) == Wake::event);
        int hits = 0;
        for (std::size_t i = 0; i < fds.size(); ++i)
            if (fds[i].revents) ++hits;
        CHECK(hits == 1);
        CHECK(fds[9].revents == kReadable);
        CHECK(writer.value());
    }
    testutil::check_hub_idle();
}

TEST_CASE("Hub::fd_closed wakes a parked waiter with Wake::closed") {
    Hub& hub = Hub::current();
    FdPair p = FdPair::pipe();
    auto waiter = spawn([&hub, r = p.r] { return hub.wait_fd(r, kReadable); });
    greenshim::sleep(0);
    REQUIRE(waiter.greenlet().state() == GreenletState::parked);
    hub.fd_closed(p.r);
    ::close(p.r);
    p.r = -1;
    CHECK(waiter.value(5) == Wake::closed);
    testutil::check_hub_idle();
}

TEST_CASE("wait_readable throws std::system_error(EBADF) when the fd is closed through the hub") {
    Hub& hub = Hub::current();
    FdPair p = FdPair::pipe();
    auto waiter = spawn([r = p.r] {
        try {
            wait_readable(r, 5);
        } catch (std::system_error const& e) {
            return e.code().value();
        }
        return 0;
    });
    greenshim::sleep(0);
    REQUIRE(waiter.greenlet().state() == GreenletState::parked);
    hub.fd_closed(p.r);
    ::close(p.r);
    p.r = -1;
    CHECK(waiter.value(5) == EBADF);
}

TEST_CASE("a reused fd number starts clean after fd_closed") {
    FdPair p = FdPair::pipe();
    int old_r = p.r, old_w = p.w;
    // Arm the watcher on the old fd (it stays armed after firing).
    CHECK(write_str(p.w, "old"));
    CHECK(wait_readable(p.r, 5));
    CHECK(read_all(p.r) == "old");
    CHECK(write_str(p.w, "left unread"));  // the old pipe dies readable
    p.close();
    FdPair q = FdPair::pipe();
    REQUIRE(q.r == old_r);  // the kernel hands out the lowest free numbers
    REQUIRE(q.w == old_w);
    // No stale readiness from the old pipe.
    CHECK_FALSE(wait_readable(q.r, 0.02));
    auto writer = spawn([w = q.w] { return write_str(w, "new"); });
    CHECK(wait_readable(q.r, 5));
    CHECK(read_all(q.r) == "new");
    CHECK(writer.value());

    // And once more with a waiter parked at the time of the close.
    auto waiter = spawn([r = q.r] {
        try {
            return wait_readable(r, 5) ? 1 : 0;
        } catch (std::system_error const&) {
            return 2;
        }
    });
    greenshim::sleep(0);
    int r_num = q.r;
    q.close();
    CHECK(waiter.value(5) == 2);
    FdPair z = FdPair::pipe();
    REQUIRE(z.r == r_num);
    CHECK_FALSE(wait_readable(z.r, 0.02));
    CHECK(write_str(z.w, "again"));
    CHECK(wait_readable(z.r, 5));
    CHECK(read_all(z.r) == "again");
    testutil::check_hub_idle();
}

TEST_CASE("a socketpair fd reused as a pipe fd: writable watcher does not leak to the new fd") {
    FdPair s = FdPair::socketpair();
    int n = s.r;
    CHECK(wait_writable(s.r, 5));  // EV_WRITE armed on this number
    s.close();
    FdPair p = FdPair::pipe();
    REQUIRE(p.r == n);
    // A pipe's read end is never writable; a stale EV_WRITE would report it.
    Hub& hub = Hub::current();
    FdWait w{p.r, short(kReadable), 0};
    CHECK(hub.wait_fds(&w, 1, deadline_after(0.02)) == Wake::timeout);
    CHECK(w.revents == 0);
}

}  // TEST_SUITE fd
