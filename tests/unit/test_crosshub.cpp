// Waits across hubs: a greenlet of one OS thread's hub parks on a WaitQueue
// and a greenlet of another's wakes it (runtime/src/hub.cpp, async.cpp), and
// deadlock detection that counts every hub (diag.cpp's idle book).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <condition_variable>
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

// ---- several hubs (Hub::run_worker, Hub::start): GREENSHIM_HUBS ----

namespace {
// Starts one worker hub (its thread runs for the rest of the process: use
// in a child) and returns it.
Hub& start_worker() {
    unsigned before = Hub::workers();
    std::thread([] { Hub::run_worker(); }).detach();
    while (Hub::workers() == before) std::this_thread::yield();
    return *Hub::worker(before);
}

// start_worker(), once the worker sleeps in its poll (the hub share_ready gives to).
Hub& start_idle_worker() {
    Hub& worker = start_worker();
    while (!worker.idle_polling()) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // (a sleep: valgrind runs one thread at a time)
    return worker;
}

// True if the calling hub sees that nothing left could wake anyone (a waiter
// count or timer left behind would keep it polling until the child's alarm).
bool nothing_can_wake() {
    WaitQueue nobody;
    return nobody.wait(kForever) == Wake::deadlock;
}

// A flag under a queue's Guard, waited for with a deadline.
struct Flag {
    WaitQueue q;
    bool set = false;
    void raise() {
        WaitQueue::Guard g(q);
        set = true;
        q.notify_all(g);
    }
    bool wait(double seconds) {
        WaitQueue::Guard g(q);
        Deadline d = deadline_after(seconds);
        while (!set) {
            if (q.wait(g, d) == Wake::timeout) return false;
            g.lock();
        }
        return true;
    }
};

// Waits, parking 1 ms at a time (the hub runs the others meanwhile), until
// n greenlets are parked in q: its size under its Guard is exact, and a
// waiter is enqueued and parked before it lets the Guard go. (Not a Flag
// raised under q's Guard: two queues may share a spin lock, and a Guard may
// not be taken while another is held.)
bool wait_parked(WaitQueue& q, std::size_t n, double seconds) {
    Deadline give_up = deadline_after(seconds);
    for (;;) {
        {
            WaitQueue::Guard g(q);
            if (q.size() == n) return true;
        }
        if (deadline_after(0) > give_up) return false;
        WaitQueue nap;
        nap.wait(deadline_after(0.001));
    }
}

std::atomic<pthread_t> g_adopted_on{};
}  // namespace

TEST_CASE("a greenlet started on a worker hub runs on the worker's thread, adopted there first") {
    int rc = in_child([] {
        Hub& worker = start_worker();
        Flag done;
        pthread_t ran_on{};
        Hub* ran_hub = nullptr;
        auto g = worker.make_greenlet([&](std::any) -> std::any {
            ran_on = pthread_self();
            ran_hub = Hub::existing();
            done.raise();  // (a wake across hubs, to the main thread's)
            return {};
        });
        worker.start(*g, [](Greenlet&) { g_adopted_on.store(pthread_self()); });
        if (!done.wait(5)) return 1;
        if (ran_hub != &worker) return 2;
        if (pthread_equal(ran_on, pthread_self())) return 3;
        if (!pthread_equal(g_adopted_on.load(), ran_on)) return 4;
        return 0;
    });
    CHECK(rc == 0);
}

TEST_CASE("with an idle worker hub, a main greenlet nothing can wake is told of the deadlock") {
    int rc = in_child([] {
        start_worker();
        WaitQueue q;
        Wake w = q.wait();  // (the worker, idle, reports nothing itself: the main hub is told)
        return w == Wake::deadlock ? 0 : 10 + int(w);
    });
    CHECK(rc == 0);
}

TEST_CASE("an fd number closed on one hub and reused is watched afresh by another hub") {
    int rc = in_child([] {
        Hub& worker = start_worker();
        int p[2];
        if (pipe(p) != 0) return 1;
        int first = p[0];
        Flag armed, closed_again, done;
        Wake before = Wake::none, after = Wake::none;
        auto g = worker.make_greenlet([&](std::any) -> std::any {
            // Its watcher of the number stays armed after this (hub.cpp).
            before = Hub::existing()->wait_fd(first, kReadable, deadline_after(0.01));
            armed.raise();
            closed_again.wait(5);
            after = Hub::existing()->wait_fd(first, kReadable, deadline_after(5));
            done.raise();
            return {};
        });
        worker.start(*g);
        if (!armed.wait(5)) return 2;
        Hub::current().fd_closed(p[0]);  // as the shim does before close()
        close(p[0]);
        close(p[1]);
        int q[2];
        if (pipe(q) != 0 || q[0] != first) return 3;  // (the lowest free numbers: the same)
        if (write(q[1], "x", 1) != 1) return 4;
        closed_again.raise();
        if (!done.wait(10)) return 5;
        if (before != Wake::timeout) return 6;
        return after == Wake::event ? 0 : 10 + int(after);
    });
    CHECK(rc == 0);
}

// Makes the calling greenlet's hub (`here`) rebuild its epoll set, through
// an event libev cannot place: pipe q's read end closed while a copy of it
// (numbered from 100 up, away from any number freed just before) keeps the
// pipe in the epoll set; libev's DEL of the closed number fails, and it
// makes its epoll set again on its next pass, re-adding every armed
// watcher's fd. False if a step failed.
bool rebuild_epoll_set(Hub& here, int q[2]) {
    if (here.wait_fd(q[0], kReadable, deadline_after(0.01)) != Wake::timeout) return false;
    if (fcntl(q[0], F_DUPFD_CLOEXEC, 100) < 0) return false;
    here.fd_closed(q[0]);  // (as the shim does before close())
    close(q[0]);
    if (write(q[1], "x", 1) != 1) return false;
    for (int i = 0; i < 3; ++i) here.sleep_until(deadline_after(0.005));  // (passes of its loop)
    return true;
}

// A worker hub's watcher of a pipe stays armed after its wait (hub.cpp);
// close_it closes the pipe's number on another thread. Then the worker's
// libev makes its epoll set again, re-adding every armed watcher's fd and
// asserting on a closed one (EBADF: the process aborts), unless the worker
// was told of the close first. 0 if the worker went on; the child's status.
int closed_elsewhere_then_rebuilt(void (*close_it)(int fd)) {
    return in_child([close_it] {
        Hub& worker = start_worker();
        int p[2];
        if (pipe(p) != 0) return 1;
        Flag armed, closed, done;
        int step = 0;
        auto g = worker.make_greenlet([&](std::any) -> std::any {
            Hub& here = *Hub::existing();
            if (here.wait_fd(p[0], kReadable, deadline_after(0.01)) != Wake::timeout) return {};
            step = 1;
            int q[2];
            if (pipe(q) != 0) return {};
            armed.raise();
            if (!closed.wait(5)) return {};
            step = 2;
            if (!rebuild_epoll_set(here, q)) return {};
            step = 3;
            done.raise();
            return {};
        });
        worker.start(*g);
        if (!armed.wait(5)) return 2;
        close_it(p[0]);
        closed.raise();
        if (!done.wait(5)) return 10 + step;
        return 0;
    });
}

TEST_CASE("an fd closed on one hub has another hub's idle watcher of it stopped before that hub rebuilds its epoll set") {
    CHECK(closed_elsewhere_then_rebuilt([](int fd) {
              Hub::current().fd_closed(fd);  // as the shim does before close()
              close(fd);
          }) == 0);
}

TEST_CASE("an fd closed on a thread with no hub has a hub's idle watcher of it stopped before it rebuilds its epoll set") {
    CHECK(closed_elsewhere_then_rebuilt([](int fd) {
              Hub::current();  // (two hubs: the number's hubs are tracked)
              std::thread([fd] {
                  Hub::fd_closed_off_hub(fd);  // as the shim does on a thread with no hub
                  close(fd);
              }).join();
          }) == 0);
}

TEST_CASE("with one hub, an fd closed on a thread with no hub has the hub's idle watcher of it stopped before it rebuilds") {
    int rc = in_child([] {
        Hub& here = Hub::current();
        int p[2], q[2];
        if (pipe(p) != 0 || pipe(q) != 0) return 1;
        if (here.wait_fd(p[0], kReadable, deadline_after(0.01)) != Wake::timeout) return 2;  // (stays armed)
        std::thread([fd = p[0]] {
            Hub::fd_closed_off_hub(fd);  // as the shim does on a thread with no hub
            close(fd);
        }).join();
        return rebuild_epoll_set(here, q) ? 0 : 3;
    });
    CHECK(rc == 0);
}

TEST_CASE("with one hub, a watcher armed since its loop last ran, its fd closed on a thread with no hub, goes before the loop adds it") {
    int rc = in_child([] {
        Hub& here = Hub::current();
        int p[2];
        if (pipe(p) != 0) return 1;
        // A deadline already past: the wait returns without a run of the
        // loop, its watcher armed but not yet in the epoll set (libev adds
        // it at the start of the next run, before any callback).
        if (here.wait_fd(p[0], kReadable, monotonic_ns() - 1) != Wake::timeout) return 2;
        std::thread([fd = p[0]] {
            Hub::fd_closed_off_hub(fd);  // as the shim does on a thread with no hub
            close(fd);
        }).join();
        // Runs of its loop: libev's epoll_ctl of the closed fd (EBADF) aborted here.
        for (int i = 0; i < 3; ++i) here.sleep_until(deadline_after(0.005));
        return 0;
    });
    CHECK(rc == 0);
}

TEST_CASE("start_anywhere: an idle worker hub takes new greenlets made on a busy hub (a steal)") {
    int rc = in_child([] {
        Hub& worker = start_worker();
        Hub& here = Hub::current();
        while (!worker.idle_polling()) std::this_thread::yield();  // (asleep in its poll: woken for the work)
        std::uint64_t steals_before = runtime_stats().steals;
        constexpr int kN = 8;
        Flag done;
        std::atomic<int> ran{0}, on_worker{0};
        std::atomic<bool> wrong_parent{false};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&](std::any) -> std::any {
                Hub* h = Hub::existing();
                if (h == &worker) on_worker.fetch_add(1);
                // One this hub took keeps it busy (it blocks its OS thread in
                // the kernel, 1 ms at a time: no park, and valgrind, which
                // runs one thread at a time, lets the worker run) until the
                // worker, woken for the queue, has taken its share.
                Deadline give_up = deadline_after(10);
                while (h == &here && on_worker.load() == 0 && monotonic_ns() < give_up)
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                if (Greenlet::current().parent() != &h->greenlet()) wrong_parent = true;  // it ends on its hub
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            Hub::start_anywhere(*gs.back());
        }
        if (!done.wait(30)) return 2;
        if (wrong_parent) return 3;
        if (on_worker.load() == 0) return 4;
        return runtime_stats().steals - steals_before == std::uint64_t(on_worker.load()) ? 0 : 5;
    });
    CHECK(rc == 0);
}

TEST_CASE("start_anywhere: with every other hub busy, the maker's hub runs them itself (none stranded)") {
    int rc = in_child([] {
        Hub& worker = start_worker();
        Hub& here = Hub::current();
        std::atomic<bool> spinning{false}, release{false};
        // The worker's only greenlet computes until told to stop: its hub
        // never gets back to its loop meanwhile.
        auto spinner = worker.make_greenlet([&](std::any) -> std::any {
            spinning = true;
            while (!release.load()) {
            }
            return {};
        });
        worker.start(*spinner);
        while (!spinning.load()) std::this_thread::yield();
        constexpr int kN = 4;
        Flag done;
        std::atomic<int> ran{0}, on_here{0};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&](std::any) -> std::any {
                if (Hub::existing() == &here) on_here.fetch_add(1);
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            Hub::start_anywhere(*gs.back());
        }
        bool ok = done.wait(5);  // (this wait lets this hub take them)
        release = true;
        if (!ok) return 1;
        return on_here.load() == kN ? 0 : 2;
    });
    CHECK(rc == 0);
}

namespace {
thread_local int t_mine = 0;
}  // namespace

TEST_CASE("share_ready: an idle worker hub is given half the greenlets woken together on a busy hub") {
    if (const char* why = Greenlet::own_thread_locals_unsupported()) {
        MESSAGE("own thread-locals unsupported here: " << why);
        return;
    }
    int rc = in_child([] {
        Hub& here = Hub::current();  // (first: the process hub, one that shares)
        Hub& worker = start_idle_worker();
        std::uint64_t steals_before = runtime_stats().steals;
        constexpr int kN = 8;
        WaitQueue q;
        Flag done;
        std::atomic<int> ran{0}, on_worker{0};
        std::atomic<bool> lost_tls{false}, wrong_parent{false};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&, i](std::any) -> std::any {
                t_mine = 1000 + i;  // its own thread-locals: they go where it goes
                errno = 2000 + i;
                {
                    WaitQueue::Guard held(q);
                    q.wait(held, kForever);  // woken with the others, all ready on `here` at once
                }
                Hub* h = Hub::existing();
                if (h == &worker) on_worker.fetch_add(1);
                if (t_mine != 1000 + i || errno != 2000 + i) lost_tls = true;
                if (Greenlet::current().parent() != &h->greenlet()) wrong_parent = true;  // it ends on its hub
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            if (!gs.back()->set_own_thread_locals()) return 1;
            here.start(*gs.back());
        }
        if (!wait_parked(q, kN, 10)) return 2;
        if (q.notify_all() != std::size_t(kN)) return 3;
        // Parking now leaves `here` with kN ready and the worker asleep.
        if (!done.wait(10)) return 4;
        if (lost_tls) return 5;
        if (wrong_parent) return 6;
        if (on_worker.load() == 0 || on_worker.load() > kN / 2) return 7;  // (the back half at most)
        return runtime_stats().steals - steals_before == std::uint64_t(on_worker.load()) ? 0 : 8;
    });
    CHECK(rc == 0);
}

TEST_CASE("share_ready: a greenlet given away from a timed wait leaves no timer or waiter count behind") {
    if (Greenlet::own_thread_locals_unsupported()) return;  // (said by the test above)
    int rc = in_child([] {
        Hub& here = Hub::current();
        Hub& worker = start_idle_worker();
        constexpr int kN = 8;
        WaitQueue first, second;
        bool go = false;
        Flag done;
        std::atomic<int> ran{0}, on_worker{0}, bad{0};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&](std::any) -> std::any {
                {
                    // Each with a deadline: a timer in `here`'s loop. Woken long before it.
                    WaitQueue::Guard held(first);
                    if (first.wait(held, deadline_after(0.3)) != Wake::event) bad.fetch_add(1);
                }
                if (Hub::existing() == &worker) on_worker.fetch_add(1);
                {
                    // Past that deadline: a timer left armed in `here` would end this wait early.
                    WaitQueue::Guard held(second);
                    while (!go) {
                        if (second.wait(held, deadline_after(10)) != Wake::event) bad.fetch_add(1);
                        held.lock();
                    }
                }
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            if (!gs.back()->set_own_thread_locals()) return 1;
            here.start(*gs.back());
        }
        if (!wait_parked(first, kN, 10)) return 2;
        if (first.notify_all() != std::size_t(kN)) return 3;
        Flag never;
        if (never.wait(0.6)) return 4;  // (0.6 s: past the first deadline)
        {
            WaitQueue::Guard held(second);
            go = true;
            second.notify_all(held);
        }
        if (!done.wait(10)) return 5;
        if (bad.load() != 0) return 6;
        if (on_worker.load() == 0) return 7;
        // Nothing left that could wake anyone: `here` must see it (a waiter
        // count left behind would keep it polling until the alarm).
        return nothing_can_wake() ? 0 : 8;
    });
    CHECK(rc == 0);
}

TEST_CASE("share_ready: threads woken together from one-fd waits move to an idle hub and wait on their fds there") {
    if (Greenlet::own_thread_locals_unsupported()) return;  // (said by the test above)
    int rc = in_child([] {
        Hub& here = Hub::current();
        Hub& worker = start_idle_worker();
        std::uint64_t steals_before = runtime_stats().steals;
        constexpr int kN = 8, kRounds = 3;
        int pipes[kN][2];
        for (auto& p : pipes)
            if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return 1;
        Flag done;
        std::atomic<int> parked{0}, ran{0}, on_worker{0}, bad{0};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&, i](std::any) -> std::any {
                t_mine = 1000 + i;
                for (int round = 0; round < kRounds; ++round) {
                    char c = 0;
                    ssize_t r;
                    while ((r = read(pipes[i][0], &c, 1)) < 0 && errno == EAGAIN) {
                        if (round == 0) parked.fetch_add(1);  // (then parks at once: `here` is one OS thread)
                        errno = 3000 + i;
                        if (Hub::current().wait_fd(pipes[i][0], kReadable, deadline_after(10)) != Wake::event) bad.fetch_add(1);
                        if (errno != 3000 + i) bad.fetch_add(1);  // (its errno went with it)
                        if (round == 0 && Hub::existing() == &worker) on_worker.fetch_add(1);  // (given by the first share)
                    }
                    if (r != 1 || c != char('a' + round)) bad.fetch_add(1);
                }
                if (t_mine != 1000 + i) bad.fetch_add(1);
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            if (!gs.back()->set_own_thread_locals()) return 2;
            here.start(*gs.back());
        }
        // All parked on their pipes: the count is exact once seen, as every
        // one of them runs on this OS thread until it parks.
        for (int tries = 0; parked.load() < kN; ++tries) {
            if (tries > 10000) return 3;
            WaitQueue nap;
            nap.wait(deadline_after(0.001));
        }
        // One byte each, written before this greenlet parks: `here` finds all
        // eight fds ready in one poll, and the worker asleep in its own.
        for (auto& p : pipes)
            if (write(p[1], "a", 1) != 1) return 4;
        // An fd waiter moves only off a saturated hub (Hub::saturated: less
        // than a quarter of its last 10 ms or more in blocking polls): this
        // OS thread, its hub's, is held 15 ms (the hub does not poll meanwhile).
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
        // The next rounds' bytes come while they run or wait again, on
        // whichever hub: a mover's wait on its fd is the new hub's to see
        // (its old hub's watcher, left with nobody, wakes nobody).
        for (char c : {'b', 'c'}) {
            WaitQueue nap;
            nap.wait(deadline_after(0.02));
            for (auto& p : pipes)
                if (write(p[1], &c, 1) != 1) return 5;
        }
        if (!done.wait(10)) return 6;
        if (bad.load() != 0) return 7;
        if (on_worker.load() == 0 || on_worker.load() > kN / 2) return 8;
        if (runtime_stats().steals - steals_before < std::uint64_t(on_worker.load())) return 9;  // (more: they may move back)
        for (auto& p : pipes) {
            here.fd_closed(p[0]);
            close(p[0]);
            close(p[1]);
        }
        // No waiter count or watcher left that could still wake anyone.
        return nothing_can_wake() ? 0 : 10;
    });
    CHECK(rc == 0);
}

TEST_CASE("share_ready: sleepers woken together move to an idle hub, leaving no timer behind") {
    if (Greenlet::own_thread_locals_unsupported()) return;  // (said by the test above)
    int rc = in_child([] {
        Hub& here = Hub::current();
        Hub& worker = start_idle_worker();
        constexpr int kN = 8;
        Deadline together = deadline_after(0.1);
        Flag done;
        std::atomic<int> ran{0}, on_worker{0}, bad{0};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&, i](std::any) -> std::any {
                errno = 4000 + i;
                if (Hub::current().sleep_until(together) != Wake::timeout) bad.fetch_add(1);
                if (errno != 4000 + i || monotonic_ns() < together) bad.fetch_add(1);
                bool moved = Hub::existing() == &worker;
                // A second sleep on the hub it is on now (its old hub keeps no timer of it).
                Deadline again = deadline_after(0.05);
                if (Hub::current().sleep_until(again) != Wake::timeout || monotonic_ns() < again) bad.fetch_add(1);
                if (moved) on_worker.fetch_add(1);
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            if (!gs.back()->set_own_thread_locals()) return 1;
            here.start(*gs.back());
        }
        if (!done.wait(10)) return 2;
        if (bad.load() != 0) return 3;
        if (on_worker.load() == 0) return 4;
        return nothing_can_wake() ? 0 : 5;
    });
    CHECK(rc == 0);
}

TEST_CASE("share_ready: threads whose helper-pool calls end together move to an idle hub") {
    if (Greenlet::own_thread_locals_unsupported()) return;  // (said by the test above)
    int rc = in_child([] {
        Hub& here = Hub::current();
        Hub& worker = start_idle_worker();
        constexpr int kN = 8;
        std::mutex mu;
        std::condition_variable cv;
        bool go = false;
        int in_call = 0, returned = 0;
        Flag done;
        std::atomic<int> ran{0}, on_worker{0}, bad{0};
        std::vector<std::shared_ptr<Greenlet>> gs;
        for (int i = 0; i < kN; ++i) {
            gs.push_back(here.make_greenlet([&, i](std::any) -> std::any {
                errno = 5000 + i;
                int got = 0;
                // A call on a helper thread that waits until all eight are in theirs.
                if (Hub::current().run_blocking([&] {
                        std::unique_lock<std::mutex> lk(mu);
                        ++in_call;
                        cv.notify_all();
                        cv.wait(lk, [&] { return go; });
                        got = i + 1;  // (on our stack: the call writes the waiter's frame)
                        ++returned;
                        cv.notify_all();
                    }) != Wake::event)
                    bad.fetch_add(1);
                if (got != i + 1 || errno != 5000 + i) bad.fetch_add(1);
                if (Hub::existing() == &worker) on_worker.fetch_add(1);
                // A second call from the hub it is on now.
                int again = 0;
                Hub::current().run_blocking([&] { again = 7; });
                if (again != 7) bad.fetch_add(1);
                if (ran.fetch_add(1) + 1 == kN) done.raise();
                return {};
            }));
            if (!gs.back()->set_own_thread_locals()) return 1;
            here.start(*gs.back());
        }
        for (int tries = 0;; ++tries) {  // (parks: the greenlets submit their calls meanwhile)
            {
                std::lock_guard<std::mutex> lk(mu);
                if (in_call == kN) break;
            }
            if (tries > 10000) return 2;
            WaitQueue nap;
            nap.wait(deadline_after(0.001));
        }
        {
            // Their ends, all posted while this hub's thread is held here:
            // its next poll finds them together.
            std::unique_lock<std::mutex> lk(mu);
            go = true;
            cv.notify_all();
            cv.wait(lk, [&] { return returned == kN; });
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // (from a call's return to its post: a few instructions)
        if (!done.wait(10)) return 3;
        if (bad.load() != 0) return 4;
        if (on_worker.load() == 0) return 5;
        return nothing_can_wake() ? 0 : 6;  // (no helper-call count left behind)
    });
    CHECK(rc == 0);
}

}  // TEST_SUITE crosshub
