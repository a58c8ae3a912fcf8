// poll, ppoll, select, pselect, epoll_wait: zero timeouts, timeouts with
// nothing ready, readiness from another greenlet, and the program's own epoll.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

namespace {
// A greenlet that writes `what` to fd after ms milliseconds.
auto write_later(int fd, int ms, const char* what = "!") {
    return spawn([fd, ms, what] {
        usleep(useconds_t(ms) * 1000);
        return write(fd, what, std::strlen(what));
    });
}
double tv_s(const timeval& tv) { return double(tv.tv_sec) + double(tv.tv_usec) / 1e6; }
}  // namespace

TEST_SUITE("poll") {

TEST_CASE("poll: timeout 0 returns at once, with or without something ready") {
    Pipe p;
    pollfd f{p.r, POLLIN, 0};
    Stopwatch sw;
    CHECK(poll(&f, 1, 0) == 0);
    CHECK(f.revents == 0);
    CHECK(write(p.w, "x", 1) == 1);
    CHECK(poll(&f, 1, 0) == 1);
    CHECK(f.revents == POLLIN);
    CHECK(sw.elapsed() < 0.1);
}

TEST_CASE("poll: nothing ready returns 0 after the timeout, never before") {
    Pipe p;
    pollfd f[2] = {{p.r, POLLIN, 0}, {-1, POLLIN, 0}};  // a negative fd is ignored
    Stopwatch sw;
    CHECK(poll(f, 2, 150) == 0);
    double t = sw.elapsed();
    CHECK(t >= 0.15);
    CHECK(t < 1.5);
    CHECK(f[0].revents == 0);
    CHECK(f[1].revents == 0);
}

TEST_CASE("poll: another greenlet's write wakes it (infinite and finite timeouts)") {
    for (int timeout : {-1, 5000}) {
        Pipe p, q;
        auto w = write_later(q.w, 100);
        pollfd f[2] = {{p.r, POLLIN, 0}, {q.r, POLLIN, 0}};
        Stopwatch sw;
        CHECK(poll(f, 2, timeout) == 1);
        double t = sw.elapsed();
        CHECK(t >= 0.1);
        CHECK(t < 2.0);
        CHECK(f[0].revents == 0);
        CHECK(f[1].revents == POLLIN);
        CHECK(w.value() == 1);
    }
}

TEST_CASE("poll: POLLOUT on a writable socket at once; POLLHUP when the writer goes") {
    SockPair s;
    pollfd f{s.a, POLLOUT, 0};
    CHECK(poll(&f, 1, 1000) == 1);
    CHECK((f.revents & POLLOUT) != 0);

    Pipe p;
    auto c = spawn([&] {
        usleep(60000);
        close_fd(p.w);
    });
    pollfd h{p.r, POLLIN, 0};
    Stopwatch sw;
    CHECK(poll(&h, 1, 3000) == 1);
    CHECK(sw.elapsed() >= 0.06);
    CHECK((h.revents & POLLHUP) != 0);
    c.join();
}

TEST_CASE("poll: an invalid fd is reported with POLLNVAL at once") {
    pollfd f{12345, POLLIN, 0};
    Stopwatch sw;
    CHECK(poll(&f, 1, 2000) == 1);
    CHECK(f.revents == POLLNVAL);
    CHECK(sw.elapsed() < 0.5);
}

TEST_CASE("poll: readiness that another greenlet consumes first does not end the wait early") {
    Pipe p;
    auto thief = spawn([&] {
        usleep(50000);
        write(p.w, "a", 1);
        char c;
        return read(p.r, &c, 1);  // takes it back before the poller runs again
    });
    pollfd f{p.r, POLLIN, 0};
    Stopwatch sw;
    int r = poll(&f, 1, 250);
    double t = sw.elapsed();
    CHECK(thief.value() == 1);
    // Whether or not the poller saw the byte in between, it may only return
    // 1 with POLLIN, or 0 after the full timeout.
    if (r == 0) CHECK(t >= 0.25);
    else CHECK(f.revents == POLLIN);
}

TEST_CASE("ppoll: timeout and wake-up") {
    Pipe p;
    pollfd f{p.r, POLLIN, 0};
    timespec ts{0, 120000000};
    Stopwatch sw;
    CHECK(ppoll(&f, 1, &ts, nullptr) == 0);
    CHECK(sw.elapsed() >= 0.12);
    CHECK(ts.tv_nsec == 120000000);  // glibc's ppoll does not write the timeout back
    auto w = write_later(p.w, 80);
    sw = Stopwatch{};
    CHECK(ppoll(&f, 1, nullptr, nullptr) == 1);
    CHECK(sw.elapsed() >= 0.08);
    CHECK(f.revents == POLLIN);
    w.join();
}

TEST_CASE("select: zero timeval returns at once; a timeout clears the sets and the timeval") {
    Pipe p;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p.r, &r);
    timeval zero{0, 0};
    Stopwatch sw;
    CHECK(select(p.r + 1, &r, nullptr, nullptr, &zero) == 0);
    CHECK(sw.elapsed() < 0.1);
    CHECK_FALSE(FD_ISSET(p.r, &r));

    FD_SET(p.r, &r);
    timeval tv{0, 150000};
    sw = Stopwatch{};
    CHECK(select(p.r + 1, &r, nullptr, nullptr, &tv) == 0);
    double t = sw.elapsed();
    CHECK(t >= 0.15);
    CHECK(t < 1.5);
    CHECK_FALSE(FD_ISSET(p.r, &r));
    // Linux writes back the time not slept: none.
    CHECK(tv.tv_sec == 0);
    CHECK(tv.tv_usec == 0);
}

TEST_CASE("select: another greenlet's write wakes it; the timeval shows the time left") {
    Pipe p, q;
    auto w = write_later(q.w, 100);
    fd_set r, wr;
    FD_ZERO(&r);
    FD_ZERO(&wr);
    FD_SET(p.r, &r);
    FD_SET(q.r, &r);
    timeval tv{2, 0};
    Stopwatch sw;
    int n = select(std::max(p.r, q.r) + 1, &r, &wr, nullptr, &tv);
    double t = sw.elapsed();
    CHECK(n == 1);
    CHECK(t >= 0.1);
    CHECK(FD_ISSET(q.r, &r));
    CHECK_FALSE(FD_ISSET(p.r, &r));
    CHECK(tv_s(tv) <= 2.0);
    CHECK(tv_s(tv) <= 2.0 - 0.1 + 0.01);  // at least the 100 ms waited are gone
    CHECK(tv_s(tv) >= 2.0 - t - 0.01);
    CHECK(tv_s(tv) > 0);
    CHECK(w.value() == 1);

    // Without a timeval it waits as long as it takes.
    FD_ZERO(&r);
    FD_SET(p.r, &r);
    auto w2 = write_later(p.w, 60);
    sw = Stopwatch{};
    CHECK(select(p.r + 1, &r, nullptr, nullptr, nullptr) == 1);
    CHECK(sw.elapsed() >= 0.06);
    CHECK(FD_ISSET(p.r, &r));
    w2.join();
}

TEST_CASE("select: write sets and bad fds") {
    SockPair s;
    fd_set wr;
    FD_ZERO(&wr);
    FD_SET(s.a, &wr);
    timeval tv{1, 0};
    CHECK(select(s.a + 1, nullptr, &wr, nullptr, &tv) == 1);
    CHECK(FD_ISSET(s.a, &wr));

    int bad;
    {
        Pipe p;
        bad = p.r;
    }
    fd_set r;
    FD_ZERO(&r);
    FD_SET(bad, &r);
    timeval tv2{1, 0};
    Stopwatch sw;
    Res res = call([&] { return select(bad + 1, &r, nullptr, nullptr, &tv2); });
    CHECK(res.r == -1);
    CHECK(res.err == EBADF);
    CHECK(sw.elapsed() < 0.5);
    timeval neg{-1, 0};
    FD_ZERO(&r);
    res = call([&] { return select(1, &r, nullptr, nullptr, &neg); });
    CHECK(res.r == -1);
    CHECK(res.err == EINVAL);
}

TEST_CASE("pselect: timeout and wake-up") {
    Pipe p;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p.r, &r);
    timespec ts{0, 120000000};
    Stopwatch sw;
    CHECK(pselect(p.r + 1, &r, nullptr, nullptr, &ts, nullptr) == 0);
    CHECK(sw.elapsed() >= 0.12);
    FD_SET(p.r, &r);
    auto w = write_later(p.w, 70);
    timespec ts2{3, 0};
    sw = Stopwatch{};
    CHECK(pselect(p.r + 1, &r, nullptr, nullptr, &ts2, nullptr) == 1);
    CHECK(sw.elapsed() >= 0.07);
    CHECK(FD_ISSET(p.r, &r));
    w.join();
}

TEST_CASE("epoll_wait: timeout 0 at once, a timeout with nothing ready, a wake-up by another greenlet") {
    Pipe p;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0xfeedbeefULL;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, p.r, &ev) == 0);
    epoll_event out[4];
    Stopwatch sw;
    CHECK(epoll_wait(ep, out, 4, 0) == 0);
    CHECK(sw.elapsed() < 0.1);

    sw = Stopwatch{};
    CHECK(epoll_wait(ep, out, 4, 150) == 0);
    double t = sw.elapsed();
    CHECK(t >= 0.15);
    CHECK(t < 1.5);

    for (int timeout : {-1, 3000}) {
        auto w = write_later(p.w, 80);
        sw = Stopwatch{};
        int n = epoll_wait(ep, out, 4, timeout);
        CHECK(n == 1);
        CHECK(sw.elapsed() >= 0.08);
        CHECK(std::uint64_t(out[0].data.u64) == 0xfeedbeefULL);
        CHECK((std::uint32_t(out[0].events) & EPOLLIN) != 0);
        char c;
        CHECK(read(p.r, &c, 1) == 1);
        w.join();
    }
    Res bad = call([&] { return epoll_wait(p.r, out, 4, 100); });
    CHECK(bad.r == -1);
    CHECK(bad.err == EINVAL);
    close(ep);
}

TEST_CASE("the program's own non-blocking epoll loop works while another greenlet writes") {
    Pipe p(O_NONBLOCK);
    int ep = epoll_create1(0);
    REQUIRE(ep >= 0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = p.r;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, p.r, &ev) == 0);
    const std::vector<std::string> msgs = {"alpha,", "beta,", "gamma,", "delta,", "epsilon"};
    auto producer = spawn([&] {
        for (const auto& m : msgs) {
            usleep(30000);
            write(p.w, m.data(), m.size());
        }
        close_fd(p.w);
    });
    std::string got;
    int wakeups = 0, eagains = 0;
    bool eof = false;
    Stopwatch sw;
    while (!eof && sw.elapsed() < 5) {
        epoll_event out[2];
        int n = epoll_wait(ep, out, 2, 1000);
        if (n < 0) break;
        if (n == 0) continue;
        ++wakeups;
        for (;;) {  // drain until EAGAIN, as a non-blocking loop does
            char buf[64];
            ssize_t r = read(p.r, buf, sizeof buf);
            if (r > 0) {
                got.append(buf, std::size_t(r));
                continue;
            }
            if (r == 0) eof = true;
            else if (errno == EAGAIN) ++eagains;
            break;
        }
    }
    producer.join();
    CHECK(eof);
    CHECK(got == "alpha,beta,gamma,delta,epsilon");
    CHECK(wakeups >= 2);
    CHECK(eagains >= 1);
    CHECK(sw.elapsed() >= 0.15);
    close(ep);
}

}  // TEST_SUITE poll
