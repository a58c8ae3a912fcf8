// eventfd and timerfd, many greenlets in plain blocking reads, and signals
// interrupting blocking calls.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

TEST_SUITE("eventfd") {

TEST_CASE("eventfd: a read parks until another greenlet writes") {
    int ev = eventfd(0, 0);
    REQUIRE(ev >= 0);
    Stopwatch sw;
    auto w = spawn([&] {
        usleep(100000);
        std::uint64_t v = 7;
        return write(ev, &v, sizeof v);
    });
    std::uint64_t v = 0;
    CHECK(read(ev, &v, sizeof v) == 8);
    CHECK(v == 7);
    CHECK(sw.elapsed() >= 0.1);
    CHECK(w.value() == 8);
    // A too-small buffer is EINVAL, not a wait.
    char small[4];
    Res r = call([&] { return read(ev, small, sizeof small); });
    CHECK(r.r == -1);
    CHECK(r.err == EINVAL);
    close(ev);
}

TEST_CASE("eventfd: a write that would overflow the counter parks until a read") {
    int ev = eventfd(0, EFD_CLOEXEC);
    REQUIRE(ev >= 0);
    std::uint64_t big = 0xfffffffffffffffeULL;
    CHECK(write(ev, &big, sizeof big) == 8);
    Stopwatch sw;
    auto rd = spawn([&] {
        usleep(100000);
        std::uint64_t v = 0;
        read(ev, &v, sizeof v);
        return v;
    });
    std::uint64_t five = 5;
    CHECK(write(ev, &five, sizeof five) == 8);
    CHECK(sw.elapsed() >= 0.1);
    CHECK(rd.value() == big);
    std::uint64_t v = 0;
    CHECK(read(ev, &v, sizeof v) == 8);
    CHECK(v == 5);
    std::uint64_t all = ~0ULL;
    Res r = call([&] { return write(ev, &all, sizeof all); });
    CHECK(r.r == -1);
    CHECK(r.err == EINVAL);
    close(ev);
}

TEST_CASE("eventfd(EFD_SEMAPHORE): each read takes one") {
    int ev = eventfd(2, EFD_SEMAPHORE);
    REQUIRE(ev >= 0);
    std::uint64_t v = 0;
    CHECK(read(ev, &v, 8) == 8);
    CHECK(v == 1);
    CHECK(read(ev, &v, 8) == 8);
    CHECK(v == 1);
    auto w = spawn([&] {
        usleep(50000);
        std::uint64_t one = 1;
        return write(ev, &one, 8);
    });
    Stopwatch sw;
    CHECK(read(ev, &v, 8) == 8);
    CHECK(sw.elapsed() >= 0.05);
    CHECK(w.value() == 8);
    close(ev);
}

}  // TEST_SUITE eventfd

TEST_SUITE("timerfd") {

TEST_CASE("timerfd: a read returns after the timer expires, with the expiry count") {
    int tf = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    REQUIRE(tf >= 0);
    Stopwatch sw;
    itimerspec its{};
    its.it_value.tv_nsec = 150000000;
    REQUIRE(timerfd_settime(tf, 0, &its, nullptr) == 0);
    int ticks = 0;
    auto ticker = spawn([&] {
        for (int i = 0; i < 3; ++i) {
            usleep(20000);
            ++ticks;
        }
    });
    std::uint64_t n = 0;
    CHECK(read(tf, &n, sizeof n) == 8);
    double t = sw.elapsed();
    CHECK(n == 1);
    CHECK(t >= 0.15);
    CHECK(t < 1.5);
    ticker.join();
    CHECK(ticks == 3);  // other greenlets ran while the read waited
    close(tf);
}

TEST_CASE("timerfd: periodic timer counts expirations; TFD_NONBLOCK before expiry is EAGAIN") {
    int tf = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    REQUIRE(tf >= 0);
    itimerspec its{};
    its.it_value.tv_nsec = 40000000;
    its.it_interval.tv_nsec = 40000000;
    REQUIRE(timerfd_settime(tf, 0, &its, nullptr) == 0);
    std::uint64_t n = 0;
    Res r = call([&] { return read(tf, &n, sizeof n); });
    CHECK(r.r == -1);
    CHECK(r.err == EAGAIN);
    usleep(130000);  // three expirations at 40, 80, 120 ms
    CHECK(read(tf, &n, sizeof n) == 8);
    CHECK(n >= 3);
    close(tf);
}

}  // TEST_SUITE timerfd

TEST_SUITE("many") {

TEST_CASE("50 greenlets in plain blocking reads on their own pipes wait concurrently on one thread") {
    constexpr int N = 50;
    std::vector<int> r(N), w(N);
    for (int i = 0; i < N; ++i) {
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        r[i] = fds[0];
        w[i] = fds[1];
    }
    long main_tid = syscall(SYS_gettid);
    int entered = 0, done = 0;
    std::vector<greenshim::Task<std::string>> tasks;
    for (int i = 0; i < N; ++i) {
        tasks.push_back(spawn([&, i] {
            ++entered;
            char buf[32];
            ssize_t n = read(r[i], buf, sizeof buf);
            ++done;
            if (syscall(SYS_gettid) != main_tid) return std::string("other thread");
            return n > 0 ? std::string(buf, std::size_t(n)) : std::string("read ") + std::to_string(n);
        }));
    }
    Stopwatch sw;
    greenshim::sleep(0.05);  // every reader starts and parks
    CHECK(entered == N);
    CHECK(done == 0);
    for (int i = 0; i < N; ++i) {
        std::string msg = "msg" + std::to_string(i);
        CHECK(write(w[i], msg.data(), msg.size()) == ssize_t(msg.size()));
    }
    std::vector<greenshim::TaskBase> all(tasks.begin(), tasks.end());
    CHECK(greenshim::joinall(all, 5.0));
    CHECK(done == N);
    for (int i = 0; i < N; ++i) CHECK(tasks[std::size_t(i)].value() == "msg" + std::to_string(i));
    CHECK(sw.elapsed() < 1.0);
    for (int i = 0; i < N; ++i) {
        close(r[i]);
        close(w[i]);
    }
}

TEST_CASE("50 greenlets sleeping 200 ms each in plain nanosleep finish together") {
    constexpr int N = 50;
    std::vector<greenshim::TaskBase> tasks;
    int done = 0;
    Stopwatch sw;
    for (int i = 0; i < N; ++i) {
        tasks.push_back(spawn([&] {
            timespec t{0, 200000000};
            nanosleep(&t, nullptr);
            ++done;
        }));
    }
    CHECK(greenshim::joinall(tasks, 5.0));
    CHECK(done == N);
    CHECK(sw.elapsed() >= 0.2);
    CHECK(sw.elapsed() < 0.7);
}

TEST_CASE("a ping-pong between two greenlets over socketpairs, 2000 round trips") {
    SockPair s;
    constexpr int rounds = 2000;
    auto echo = spawn([&] {
        char c;
        int k = 0;
        while (read(s.b, &c, 1) == 1) {
            write(s.b, &c, 1);
            ++k;
        }
        return k;
    });
    bool ok = true;
    for (int i = 0; i < rounds && ok; ++i) {
        char c = char('a' + i % 26), back = 0;
        ok = write(s.a, &c, 1) == 1 && read(s.a, &back, 1) == 1 && back == c;
    }
    CHECK(ok);
    shutdown(s.a, SHUT_WR);
    CHECK(echo.value() == rounds);
}

TEST_CASE("two greenlets read one pipe, one byte arrives: the other keeps waiting (no EAGAIN)") {
    Pipe p;
    std::vector<Res> res;
    auto reader = [&] {
        char c;
        Res r = call([&] { return read(p.r, &c, 1); });
        res.push_back(r);
    };
    auto a = spawn(reader);
    auto b = spawn(reader);
    greenshim::sleep(0.03);
    CHECK(write(p.w, "1", 1) == 1);
    greenshim::sleep(0.1);
    REQUIRE(res.size() == 1);
    CHECK(res[0].r == 1);
    CHECK(write(p.w, "2", 1) == 1);
    CHECK(greenshim::joinall({a, b}, 2.0));
    REQUIRE(res.size() == 2);
    CHECK(res[1].r == 1);
}

// A wake is not readiness: both readers of a pipe made behind the shim's back
// (a blocking fd, polled before each read) wake for one byte; the one that
// finds it gone must wait again, not block the thread in the kernel.
TEST_CASE("two greenlets read one raw-syscall pipe, one byte arrives: the other keeps waiting") {
    int fds[2];
    REQUIRE(syscall(SYS_pipe2, fds, 0) == 0);
    AlarmGuard guard(2.0);  // a read blocked in the kernel ends with EINTR
    std::vector<Res> res;
    auto reader = [&] {
        char c;
        Res r = call([&] { return read(fds[0], &c, 1); });
        res.push_back(r);
    };
    auto a = spawn(reader);
    auto b = spawn(reader);
    greenshim::sleep(0.03);
    CHECK(write(fds[1], "1", 1) == 1);
    greenshim::sleep(0.1);
    CHECK(res.size() == 1);
    CHECK(write(fds[1], "2", 1) == 1);
    CHECK(greenshim::joinall({a, b}, 2.0));
    REQUIRE(res.size() == 2);
    CHECK(res[0].r == 1);
    CHECK(res[1].r == 1);
    close(fds[0]);
    close(fds[1]);
}

// The same for stdio, whose reads happen inside libc: two FILEs on one pipe,
// one line arrives, the reader that finds nothing must wait again.
TEST_CASE("two greenlets fgets from two FILEs on one pipe, one line arrives: the other keeps waiting") {
    Pipe p;
    FILE* f1 = fdopen(dup(p.r), "r");
    FILE* f2 = fdopen(dup(p.r), "r");
    REQUIRE(f1);
    REQUIRE(f2);
    AlarmGuard guard(2.0);  // a read blocked in the kernel ends with EINTR
    std::vector<std::string> got;
    auto reader = [&](FILE* f) {
        char line[64];
        got.push_back(fgets(line, sizeof line, f) ? line : "(null)");
    };
    auto a = spawn([&] { reader(f1); });
    auto b = spawn([&] { reader(f2); });
    greenshim::sleep(0.03);
    CHECK(write(p.w, "one\n", 4) == 4);
    greenshim::sleep(0.1);
    CHECK(got.size() == 1);
    CHECK(write(p.w, "two\n", 4) == 4);
    CHECK(greenshim::joinall({a, b}, 2.0));
    REQUIRE(got.size() == 2);
    CHECK(got[0] == "one\n");
    CHECK(got[1] == "two\n");
    fclose(f1);
    fclose(f2);
}

}  // TEST_SUITE many

TEST_SUITE("signals") {

namespace {
volatile sig_atomic_t g_hits = 0;
void on_alrm(int) { g_hits = g_hits + 1; }

// Installs a SIGALRM handler (with or without SA_RESTART) and a one-shot timer.
struct AlarmAt {
    struct sigaction old {};
    AlarmAt(double s, bool restart) {
        g_hits = 0;
        struct sigaction sa {};
        sa.sa_handler = on_alrm;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigaction(SIGALRM, &sa, &old);
        itimerval it{};
        it.it_value.tv_usec = suseconds_t(s * 1e6);
        setitimer(ITIMER_REAL, &it, nullptr);
    }
    ~AlarmAt() {
        itimerval z{};
        setitimer(ITIMER_REAL, &z, nullptr);
        sigaction(SIGALRM, &old, nullptr);
    }
};
}  // namespace

TEST_CASE("a signal handler interrupts nanosleep: -1/EINTR with the time left") {
    Stopwatch sw;  // started before the alarm is armed: the sleep lasts at least 0.1 s from here
    AlarmAt alarm(0.1, true);  // nanosleep is never restarted, SA_RESTART or not
    timespec req{0, 900000000}, rem{0, 0};
    Res r = call([&] { return nanosleep(&req, &rem); });
    double t = sw.elapsed();
    CHECK(g_hits == 1);
    CHECK(r.r == -1);
    CHECK(r.err == EINTR);
    CHECK(t >= 0.1);
    CHECK(t < 0.6);
    double left = double(rem.tv_sec) + double(rem.tv_nsec) / 1e9;
    CHECK(left > 0.2);
    CHECK(left <= 0.8 + 0.01);
}

TEST_CASE("a signal handler without SA_RESTART interrupts a blocking read: -1/EINTR") {
    Pipe p;
    AlarmAt alarm(0.1, false);
    // If the read is not interrupted, this write ends it after 0.8 s.
    auto rescue = spawn([&] {
        usleep(800000);
        return write(p.w, "r", 1);
    });
    char c;
    Stopwatch sw;
    Res r = call([&] { return read(p.r, &c, 1); });
    double t = sw.elapsed();
    CHECK(g_hits == 1);
    CHECK(r.r == -1);
    CHECK(r.err == EINTR);
    CHECK(t < 0.6);
    rescue.join();
}

TEST_CASE("with SA_RESTART a blocking read goes on after the handler and gets the data") {
    Pipe p;
    AlarmAt alarm(0.1, true);
    auto w = spawn([&] {
        greenshim::sleep(0.3);  // the runtime's own sleep: never interrupted by signals
        return write(p.w, "s", 1);
    });
    char c;
    Stopwatch sw;
    Res r = call([&] { return read(p.r, &c, 1); });
    CHECK(g_hits == 1);
    CHECK(r.r == 1);
    CHECK(sw.elapsed() >= 0.3);
    w.join();
}

TEST_CASE("a signal handler interrupts poll: -1/EINTR even with SA_RESTART") {
    Pipe p;
    AlarmAt alarm(0.1, true);
    pollfd f{p.r, POLLIN, 0};
    Stopwatch sw;
    Res r = call([&] { return poll(&f, 1, 700); });
    double t = sw.elapsed();
    CHECK(g_hits == 1);
    CHECK(r.r == -1);
    CHECK(r.err == EINTR);
    CHECK(t < 0.5);
}

// Linux delivers a process-directed signal to the main thread when it can
// take it, even if its blocked call is restarted (SA_RESTART); other threads'
// blocked calls are left alone. The greenlets here play those threads.
// Regression test (this once failed): Hub::interrupt_for_signal
// (runtime/src/pool.cpp) skips the main greenlet when its call would restart
// (SA_RESTART) and interrupts another parked greenlet instead: the other
// greenlet's nanosleep returns -1/EINTR at 0.1 s. Linux gives the signal to
// the main thread (checked with real threads: the other thread's nanosleep
// completes); POSIX leaves the choice of thread open, but the shim's own
// comment promises the kernel's choice.
TEST_CASE("SA_RESTART signal while main is in a read: another greenlet's nanosleep is not interrupted") {
    Pipe p;
    AlarmAt alarm(0.1, true);
    Res slept;
    double slept_until = 0;
    Stopwatch sw;
    auto other = spawn([&] {
        timespec r{0, 400000000};
        slept = call([&] { return nanosleep(&r, nullptr); });
        slept_until = sw.elapsed();
        write(p.w, "x", 1);
    });
    char c;
    Res r = call([&] { return read(p.r, &c, 1); });
    other.join();
    CHECK(g_hits == 1);
    CHECK(r.r == 1);
    CHECK(slept.r == 0);
    CHECK(slept_until >= 0.4);
}

TEST_CASE("a signal without SA_RESTART interrupts main's read only, not another greenlet's nanosleep") {
    Pipe p;
    AlarmAt alarm(0.1, false);
    Res slept;
    double slept_until = 0;
    Stopwatch sw;
    auto other = spawn([&] {
        timespec r{0, 400000000};
        slept = call([&] { return nanosleep(&r, nullptr); });
        slept_until = sw.elapsed();
    });
    char c;
    Res r = call([&] { return read(p.r, &c, 1); });
    double read_until = sw.elapsed();
    other.join();
    CHECK(g_hits == 1);
    CHECK(r.r == -1);
    CHECK(r.err == EINTR);
    CHECK(read_until < 0.35);
    CHECK(slept.r == 0);
    CHECK(slept_until >= 0.4);
}

}  // TEST_SUITE signals
