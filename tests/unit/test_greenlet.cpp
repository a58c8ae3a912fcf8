// Greenlet semantics: the rules of Python's greenlet module.
#include <algorithm>
#include <any>
#include <cerrno>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;

namespace {

struct SetOnDestroy {
    bool* flag;
    ~SetOnDestroy() { *flag = true; }
};

}  // namespace

TEST_SUITE("greenlet") {

TEST_CASE("current() outside any greenlet is the thread's main greenlet") {
    Greenlet& m = Greenlet::current();
    CHECK(m.is_main());
    CHECK(m.parent() == nullptr);
    CHECK(m.started());
    CHECK_FALSE(m.dead());
    CHECK(m.state() == GreenletState::running);
    CHECK(&getcurrent() == &m);
    CHECK(m.stack_bottom() == nullptr);
    CHECK(m.stack_top() == nullptr);
}

TEST_CASE("first switch value becomes the argument; values flow both ways") {
    Greenlet& m = Greenlet::current();
    std::vector<int> seen;
    auto g = Greenlet::create([&](std::any arg) -> std::any {
        int x = std::any_cast<int>(arg);
        seen.push_back(x);
        std::any back = m.switch_to(x + 1);  // to main, carrying x + 1
        int y = std::any_cast<int>(back);
        seen.push_back(y);
        back = m.switch_to(std::string("second"));
        seen.push_back(std::any_cast<int>(back));
        return y * 10;  // return value goes to the parent (main)
    });
    std::any r1 = g->switch_to(1);
    REQUIRE(r1.type() == typeid(int));
    CHECK(std::any_cast<int>(r1) == 2);
    std::any r2 = g->switch_to(5);
    REQUIRE(r2.type() == typeid(std::string));
    CHECK(std::any_cast<std::string>(r2) == "second");
    std::any r3 = g->switch_to(9);
    REQUIRE(r3.type() == typeid(int));
    CHECK(std::any_cast<int>(r3) == 50);
    CHECK(seen == std::vector<int>{1, 5, 9});
    CHECK(g->dead());
    CHECK(g->exception() == nullptr);
    testutil::check_hub_idle();
}

TEST_CASE("an empty first switch gives an empty argument; void greenlets return an empty value") {
    bool had_value = true;
    auto g = Greenlet::create([&](std::any arg) -> std::any {
        had_value = arg.has_value();
        return {};
    });
    std::any r = g->switch_to();
    CHECK_FALSE(had_value);
    CHECK_FALSE(r.has_value());
    CHECK(g->dead());

    int runs = 0;
    auto v = Greenlet::create([&] { ++runs; });
    CHECK_FALSE(v->switch_to(42).has_value());
    CHECK(runs == 1);
    CHECK(v->dead());
}

TEST_CASE("started(), dead(), state() and current() through a greenlet's life") {
    Greenlet& m = Greenlet::current();
    std::shared_ptr<Greenlet> g;
    Greenlet* inside = nullptr;
    GreenletState state_inside = GreenletState::fresh;
    GreenletState main_state_inside = GreenletState::fresh;
    g = Greenlet::create([&](std::any) -> std::any {
        inside = &Greenlet::current();
        state_inside = g->state();
        main_state_inside = m.state();
        m.switch_to();
        return 1;
    }, "lifecycle");
    CHECK(g->name() == "lifecycle");
    CHECK(g->id() != 0);
    CHECK_FALSE(g->is_main());
    CHECK(g->parent() == &m);
    CHECK_FALSE(g->started());
    CHECK_FALSE(g->dead());
    CHECK(g->state() == GreenletState::fresh);

    g->switch_to();
    CHECK(inside == g.get());
    CHECK(state_inside == GreenletState::running);
    CHECK(main_state_inside == GreenletState::suspended);
    CHECK(&Greenlet::current() == &m);
    CHECK(m.state() == GreenletState::running);
    CHECK(g->started());
    CHECK_FALSE(g->dead());
    CHECK(g->state() == GreenletState::suspended);

    CHECK(std::any_cast<int>(g->switch_to()) == 1);
    CHECK(g->started());
    CHECK(g->dead());
    CHECK(g->state() == GreenletState::dead);
    CHECK(&Greenlet::current() == &m);

    auto unnamed = Greenlet::create([] {});
    CHECK_FALSE(unnamed->name().empty());
    CHECK(unnamed->id() != g->id());
    unnamed->set_name("renamed");
    CHECK(unnamed->name() == "renamed");
}

TEST_CASE("the parent is the creator, and a return goes to the parent, not to the switcher") {
    Greenlet& m = Greenlet::current();
    std::vector<std::string> log;
    std::shared_ptr<Greenlet> child;
    auto parent = Greenlet::create([&](std::any) -> std::any {
        child = Greenlet::create([&](std::any a) -> std::any {
            log.push_back("child got " + std::to_string(std::any_cast<int>(a)));
            return 7;
        });
        log.push_back(child->parent() == &Greenlet::current() ? "parent ok" : "parent wrong");
        // Hand control to main; main starts the child, whose return comes here.
        std::any back = m.switch_to(std::string("parked"));
        log.push_back("parent got " + std::to_string(std::any_cast<int>(back)));
        return std::any_cast<int>(back) + 1;
    });
    std::any r = parent->switch_to();
    CHECK(std::any_cast<std::string>(r) == "parked");
    REQUIRE(child);
    // main switches to the child; the child's return goes to its parent,
    // whose own return then comes to main.
    std::any r2 = child->switch_to(3);
    REQUIRE(r2.type() == typeid(int));
    CHECK(std::any_cast<int>(r2) == 8);
    CHECK(child->dead());
    CHECK(parent->dead());
    CHECK(log == std::vector<std::string>{"parent ok", "child got 3", "parent got 7"});
}

TEST_CASE("a return skips dead ancestors") {
    Greenlet& m = Greenlet::current();
    std::shared_ptr<Greenlet> child;
    auto middle = Greenlet::create([&](std::any) -> std::any {
        child = Greenlet::create([&](std::any) -> std::any {
            m.switch_to(std::string("child suspended"));
            return 99;
        });
        return child->switch_to();  // the child's first switch goes to main
    });
    CHECK(std::any_cast<std::string>(middle->switch_to()) == "child suspended");
    // middle is suspended in child->switch_to(); kill it quietly.
    CHECK_FALSE(middle->throw_in().has_value());
    CHECK(middle->dead());
    CHECK_FALSE(child->dead());
    CHECK(child->parent() == middle.get());
    // The child's return goes to the first live ancestor: main.
    std::any r = child->switch_to();
    REQUIRE(r.type() == typeid(int));
    CHECK(std::any_cast<int>(r) == 99);
    CHECK(child->dead());
}

TEST_CASE("set_parent re-parents and rejects cycles and null") {
    Greenlet& m = Greenlet::current();
    auto a = Greenlet::create([] {});
    auto b = Greenlet::create([] {});
    auto c = Greenlet::create([] {});
    CHECK_THROWS_AS(a->set_parent(a), std::invalid_argument);
    CHECK_THROWS_AS(a->set_parent(nullptr), std::invalid_argument);
    b->set_parent(a);
    CHECK(b->parent() == a.get());
    c->set_parent(b);
    CHECK_THROWS_AS(a->set_parent(c), std::invalid_argument);  // a <- b <- c <- a
    CHECK_THROWS_AS(a->set_parent(b), std::invalid_argument);
    CHECK(a->parent() == &m);  // unchanged by the rejected calls
    // main's own parent chain: main -> (none); a greenlet under main.
    CHECK_THROWS_AS(m.set_parent(a), std::invalid_argument);
    CHECK(m.parent() == nullptr);

    // A re-parented greenlet's return goes to its new parent.
    auto p = Greenlet::create([&](std::any) -> std::any {
        std::any v = m.switch_to(0);
        return std::any_cast<int>(v) * 2;
    });
    auto q = Greenlet::create([](std::any) -> std::any { return 21; });
    p->switch_to();
    q->set_parent(p);
    std::any r = q->switch_to();  // q returns 21 to p, p returns 42 to main
    CHECK(std::any_cast<int>(r) == 42);
    CHECK(p->dead());
    CHECK(q->dead());
}

TEST_CASE("switching to a dead greenlet switches to its parent") {
    Greenlet& m = Greenlet::current();
    auto dead = Greenlet::create([](std::any) -> std::any { return 1; });
    dead->switch_to();
    REQUIRE(dead->dead());
    // Its parent is main, the caller: the value comes straight back.
    std::any r = dead->switch_to(5);
    CHECK(std::any_cast<int>(r) == 5);
    CHECK(&Greenlet::current() == &m);

    // From another greenlet: switching to the dead one lands in main.
    int k_got = 0;
    auto k = Greenlet::create([&](std::any) -> std::any {
        std::any back = dead->switch_to(7);
        k_got = std::any_cast<int>(back);
        return {};
    });
    std::any r2 = k->switch_to();
    REQUIRE(r2.type() == typeid(int));
    CHECK(std::any_cast<int>(r2) == 7);
    CHECK_FALSE(k->dead());
    k->switch_to(8);
    CHECK(k_got == 8);
    CHECK(k->dead());
}

TEST_CASE("switch_to the current greenlet returns the value at once") {
    Greenlet& m = Greenlet::current();
    CHECK(std::any_cast<int>(m.switch_to(3)) == 3);
    int inner = 0;
    auto g = Greenlet::create([&](std::any) -> std::any {
        inner = std::any_cast<int>(Greenlet::current().switch_to(11));
        return {};
    });
    g->switch_to();
    CHECK(inner == 11);
    CHECK(g->dead());
}

TEST_CASE("throw_in raises at the suspension point of a suspended greenlet") {
    Greenlet& m = Greenlet::current();
    std::string caught;
    bool after_switch = false;
    auto g = Greenlet::create([&](std::any) -> std::any {
        try {
            m.switch_to(1);
            after_switch = true;
        } catch (std::runtime_error const& e) {
            caught = e.what();
        }
        // Switch outside the handler.
        std::any v = m.switch_to(std::string("caught"));
        return std::any_cast<int>(v) + 100;
    });
    CHECK(std::any_cast<int>(g->switch_to()) == 1);
    std::any r = g->throw_in(std::make_exception_ptr(std::runtime_error("zap")));
    CHECK(caught == "zap");
    CHECK_FALSE(after_switch);
    REQUIRE(r.type() == typeid(std::string));
    CHECK(std::any_cast<std::string>(r) == "caught");
    CHECK_FALSE(g->dead());
    CHECK(std::any_cast<int>(g->switch_to(5)) == 105);
    CHECK(g->dead());
    CHECK(g->exception() == nullptr);
}

TEST_CASE("throw_in: an uncaught exception kills the greenlet and is raised in the parent") {
    Greenlet& m = Greenlet::current();
    bool unwound = false;
    auto g = Greenlet::create([&](std::any) -> std::any {
        SetOnDestroy guard{&unwound};
        m.switch_to();
        return 0;
    });
    g->switch_to();
    CHECK_THROWS_WITH_AS(g->throw_in(std::make_exception_ptr(std::runtime_error("zap"))), "zap",
                         std::runtime_error);
    CHECK(unwound);
    CHECK(g->dead());
    REQUIRE(g->exception() != nullptr);
    CHECK_THROWS_WITH_AS(std::rethrow_exception(g->exception()), "zap", std::runtime_error);
}

TEST_CASE("throw_in() of GreenletExit into a suspended greenlet is a quiet death") {
    Greenlet& m = Greenlet::current();
    bool unwound = false;
    auto g = Greenlet::create([&](std::any) -> std::any {
        SetOnDestroy guard{&unwound};
        m.switch_to();
        return 1;
    });
    g->switch_to();
    std::any r;
    CHECK_NOTHROW(r = g->throw_in());
    CHECK_FALSE(r.has_value());
    CHECK(unwound);
    CHECK(g->dead());
    CHECK(g->exception() == nullptr);
}

TEST_CASE("throw_in into a fresh greenlet: it dies at once and the exception goes to its parent") {
    SUBCASE("parent is the caller: raised right here") {
        bool ran = false;
        auto g = Greenlet::create([&] { ran = true; });
        CHECK_THROWS_WITH_AS(g->throw_in(std::make_exception_ptr(std::runtime_error("early"))), "early",
                             std::runtime_error);
        CHECK_FALSE(ran);
        CHECK(g->dead());
        REQUIRE(g->exception() != nullptr);
        CHECK_THROWS_WITH_AS(std::rethrow_exception(g->exception()), "early", std::runtime_error);
        // Switching to it now goes to its parent (us).
        CHECK(std::any_cast<int>(g->switch_to(4)) == 4);
        CHECK_FALSE(ran);
    }
    SUBCASE("GreenletExit: a quiet death") {
        bool ran = false;
        auto g = Greenlet::create([&] { ran = true; });
        std::any r;
        CHECK_NOTHROW(r = g->throw_in());
        CHECK_FALSE(r.has_value());
        CHECK_FALSE(ran);
        CHECK(g->dead());
        CHECK(g->exception() == nullptr);
    }
    SUBCASE("parent is another, suspended greenlet: raised at its switch point") {
        Greenlet& m = Greenlet::current();
        std::string caught;
        auto p = Greenlet::create([&](std::any) -> std::any {
            try {
                m.switch_to();
            } catch (std::runtime_error const& e) {
                caught = e.what();
            }
            return std::string("p saw it");
        });
        p->switch_to();
        bool ran = false;
        auto g = Greenlet::create([&] { ran = true; });
        g->set_parent(p);
        std::any r = g->throw_in(std::make_exception_ptr(std::runtime_error("to parent")));
        CHECK_FALSE(ran);
        CHECK(g->dead());
        CHECK(caught == "to parent");
        CHECK(p->dead());
        REQUIRE(r.type() == typeid(std::string));
        CHECK(std::any_cast<std::string>(r) == "p saw it");
    }
}

TEST_CASE("GreenletExit escaping the function counts as a normal death") {
    bool reached = false;
    auto g = Greenlet::create([&](std::any) -> std::any {
        throw GreenletExit{};
        reached = true;
        return 1;
    });
    std::any r;
    CHECK_NOTHROW(r = g->switch_to());
    CHECK_FALSE(r.has_value());
    CHECK_FALSE(reached);
    CHECK(g->dead());
    CHECK(g->exception() == nullptr);
}

TEST_CASE("an exception escaping a greenlet is raised in its parent's switch_to") {
    SUBCASE("parent is main") {
        auto g = Greenlet::create([](std::any) -> std::any { throw std::runtime_error("escaped"); });
        CHECK_THROWS_WITH_AS(g->switch_to(), "escaped", std::runtime_error);
        CHECK(g->dead());
        REQUIRE(g->exception() != nullptr);
        CHECK_THROWS_WITH_AS(std::rethrow_exception(g->exception()), "escaped", std::runtime_error);
        CHECK(&Greenlet::current() == &Greenlet::current());
        CHECK(Greenlet::current().is_main());
    }
    SUBCASE("parent is a greenlet that catches it") {
        std::string caught;
        auto outer = Greenlet::create([&](std::any) -> std::any {
            auto inner = Greenlet::create([](std::any) -> std::any { throw std::logic_error("inner"); });
            try {
                inner->switch_to();
            } catch (std::logic_error const& e) {
                caught = e.what();
            }
            return inner->dead() ? 1 : 0;
        });
        std::any r = outer->switch_to();
        CHECK(caught == "inner");
        CHECK(std::any_cast<int>(r) == 1);
        CHECK(outer->dead());
        CHECK(outer->exception() == nullptr);
    }
    SUBCASE("the exception escapes the child's parent too, to main") {
        auto outer = Greenlet::create([](std::any) -> std::any {
            auto inner = Greenlet::create([](std::any) -> std::any { throw std::out_of_range("deep"); });
            inner->switch_to();
            return 0;
        });
        CHECK_THROWS_WITH_AS(outer->switch_to(), "deep", std::out_of_range);
        CHECK(outer->dead());
    }
}

TEST_CASE("a greenlet never switched back to is unwound on destruction") {
    Greenlet& m = Greenlet::current();
    SUBCASE("destructors on its stack run; code after the switch does not") {
        bool unwound = false, after = false;
        std::weak_ptr<Greenlet> weak;
        {
            auto g = Greenlet::create([&] {
                SetOnDestroy guard{&unwound};
                std::string s(1000, 'x');  // heap-owning object on the greenlet stack
                m.switch_to();
                after = true;
            });
            weak = g;
            g->switch_to();
            CHECK(g->started());
            CHECK_FALSE(g->dead());
            CHECK(g->state() == GreenletState::suspended);
            CHECK_FALSE(unwound);
        }
        CHECK(weak.expired());
        CHECK(unwound);
        CHECK_FALSE(after);
        CHECK(&Greenlet::current() == &m);
    }
    SUBCASE("a catch(...) that rethrows sees the unwinding and the destructors still run") {
        bool unwound = false, saw = false, after = false;
        {
            auto g = Greenlet::create([&] {
                SetOnDestroy guard{&unwound};
                try {
                    m.switch_to();
                    after = true;
                } catch (...) {
                    saw = true;
                    throw;
                }
            });
            g->switch_to();
        }
        CHECK(saw);
        CHECK(unwound);
        CHECK_FALSE(after);
    }
    SUBCASE("nested: a suspended greenlet several frames deep, inside its own child greenlet") {
        int destroyed = 0;
        struct Count {
            int* n;
            ~Count() { ++*n; }
        };
        {
            std::shared_ptr<Greenlet> inner;
            auto outer = Greenlet::create([&] {
                Count c{&destroyed};
                inner = Greenlet::create([&] {
                    Count c2{&destroyed};
                    m.switch_to();
                });
                inner->switch_to();
            });
            outer->switch_to();  // outer suspended in inner->switch_to(), inner in m.switch_to()
            CHECK(destroyed == 0);
            inner.reset();  // last reference to inner goes: unwound
            CHECK(destroyed == 1);
        }
        CHECK(destroyed == 2);
    }
    SUBCASE("repeated create/suspend/destroy does not leak stacks") {
        auto cycle = [&] {
            bool unwound = false;
            auto g = Greenlet::create([&] {
                SetOnDestroy guard{&unwound};
                m.switch_to();
            });
            g->switch_to();
            g.reset();
            return unwound;
        };
        CHECK(cycle());
        std::size_t mapped = stack_pool_stats().mapped;
        int ok = 0;
        for (int i = 0; i < 50; ++i) ok += cycle() ? 1 : 0;
        CHECK(ok == 50);
        CHECK(stack_pool_stats().mapped == mapped);
    }
    testutil::check_hub_idle();
}

TEST_CASE("a fresh greenlet destroyed without running never runs") {
    bool ran = false;
    {
        auto g = Greenlet::create([&] { ran = true; });
    }
    CHECK_FALSE(ran);
}

TEST_CASE("a deep chain of nested greenlets passes return values up") {
    // Each level creates the next (its child) and returns child's value + 1.
    std::function<std::any(std::any)> level = [&](std::any a) -> std::any {
        int depth = std::any_cast<int>(a);
        if (depth == 0) return 0;
        auto child = Greenlet::create(level, {}, 64 * 1024);
        return std::any_cast<int>(child->switch_to(depth - 1)) + 1;
    };
    auto top = Greenlet::create(level, {}, 64 * 1024);
    CHECK(std::any_cast<int>(top->switch_to(100)) == 100);
    CHECK(top->dead());
}

TEST_CASE("a value can ping-pong between two greenlets many times") {
    Greenlet& m = Greenlet::current();
    std::shared_ptr<Greenlet> ping, pong;
    ping = Greenlet::create([&](std::any a) -> std::any {
        int v = std::any_cast<int>(a);
        while (v < 1000) v = std::any_cast<int>(pong->switch_to(v + 1));
        return v;
    });
    pong = Greenlet::create([&](std::any a) -> std::any {
        int v = std::any_cast<int>(a);
        for (;;) v = std::any_cast<int>(ping->switch_to(v + 1));
    });
    std::any r = ping->switch_to(0);
    CHECK(std::any_cast<int>(r) == 1000);
    CHECK(ping->dead());
    CHECK_FALSE(pong->dead());
    CHECK(&Greenlet::current() == &m);
    // pong is suspended forever: dropping it must unwind it cleanly.
    pong.reset();
    ping.reset();
}

// switch_to has two paths (greenlet.hpp): an empty switch to a greenlet
// suspended in a switch is made inline from the caller, anything else goes
// through the runtime. Both save the same state and resume each other's
// contexts; each greenlet keeps its errno and its exception being handled
// whichever path left and whichever resumed it.
TEST_CASE("errno and the exception being handled stay each greenlet's across inline and general switches") {
    Greenlet& m = Greenlet::current();
    std::shared_ptr<Greenlet> a, b;
    std::vector<std::string> bad;
    auto expect = [&](const char* who, int want, int round) {
        if (errno != want) bad.push_back(std::string(who) + " round " + std::to_string(round) + " errno " +
                                         std::to_string(errno));
    };
    a = Greenlet::create([&] {
        errno = 11;
        try {
            throw std::runtime_error("A");
        } catch (...) {
            for (int i = 0; i < 6; ++i) {
                if (i % 3 == 0) b->switch_to();           // inline (b suspended) or general (b fresh)
                else if (i % 3 == 1) m.switch_to(i);      // a value: general
                else m.switch_to();                       // inline
                expect("a", 11, i);
                errno = 11;
                try {
                    throw;
                } catch (std::exception const& e) {
                    if (std::string(e.what()) != "A") bad.push_back(std::string("a saw ") + e.what());
                }
            }
        }
    });
    b = Greenlet::create([&] {
        errno = 22;
        for (int i = 0;; ++i) {
            if (i % 2) m.switch_to();
            else a->switch_to();
            expect("b", 22, i);
            errno = 22;
            if (std::uncaught_exceptions() != 0 || std::current_exception()) bad.push_back("b sees an exception");
        }
    });
    errno = 33;
    for (int i = 0; !a->dead() && i < 100; ++i) {
        if (i % 2) a->switch_to();
        else b->switch_to();
        expect("main", 33, i);
        errno = 33;
        if (std::current_exception()) bad.push_back("main sees an exception");
    }
    CHECK(a->dead());
    CHECK(bad.empty());
    for (auto& line : bad) MESSAGE(line);
    b.reset();  // suspended in an inline switch_to: unwound from there
}

// Under the preload the stall tick (shim/stall.cpp) preempts a greenlet that
// runs GREENSHIM_HANDOFF ms without its hub switching, and a ping-pong of
// switch_to never passes through the hub. Part of an inline switch runs in
// the program's code with the thread state mid-way (switch_begin has set the
// target current, switch_end has not yet taken the context we came from): a
// preemption there saved one greenlet's stack as another's, and the program
// crashed later (bench_switch under greenrun, 2 runs in 15 with a 1 ms
// hand-off). tests/unit/meson.build runs this one preloaded with a 1 ms
// hand-off too; unpatched it is a plain ping-pong.
TEST_CASE("an inline switch_to ping-pong for a second survives the stall tick") {
    std::thread([] {}).join();  // (preloaded: the first thread starts the tick)
    Greenlet& m = Greenlet::current();
    long a_count = 0, b_count = 0;
    bool stop = false;
    std::shared_ptr<Greenlet> a, b;
    b = Greenlet::create([&] {
        errno = 2;
        while (!stop) {
            ++b_count;
            a->switch_to();
            if (errno != 2) b_count = -1000000000;
        }
        m.switch_to();
    });
    a = Greenlet::create([&] {
        errno = 1;
        b->switch_to();  // starts b
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        for (long i = 1;; ++i) {
            ++a_count;
            b->switch_to();
            if (errno != 1) a_count = -1000000000;
            if ((i & 4095) == 0 && std::chrono::steady_clock::now() >= until) break;
        }
        stop = true;
        b->switch_to();  // b leaves its loop and switches to main
    });
    a->switch_to();
    CHECK(a_count > 0);
    CHECK((b_count == a_count + 1 || b_count == a_count));
    MESSAGE("round trips: " << a_count);
    b.reset();
    a.reset();
}

TEST_CASE("a greenlet suspended in an inline switch_to receives values and exceptions from the general path") {
    Greenlet& m = Greenlet::current();
    std::string caught;
    std::any got;
    auto g = Greenlet::create([&] {
        try {
            m.switch_to();  // inline: main waits in a general switch (g was fresh)
        } catch (std::runtime_error const& e) {
            caught = e.what();
        }
        got = m.switch_to();  // inline again
        m.switch_to();
    });
    g->switch_to();
    CHECK(g->state() == GreenletState::suspended);
    g->throw_in(std::make_exception_ptr(std::runtime_error("zap")));
    CHECK(caught == "zap");
    g->switch_to(std::string("seven"));
    REQUIRE(got.type() == typeid(std::string));
    CHECK(std::any_cast<std::string>(got) == "seven");
    CHECK_FALSE(g->dead());
    g->switch_to();  // its function returns: main comes back from an empty inline switch
    CHECK(g->dead());
}

}  // TEST_SUITE

// ---- Regressions: cases that once exposed runtime bugs ----

TEST_SUITE("greenlet-regressions") {

// Python greenlet: a child dying with an exception into a parent that has not
// started yet kills the parent at once and the exception goes on to the
// parent's parent. greenshim starts the parent's function normally instead and
// the exception disappears.
TEST_CASE("an exception escaping into a fresh parent kills the parent and goes on up") {
    bool parent_ran = false;
    auto p = Greenlet::create([&](std::any) -> std::any {
        parent_ran = true;
        return std::string("parent ran");
    });
    auto c = Greenlet::create([](std::any) -> std::any { throw std::runtime_error("child err"); });
    c->set_parent(p);
    CHECK_THROWS_WITH_AS(c->switch_to(), "child err", std::runtime_error);
    CHECK(c->dead());
    CHECK_FALSE(parent_ran);
    CHECK(p->dead());
    CHECK(p->exception() != nullptr);
}

// hpp: "a fresh greenlet dies at once: e is then raised in its parent". When
// that parent is itself fresh, it is started normally and e is lost.
TEST_CASE("throw_in into a fresh greenlet whose parent is fresh raises in that parent") {
    bool parent_ran = false, child_ran = false;
    auto p = Greenlet::create([&](std::any) -> std::any {
        parent_ran = true;
        return std::string("parent ran");
    });
    auto c = Greenlet::create([&] { child_ran = true; });
    c->set_parent(p);
    CHECK_THROWS_WITH_AS(c->throw_in(std::make_exception_ptr(std::runtime_error("thrown"))), "thrown",
                         std::runtime_error);
    CHECK_FALSE(child_ran);
    CHECK_FALSE(parent_ran);
    CHECK(p->dead());
}

// hpp: "A greenlet that is never switched back to is unwound when its last
// shared_ptr goes". Hub::park() stores a self-reference (Impl::keepalive) that
// is only released when the greenlet dies, so a raw greenlet that ever waited
// in the hub (sleep, fd wait, WaitQueue) and is then abandoned while suspended
// in switch_to() is never destroyed: its stack and its RAII objects leak.
TEST_CASE("a raw greenlet that once waited in the hub is still unwound when abandoned") {
    Greenlet& m = Greenlet::current();
    bool unwound = false;
    std::weak_ptr<Greenlet> weak;
    {
        auto g = Greenlet::create([&] {
            SetOnDestroy guard{&unwound};
            greenshim::sleep(0.001);  // parks in the hub once
            m.switch_to();            // then suspends by an explicit switch
        });
        weak = g;
        g->switch_to();
        CHECK(g->state() == GreenletState::suspended);
    }
    CHECK(weak.expired());
    CHECK(unwound);
}

// Python greenlet keeps the exception being handled per greenlet. greenshim
// switches fibers without saving the C++ runtime's per-thread exception state
// (__cxa_eh_globals: the caught-exceptions stack), so inside a catch block
// that switches (any sleep or I/O under the shim), `throw;` and
// std::current_exception() see the exception of whichever greenlet last
// entered a handler.
TEST_CASE("the exception being handled is per greenlet across switches in catch blocks") {
    SUBCASE("raw switch_to") {
        Greenlet& m = Greenlet::current();
        std::string in_g, in_m;
        auto g = Greenlet::create([&] {
            try {
                throw std::runtime_error("G");
            } catch (...) {
                m.switch_to();
                try {
                    throw;
                } catch (std::exception const& e) {
                    in_g = e.what();
                }
            }
        });
        try {
            throw std::runtime_error("M");
        } catch (...) {
            g->switch_to();
            try {
                throw;
            } catch (std::exception const& e) {
                in_m = e.what();
            }
        }
        g->switch_to();
        CHECK(in_m == "M");
        CHECK(in_g == "G");
    }
    SUBCASE("spawned greenlets that sleep in a handler") {
        auto body = [](std::string tag) -> std::string {
            try {
                throw std::runtime_error(tag);
            } catch (...) {
                greenshim::sleep(0);
                std::exception_ptr p = std::current_exception();
                try {
                    std::rethrow_exception(p);
                } catch (std::exception const& e) {
                    return e.what();
                }
            }
        };
        auto a = spawn(body, std::string("A"));
        auto b = spawn(body, std::string("B"));
        CHECK(a.value() == "A");
        CHECK(b.value() == "B");
    }
}

// "running: the one greenlet running on this thread". The hub's run loop
// switches with Runtime::jump() without setting its own state, so after the
// hub has run once it reports `running` forever, alongside the real current
// greenlet.
TEST_CASE("only the current greenlet reports running") {
    auto t = spawn([] { return 1; });
    CHECK(t.value() == 1);
    Greenlet& hub_g = Hub::current().greenlet();
    CHECK(Greenlet::current().state() == GreenletState::running);
    CHECK(hub_g.state() != GreenletState::running);
}

}  // TEST_SUITE greenlet-bugs

// ---- own thread-locals (Greenlet::set_own_thread_locals) ----

namespace {
thread_local int t_counter = 0;
std::vector<std::string> g_tls_log;
struct Noisy {
    std::string name;
    explicit Noisy(std::string n) : name(std::move(n)) { g_tls_log.push_back("+" + name); }
    ~Noisy() { g_tls_log.push_back("-" + name); }
};
}  // namespace

TEST_CASE("greenlets share their OS thread's thread-locals unless given their own") {
    if (const char* why = Greenlet::own_thread_locals_unsupported()) {
        MESSAGE("own thread-locals unsupported here: " << why);
        return;
    }
    t_counter = 0;
    g_tls_log.clear();
    std::shared_ptr<Greenlet> shared, own_a, own_b;
    auto body = [](std::string name) {
        return [name] {
            thread_local Noisy n(name);  // constructed on first use, per thread
            (void)n;
            for (int i = 0; i < 3; ++i) {
                ++t_counter;
                errno = 100 + i;
                Greenlet::current().parent()->switch_to();
            }
            g_tls_log.push_back(name + " saw " + std::to_string(t_counter));
        };
    };
    shared = Greenlet::create(body("shared"));
    own_a = Greenlet::create(body("a"));
    own_b = Greenlet::create(body("b"));
    CHECK_FALSE(shared->has_own_thread_locals());
    REQUIRE(own_a->set_own_thread_locals());
    REQUIRE(own_b->set_own_thread_locals());
    CHECK_FALSE(own_a->set_own_thread_locals());  // once
    CHECK_FALSE(Greenlet::current().set_own_thread_locals());  // main
    for (int round = 0; round < 4; ++round)
        for (auto& g : {shared, own_a, own_b})
            if (!g->dead()) g->switch_to();
    // main and `shared` share one counter (3 from shared); a and b counted 3 each in their own.
    CHECK(t_counter == 3);
    // Each thread's thread_local was destroyed when its function ended; the
    // shared one belongs to the OS thread (destroyed at its exit, not here).
    CHECK(std::count(g_tls_log.begin(), g_tls_log.end(), "-a") == 1);
    CHECK(std::count(g_tls_log.begin(), g_tls_log.end(), "-b") == 1);
    CHECK(std::count(g_tls_log.begin(), g_tls_log.end(), "-shared") == 0);
    CHECK(std::find(g_tls_log.begin(), g_tls_log.end(), "a saw 3") < std::find(g_tls_log.begin(), g_tls_log.end(), "-a"));
    CHECK(std::find(g_tls_log.begin(), g_tls_log.end(), "shared saw 3") != g_tls_log.end());
    CHECK_FALSE(own_a->set_own_thread_locals());  // dead
}

namespace {
thread_local int t_initialised = 7;
thread_local long t_zeroed[64];
}  // namespace

// As glibc places a thread's: the block (TCB and static TLS) at the top of the
// greenlet's stack mapping, above its frames. A pooled stack comes back with
// the last user's block in it: the next thread's variables must start afresh.
TEST_CASE("own thread-locals sit at the top of the greenlet's stack, fresh in a reused stack") {
    if (Greenlet::own_thread_locals_unsupported()) return;
    const std::size_t reused_before = greenshim::stack_pool_stats().reused;
    for (int round = 0; round < 3; ++round) {
        int init_seen = -1, errno_seen = -1;
        bool zeroed = false, tcb_above_frames = false;
        auto g = Greenlet::create([&] {
            init_seen = t_initialised;
            zeroed = std::all_of(std::begin(t_zeroed), std::end(t_zeroed), [](long v) { return v == 0; });
            errno_seen = errno;
            char local = 0;
            char* top = static_cast<char*>(Greenlet::current().stack_top());
            char* tp;
            __asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
            tcb_above_frames = &local < top && tp >= top && tp < top + 64 * 1024;
            t_initialised = 99;  // dirt for the next user of this stack
            std::fill(std::begin(t_zeroed), std::end(t_zeroed), 0x5a5a5a5aL);
            errno = 55;
        });
        REQUIRE(g->set_own_thread_locals());
        g->switch_to();
        REQUIRE(g->dead());
        CHECK(init_seen == 7);
        CHECK(zeroed);
        CHECK(errno_seen == 0);
        CHECK(tcb_above_frames);
    }
    CHECK(t_initialised == 7);  // the OS thread's own, untouched
    CHECK(greenshim::stack_pool_stats().reused >= reused_before + 2);  // rounds 2 and 3 took round 1's stack
}

TEST_CASE("a greenlet with its own thread-locals abandoned while suspended is unwound with them") {
    if (Greenlet::own_thread_locals_unsupported()) return;
    t_counter = 7;
    int seen_in_unwind = -1;
    {
        auto g = Greenlet::create([&] {
            struct SeesCounter {
                int& out;
                ~SeesCounter() { out = t_counter; }
            } s{seen_in_unwind};
            t_counter = 42;  // its own copy
            Greenlet::current().parent()->switch_to();
        });
        REQUIRE(g->set_own_thread_locals());
        g->switch_to();
        CHECK(t_counter == 7);
    }  // unwound here
    CHECK(seen_in_unwind == 42);  // its destructors ran with its own thread-locals
    CHECK(t_counter == 7);        // and ours are back
}
