// Stacks: pool reuse, bounds, sizes, guard page; many greenlets at once.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;

TEST_SUITE("stack") {

TEST_CASE("stacks are reused when greenlets run one after another") {
    auto t0 = spawn([] { return 0; });
    CHECK(t0.value() == 0);  // warms the pool with at least one stack
    StackPoolStats before = stack_pool_stats();
    for (int i = 0; i < 20; ++i) {
        auto t = spawn([i] {
            greenshim::sleep(0);
            return i;
        });
        CHECK(t.value() == i);
    }
    StackPoolStats after = stack_pool_stats();
    CHECK(after.reused >= before.reused + 20);
    CHECK(after.mapped == before.mapped);  // no new stack was needed

    // Raw greenlets share the pool too.
    std::size_t r0 = stack_pool_stats().reused;
    for (int i = 0; i < 5; ++i) {
        auto g = Greenlet::create([] {});
        g->switch_to();
        CHECK(g->dead());
    }
    CHECK(stack_pool_stats().reused >= r0 + 5);
}

TEST_CASE("stack_bottom()/stack_top() bound a running greenlet's locals") {
    Greenlet& m = Greenlet::current();
    std::uintptr_t local_addr = 0, bottom = 0, top = 0;
    auto g = Greenlet::create([&] {
        int local = 42;
        volatile int* p = &local;
        // Its frame rather than &local: under ASan's
        // detect_stack_use_after_return, locals live in a "fake stack" on the heap.
        local_addr = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
        bottom = reinterpret_cast<std::uintptr_t>(Greenlet::current().stack_bottom());
        top = reinterpret_cast<std::uintptr_t>(Greenlet::current().stack_top());
        m.switch_to();
        (void)*p;
    });
    CHECK(g->stack_bottom() == nullptr);  // not started: no stack yet
    CHECK(g->stack_top() == nullptr);
    g->switch_to();
    CHECK(bottom != 0);
    CHECK(bottom < top);
    CHECK(top - bottom == g->stack_size());
    CHECK(local_addr >= bottom);
    CHECK(local_addr < top);
    // From outside, the suspended greenlet reports the same range.
    CHECK(reinterpret_cast<std::uintptr_t>(g->stack_bottom()) == bottom);
    CHECK(reinterpret_cast<std::uintptr_t>(g->stack_top()) == top);
    // Main's own locals are not in it.
    int mine = 0;
    std::uintptr_t mine_addr = reinterpret_cast<std::uintptr_t>(&mine);
    CHECK((mine_addr < bottom || mine_addr >= top));
    g->switch_to();
    CHECK(g->dead());
    CHECK(g->stack_bottom() == nullptr);  // dead: stack returned
    CHECK(g->stack_top() == nullptr);
}

TEST_CASE("stack sizes: default, explicit, rounded up to whole pages") {
    std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    CHECK(Greenlet::default_stack_size() == 256 * 1024);
    auto d = Greenlet::create([] {});
    CHECK(d->stack_size() == Greenlet::default_stack_size());
    auto odd = Greenlet::create([] {}, "odd", 20000);
    CHECK(odd->stack_size() % page == 0);
    CHECK(odd->stack_size() >= 20000);
    CHECK(odd->stack_size() < 20000 + page);

    // A small-stack greenlet runs and reports its own size.
    std::uintptr_t span = 0;
    auto small = Greenlet::create([&] {
        span = reinterpret_cast<std::uintptr_t>(Greenlet::current().stack_top()) -
               reinterpret_cast<std::uintptr_t>(Greenlet::current().stack_bottom());
    }, "small", 32 * 1024);
    small->switch_to();
    CHECK(span == 32 * 1024);

    // set_default_stack_size ignores silly values, applies sane ones.
    std::size_t saved = Greenlet::default_stack_size();
    Greenlet::set_default_stack_size(100);
    CHECK(Greenlet::default_stack_size() == saved);
    Greenlet::set_default_stack_size(128 * 1024);
    CHECK(Greenlet::default_stack_size() == 128 * 1024);
    auto g = Greenlet::create([] {});
    CHECK(g->stack_size() == 128 * 1024);
    Greenlet::set_default_stack_size(saved);
    CHECK(Greenlet::default_stack_size() == saved);
}

TEST_CASE("overflowing a greenlet stack hits the guard page (SIGSEGV), not a neighbour") {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::signal(SIGSEGV, SIG_DFL);  // doctest's crash handler must not catch it
        rlimit no_core{0, 0};
        ::setrlimit(RLIMIT_CORE, &no_core);
        struct Rec {
            static int down(int n) {
                static volatile int limit = 1 << 30;  // far beyond any stack
                volatile char pad[1024];
                pad[0] = char(n);
                if (n > limit) return 0;
                return down(n + 1) + pad[0];
            }
        };
        auto g = Greenlet::create([] { (void)Rec::down(0); }, "overflow", 32 * 1024);
        g->switch_to();
        ::_exit(0);  // not reached if the guard page works
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);
}

TEST_CASE("10,000 greenlets spawned at once all finish with the right values") {
    constexpr int kN = 10000;
    std::vector<Task<long>> tasks;
    tasks.reserve(kN);
    std::int64_t t0 = monotonic_ns();
    for (int i = 0; i < kN; ++i)
        tasks.push_back(spawn([i]() -> long {
            if (i % 2)
                greenshim::sleep(0.001 + 0.001 * (i % 5));
            else
                greenshim::sleep(0);
            return long(i) * 3 + 1;
        }));
    CHECK(joinall(std::vector<TaskBase>(tasks.begin(), tasks.end()), 60));
    int wrong = 0, not_ready = 0;
    long sum = 0;
    for (int i = 0; i < kN; ++i) {
        if (!tasks[i].ready()) {
            ++not_ready;
            continue;
        }
        long v = tasks[i].value();
        if (v != long(i) * 3 + 1) ++wrong;
        sum += v;
    }
    CHECK(not_ready == 0);
    CHECK(wrong == 0);
    CHECK(sum == 3L * (long(kN) * (kN - 1) / 2) + kN);
    MESSAGE("10k greenlets: " << testutil::elapsed_s(t0) << " s");
    testutil::check_hub_idle();
}

}  // TEST_SUITE stack
