// Waits across hubs: a greenlet of one OS thread's hub parks on a WaitQueue
// and a greenlet of another's wakes it (runtime/src/hub.cpp, async.cpp), and
// deadlock detection that counts every hub (diag.cpp's idle book).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;

namespace {

// Until every thread of n has its hub (a hub that does not exist yet cannot
// be counted as one that could still wake someone).
void all_have_hubs(std::atomic<int>& made, int n) {
    Hub::current();
    made.fetch_add(1);
    while (made.load() < n) std::this_thread::yield();
}

// Runs body in a forked child whose only other hubs are the ones body makes
// (the test process's own hub, in a test that waits for a thread, would be
// a hub that could still wake anyone). The child's exit status.
template <class F>
int in_child(F body) {
    std::fflush(nullptr);  // (the child leaves without flushing: no output twice)
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);  // a hang ends the child (SIGALRM): 128 + 14
        _exit(body());
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

TEST_SUITE("crosshub") {

TEST_CASE("six greenlets on two hubs pass a token round through one WaitQueue and its Guard") {
    constexpr int kPlayers = 6, kRounds = 3000;
    WaitQueue q;
    int turn = 0;              // under q's Guard
    std::atomic<int> moves{0};
    std::atomic<int> made{0};
    auto play = [&](int me) {
        for (int r = 0; r < kRounds; ++r) {
            WaitQueue::Guard g(q);
            while (turn != me) {
                q.wait(g);
                g.lock();
            }
            turn = (me + 1) % kPlayers;
            moves.fetch_add(1, std::memory_order_relaxed);
            q.notify_all(g);
        }
    };
    auto hub_thread = [&](int first) {
        all_have_hubs(made, 2);
        std::vector<TaskBase> ts;
        for (int i = first; i < kPlayers; i += 2) ts.push_back(spawn(play, i));
        CHECK(joinall(ts, 60));
    };
    std::thread a(hub_thread, 0), b(hub_thread, 1);
    a.join();
    b.join();
    CHECK(moves.load() == kPlayers * kRounds);
    CHECK(turn == 0);
    CHECK(q.empty());
}

TEST_CASE("timed waits on one hub racing notify_one from another: every true notify wakes a waiter") {
    constexpr int kWaiters = 8, kWaits = 400;
    WaitQueue q;
    std::atomic<int> events{0}, timeouts{0}, notified{0}, waiters_done{0};
    std::atomic<int> made{0};
    std::thread waiters([&] {
        all_have_hubs(made, 2);
        std::vector<TaskBase> ts;
        for (int i = 0; i < kWaiters; ++i) {
            ts.push_back(spawn([&, i] {
                for (int k = 0; k < kWaits; ++k) {
                    // 0-150 us: deadlines fire while the other hub notifies.
                    Wake w = q.wait(deadline_after_ns(((i * 37 + k * 11) % 16) * 10'000));
                    if (w == Wake::event) events.fetch_add(1);
                    else if (w == Wake::timeout) timeouts.fetch_add(1);
                }
                waiters_done.fetch_add(1);
            }));
        }
        CHECK(joinall(ts, 60));
    });
    std::thread notifier([&] {
        all_have_hubs(made, 2);
        auto t = spawn([&] {
            // At about the pace the deadlines fire, so that some wakes
            // race them.
            for (int k = 0; waiters_done.load() < kWaiters; ++k) {
                if (q.notify_one()) notified.fetch_add(1);
                greenshim::sleep(k % 4 == 0 ? 0 : 20e-6);
            }
        });
        CHECK(joinall({t}, 60));
    });
    waiters.join();
    notifier.join();
    CHECK(events.load() + timeouts.load() == kWaiters * kWaits);
    CHECK(events.load() == notified.load());  // no notification lost, none counted twice
    CHECK(events.load() > 0);
    CHECK(timeouts.load() > 0);
    MESSAGE(events.load(), " woken, ", timeouts.load(), " timed out");
    CHECK(q.empty());
}

TEST_CASE("a hub is not told of a deadlock while a greenlet of another hub can still wake it") {
    int rc = in_child([] {
        WaitQueue q;
        std::atomic<int> made{0};
        std::thread waker([&] {
            all_have_hubs(made, 2);
            greenshim::sleep(0.05);  // the main thread's hub is idle meanwhile
            q.notify_one();
        });
        all_have_hubs(made, 2);
        Wake w = q.wait();
        waker.join();
        return w == Wake::event ? 0 : 10 + int(w);
    });
    CHECK(rc == 0);
}

TEST_CASE("when every hub waits for another, exactly one is told of the deadlock") {
    int rc = in_child([] {
        WaitQueue qa, qb;
        std::atomic<int> made{0};
        Wake wb = Wake::none;
        std::thread b([&] {
            all_have_hubs(made, 2);
            wb = qb.wait();
            if (wb == Wake::deadlock) qa.notify_one();  // told first: let the other go
        });
        all_have_hubs(made, 2);
        Wake wa = qa.wait();
        if (wa == Wake::deadlock) qb.notify_one();
        b.join();
        bool one_each = (wa == Wake::deadlock && wb == Wake::event) || (wa == Wake::event && wb == Wake::deadlock);
        return one_each ? 0 : 1;
    });
    CHECK(rc == 0);
}

TEST_CASE("the last hub left is told of its deadlock when the other hub's thread ends") {
    int rc = in_child([] {
        WaitQueue q;
        std::atomic<int> made{0};
        std::thread other([&] {
            all_have_hubs(made, 2);
            greenshim::sleep(0.02);  // ends while the main thread's hub is idle
        });
        all_have_hubs(made, 2);
        Wake w = q.wait();  // (no deadline: a timer could wake it)
        other.join();
        return w == Wake::deadlock ? 0 : 10 + int(w);
    });
    CHECK(rc == 0);
}

TEST_CASE("a thread without a hub wakes a parked greenlet through its hub") {
    WaitQueue q;
    std::atomic<bool> parked{false};
    auto t = spawn([&] {
        parked.store(true);
        return q.wait(deadline_after(10));
    });
    while (!parked.load()) greenshim::sleep(0);
    std::thread plain([&] {
        while (!q.notify_one()) std::this_thread::yield();  // until it is in the queue
    });
    CHECK(t.value(10) == Wake::event);
    plain.join();
}

}  // TEST_SUITE crosshub
