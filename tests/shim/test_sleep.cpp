// The sleep family: never early, the kernel's errors, and concurrency.
#include <climits>

#include "helpers.hpp"

using namespace shimtest;
using greenshim::spawn;

namespace {
double clock_s(clockid_t c) {
    timespec t;
    clock_gettime(c, &t);
    return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}
timespec ts_of(double s) {
    timespec t;
    t.tv_sec = time_t(s);
    t.tv_nsec = long((s - double(t.tv_sec)) * 1e9);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec += 1;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}
}  // namespace

TEST_SUITE("sleep") {

TEST_CASE("nanosleep, usleep and sleep(0) sleep at least the time asked") {
    Stopwatch sw;
    timespec req{0, 120000000}, rem{77, 77};
    CHECK(nanosleep(&req, &rem) == 0);
    CHECK(sw.elapsed() >= 0.12);
    CHECK(sw.elapsed() < 1.0);
    CHECK(rem.tv_sec == 77);  // rem is written only when interrupted
    CHECK(rem.tv_nsec == 77);
    CHECK(nanosleep(&req, nullptr) == 0);

    sw = Stopwatch{};
    CHECK(usleep(110000) == 0);
    CHECK(sw.elapsed() >= 0.11);
    CHECK(sw.elapsed() < 1.0);

    timespec zero{0, 0};
    CHECK(nanosleep(&zero, nullptr) == 0);
    CHECK(usleep(0) == 0);
    CHECK(sleep(0) == 0u);
}

TEST_CASE("nanosleep rejects bad times with -1/EINVAL, without sleeping") {
    Stopwatch sw;
    for (timespec bad : {timespec{0, 1000000000L}, timespec{0, -1}, timespec{-1, 0}, timespec{1, 1000000000L}}) {
        Res r = call([&] { return nanosleep(&bad, nullptr); });
        CHECK(r.r == -1);
        CHECK(r.err == EINVAL);
    }
    CHECK(sw.elapsed() < 0.5);
}

TEST_CASE("clock_nanosleep, relative: at least the time asked, on each clock") {
    for (clockid_t c : {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME}) {
        Stopwatch sw;
        timespec req{0, 100000000};
        CHECK(clock_nanosleep(c, 0, &req, nullptr) == 0);
        CHECK(sw.elapsed() >= 0.1);
        CHECK(sw.elapsed() < 1.0);
    }
}

TEST_CASE("clock_nanosleep, TIMER_ABSTIME: returns no earlier than the target on that clock") {
    for (clockid_t c : {CLOCK_MONOTONIC, CLOCK_REALTIME}) {
        double target = clock_s(c) + 0.12;
        timespec t = ts_of(target);
        timespec rem{55, 55};
        CHECK(clock_nanosleep(c, TIMER_ABSTIME, &t, &rem) == 0);
        CHECK(clock_s(c) >= double(t.tv_sec) + double(t.tv_nsec) / 1e9);
        CHECK(clock_s(c) < target + 1.0);
        CHECK(rem.tv_sec == 55);
    }
    // A target in the past: returns 0 at once.
    Stopwatch sw;
    timespec past = ts_of(clock_s(CLOCK_MONOTONIC) - 5);
    CHECK(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &past, nullptr) == 0);
    timespec epoch{0, 0};
    CHECK(clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &epoch, nullptr) == 0);
    CHECK(sw.elapsed() < 0.2);
}

TEST_CASE("clock_nanosleep returns the error number (not -1/errno)") {
    timespec bad{0, 1000000000L};
    errno = 4242;
    CHECK(clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, nullptr) == EINVAL);
    CHECK(errno == 4242);
    timespec neg{0, -5};
    CHECK(clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &neg, nullptr) == EINVAL);
    CHECK(errno == 4242);
    timespec ok{0, 1000000};
    CHECK(clock_nanosleep(clockid_t(12345), 0, &ok, nullptr) == EINVAL);  // no such clock
    CHECK(errno == 4242);
    // Linux cannot sleep on the calling thread's CPU clock.
    CHECK(clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &ok, nullptr) == EINVAL);
    CHECK(errno == 4242);
}

TEST_CASE("two greenlets each nanosleep(300 ms): done in ~300 ms, not 600") {
    Stopwatch sw;
    auto sleeper = [] {
        timespec req{0, 300000000};
        return nanosleep(&req, nullptr);
    };
    auto a = spawn(sleeper);
    auto b = spawn(sleeper);
    CHECK(greenshim::joinall({a, b}, 5.0));
    double t = sw.elapsed();
    CHECK(a.value() == 0);
    CHECK(b.value() == 0);
    CHECK(t >= 0.3);
    CHECK(t < 0.55);
}

TEST_CASE("sleeps of different lengths in many greenlets end in order of their length") {
    std::vector<int> order;
    std::vector<greenshim::TaskBase> tasks;
    Stopwatch sw;
    for (int ms : {250, 50, 150, 100, 200}) {
        tasks.push_back(spawn([&order, ms] {
            if (ms % 100 == 0) usleep(useconds_t(ms * 1000));
            else {
                timespec r{0, ms * 1000000L};
                clock_nanosleep(CLOCK_MONOTONIC, 0, &r, nullptr);
            }
            order.push_back(ms);
        }));
    }
    CHECK(greenshim::joinall(tasks, 5.0));
    CHECK(order == std::vector<int>{50, 100, 150, 200, 250});
    CHECK(sw.elapsed() >= 0.25);
    CHECK(sw.elapsed() < 0.6);
}

TEST_CASE("sleep(1) returns 0 after a second while other greenlets run") {
    int ticks = 0;
    auto ticker = spawn([&] {
        for (int i = 0; i < 5; ++i) {
            usleep(100000);
            ++ticks;
        }
    });
    Stopwatch sw;
    CHECK(sleep(1) == 0u);
    CHECK(sw.elapsed() >= 1.0);
    CHECK(sw.elapsed() < 2.0);
    CHECK(ticks == 5);
    ticker.join();
}

}  // TEST_SUITE sleep
