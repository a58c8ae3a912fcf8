// Diagnostics (diag.hpp): counters, wait sites, the greenlet table, the guard
// page lookup, trace configuration.
#include <sys/mman.h>

#include <memory>
#include <string>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;

using testutil::read_all;

TEST_SUITE("diag") {

TEST_CASE("runtime_stats counts spawned greenlets, the peak alive and parks") {
    RuntimeStats before = runtime_stats();
    static WaitSite site{"test wait", "api"};
    auto q = std::make_shared<WaitQueue>();
    std::vector<Task<Wake>> ts;
    for (int i = 0; i < 5; ++i)
        ts.push_back(spawn([q] {
            WaitScope what(site);
            return q->wait();
        }));
    greenshim::sleep(0);  // all five park
    RuntimeStats mid = runtime_stats();
    CHECK(mid.spawned - before.spawned == 5);
    CHECK(mid.alive - before.alive == 5);
    CHECK(mid.peak_alive >= before.alive + 5);
    CHECK(site.parks.load() == 5);
    CHECK(mid.parks - before.parks >= 5);
    q->notify_all();
    CHECK(joinall(std::vector<TaskBase>(ts.begin(), ts.end())));
    RuntimeStats after = runtime_stats();
    CHECK(after.alive == before.alive);
    CHECK(after.switches > mid.switches);
}

TEST_CASE("write_greenlet_table names each greenlet, where it waits and its entry") {
    static WaitSite site{"pretend_lock", "sync", WaitSite::Arg::address};
    auto q = std::make_shared<WaitQueue>();
    int marker = 0;
    auto t = spawn([q, &marker] {
        WaitScope what(site, reinterpret_cast<std::intptr_t>(&marker));
        return q->wait();
    });
    greenshim::sleep(0);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    write_greenlet_table(fds[1]);
    ::close(fds[1]);
    std::string table = read_all(fds[0]);
    ::close(fds[0]);
    char addr[32];
    std::snprintf(addr, sizeof addr, "%p", static_cast<void*>(&marker));
    CHECK(table.find("greenlet 0 (main): running") != std::string::npos);
    CHECK(table.find(std::string("waiting in pretend_lock ") + addr + " [sync]") != std::string::npos);
    q->notify_all();
    t.join();
}

TEST_CASE("greenlet_for_guard_page finds the greenlet whose guard page holds an address") {
    Greenlet* found = nullptr;
    Greenlet* self = nullptr;
    char* bottom = nullptr;
    auto t = spawn([&] {
        self = &Greenlet::current();
        bottom = static_cast<char*>(self->stack_bottom());
        found = greenlet_for_guard_page(bottom - 1);
        return 0;
    });
    t.join();
    CHECK(found == self);
    CHECK(greenlet_for_guard_page(bottom + 64) == nullptr);  // the stack itself is not the guard page
    int local = 0;
    CHECK(greenlet_for_guard_page(&local) == nullptr);
    CHECK(greenlet_for_guard_page(nullptr) == nullptr);
}

TEST_CASE("set_trace accepts known families and rejects unknown ones") {
    CHECK(set_trace("sync,io"));
    CHECK(set_trace("all"));
    CHECK_FALSE(set_trace("sync,nope"));
    CHECK_FALSE(set_trace(","));
    CHECK(set_trace(nullptr));  // off
    bool has_sync = false;
    for (const char* const* f = trace_families(); *f; ++f) has_sync |= std::string(*f) == "sync";
    CHECK(has_sync);
}

}  // TEST_SUITE
