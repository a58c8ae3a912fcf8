// Process-shared and robust synchronisation objects (glibc's: sem_open,
// sem_init(pshared=1), PTHREAD_PROCESS_SHARED mutexes, condition variables,
// rwlocks, barriers, robust mutexes), checked on a plain binary. meson runs it
// with OS threads and with libgreenshim.so preloaded; both runs must pass the
// same assertions.
//
// The point under the shim: a wait on such an object must park the waiting
// thread and let the others run, whether the release comes from another
// thread of this process or from another process. Every wait below runs
// while a ticker thread counts; the release is made only once the ticker has
// advanced (the releaser awaits that), and the waiter checks it did. Before
// the fix the wait blocked the only OS thread: the ticker stopped and the
// releaser never released (each gives up after 10 s, so the test fails
// rather than hangs).
//
// GREENSHIM_THREADS_MODE=patched|unpatched (set by meson) makes main() check
// that the library is (or is not) mapped. --latency prints wake latencies.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>
#include "both_ways.hpp"

namespace {

bool g_patched = false;
bool g_latency = false;

std::int64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void sleep_us(long us) {
    struct timespec d = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {
    }
}

// Memory shared with children made by fork.
template <class T>
T* shared_new() {
    void* p = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    return new (p) T();
}
template <class T>
void shared_delete(T* p) {
    p->~T();
    munmap(p, sizeof(T));
}

// A thread that counts milliseconds while it runs; its count lives in shared
// memory so that a child process can await it too.
struct Ticker {
    std::atomic<long>* ticks = shared_new<std::atomic<long>>();
    std::atomic<bool> stop{false};
    pthread_t thread;
    std::function<void*()> body = [this]() -> void* {
        while (!stop.load()) {
            sleep_us(1000);
            ticks->fetch_add(1);
        }
        return nullptr;
    };
    Ticker() { thread = spawn(&body); }
    ~Ticker() {
        stop = true;
        pthread_join(thread, nullptr);
        shared_delete(ticks);
    }
    long now() const { return ticks->load(); }
    // Awaits `n` more ticks (at most 10 s): true if they came.
    static bool await(const std::atomic<long>* ticks, long from, long n) {
        for (int i = 0; i < 10000; ++i) {
            if (ticks->load() >= from + n) return true;
            sleep_us(1000);
        }
        return false;
    }
};

constexpr long kTicks = 20;  // the ticker must advance this much while a waiter waits

std::string sem_name() { return "/greenshim-test-" + std::to_string(getpid()); }

pid_t fork_child(const std::function<int()>& body) {
    std::fflush(nullptr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(body());
    return pid;
}
int wait_child(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void print_latency(const char* what, std::vector<double>& us) {
    std::sort(us.begin(), us.end());
    std::printf("latency %-40s n=%zu median %.0f us, p90 %.0f us, max %.0f us\n", what, us.size(), us[us.size() / 2],
                us[us.size() * 9 / 10], us.back());
}

}  // namespace

TEST_CASE("named semaphore released by another thread: the others run meanwhile") {
    std::string name = sem_name();
    sem_t* s = sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0);
    REQUIRE(s != SEM_FAILED);
    sem_unlink(name.c_str());
    Ticker ticker;
    long from = ticker.now();
    bool came = false;
    auto releaser = [&]() -> void* {
        came = Ticker::await(ticker.ticks, from, kTicks);
        sem_post(s);
        return nullptr;
    };
    pthread_t t = spawn(&releaser);
    CHECK(sem_wait(s) == 0);
    CHECK(came);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_join(t, nullptr) == 0);
    int v = -1;
    CHECK(sem_getvalue(s, &v) == 0);
    CHECK(v == 0);
    CHECK(sem_close(s) == 0);
}

TEST_CASE("named semaphore released by another process: the others run meanwhile") {
    std::string name = sem_name();
    sem_t* s = sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0);
    REQUIRE(s != SEM_FAILED);
    Ticker ticker;
    long from = ticker.now();
    pid_t child = fork_child([&] {
        sem_t* c = sem_open(name.c_str(), 0);
        if (c == SEM_FAILED) return 2;
        int came = Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;
        return sem_post(c) == 0 ? came : 4;
    });
    CHECK(sem_wait(s) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(wait_child(child) == 0);
    sem_unlink(name.c_str());
    CHECK(sem_close(s) == 0);
}

TEST_CASE("process-shared sem_init semaphore: timed wait, trywait, another process posts twice") {
    sem_t* s = shared_new<sem_t>();
    REQUIRE(sem_init(s, 1, 0) == 0);
    CHECK(sem_trywait(s) == -1);
    CHECK(errno == EAGAIN);
    struct timespec until = abs_in(0.05);
    std::int64_t t0 = now_ns();
    CHECK(sem_timedwait(s, &until) == -1);
    CHECK(errno == ETIMEDOUT);
    CHECK(now_ns() - t0 >= 45000000);
    struct timespec bad = {0, 1000000000L};
    CHECK(sem_timedwait(s, &bad) == -1);
    CHECK(errno == EINVAL);
    Ticker ticker;
    long from = ticker.now();
    pid_t child = fork_child([&] {
        int came = Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;
        sem_post(s);
        sem_post(s);
        return came;
    });
    struct timespec mono = abs_in(10, CLOCK_MONOTONIC);
    CHECK(sem_clockwait(s, CLOCK_MONOTONIC, &mono) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(wait_child(child) == 0);
    CHECK(sem_trywait(s) == 0);
    CHECK(sem_destroy(s) == 0);
    shared_delete(s);
}

namespace {
std::atomic<int> g_handled{0};
void on_usr1(int) { ++g_handled; }
void handle_usr1(bool restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGUSR1, &sa, nullptr);
}
}  // namespace

// Measured on Linux 6.1 / glibc 2.36 unpatched: a handler interrupts
// sem_wait unless it has SA_RESTART, and sem_timedwait whatever its flags
// (a futex wait with a deadline is never restarted).
TEST_CASE("process-shared semaphore and signals: EINTR as the kernel decides") {
    sem_t* s = shared_new<sem_t>();
    REQUIRE(sem_init(s, 1, 0) == 0);
    pthread_t main_thread = pthread_self();
    for (int variant = 0; variant < 3; ++variant) {
        bool restart = variant != 0, timed = variant == 2;
        CAPTURE(restart);
        CAPTURE(timed);
        handle_usr1(restart);
        g_handled = 0;
        Ticker ticker;
        long from = ticker.now();
        auto kicker = [&]() -> void* {
            Ticker::await(ticker.ticks, from, kTicks);
            pthread_kill(main_thread, SIGUSR1);
            // a restarted wait still needs its post: once the handler ran
            for (int i = 0; i < 10000 && g_handled == 0; ++i) sleep_us(1000);
            Ticker::await(ticker.ticks, ticker.now(), kTicks);
            sem_post(s);
            return nullptr;
        };
        pthread_t t = spawn(&kicker);
        int r;
        if (timed) {
            struct timespec until = abs_in(20);
            r = sem_timedwait(s, &until);
        } else {
            r = sem_wait(s);
        }
        int err = errno;
        CHECK(g_handled == 1);
        if (restart && !timed) {
            CHECK(r == 0);
        } else {
            CHECK(r == -1);
            CHECK(err == EINTR);
            CHECK(sem_wait(s) == 0);  // the post comes later
        }
        CHECK(pthread_join(t, nullptr) == 0);
    }
    signal(SIGUSR1, SIG_DFL);
    CHECK(sem_destroy(s) == 0);
    shared_delete(s);
}

TEST_CASE("wake latency of a named semaphore: posted by another process, by another thread") {
    std::string name = sem_name();
    sem_t* s = sem_open(name.c_str(), O_CREAT | O_EXCL, 0600, 0);
    REQUIRE(s != SEM_FAILED);
    sem_unlink(name.c_str());
    constexpr int kRounds = 100;
    struct Stamp {
        std::atomic<std::int64_t> posted{0};
        std::atomic<int> round{-1};
    };
    Stamp* stamp = shared_new<Stamp>();
    std::vector<double> process_us, thread_us;
    // Another process: posts each round after a delay of 0.1 to 5 ms, once the
    // parent waits for that round.
    pid_t child = fork_child([&] {
        for (int i = 0; i < kRounds; ++i) {
            while (stamp->round.load() < i) sleep_us(50);
            sleep_us(100 + (i * 4919) % 4900);
            stamp->posted = now_ns();
            sem_post(s);
        }
        return 0;
    });
    for (int i = 0; i < kRounds; ++i) {
        stamp->round = i;
        REQUIRE(sem_wait(s) == 0);
        process_us.push_back(double(now_ns() - stamp->posted.load()) / 1e3);
    }
    CHECK(wait_child(child) == 0);
    // Another thread of this process.
    std::atomic<int> round{-1};
    auto poster = [&]() -> void* {
        for (int i = 0; i < kRounds; ++i) {
            while (round.load() < i) sleep_us(50);
            sleep_us(100 + (i * 4919) % 4900);
            stamp->posted = now_ns();
            sem_post(s);
        }
        return nullptr;
    };
    pthread_t t = spawn(&poster);
    for (int i = 0; i < kRounds; ++i) {
        round = i;
        REQUIRE(sem_wait(s) == 0);
        thread_us.push_back(double(now_ns() - stamp->posted.load()) / 1e3);
    }
    CHECK(pthread_join(t, nullptr) == 0);
    std::sort(process_us.begin(), process_us.end());
    std::sort(thread_us.begin(), thread_us.end());
    if (g_latency) {
        print_latency("sem_open, posted by another process:", process_us);
        print_latency("sem_open, posted by another thread:", thread_us);
    }
    // Bounds loose enough for a loaded 2-core machine: the back-off never
    // sleeps more than 2 ms at a time.
    CHECK(process_us[kRounds / 2] < 5000);
    CHECK(thread_us[kRounds / 2] < 5000);
    CHECK(sem_close(s) == 0);
    shared_delete(stamp);
}

namespace {
pthread_mutex_t* new_shared_mutex(int type, bool robust = false, bool pshared = true) {
    auto* m = shared_new<pthread_mutex_t>();
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type);
    if (pshared) pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    REQUIRE(pthread_mutex_init(m, &a) == 0);
    pthread_mutexattr_destroy(&a);
    return m;
}
void delete_shared_mutex(pthread_mutex_t* m) {
    CHECK(pthread_mutex_destroy(m) == 0);
    shared_delete(m);
}
}  // namespace

TEST_CASE("process-shared mutex in shared memory released by another thread") {
    pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_NORMAL);
    Ticker ticker;
    std::atomic<bool> locked{false};
    long from = 0;
    auto holder = [&]() -> void* {
        CHECK(pthread_mutex_lock(m) == 0);
        from = ticker.now();
        locked = true;
        Ticker::await(ticker.ticks, from, kTicks);
        CHECK(pthread_mutex_unlock(m) == 0);
        return nullptr;
    };
    pthread_t t = spawn(&holder);
    while (!locked) sleep_us(100);
    CHECK(pthread_mutex_trylock(m) == EBUSY);
    struct timespec soon = abs_in(0.005);
    CHECK(pthread_mutex_timedlock(m, &soon) == ETIMEDOUT);
    CHECK(pthread_mutex_lock(m) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_mutex_unlock(m) == 0);
    CHECK(pthread_join(t, nullptr) == 0);
    delete_shared_mutex(m);
}

TEST_CASE("process-shared mutex released by another process") {
    pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_NORMAL);
    Ticker ticker;
    auto* locked = shared_new<std::atomic<long>>();
    *locked = -1;
    pid_t child = fork_child([&] {
        if (pthread_mutex_lock(m) != 0) return 2;
        long from = ticker.now();
        *locked = from;
        int came = Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;
        return pthread_mutex_unlock(m) == 0 ? came : 4;
    });
    while (*locked < 0) sleep_us(100);
    CHECK(pthread_mutex_lock(m) == 0);
    CHECK(ticker.now() >= *locked + kTicks);
    CHECK(pthread_mutex_unlock(m) == 0);
    CHECK(wait_child(child) == 0);
    shared_delete(locked);
    delete_shared_mutex(m);
}

TEST_CASE("process-shared mutexes keep per-thread ownership: EDEADLK, EPERM, recursion, EBUSY") {
    pthread_mutex_t* ec = new_shared_mutex(PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t* rec = new_shared_mutex(PTHREAD_MUTEX_RECURSIVE);
    CHECK(pthread_mutex_lock(ec) == 0);
    CHECK(pthread_mutex_lock(ec) == EDEADLK);
    CHECK(pthread_mutex_trylock(ec) == EBUSY);
    CHECK(pthread_mutex_lock(rec) == 0);
    CHECK(pthread_mutex_lock(rec) == 0);
    CHECK(pthread_mutex_trylock(rec) == 0);
    int other_unlock_ec = -1, other_unlock_rec = -1, other_try_rec = -1, other_try_ec = -1;
    auto other = [&]() -> void* {
        other_unlock_ec = pthread_mutex_unlock(ec);
        other_unlock_rec = pthread_mutex_unlock(rec);
        other_try_rec = pthread_mutex_trylock(rec);
        other_try_ec = pthread_mutex_trylock(ec);
        return nullptr;
    };
    pthread_t t = spawn(&other);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_unlock_ec == EPERM);
    CHECK(other_unlock_rec == EPERM);
    CHECK(other_try_rec == EBUSY);
    CHECK(other_try_ec == EBUSY);
    CHECK(pthread_mutex_unlock(ec) == 0);
    CHECK(pthread_mutex_unlock(ec) == EPERM);
    for (int i = 0; i < 3; ++i) CHECK(pthread_mutex_unlock(rec) == 0);
    CHECK(pthread_mutex_unlock(rec) == EPERM);
    // Now free: another thread takes both at once.
    auto taker = [&]() -> void* {
        other_try_rec = pthread_mutex_trylock(rec);
        other_try_ec = pthread_mutex_trylock(ec);
        pthread_mutex_unlock(rec);
        pthread_mutex_unlock(ec);
        return nullptr;
    };
    t = spawn(&taker);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_try_rec == 0);
    CHECK(other_try_ec == 0);
    delete_shared_mutex(ec);
    delete_shared_mutex(rec);
}

TEST_CASE("process-shared mutex: waiters of this process are served in turn, none starves") {
    pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_NORMAL);
    constexpr int kThreads = 4, kRounds = 50;
    std::atomic<int> inside{0}, overlap{0};
    int counts[kThreads] = {};
    std::function<void*(int)> work = [&](int i) -> void* {
        for (int r = 0; r < kRounds; ++r) {
            CHECK(pthread_mutex_lock(m) == 0);
            if (inside.fetch_add(1) != 0) ++overlap;
            ++counts[i];
            sleep_us(200);  // holds it across a wait
            inside.fetch_sub(1);
            CHECK(pthread_mutex_unlock(m) == 0);
        }
        return nullptr;
    };
    std::vector<std::function<void*()>> bodies;
    for (int i = 0; i < kThreads; ++i) bodies.push_back([&work, i]() -> void* { return work(i); });
    std::vector<pthread_t> ts;
    for (auto& b : bodies) ts.push_back(spawn(&b));
    for (auto t : ts) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(overlap == 0);
    for (int c : counts) CHECK(c == kRounds);
    delete_shared_mutex(m);
}

TEST_CASE("process-shared condition variable: signalled by another thread and by another process") {
    struct Shm {
        pthread_mutex_t m;
        pthread_cond_t c;
        int value = 0;
    };
    Shm* x = shared_new<Shm>();
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    REQUIRE(pthread_mutex_init(&x->m, &ma) == 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    REQUIRE(pthread_cond_init(&x->c, &ca) == 0);
    Ticker ticker;
    // timed out: ETIMEDOUT with the mutex held again
    CHECK(pthread_mutex_lock(&x->m) == 0);
    struct timespec soon = abs_in(0.02, CLOCK_MONOTONIC);
    int r;
    while ((r = pthread_cond_timedwait(&x->c, &x->m, &soon)) == 0) {
    }
    CHECK(r == ETIMEDOUT);
    CHECK(pthread_mutex_trylock(&x->m) == EBUSY);  // (normal mutex: held, by us)
    CHECK(pthread_mutex_unlock(&x->m) == 0);
    // another thread
    long from = ticker.now();
    auto setter = [&]() -> void* {
        Ticker::await(ticker.ticks, from, kTicks);
        pthread_mutex_lock(&x->m);
        x->value = 1;
        pthread_cond_signal(&x->c);
        pthread_mutex_unlock(&x->m);
        return nullptr;
    };
    pthread_t t = spawn(&setter);
    CHECK(pthread_mutex_lock(&x->m) == 0);
    while (x->value != 1) CHECK(pthread_cond_wait(&x->c, &x->m) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_mutex_unlock(&x->m) == 0);
    CHECK(pthread_join(t, nullptr) == 0);
    // another process
    from = ticker.now();
    pid_t child = fork_child([&] {
        int came = Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;
        pthread_mutex_lock(&x->m);
        x->value = 2;
        pthread_cond_broadcast(&x->c);
        pthread_mutex_unlock(&x->m);
        return came;
    });
    CHECK(pthread_mutex_lock(&x->m) == 0);
    struct timespec later = abs_in(10, CLOCK_MONOTONIC);
    while (x->value != 2) CHECK(pthread_cond_timedwait(&x->c, &x->m, &later) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_mutex_unlock(&x->m) == 0);
    CHECK(wait_child(child) == 0);
    CHECK(pthread_cond_destroy(&x->c) == 0);
    CHECK(pthread_mutex_destroy(&x->m) == 0);
    shared_delete(x);
}

TEST_CASE("process-shared rwlock: a reader waits for another thread's write lock") {
    auto* l = shared_new<pthread_rwlock_t>();
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    REQUIRE(pthread_rwlock_init(l, &a) == 0);
    Ticker ticker;
    std::atomic<bool> locked{false};
    long from = 0;
    int relock = -1, reread = -1;
    auto writer = [&]() -> void* {
        CHECK(pthread_rwlock_wrlock(l) == 0);
        relock = pthread_rwlock_wrlock(l);
        reread = pthread_rwlock_rdlock(l);
        from = ticker.now();
        locked = true;
        Ticker::await(ticker.ticks, from, kTicks);
        CHECK(pthread_rwlock_unlock(l) == 0);
        return nullptr;
    };
    pthread_t t = spawn(&writer);
    while (!locked) sleep_us(100);
    CHECK(pthread_rwlock_tryrdlock(l) == EBUSY);
    CHECK(pthread_rwlock_trywrlock(l) == EBUSY);
    CHECK(pthread_rwlock_rdlock(l) == 0);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_rwlock_tryrdlock(l) == 0);
    CHECK(pthread_rwlock_unlock(l) == 0);
    CHECK(pthread_rwlock_unlock(l) == 0);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(relock == EDEADLK);
    CHECK(reread == EDEADLK);
    CHECK(pthread_rwlock_destroy(l) == 0);
    shared_delete(l);
}

TEST_CASE("process-shared barrier: threads of this process and a child process") {
    auto* b = shared_new<pthread_barrier_t>();
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    REQUIRE(pthread_barrier_init(b, &a, 4) == 0);
    Ticker ticker;
    long from = ticker.now();
    std::atomic<int> serial{0}, passed{0};
    auto member = [&]() -> void* {
        int r = pthread_barrier_wait(b);
        if (r == PTHREAD_BARRIER_SERIAL_THREAD) ++serial;
        else CHECK(r == 0);
        ++passed;
        return nullptr;
    };
    pthread_t t1 = spawn(&member), t2 = spawn(&member);
    pid_t child = fork_child([&] {
        int came = Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;
        int r = pthread_barrier_wait(b);
        return r == 0 || r == PTHREAD_BARRIER_SERIAL_THREAD ? came : 4;
    });
    member();
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_join(t1, nullptr) == 0);
    CHECK(pthread_join(t2, nullptr) == 0);
    CHECK(wait_child(child) == 0);
    CHECK(passed == 3);
    CHECK(serial <= 1);
    CHECK(pthread_barrier_destroy(b) == 0);
    shared_delete(b);
}

TEST_CASE("robust mutex whose owner thread exits: EOWNERDEAD, consistent, then as new") {
    for (bool pshared : {false, true}) {
        CAPTURE(pshared);
        pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_NORMAL, true, pshared);
        auto owner = [&]() -> void* {
            CHECK(pthread_mutex_lock(m) == 0);
            return nullptr;  // exits holding it
        };
        pthread_t t = spawn(&owner);
        CHECK(pthread_join(t, nullptr) == 0);
        CHECK(pthread_mutex_lock(m) == EOWNERDEAD);
        CHECK(pthread_mutex_consistent(m) == 0);
        CHECK(pthread_mutex_unlock(m) == 0);
        CHECK(pthread_mutex_lock(m) == 0);
        CHECK(pthread_mutex_unlock(m) == 0);
        delete_shared_mutex(m);
    }
}

TEST_CASE("robust mutex: a waiter gets EOWNERDEAD when the owner thread exits; not made consistent, ENOTRECOVERABLE") {
    pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_ERRORCHECK, true, false);
    Ticker ticker;
    std::atomic<bool> locked{false};
    long from = 0;
    auto owner = [&]() -> void* {
        CHECK(pthread_mutex_lock(m) == 0);
        from = ticker.now();
        locked = true;
        Ticker::await(ticker.ticks, from, kTicks);
        return nullptr;  // exits holding it
    };
    pthread_t t = spawn(&owner);
    while (!locked) sleep_us(100);
    CHECK(pthread_mutex_lock(m) == EOWNERDEAD);
    CHECK(ticker.now() >= from + kTicks);
    CHECK(pthread_mutex_lock(m) == EDEADLK);
    CHECK(pthread_mutex_unlock(m) == 0);  // without pthread_mutex_consistent
    CHECK(pthread_mutex_lock(m) == ENOTRECOVERABLE);
    CHECK(pthread_mutex_trylock(m) == ENOTRECOVERABLE);
    CHECK(pthread_join(t, nullptr) == 0);
    delete_shared_mutex(m);
}

TEST_CASE("robust process-shared mutex whose owner process dies: EOWNERDEAD") {
    pthread_mutex_t* m = new_shared_mutex(PTHREAD_MUTEX_NORMAL, true, true);
    Ticker ticker;
    auto* locked = shared_new<std::atomic<long>>();
    *locked = -1;
    pid_t child = fork_child([&] {
        if (pthread_mutex_lock(m) != 0) return 2;
        long from = ticker.now();
        *locked = from;
        return Ticker::await(ticker.ticks, from, kTicks) ? 0 : 3;  // dies holding it
    });
    while (*locked < 0) sleep_us(100);
    CHECK(pthread_mutex_lock(m) == EOWNERDEAD);
    CHECK(ticker.now() >= *locked + kTicks);
    CHECK(pthread_mutex_consistent(m) == 0);
    CHECK(pthread_mutex_unlock(m) == 0);
    CHECK(wait_child(child) == 0);
    shared_delete(locked);
    delete_shared_mutex(m);
}

int main(int argc, char** argv) {
    bool mapped = shim_mapped();
    g_patched = mapped;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--latency") g_latency = true;
    if (!runs_as_expected("shared_sync", mapped)) return 1;
    doctest::Context ctx(argc, argv);
    ctx.setOption("no-breaks", true);
    return ctx.run();
}
