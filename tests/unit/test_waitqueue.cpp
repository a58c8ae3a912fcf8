// WaitQueue, park/schedule/interrupt, LoopExit.
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "helpers.hpp"

using namespace greenshim;
using testutil::elapsed_s;

TEST_SUITE("waitqueue") {

TEST_CASE("notify_one wakes waiters one at a time in FIFO order") {
    auto q = std::make_shared<WaitQueue>();
    std::vector<int> woke;
    std::vector<Task<Wake>> ts;
    for (int i = 0; i < 4; ++i)
        ts.push_back(spawn([q, &woke, i] {
            Wake w = q->wait();
            woke.push_back(i);
            return w;
        }));
    CHECK(q->empty());
    greenshim::sleep(0);  // all four run and park, in spawn order
    CHECK(q->size() == 4);
    CHECK_FALSE(q->empty());
    for (int k = 0; k < 4; ++k) {
        CHECK(q->notify_one());
        CHECK(q->size() == std::size_t(3 - k));
        CHECK(ts[k].join(5));
        CHECK(woke.size() == std::size_t(k + 1));
    }
    CHECK(woke == std::vector<int>{0, 1, 2, 3});
    for (auto& t : ts) CHECK(t.value() == Wake::event);
    CHECK_FALSE(q->notify_one());  // nobody left
    CHECK(q->notify_all() == 0);
    testutil::check_hub_idle();
}

TEST_CASE("wake_one says which greenlet it woke, in FIFO order") {
    auto q = std::make_shared<WaitQueue>();
    std::vector<Task<Wake>> ts;
    for (int i = 0; i < 3; ++i) ts.push_back(spawn([q] { return q->wait(); }));
    greenshim::sleep(0);
    REQUIRE(q->size() == 3);
    for (int k = 0; k < 3; ++k) {
        Greenlet* woken = q->wake_one();
        CHECK(woken == &ts[k].greenlet());
        CHECK(ts[k].greenlet().state() == GreenletState::ready);
    }
    CHECK(q->wake_one() == nullptr);
    for (auto& t : ts) CHECK(t.value(5) == Wake::event);
}

TEST_CASE("an all-zero WaitQueue (never constructed) is an empty, working queue") {
    alignas(WaitQueue) static unsigned char storage[sizeof(WaitQueue)];  // zero-initialised
    auto* q = reinterpret_cast<WaitQueue*>(storage);
    CHECK(q->empty());
    CHECK(q->size() == 0);
    CHECK_FALSE(q->notify_one());
    auto t = spawn([q] { return q->wait(); });
    greenshim::sleep(0);
    CHECK(q->size() == 1);
    CHECK(q->notify_one());
    CHECK(t.value(5) == Wake::event);
    CHECK(q->empty());
}

TEST_CASE("notify_all wakes every waiter in FIFO order") {
    auto q = std::make_shared<WaitQueue>();
    std::vector<int> woke;
    std::vector<Task<void>> ts;
    // Spawned in a scrambled order; FIFO is by arrival in the queue.
    for (int i : {3, 1, 4, 0, 2}) ts.push_back(spawn([q, &woke, i] {
        q->wait();
        woke.push_back(i);
    }));
    greenshim::sleep(0);
    CHECK(q->size() == 5);
    CHECK(q->notify_all() == 5);
    CHECK(q->empty());
    CHECK(joinall(std::vector<TaskBase>(ts.begin(), ts.end()), 5));
    CHECK(woke == std::vector<int>{3, 1, 4, 0, 2});
}

TEST_CASE("wait with a deadline times out and leaves the queue") {
    auto q = std::make_shared<WaitQueue>();
    auto t = spawn([q] {
        std::int64_t t0 = monotonic_ns();
        Wake w = q->wait(deadline_after(0.02));
        return std::make_pair(w, elapsed_s(t0));
    });
    auto [w, e] = t.value(5);
    CHECK(w == Wake::timeout);
    CHECK(e >= 0.02);
    CHECK(q->empty());
    CHECK_FALSE(q->notify_one());
}

TEST_CASE("a notification is not lost when the head waiter has already timed out") {
    auto q = std::make_shared<WaitQueue>();
    Deadline d = deadline_after(0.1);
    auto head = spawn([q, d] { return q->wait(d); });    // will time out
    auto second = spawn([q] { return q->wait(); });      // waits for a notification
    greenshim::sleep(0);
    REQUIRE(q->size() == 2);
    // Let the head's deadline pass without giving the hub a chance to run it.
    while (monotonic_ns() < d + 2'000'000) {
    }
    // One hub pass: its timer fires and the head becomes ready (not yet run,
    // so still linked in the queue).
    greenshim::sleep(0);
    CHECK(head.greenlet().state() == GreenletState::ready);
    CHECK(q->size() == 2);
    CHECK(q->notify_one());  // must reach `second`, not the timed-out head
    CHECK(head.value(5) == Wake::timeout);
    CHECK(second.join(1));
    CHECK(second.ready());
    if (!second.ready()) {  // do not leave it parked for later tests
        q->notify_all();
        second.join();
    }
    CHECK(second.value() == Wake::event);
    CHECK(q->empty());
}

TEST_CASE("a destroyed WaitQueue wakes its waiters") {
    auto* q = new WaitQueue;
    auto t = spawn([q] { return q->wait(); });
    greenshim::sleep(0);
    REQUIRE(q->size() == 1);
    delete q;
    CHECK(t.value(5) == Wake::event);
}

TEST_CASE("main waiting on a WaitQueue is woken by a spawned greenlet") {
    WaitQueue q;
    auto t = spawn([&q] {
        greenshim::sleep(0.005);
        return q.notify_one();
    });
    CHECK(q.wait(deadline_after(5)) == Wake::event);
    CHECK(t.value());
}

TEST_CASE("a Guard taken while holding another that shares its spin lock is reported, not a silent spin") {
    // Two queues of 64+ share one of the 64 spin locks: found by trying it.
    static WaitQueue qs[130];
    WaitQueue* a = &qs[0];
    WaitQueue* b = nullptr;
    {
        WaitQueue::Guard held(*a);
        for (auto& q : qs) {
            if (&q == a) continue;
            WaitQueue::Guard probe(q, WaitQueue::Guard::deferred);
            if (!probe.try_lock(0)) {
                b = &q;
                break;
            }
        }
    }
    REQUIRE(b != nullptr);
    int err[2];
    REQUIRE(pipe(err) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(err[1], 2);
        alarm(20);
        WaitQueue::Guard first(*a);
        WaitQueue::Guard second(*b);  // spins on itself; said after 2 s
        _exit(0);
    }
    close(err[1]);
    std::string said;
    char buf[512];
    ssize_t n;
    while (said.find('\n') == std::string::npos && (n = read(err[0], buf, sizeof buf)) > 0) said.append(buf, std::size_t(n));
    close(err[0]);
    kill(pid, SIGKILL);  // our own child, by pid
    int st = 0;
    waitpid(pid, &st, 0);
    INFO(said);
    CHECK(said.find("has waited 2 s for spin lock") != std::string::npos);
    CHECK(said.find("waits on itself forever") != std::string::npos);
}

}  // TEST_SUITE waitqueue

TEST_SUITE("hub") {

TEST_CASE("LoopExit is raised in main when joining a greenlet that waits for nobody") {
    auto q = std::make_shared<WaitQueue>();
    auto t = spawn([q] { return q->wait(); });
    CHECK_THROWS_AS(t.join(), LoopExit);
    CHECK_FALSE(t.ready());
    CHECK(t.greenlet().state() == GreenletState::parked);
    CHECK(Greenlet::current().is_main());
    // The runtime is still usable afterwards.
    CHECK(q->notify_one());
    CHECK(t.value(5) == Wake::event);
    auto u = spawn([] { return 5; });
    CHECK(u.value() == 5);
    testutil::check_hub_idle();
}

TEST_CASE("LoopExit from value(), sleep-forever and a bare park in main") {
    Hub& hub = Hub::current();
    auto q = std::make_shared<WaitQueue>();
    auto t = spawn([q] {
        q->wait();
        return 1;
    });
    CHECK_THROWS_AS(t.value(), LoopExit);
    CHECK(hub.park() == Wake::deadlock);  // main alone, nothing can wake it
    CHECK(hub.sleep_until(kForever) == Wake::deadlock);
    WaitQueue lonely;
    CHECK(lonely.wait() == Wake::deadlock);
    q->notify_all();
    CHECK(t.value(5) == 1);
}

TEST_CASE("Hub::interrupt wakes a sleeping greenlet with Wake::interrupted") {
    Hub& hub = Hub::current();
    auto t = spawn([&hub] {
        std::int64_t t0 = monotonic_ns();
        Wake w = hub.sleep_until(deadline_after(30));
        return std::make_pair(w, elapsed_s(t0));
    });
    CHECK_FALSE(hub.interrupt(t.greenlet()));  // not parked yet: nothing to do
    greenshim::sleep(0);
    REQUIRE(t.greenlet().state() == GreenletState::parked);
    CHECK(hub.interrupt(t.greenlet()));
    CHECK_FALSE(hub.interrupt(t.greenlet()));  // already woken
    auto [w, e] = t.value(5);
    CHECK(w == Wake::interrupted);
    CHECK(e < 5.0);
    CHECK_FALSE(hub.interrupt(Greenlet::current()));  // running, not parked
    testutil::check_hub_idle();
}

TEST_CASE("Hub::interrupt wakes a WaitQueue waiter and an fd waiter") {
    Hub& hub = Hub::current();
    auto q = std::make_shared<WaitQueue>();
    auto qw = spawn([q] { return q->wait(); });
    testutil::FdPair p = testutil::FdPair::pipe();
    auto fw = spawn([&hub, r = p.r] { return hub.wait_fd(r, kReadable, deadline_after(30)); });
    greenshim::sleep(0);
    REQUIRE(qw.greenlet().state() == GreenletState::parked);
    REQUIRE(fw.greenlet().state() == GreenletState::parked);
    CHECK(hub.interrupt(qw.greenlet()));
    CHECK(hub.interrupt(fw.greenlet()));
    CHECK(qw.value(5) == Wake::interrupted);
    CHECK(fw.value(5) == Wake::interrupted);
    CHECK(q->empty());  // the interrupted waiter left the queue
}

TEST_CASE("Hub::interrupt with kinds wakes only a wait whose InterruptMask has one of them") {
    Hub& hub = Hub::current();
    auto t = spawn([&hub] {
        InterruptScope accepts{InterruptMask(1)};
        return hub.sleep_until(deadline_after(30));
    });
    greenshim::sleep(0);
    REQUIRE(t.greenlet().state() == GreenletState::parked);
    CHECK_FALSE(hub.interrupt(t.greenlet(), InterruptMask(2)));  // not a kind it accepts: it sleeps on
    CHECK(t.greenlet().state() == GreenletState::parked);
    CHECK(hub.interrupt(t.greenlet(), InterruptMask(3)));
    CHECK(t.value(5) == Wake::interrupted);
    testutil::check_hub_idle();
}

TEST_CASE("interrupt_one matches the wait's InterruptMask and only waits older than the last notify") {
    Hub& hub = Hub::current();
    std::vector<bool> said;
    auto t = spawn([&] {
        said.push_back(hub.interrupt_one(1));  // no notify_signal since main parked
        hub.notify_signal();
        said.push_back(hub.interrupt_one(2));  // main's wait does not accept bit 1
        said.push_back(hub.interrupt_one(1 | 2));
        said.push_back(hub.interrupt_one(1));  // already woken
    });
    Wake w;
    {
        InterruptScope accepts{1};
        w = hub.sleep_until(deadline_after(5));
    }
    CHECK(w == Wake::interrupted);
    t.join();
    CHECK(said == std::vector<bool>{false, false, true, false});
}

// In a child process: main switches by hand to a greenlet that waits for
// nobody, so the hub finds nothing left that could run and main not parked.
static int stranded_child(StrandedHandler handler) {
    pid_t pid = fork();
    if (pid == 0) {
        std::signal(SIGABRT, SIG_DFL);  // not doctest's crash report: the parent checks
        if (handler) Hub::set_stranded_handler(handler);
        auto q = std::make_shared<WaitQueue>();
        auto g = Greenlet::create([q] { q->wait(); });
        g->switch_to();
        _exit(99);  // never comes back
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

TEST_CASE("a hub with nothing left to run calls the stranded handler, else std::terminate") {
    int status = stranded_child([](Hub&, Stranded what) { _exit(40 + int(what)); });
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 40 + int(Stranded::deadlock));
    status = stranded_child(nullptr);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
}

TEST_CASE("Hub::park and Hub::schedule") {
    Hub& hub = Hub::current();
    auto t = spawn([&hub] { return hub.park(); });
    greenshim::sleep(0);
    REQUIRE(t.greenlet().state() == GreenletState::parked);
    hub.schedule(t.greenlet(), Wake::event);
    CHECK(t.greenlet().state() == GreenletState::ready);
    hub.schedule(t.greenlet(), Wake::timeout);  // not parked any more: ignored
    CHECK(t.value(5) == Wake::event);
    hub.schedule(t.greenlet());  // dead: ignored
    CHECK(t.greenlet().dead());

    // A park with a deadline in the past returns at once.
    CHECK(hub.park(monotonic_ns() - 1) == Wake::timeout);
}

TEST_CASE("switch_to a greenlet the hub has parked is refused") {
    auto q = std::make_shared<WaitQueue>();
    auto t = spawn([q] { return q->wait(); });
    greenshim::sleep(0);
    REQUIRE(t.greenlet().state() == GreenletState::parked);
    CHECK_THROWS_AS(t.greenlet().switch_to(), std::logic_error);
    q->notify_one();
    CHECK(t.greenlet().state() == GreenletState::ready);
    CHECK_THROWS_AS(t.greenlet().switch_to(), std::logic_error);
    CHECK(t.value(5) == Wake::event);
}

TEST_CASE("a raw greenlet may sleep: the hub resumes it and its return goes to its parent") {
    Greenlet& m = Greenlet::current();
    auto g = Greenlet::create([](std::any a) -> std::any {
        greenshim::sleep(0.002);
        return std::any_cast<int>(a) + 1;
    });
    std::any r = g->switch_to(1);
    CHECK(&Greenlet::current() == &m);
    CHECK(std::any_cast<int>(r) == 2);
    CHECK(g->dead());
    testutil::check_hub_idle();
}

TEST_CASE("Wake and GreenletState names") {
    CHECK(std::string(to_string(Wake::timeout)) == "timeout");
    CHECK(std::string(to_string(Wake::closed)) == "closed");
    CHECK(std::string(to_string(Wake::deadlock)) == "deadlock");
    CHECK(std::string(to_string(GreenletState::parked)) == "parked");
    CHECK(std::string(to_string(GreenletState::fresh)) == "fresh");
}


// A timer signal to this OS thread every 2 ms, handled by handler, for the
// life of the object (or until stop()): the shim's stall tick, in small.
class TickTimer {
public:
    TickTimer(int sig, void (*handler)(int, siginfo_t*, void*)) : sig_(sig) {
        struct sigaction sa{};
        sa.sa_sigaction = handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigfillset(&sa.sa_mask);
        REQUIRE(sigaction(sig, &sa, &old_) == 0);
        struct sigevent ev{};
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = sig;
        ev._sigev_un._tid = gettid();
        REQUIRE(timer_create(CLOCK_MONOTONIC, &ev, &timer_) == 0);
        struct itimerspec it{{0, 2000000}, {0, 2000000}};
        REQUIRE(timer_settime(timer_, 0, &it, nullptr) == 0);
        armed_ = true;
    }
    void stop() {
        if (!armed_) return;
        armed_ = false;
        struct itimerspec off{};
        timer_settime(timer_, 0, &off, nullptr);
        timer_delete(timer_);
        sigaction(sig_, &old_, nullptr);
    }
    ~TickTimer() { stop(); }
    TickTimer(const TickTimer&) = delete;
    TickTimer& operator=(const TickTimer&) = delete;

private:
    int sig_;
    struct sigaction old_{};
    timer_t timer_{};
    bool armed_ = false;
};

// Hub::preempt_running, as the shim's stall tick uses it: a timer signal
// whose handler takes the thread back from a greenlet that computes without
// ever waiting, so the one that sleeps (a timer the loop must see) runs.
namespace {
Hub* g_preempt_hub = nullptr;
volatile sig_atomic_t g_preempted = 0;
void preempt_handler(int, siginfo_t*, void* uc) {
    if (g_preempt_hub && g_preempt_hub->can_preempt()) {
        // the handler's mask goes (the others run with the thread's own)
        pthread_sigmask(SIG_SETMASK, &static_cast<ucontext_t*>(uc)->uc_sigmask, nullptr);
        if (g_preempt_hub->preempt_running()) g_preempted = g_preempted + 1;
    }
}
}  // namespace

TEST_CASE("preempt_running in a timer signal's handler lets the others run past a CPU loop") {
    Hub& hub = Hub::current();
    g_preempt_hub = &hub;
    TickTimer tick(SIGRTMIN + 3, preempt_handler);
    std::uint64_t before = hub.preemptions();
    volatile bool stop = false;
    auto spinner = spawn([&stop] {
        long n = 0;
        while (!stop) ++n;  // never waits
        return n;
    });
    auto sleeper = spawn([&stop] {
        greenshim::sleep(0.02);  // needs the loop to run while the spinner spins
        stop = true;
        return 1;
    });
    CHECK(sleeper.join(10));
    CHECK(spinner.join(10));
    CHECK(spinner.value() > 0);
    tick.stop();
    g_preempt_hub = nullptr;
    CHECK(hub.preemptions() > before);
    CHECK(g_preempted > 0);
}

// Hub::hand_off_running, as the shim's stall tick uses it: the timer's
// handler hands a greenlet that computes without waiting (one with its own
// thread-locals) to a carrier OS thread; the hub runs the others at once;
// Hub::come_back() brings it back to the hub's thread.
namespace {
std::atomic<bool> g_handed_off{false};
void hand_off_handler(int, siginfo_t*, void* uc) {
    Hub* hub = Hub::existing();
    if (!hub || g_handed_off.load() || !hub->can_preempt()) return;
    auto* u = static_cast<ucontext_t*>(uc);
    pthread_sigmask(SIG_SETMASK, &u->uc_sigmask, nullptr);
    if (!hub->hand_off_running()) return;
    // On the carrier: the frame's mask is the thread's it returns on.
    pthread_sigmask(SIG_BLOCK, nullptr, &u->uc_sigmask);
    g_handed_off = true;
}
}  // namespace

TEST_CASE("hand_off_running moves a computing greenlet to a carrier; come_back brings it home") {
    if (Greenlet::own_thread_locals_unsupported()) return;  // (sanitizer builds: no thread-locals of its own)
    Hub& hub = Hub::current();
    Hub::set_carriers(1, {});
    TickTimer tick(SIGRTMIN + 4, hand_off_handler);
    std::uint64_t before = hub.hand_offs();
    const pid_t home = gettid();
    std::atomic<bool> stop{false}, done{false};
    std::atomic<pid_t> away_tid{0}, back_tid{0};
    std::atomic<Hub*> seen_from{nullptr};
    auto spinner = hub.spawn([&](std::any) -> std::any {
        while (!stop.load(std::memory_order_relaxed)) {
        }  // never waits
        away_tid = pid_t(syscall(SYS_gettid));
        seen_from = Hub::carried_from();
        Hub::come_back();
        back_tid = pid_t(syscall(SYS_gettid));
        done = true;
        return {};
    });
    REQUIRE(spinner->set_own_thread_locals());
    greenshim::sleep(0.02);  // the hub runs this while the spinner spins
    stop = true;
    for (int i = 0; i < 10000 && !done; ++i) greenshim::sleep(0.001);
    tick.stop();
    Hub::set_carriers(0, {});
    CHECK(done.load());
    CHECK(g_handed_off.load());
    CHECK(hub.hand_offs() > before);
    CHECK(away_tid.load() != home);
    CHECK(seen_from.load() == &hub);
    CHECK(back_tid.load() == home);
    CHECK(hub.away() == 0);
}

// The OS thread's main greenlet shares the OS thread's own thread-locals with
// the hub; let_main_be_handed_off gives the hub a stand-in block, so that
// main can go to a carrier with its own: the same pthread_self, thread-locals
// and errno there and back, while the hub runs the others on the stand-in.
namespace {
thread_local int t_main_mark = 0;
}  // namespace

TEST_CASE("hand_off_running moves the main greenlet with its thread-locals; the hub goes on with a stand-in") {
    if (Greenlet::own_thread_locals_unsupported()) return;
    Hub& hub = Hub::current();
    REQUIRE(Greenlet::current().is_main());
    REQUIRE(hub.let_main_be_handed_off());
    Hub::set_carriers(1, {});
    g_handed_off = false;
    TickTimer tick(SIGRTMIN + 4, hand_off_handler);
    const pid_t home = gettid();
    const pthread_t self = pthread_self();
    std::atomic<bool> ran{false};
    std::atomic<pid_t> other_tid{0};
    auto other = hub.spawn([&](std::any) -> std::any {
        other_tid = pid_t(syscall(SYS_gettid));
        ran = true;
        return {};
    });
    t_main_mark = 7;
    errno = 1234;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ran.load() && std::chrono::steady_clock::now() < give_up) {
    }  // never waits: only a hand-off lets the hub run `other`
    REQUIRE(ran.load());
    const pid_t away = pid_t(syscall(SYS_gettid));
    const bool same_away = pthread_equal(pthread_self(), self) && t_main_mark == 7 && errno == 1234;
    Hub* from = Hub::carried_from();
    Hub::come_back();
    const bool same_back = pthread_equal(pthread_self(), self) && t_main_mark == 7 && errno == 1234;
    const pid_t back = pid_t(syscall(SYS_gettid));
    tick.stop();
    Hub::set_carriers(0, {});
    CHECK(g_handed_off.load());
    CHECK(other_tid.load() == home);
    CHECK(away != home);
    CHECK(from == &hub);
    CHECK(same_away);
    CHECK(back == home);
    CHECK(same_back);
    CHECK(hub.away() == 0);
    CHECK(other->dead());
}
}  // TEST_SUITE hub
