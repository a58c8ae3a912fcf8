// The gevent-style API: spawn/join/value/joinall, sleep, errno per greenlet.
#include <dirent.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;
using testutil::elapsed_s;

TEST_SUITE("spawn") {

TEST_CASE("spawn/join/value: a spawned greenlet runs only when the spawner waits") {
    bool ran = false;
    auto t = spawn([&] {
        ran = true;
        return 42;
    });
    CHECK_FALSE(ran);
    CHECK_FALSE(t.ready());
    CHECK_FALSE(t.successful());
    // Scheduled counts as started (as in gevent); it has not run yet.
    CHECK(t.greenlet().state() == GreenletState::ready);
    CHECK(t.greenlet().stack_bottom() == nullptr);
    CHECK(t.join());
    CHECK(ran);
    CHECK(t.ready());
    CHECK(t.successful());
    CHECK(t.exception() == nullptr);
    CHECK(t.value() == 42);
    CHECK(t.value() == 42);  // again: the value is kept
    CHECK(t.greenlet().dead());
    testutil::check_hub_idle();
}

TEST_CASE("spawn copies its arguments; the parent of a spawned greenlet is the hub") {
    std::string s = "abc";
    Greenlet* parent = nullptr;
    auto t = spawn(
        [&parent](std::string a, int n) {
            parent = getcurrent().parent();
            std::string out;
            for (int i = 0; i < n; ++i) out += a;
            return out;
        },
        s, 3);
    s = "changed";  // the greenlet got a copy
    CHECK(t.value() == "abcabcabc");
    CHECK(parent == &Hub::current().greenlet());
}

TEST_CASE("value() of a class type") {
    auto t = spawn([] { return std::make_shared<int>(5); });
    CHECK(*t.value() == 5);
}

TEST_CASE("Task<void>") {
    int runs = 0;
    Task<void> t = spawn([&] { ++runs; });
    CHECK_FALSE(t.ready());
    CHECK_NOTHROW(t.value());
    CHECK(runs == 1);
    CHECK(t.ready());
    CHECK(t.successful());

    Task<void> bad = spawn([] { throw std::runtime_error("void failed"); });
    testutil::StderrCapture cap;
    CHECK(bad.join());
    cap.restore();
    CHECK_THROWS_WITH_AS(bad.value(), "void failed", std::runtime_error);
    CHECK_FALSE(bad.successful());
}

TEST_CASE("an exception in a spawned greenlet is reported, kept, and rethrown by value()") {
    testutil::StderrCapture cap;
    auto t = spawn([]() -> int { throw std::runtime_error("boom"); });
    t.greenlet().set_name("exploder");
    bool joined = false;
    CHECK_NOTHROW(joined = t.join());  // join never raises the greenlet's exception
    cap.restore();
    std::string err = cap.text();
    CHECK(joined);
    CHECK(t.ready());
    CHECK_FALSE(t.successful());
    REQUIRE(t.exception() != nullptr);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(t.exception()), "boom", std::runtime_error);
    CHECK_THROWS_WITH_AS(t.value(), "boom", std::runtime_error);
    CHECK_THROWS_WITH_AS(t.value(), "boom", std::runtime_error);  // not consumed
    INFO("stderr: " << err);
    CHECK(err.find("raised: boom") != std::string::npos);
    CHECK(err.find("exploder") != std::string::npos);
    // Reported once.
    CHECK(err.find("raised: boom") == err.rfind("raised: boom"));
    testutil::check_hub_idle();
}

TEST_CASE("a non-std exception is kept too") {
    testutil::StderrCapture cap;
    auto t = spawn([]() -> int { throw 17; });
    CHECK(t.join());
    cap.restore();
    CHECK_FALSE(t.successful());
    CHECK(cap.text().find("non-std exception") != std::string::npos);
    bool got = false;
    try {
        (void)t.value();
    } catch (int v) {
        got = v == 17;
    }
    CHECK(got);
}

TEST_CASE("GreenletExit in a spawned greenlet counts as success") {
    testutil::StderrCapture cap;
    Task<void> t = spawn([] { throw GreenletExit{}; });
    CHECK(t.join());
    cap.restore();
    CHECK(t.successful());
    CHECK(t.exception() == nullptr);
    CHECK(cap.text().empty());
}

TEST_CASE("join(timeout) returns false when the greenlet has not finished; value(timeout) throws Timeout") {
    auto q = std::make_shared<WaitQueue>();
    auto t = spawn([q] {
        q->wait();
        return 3;
    });
    std::int64_t t0 = monotonic_ns();
    CHECK_FALSE(t.join(0.03));
    CHECK(elapsed_s(t0) >= 0.03);
    CHECK(elapsed_s(t0) < 3.0);
    CHECK_FALSE(t.ready());
    CHECK_THROWS_AS(t.value(0.01), Timeout);
    CHECK_FALSE(t.join(0));  // zero timeout: just a check
    CHECK(q->size() == 1);
    CHECK(q->notify_one());
    CHECK(t.join(5));
    CHECK(t.value() == 3);
    testutil::check_hub_idle();
}

TEST_CASE("joining a finished greenlet does not switch") {
    auto t = spawn([] { return 1; });
    CHECK(t.join());
    std::uint64_t before = Hub::current().switches();
    CHECK(t.join());
    CHECK(t.value() == 1);
    CHECK(Hub::current().switches() == before);
}

TEST_CASE("several joiners of one greenlet all wake") {
    auto q = std::make_shared<WaitQueue>();
    auto target = spawn([q] {
        q->wait();
        return 10;
    });
    std::vector<Task<int>> joiners;
    for (int i = 0; i < 5; ++i) joiners.push_back(spawn([target, i] { return target.value() + i; }));
    greenshim::sleep(0);  // everyone runs once: the target and the joiners are now parked
    CHECK(q->size() == 1);
    CHECK_FALSE(target.ready());
    q->notify_one();
    for (int i = 0; i < 5; ++i) CHECK(joiners[i].value(5) == 10 + i);
}

TEST_CASE("joinall waits for every task; joinall(timeout) returns false if one is still running") {
    std::vector<Task<int>> tasks;
    for (int i = 0; i < 20; ++i)
        tasks.push_back(spawn([i] {
            greenshim::sleep(i % 3 == 0 ? 0.0 : 0.001 * (i % 5));
            return i * i;
        }));
    CHECK(joinall(std::vector<TaskBase>(tasks.begin(), tasks.end())));
    int bad = 0;
    for (int i = 0; i < 20; ++i) {
        if (!tasks[i].ready() || tasks[i].value() != i * i) ++bad;
    }
    CHECK(bad == 0);

    auto q = std::make_shared<WaitQueue>();
    auto quick = spawn([] { return 1; });
    auto stuck = spawn([q] { return q->wait() == Wake::event; });
    std::int64_t t0 = monotonic_ns();
    CHECK_FALSE(joinall({quick, stuck}, 0.02));
    CHECK(elapsed_s(t0) >= 0.02);
    CHECK(quick.ready());
    CHECK_FALSE(stuck.ready());
    q->notify_all();
    CHECK(joinall({quick, stuck}, 5));
    CHECK(stuck.value());
    testutil::check_hub_idle();
}

TEST_CASE("a dropped handle does not stop the greenlet") {
    auto q = std::make_shared<WaitQueue>();
    auto done = std::make_shared<bool>(false);
    {
        auto t = spawn([q, done] {
            greenshim::sleep(0.001);
            *done = true;
            q->notify_all();
        });
    }
    CHECK(q->wait(deadline_after(5)) == Wake::event);
    CHECK(*done);
}

}  // TEST_SUITE spawn

TEST_SUITE("sleep") {

TEST_CASE("sleeps end in deadline order, not spawn order") {
    std::vector<char> order;
    auto a = spawn([&] {
        greenshim::sleep(0.05);
        order.push_back('A');
    });
    auto b = spawn([&] {
        greenshim::sleep(0.02);
        order.push_back('B');
    });
    auto c = spawn([&] {
        greenshim::sleep(0.035);
        order.push_back('C');
    });
    CHECK(joinall({a, b, c}, 10));
    CHECK(order == std::vector<char>{'B', 'C', 'A'});
}

TEST_CASE("greenshim::sleep(0) lets every other ready greenlet run once, round-robin") {
    std::vector<std::string> order;
    auto worker = [&](char name) {
        for (int i = 0; i < 3; ++i) {
            order.push_back(std::string(1, name) + std::to_string(i));
            greenshim::sleep(0);
        }
    };
    auto a = spawn(worker, 'A');
    auto b = spawn(worker, 'B');
    auto c = spawn(worker, 'C');
    CHECK(joinall({a, b, c}));
    CHECK(order == std::vector<std::string>{"A0", "B0", "C0", "A1", "B1", "C1", "A2", "B2", "C2"});
}

TEST_CASE("greenshim::sleep(0) in main interleaves with spawned greenlets") {
    std::vector<std::string> order;
    auto a = spawn([&] {
        order.push_back("a1");
        greenshim::sleep(0);
        order.push_back("a2");
    });
    order.push_back("m1");
    greenshim::sleep(0);  // a runs once
    order.push_back("m2");
    greenshim::sleep(0);  // a finishes
    order.push_back("m3");
    CHECK(a.ready());
    CHECK(order == std::vector<std::string>{"m1", "a1", "m2", "a2", "m3"});
}

TEST_CASE("timers never fire early") {
    SUBCASE("greenshim::sleep() in main") {
        for (double d : {0.001, 0.005, 0.02}) {
            std::int64_t t0 = monotonic_ns();
            greenshim::sleep(d);
            double e = elapsed_s(t0);
            CHECK(e >= d);
            CHECK(e < d + 2.0);
        }
    }
    SUBCASE("greenshim::sleep() in many greenlets at once") {
        std::vector<Task<double>> ts;
        for (int i = 0; i < 50; ++i)
            ts.push_back(spawn([i] {
                double d = 0.001 + 0.0005 * (i % 10);
                std::int64_t t0 = monotonic_ns();
                greenshim::sleep(d);
                return elapsed_s(t0) - d;  // >= 0 if not early
            }));
        CHECK(joinall(std::vector<TaskBase>(ts.begin(), ts.end()), 10));
        int early = 0;
        for (auto& t : ts)
            if (t.value() < 0) ++early;
        CHECK(early == 0);
    }
    SUBCASE("Hub::sleep_until() returns timeout at or after the deadline") {
        Hub& hub = Hub::current();
        for (int i = 0; i < 5; ++i) {
            Deadline d = deadline_after(0.003);
            Wake w = hub.sleep_until(d);
            std::int64_t now = monotonic_ns();
            CHECK(w == Wake::timeout);
            CHECK(now >= d);
        }
        // A deadline already past: no wait at all.
        CHECK(hub.sleep_until(monotonic_ns() - 1000) == Wake::timeout);
    }
    SUBCASE("WaitQueue::wait() deadline") {
        WaitQueue q;
        Deadline d = deadline_after(0.015);
        Wake w = q.wait(d);
        std::int64_t now = monotonic_ns();
        CHECK(w == Wake::timeout);
        CHECK(now >= d);
        CHECK(q.empty());
    }
    testutil::check_hub_idle();
}

TEST_CASE("deadline helpers") {
    std::int64_t now = monotonic_ns();
    CHECK(deadline_after(-1) == kForever);
    CHECK(deadline_after_ns(-5) == kForever);
    Deadline d = deadline_after(1.5);
    CHECK(d >= now + 1'500'000'000);
    CHECK(d < now + 1'500'000'000 + 1'000'000'000);
    CHECK(deadline_after(0) >= now);
    CHECK(monotonic_ns() >= now);
}

}  // TEST_SUITE sleep

TEST_SUITE("errno") {

TEST_CASE("errno is per greenlet across hub switches") {
    auto body = [](int mine) {
        errno = mine;
        greenshim::sleep(0);
        int after_yield = errno;
        errno = mine + 1;
        greenshim::sleep(0.002);
        int after_sleep = errno;
        return std::make_pair(after_yield, after_sleep);
    };
    auto a = spawn(body, 1000);
    auto b = spawn(body, 2000);
    errno = 77;
    bool ok = joinall({a, b}, 10);
    int main_errno = errno;
    CHECK(ok);
    CHECK(main_errno == 77);
    CHECK(a.value() == std::make_pair(1000, 1001));
    CHECK(b.value() == std::make_pair(2000, 2001));
}

TEST_CASE("errno is per greenlet across raw switch_to") {
    Greenlet& m = Greenlet::current();
    int seen_in_g = 0;
    auto g = Greenlet::create([&] {
        errno = 5;
        m.switch_to();
        seen_in_g = errno;
    });
    errno = 9;
    g->switch_to();
    int seen_in_main = errno;
    errno = 12;
    g->switch_to();
    int seen_in_main2 = errno;
    CHECK(seen_in_main == 9);
    CHECK(seen_in_g == 5);
    CHECK(seen_in_main2 == 12);
}

}  // TEST_SUITE errno

TEST_SUITE("threads") {

TEST_CASE("each OS thread has its own main greenlet and hub") {
    Hub* main_hub = &Hub::current();
    Greenlet* main_main = &Greenlet::current();
    auto work = [&](int base, int* out, bool* distinct) {
        Hub* h = &Hub::current();
        *distinct = h != main_hub && &Greenlet::current() != main_main && Greenlet::current().is_main();
        std::vector<Task<int>> ts;
        for (int i = 0; i < 100; ++i)
            ts.push_back(spawn([base, i] {
                greenshim::sleep(0.0005 * (i % 4));
                return base + i;
            }));
        int sum = 0;
        for (auto& t : ts) sum += t.value();
        *out = sum;
    };
    int r1 = 0, r2 = 0;
    bool d1 = false, d2 = false;
    std::thread t1(work, 0, &r1, &d1);
    std::thread t2(work, 1000, &r2, &d2);
    t1.join();
    t2.join();
    CHECK(d1);
    CHECK(d2);
    CHECK(r1 == 4950);
    CHECK(r2 == 100 * 1000 + 4950);
    CHECK(&Hub::current() == main_hub);
}

}  // TEST_SUITE threads

// ---- Regressions: cases that once exposed runtime bugs ----

TEST_SUITE("gevent-regressions") {

// A Task<R> whose greenlet ended with GreenletExit is successful() but has no
// value: value() dereferences an empty std::optional (undefined behaviour; it
// returns garbage). It must not hand out an indeterminate R: throwing (e.g.
// GreenletExit, as the greenlet's "result") is the only sound choice.
TEST_CASE("Task<int>::value() after GreenletExit does not return an indeterminate value") {
    auto t = spawn([]() -> int { throw GreenletExit{}; });
    CHECK(t.join());
    CHECK(t.ready());
    CHECK(t.successful());  // as in gevent: a greenlet ended by GreenletExit succeeded
    CHECK_THROWS_AS(t.value(), GreenletExit);
}

namespace {
int open_fd_count() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d)) ++n;
        ::closedir(d);
    }
    return n;
}
}  // namespace

// greenlet.cpp's ThreadCleanup is meant to free "an idle hub" at thread exit,
// but it bails out when ThreadState::alive != 0, and the hub greenlet itself
// is counted in `alive` (ensure_fiber increments it; the hub never dies). So a
// thread that ever used the hub leaks its Hub, its ev_loop (an epoll fd), its
// ThreadState and its pooled stacks when it exits.
TEST_CASE("a thread that used the hub and exits idle releases its event loop") {
    Hub::current();  // this thread's own loop exists before counting
    int before = open_fd_count();
    for (int i = 0; i < 3; ++i) {
        std::thread th([] {
            auto t = spawn([] {
                greenshim::sleep(0.001);
                return 1;
            });
            (void)t.value();
        });
        th.join();
    }
    CHECK(open_fd_count() == before);
}

}  // TEST_SUITE gevent-regressions
