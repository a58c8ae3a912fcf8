// pthread semantics that a program may rely on, checked on a plain binary
// (no greenshim code linked in). meson runs it twice: with OS threads, and
// with libgreenshim.so preloaded (every thread a greenlet on one OS thread);
// both runs must pass the same assertions.
//
// GREENSHIM_THREADS_MODE=patched|unpatched (set by meson) makes main() check
// that the library is (or is not) really mapped, so that a run cannot pass
// for the wrong reason.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cxxabi.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>
#include "both_ways.hpp"

namespace {

bool g_patched = false;

double now_s(clockid_t clock = CLOCK_MONOTONIC) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

void sleep_ms(int ms) {
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0 && errno == EINTR) {}
}

int os_threads() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
    return -1;
}

// A semaphore in a struct, so tests read well.
struct Sem {
    sem_t s;
    explicit Sem(unsigned v = 0) { sem_init(&s, 0, v); }
    ~Sem() { sem_destroy(&s); }
    void post() { sem_post(&s); }
    void wait() {
        while (sem_wait(&s) != 0 && errno == EINTR) {}
    }
};

}  // namespace

TEST_CASE("threads: one OS thread when patched, one per thread otherwise") {
    constexpr int kN = 50;
    Sem release, started;
    auto body = [&]() -> void* {
        started.post();
        release.wait();
        return nullptr;
    };
    std::vector<pthread_t> ts;
    for (int i = 0; i < kN; ++i) ts.push_back(spawn(&body));
    for (int i = 0; i < kN; ++i) started.wait();
    int n = os_threads();
    // (one per hub: GREENSHIM_HUBS, 1 unless set)
    const char* hubs = std::getenv("GREENSHIM_HUBS");
    int want = hubs && std::strcmp(hubs, "auto") ? std::atoi(hubs) : 1;
    if (hubs && !std::strcmp(hubs, "auto")) {
        cpu_set_t set;
        want = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    }
    if (g_patched) CHECK(n == want);
    else CHECK(n >= kN + 1);
    for (int i = 0; i < kN; ++i) release.post();
    for (auto t : ts) CHECK(pthread_join(t, nullptr) == 0);
}

TEST_CASE("join: return values, pthread_exit value, self, try/timed join, detached") {
    SUBCASE("return value and pthread_self") {
        pthread_t seen{};
        auto body = [&]() -> void* {
            seen = pthread_self();
            return reinterpret_cast<void*>(uintptr_t(0x1234));
        };
        pthread_t t = spawn(&body);
        void* r = nullptr;
        CHECK(pthread_join(t, &r) == 0);
        CHECK(r == reinterpret_cast<void*>(uintptr_t(0x1234)));
        CHECK(pthread_equal(seen, t));
        CHECK(!pthread_equal(pthread_self(), t));
    }
    SUBCASE("pthread_exit value; join with a null result pointer") {
        auto body = []() -> void* {
            pthread_exit(reinterpret_cast<void*>(uintptr_t(99)));
            return nullptr;
        };
        pthread_t t = spawn(&body);
        void* r = nullptr;
        CHECK(pthread_join(t, &r) == 0);
        CHECK(r == reinterpret_cast<void*>(uintptr_t(99)));
        pthread_t t2 = spawn(&body);
        CHECK(pthread_join(t2, nullptr) == 0);
    }
    SUBCASE("a thread joining itself gets EDEADLK") {
        int got = -1;
        Sem done;
        auto body = [&]() -> void* {
            got = pthread_join(pthread_self(), nullptr);
            done.post();
            return nullptr;
        };
        pthread_t t = spawn(&body);
        done.wait();  // nobody joins it yet
        CHECK(got == EDEADLK);
        CHECK(pthread_join(t, nullptr) == 0);
    }
    SUBCASE("tryjoin EBUSY, timedjoin ETIMEDOUT while it runs; then the value") {
        Sem release;
        auto body = [&]() -> void* {
            release.wait();
            return reinterpret_cast<void*>(uintptr_t(7));
        };
        pthread_t t = spawn(&body);
        void* r = nullptr;
        CHECK(pthread_tryjoin_np(t, &r) == EBUSY);
        struct timespec until = abs_in(0.05);
        double t0 = now_s();
        CHECK(pthread_timedjoin_np(t, &r, &until) == ETIMEDOUT);
        CHECK(now_s() - t0 >= 0.045);
        release.post();
        CHECK(pthread_join(t, &r) == 0);
        CHECK(r == reinterpret_cast<void*>(uintptr_t(7)));
    }
    SUBCASE("joining a detached (still running) thread is EINVAL") {
        Sem release, done;
        auto body = [&]() -> void* {
            release.wait();
            done.post();
            return nullptr;
        };
        pthread_t t = spawn(&body);
        CHECK(pthread_detach(t) == 0);
        CHECK(pthread_join(t, nullptr) == EINVAL);
        release.post();
        done.wait();
    }
}

// glibc checks for a self-join (EDEADLK) before it checks for another joiner
// (EINVAL), so the answer is EDEADLK even while main is joining the thread.
TEST_CASE("self-join while another thread joins it: EDEADLK") {
    int got = -1;
    auto body = [&]() -> void* {
        got = pthread_join(pthread_self(), nullptr);
        return nullptr;
    };
    pthread_t t = spawn(&body);
    CHECK(pthread_join(t, nullptr) == 0);  // main joins first, the thread then joins itself
    CHECK(got == EDEADLK);
}

TEST_CASE("detached threads run to completion") {
    constexpr int kN = 20;
    static std::atomic<int> ran;
    static Sem* done;
    ran = 0;
    Sem d;
    done = &d;
    auto body = [](void*) -> void* {
        sleep_ms(5);
        ++ran;
        done->post();
        return nullptr;
    };
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < kN / 2; ++i) {
        pthread_t t;
        REQUIRE(pthread_create(&t, &attr, body, nullptr) == 0);
    }
    pthread_attr_destroy(&attr);
    for (int i = 0; i < kN / 2; ++i) {
        pthread_t t;
        REQUIRE(pthread_create(&t, nullptr, body, nullptr) == 0);
        CHECK(pthread_detach(t) == 0);
    }
    for (int i = 0; i < kN; ++i) d.wait();
    CHECK(ran == kN);
}

namespace {
std::vector<std::string> g_dtor_log;
struct Noisy {
    const char* name;
    ~Noisy() { g_dtor_log.push_back(name); }
};
bool g_after_exit_ran = false;

[[noreturn]] void deepest(int depth) {
    Noisy n{depth == 2 ? "deepest" : "middle"};
    if (depth < 2) deepest(depth + 1);
    pthread_exit(reinterpret_cast<void*>(uintptr_t(77)));
}

void* exiting_thread(void*) {
    Noisy outer{"outer"};
    deepest(1);
    g_after_exit_ran = true;
    return nullptr;
}
}  // namespace

TEST_CASE("pthread_exit from a nested function runs the C++ destructors on the way") {
    g_dtor_log.clear();
    g_after_exit_ran = false;
    pthread_t t;
    REQUIRE(pthread_create(&t, nullptr, exiting_thread, nullptr) == 0);
    void* r = nullptr;
    CHECK(pthread_join(t, &r) == 0);
    CHECK(r == reinterpret_cast<void*>(uintptr_t(77)));
    CHECK_FALSE(g_after_exit_ran);
    REQUIRE(g_dtor_log.size() == 3);
    CHECK(g_dtor_log[0] == "deepest");
    CHECK(g_dtor_log[1] == "middle");
    CHECK(g_dtor_log[2] == "outer");
}

// pthread_exit is a forced unwind (glibc's, and greenshim's: shim/thread.cpp).
// A handler that catches everything and rethrows is the C++ idiom for cleanup
// on it, and catch (abi::__forced_unwind&) names it; std::uncaught_exceptions
// counts it only once a handler has rethrown it. Under greenshim the
// program's libstdc++ is not the preload's (shim/meson.build): the counts are
// the program's own.
namespace {
struct Counting {
    const char* name;
    ~Counting() { g_dtor_log.push_back(std::string(name) + "=" + std::to_string(std::uncaught_exceptions())); }
};
// (no_sanitize: the forced unwind carries no object, so UBSan calls the
// catch's reference binding a null one, unpatched as patched)
__attribute__((no_sanitize("null"))) void* rethrowing_thread(void* named) {
    Counting outer{"outer"};
    try {
        Counting inner{"inner"};
        if (named) {
            try {
                pthread_exit(reinterpret_cast<void*>(uintptr_t(56)));
            } catch (abi::__forced_unwind&) {
                g_dtor_log.push_back("forced_unwind");
                throw;
            }
        }
        pthread_exit(reinterpret_cast<void*>(uintptr_t(55)));
    } catch (...) {
        g_dtor_log.push_back("handler=" + std::to_string(std::uncaught_exceptions()));
        throw;
    }
    g_after_exit_ran = true;
    return nullptr;
}
}  // namespace

TEST_CASE("pthread_exit is a forced unwind: catch (...) { throw; } and abi::__forced_unwind see it") {
    for (bool named : {false, true}) {
        CAPTURE(named);
        g_dtor_log.clear();
        g_after_exit_ran = false;
        pthread_t t;
        REQUIRE(pthread_create(&t, nullptr, rethrowing_thread, named ? &t : nullptr) == 0);
        void* r = nullptr;
        CHECK(pthread_join(t, &r) == 0);
        CHECK(r == reinterpret_cast<void*>(uintptr_t(named ? 56 : 55)));
        CHECK_FALSE(g_after_exit_ran);
        // (each rethrow of the forced unwind counts once more: libstdc++'s
        // __cxa_rethrow of a foreign exception, unpatched as patched)
        std::vector<std::string> want = named ? std::vector<std::string>{"forced_unwind", "inner=1", "handler=1", "outer=2"}
                                              : std::vector<std::string>{"inner=0", "handler=0", "outer=1"};
        std::string got;
        for (auto& e : g_dtor_log) got += e + " ";
        CAPTURE(got);
        CHECK(g_dtor_log == want);
    }
    // The program's own exceptions still work on a thread afterwards.
    std::string what;
    std::thread([&] {
        try {
            throw std::runtime_error("after");
        } catch (std::exception const& e) {
            what = e.what();
        }
    }).join();
    CHECK(what == "after");
    CHECK(std::uncaught_exceptions() == 0);
}

// pthread_cancel is the same forced unwind, begun in the cancellation point
// the thread waits in (here a read of a pipe nobody writes to, several C++
// frames deep): the frames' destructors run, catch (...) { throw; } sees it.
namespace {
int g_cancel_pipe[2];
std::atomic<bool> g_cancel_ready{false};
void read_deep(int depth) {
    Counting level{depth == 0 ? "deepest" : "middle"};
    if (depth > 0) return read_deep(depth - 1);
    g_cancel_ready = true;
    char c;
    (void)!read(g_cancel_pipe[0], &c, 1);
    g_after_exit_ran = true;
}
void* cancelled_thread(void*) {
    Counting outer{"outer"};
    try {
        read_deep(1);
    } catch (...) {
        g_dtor_log.push_back("handler");
        throw;
    }
    g_after_exit_ran = true;
    return nullptr;
}
}  // namespace

TEST_CASE("pthread_cancel of a thread waiting in read: a forced unwind through its C++ frames") {
    g_dtor_log.clear();
    g_after_exit_ran = false;
    g_cancel_ready = false;
    REQUIRE(pipe(g_cancel_pipe) == 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, nullptr, cancelled_thread, nullptr) == 0);
    while (!g_cancel_ready) sleep_ms(1);
    sleep_ms(20);  // (in its read by now; were it not, the read would act as it begins)
    CHECK(pthread_cancel(t) == 0);
    void* r = nullptr;
    CHECK(pthread_join(t, &r) == 0);
    CHECK(r == PTHREAD_CANCELED);
    CHECK_FALSE(g_after_exit_ran);
    std::string got;
    for (auto& e : g_dtor_log) got += e + " ";
    CAPTURE(got);
    // (the counts as in the test above: one more after each rethrow)
    CHECK(g_dtor_log == std::vector<std::string>{"deepest=0", "middle=0", "handler", "outer=1"});
    // nothing was consumed: a byte written now is there to read
    char c = 0;
    CHECK(write(g_cancel_pipe[1], "x", 1) == 1);
    CHECK(read(g_cancel_pipe[0], &c, 1) == 1);
    CHECK(c == 'x');
    close(g_cancel_pipe[0]);
    close(g_cancel_pipe[1]);
}

namespace {
pthread_key_t g_key, g_key2;
std::vector<long> g_tsd_freed;
std::mutex g_tsd_mu;  // unpatched, destructors run on OS threads at once
int g_resets = 0;
void tsd_dtor(void* v) {
    std::lock_guard<std::mutex> lk(g_tsd_mu);
    g_tsd_freed.push_back(long(reinterpret_cast<intptr_t>(v)));
}
// Sets a new value the first time: destructors run again (up to
// PTHREAD_DESTRUCTOR_ITERATIONS rounds).
void tsd_dtor_resetting(void* v) {
    long x = long(reinterpret_cast<intptr_t>(v));
    {
        std::lock_guard<std::mutex> lk(g_tsd_mu);
        g_tsd_freed.push_back(x);
    }
    if (x < 1000) {
        ++g_resets;
        pthread_setspecific(g_key2, reinterpret_cast<void*>(intptr_t(x + 1000)));
    }
}
}  // namespace

TEST_CASE("thread-specific data: per thread values, destructors at thread exit") {
    g_tsd_freed.clear();
    g_resets = 0;
    REQUIRE(pthread_key_create(&g_key, tsd_dtor) == 0);
    REQUIRE(pthread_key_create(&g_key2, tsd_dtor_resetting) == 0);
    CHECK(pthread_setspecific(g_key, reinterpret_cast<void*>(intptr_t(-1))) == 0);  // main's own

    Sem all_set, release;
    std::atomic<int> own_values_ok{0};
    struct Arg {
        long v;
        bool use_exit;
        Sem* all_set;
        Sem* release;
        std::atomic<int>* ok;
    };
    auto body = [](void* p) -> void* {
        Arg* a = static_cast<Arg*>(p);
        if (pthread_getspecific(g_key) == nullptr) ++*a->ok;  // a new thread starts empty
        pthread_setspecific(g_key, reinterpret_cast<void*>(intptr_t(a->v)));
        if (a->v == 3) pthread_setspecific(g_key2, reinterpret_cast<void*>(intptr_t(3)));
        a->all_set->post();
        a->release->wait();  // every thread has set its value by now
        if (pthread_getspecific(g_key) == reinterpret_cast<void*>(intptr_t(a->v))) ++*a->ok;
        if (a->use_exit) pthread_exit(nullptr);
        return nullptr;
    };
    std::vector<Arg> args;
    for (long v = 1; v <= 4; ++v) args.push_back(Arg{v, v % 2 == 0, &all_set, &release, &own_values_ok});
    // A thread whose value is NULL at exit gets no destructor call.
    Arg nullarg{0, false, &all_set, &release, &own_values_ok};
    std::vector<pthread_t> ts(4);
    for (int i = 0; i < 4; ++i) REQUIRE(pthread_create(&ts[i], nullptr, body, &args[i]) == 0);
    pthread_t tn;
    REQUIRE(pthread_create(&tn, nullptr, body, &nullarg) == 0);
    for (int i = 0; i < 5; ++i) all_set.wait();
    for (int i = 0; i < 5; ++i) release.post();
    for (auto t : ts) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(pthread_join(tn, nullptr) == 0);

    CHECK(own_values_ok == 10);
    std::vector<long> freed = g_tsd_freed;
    std::sort(freed.begin(), freed.end());
    // values 1..4 of g_key; 3 then 1003 of g_key2 (the reset one runs a second round)
    CHECK(freed == std::vector<long>{1, 2, 3, 3, 4, 1003});
    CHECK(g_resets == 1);
    CHECK(pthread_getspecific(g_key) == reinterpret_cast<void*>(intptr_t(-1)));  // main's untouched
    CHECK(pthread_key_delete(g_key) == 0);
    CHECK(pthread_key_delete(g_key2) == 0);
}

namespace {
pthread_once_t g_once = PTHREAD_ONCE_INIT;
std::atomic<int> g_init_runs{0};
std::atomic<int> g_initialized{0};
void slow_init() {
    ++g_init_runs;
    sleep_ms(100);
    g_initialized = 1;
}
}  // namespace

TEST_CASE("pthread_once: a sleeping init runs once, the others wait for it") {
    constexpr int kN = 6;
    pthread_barrier_t start;
    pthread_barrier_init(&start, nullptr, kN);
    std::atomic<int> saw_initialized{0};
    std::atomic<int> waited_long{0};
    auto body = [&]() -> void* {
        pthread_barrier_wait(&start);
        double t0 = now_s();
        CHECK(pthread_once(&g_once, slow_init) == 0);
        if (now_s() - t0 >= 0.09) ++waited_long;
        if (g_initialized == 1) ++saw_initialized;
        return nullptr;
    };
    std::vector<pthread_t> ts;
    for (int i = 0; i < kN; ++i) ts.push_back(spawn(&body));
    for (auto t : ts) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(g_init_runs == 1);
    CHECK(saw_initialized == kN);
    // All start together: the init's caller and the waiters all took ~100 ms.
    CHECK(waited_long == kN);
    CHECK(pthread_once(&g_once, slow_init) == 0);
    CHECK(g_init_runs == 1);
    pthread_barrier_destroy(&start);
}

namespace {
bool stack_contains(pthread_t t, const void* p, size_t* size_out = nullptr) {
    pthread_attr_t attr;
    if (pthread_getattr_np(t, &attr) != 0) return false;
    void* addr = nullptr;
    size_t size = 0;
    int r = pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
    if (r != 0) return false;
    if (size_out) *size_out = size;
    auto lo = reinterpret_cast<uintptr_t>(addr), x = reinterpret_cast<uintptr_t>(p);
    return lo <= x && x < lo + size;
}
}  // namespace

TEST_CASE("pthread_getattr_np: the stack range contains the thread's locals") {
    Sem published, release;
    const void* local_addr = nullptr;
    bool self_ok = false;
    size_t self_size = 0;
    // Frames rather than locals' addresses: under ASan's
    // detect_stack_use_after_return (scripts/test --sanitize) locals live in
    // a "fake stack" on the heap.
    auto body = [&]() -> void* {
        local_addr = __builtin_frame_address(0);
        self_ok = stack_contains(pthread_self(), local_addr, &self_size);
        published.post();
        release.wait();
        return nullptr;
    };
    pthread_t t = spawn(&body);
    published.wait();
    CHECK(self_ok);
    CHECK(self_size >= 16 * 1024);
    CHECK(stack_contains(t, local_addr));  // asked from another thread
    CHECK(stack_contains(pthread_self(), __builtin_frame_address(0)));
    release.post();
    CHECK(pthread_join(t, nullptr) == 0);
}

TEST_CASE("recursive mutex: relock by the owner, EBUSY for others, EPERM for a non-owner unlock") {
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_t m;
    REQUIRE(pthread_mutex_init(&m, &ma) == 0);
    pthread_mutexattr_destroy(&ma);
    CHECK(pthread_mutex_lock(&m) == 0);
    CHECK(pthread_mutex_lock(&m) == 0);
    CHECK(pthread_mutex_trylock(&m) == 0);
    int other_try = -1, other_unlock = -1;
    auto probe = [&]() -> void* {
        other_try = pthread_mutex_trylock(&m);
        other_unlock = pthread_mutex_unlock(&m);
        return nullptr;
    };
    pthread_t t = spawn(&probe);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_try == EBUSY);
    CHECK(other_unlock == EPERM);
    CHECK(pthread_mutex_unlock(&m) == 0);
    CHECK(pthread_mutex_unlock(&m) == 0);
    t = spawn(&probe);  // still held once
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_try == EBUSY);
    CHECK(pthread_mutex_unlock(&m) == 0);
    CHECK(pthread_mutex_unlock(&m) == EPERM);  // not held any more
    auto take = [&]() -> void* {
        other_try = pthread_mutex_trylock(&m);
        if (other_try == 0) other_unlock = pthread_mutex_unlock(&m);
        return nullptr;
    };
    t = spawn(&take);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_try == 0);
    CHECK(other_unlock == 0);
    CHECK(pthread_mutex_destroy(&m) == 0);
}

TEST_CASE("error-checking mutex: EDEADLK on relock, EPERM on foreign or extra unlock") {
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t m;
    REQUIRE(pthread_mutex_init(&m, &ma) == 0);
    pthread_mutexattr_destroy(&ma);
    CHECK(pthread_mutex_lock(&m) == 0);
    CHECK(pthread_mutex_lock(&m) == EDEADLK);
    int other_unlock = -1, other_try = -1;
    auto probe = [&]() -> void* {
        other_unlock = pthread_mutex_unlock(&m);
        other_try = pthread_mutex_trylock(&m);
        return nullptr;
    };
    pthread_t t = spawn(&probe);
    CHECK(pthread_join(t, nullptr) == 0);
    CHECK(other_unlock == EPERM);
    CHECK(other_try == EBUSY);
    CHECK(pthread_mutex_unlock(&m) == 0);
    CHECK(pthread_mutex_unlock(&m) == EPERM);
    CHECK(pthread_mutex_destroy(&m) == 0);
}

TEST_CASE("timed mutex lock times out with ETIMEDOUT while another thread holds it") {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    Sem locked, release;
    auto holder = [&]() -> void* {
        pthread_mutex_lock(&m);
        locked.post();
        release.wait();
        pthread_mutex_unlock(&m);
        return nullptr;
    };
    pthread_t t = spawn(&holder);
    locked.wait();
    struct timespec until = abs_in(0.1);
    double t0 = now_s();
    CHECK(pthread_mutex_timedlock(&m, &until) == ETIMEDOUT);
    double took = now_s() - t0;
    CHECK(took >= 0.095);
    CHECK(took < 1.0);
    struct timespec mono = abs_in(0.05, CLOCK_MONOTONIC);
    t0 = now_s();
    CHECK(pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &mono) == ETIMEDOUT);
    CHECK(now_s() - t0 >= 0.045);
    struct timespec past = abs_in(-1.0);
    CHECK(pthread_mutex_timedlock(&m, &past) == ETIMEDOUT);
    release.post();
    until = abs_in(5.0);
    CHECK(pthread_mutex_timedlock(&m, &until) == 0);  // released meanwhile: got it
    CHECK(pthread_mutex_unlock(&m) == 0);
    CHECK(pthread_join(t, nullptr) == 0);
}

TEST_CASE("condition variables: timedwait times out holding the mutex again; signal wakes") {
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_t m;
    REQUIRE(pthread_mutex_init(&m, &ma) == 0);
    pthread_mutexattr_destroy(&ma);

    SUBCASE("realtime clock (default)") {
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        pthread_mutex_lock(&m);
        struct timespec until = abs_in(0.1);
        double t0 = now_s();
        CHECK(pthread_cond_timedwait(&c, &m, &until) == ETIMEDOUT);
        double took = now_s() - t0;
        CHECK(took >= 0.095);
        CHECK(took < 1.0);
        CHECK(pthread_mutex_unlock(&m) == 0);  // errorcheck: we held it again
        pthread_cond_destroy(&c);
    }
    SUBCASE("monotonic clock from the condattr") {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_t c;
        pthread_cond_init(&c, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_lock(&m);
        struct timespec until = abs_in(0.05, CLOCK_MONOTONIC);
        double t0 = now_s();
        CHECK(pthread_cond_timedwait(&c, &m, &until) == ETIMEDOUT);
        CHECK(now_s() - t0 >= 0.045);
        CHECK(pthread_mutex_unlock(&m) == 0);
        pthread_cond_destroy(&c);
    }
    SUBCASE("a signal before the deadline") {
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        bool ready = false;
        auto signaller = [&]() -> void* {
            sleep_ms(20);
            pthread_mutex_lock(&m);
            ready = true;
            pthread_cond_signal(&c);
            pthread_mutex_unlock(&m);
            return nullptr;
        };
        pthread_mutex_lock(&m);
        pthread_t t = spawn(&signaller);
        struct timespec until = abs_in(5.0);
        int r = 0;
        while (!ready && r == 0) r = pthread_cond_timedwait(&c, &m, &until);
        CHECK(r == 0);
        CHECK(ready);
        CHECK(pthread_mutex_unlock(&m) == 0);
        CHECK(pthread_join(t, nullptr) == 0);
        pthread_cond_destroy(&c);
    }
    pthread_mutex_destroy(&m);
}

TEST_CASE("rwlock: readers hold it together, a writer alone") {
    pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
    constexpr int kReaders = 3;
    pthread_barrier_t all_reading;
    pthread_barrier_init(&all_reading, nullptr, kReaders + 1);
    Sem release_readers, writer_trying, writer_in, writer_go, late_trying;
    std::atomic<int> readers_inside{0}, writing{0}, late_ok{0};
    int writer_saw_readers = -1;

    auto reader = [&]() -> void* {
        CHECK(pthread_rwlock_rdlock(&l) == 0);
        ++readers_inside;
        pthread_barrier_wait(&all_reading);  // passes only if all readers are inside at once
        release_readers.wait();
        --readers_inside;
        CHECK(pthread_rwlock_unlock(&l) == 0);
        return nullptr;
    };
    auto writer = [&]() -> void* {
        writer_trying.post();
        CHECK(pthread_rwlock_wrlock(&l) == 0);
        writer_saw_readers = readers_inside;
        writing = 1;
        writer_in.post();
        writer_go.wait();
        writing = 0;
        CHECK(pthread_rwlock_unlock(&l) == 0);
        return nullptr;
    };
    auto late_reader = [&]() -> void* {
        late_trying.post();
        CHECK(pthread_rwlock_rdlock(&l) == 0);
        if (writing == 0) ++late_ok;
        CHECK(pthread_rwlock_unlock(&l) == 0);
        return nullptr;
    };

    std::vector<pthread_t> rs;
    for (int i = 0; i < kReaders; ++i) rs.push_back(spawn(&reader));
    pthread_barrier_wait(&all_reading);
    CHECK(readers_inside == kReaders);
    CHECK(pthread_rwlock_trywrlock(&l) == EBUSY);
    struct timespec until = abs_in(0.05);
    CHECK(pthread_rwlock_timedwrlock(&l, &until) == ETIMEDOUT);
    CHECK(pthread_rwlock_tryrdlock(&l) == 0);  // one more reader is fine
    CHECK(pthread_rwlock_unlock(&l) == 0);

    pthread_t w = spawn(&writer);
    writer_trying.wait();
    for (int i = 0; i < kReaders; ++i) release_readers.post();
    writer_in.wait();
    CHECK(writer_saw_readers == 0);
    CHECK(pthread_rwlock_tryrdlock(&l) == EBUSY);
    CHECK(pthread_rwlock_trywrlock(&l) == EBUSY);
    until = abs_in(0.05);
    CHECK(pthread_rwlock_timedrdlock(&l, &until) == ETIMEDOUT);
    pthread_t late[2] = {spawn(&late_reader), spawn(&late_reader)};
    late_trying.wait();
    late_trying.wait();
    sleep_ms(20);  // not needed for correctness: gives the late readers time to block
    writer_go.post();
    for (auto t : rs) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(pthread_join(w, nullptr) == 0);
    for (auto t : late) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(late_ok == 2);
    CHECK(pthread_rwlock_destroy(&l) == 0);
    pthread_barrier_destroy(&all_reading);
}

TEST_CASE("semaphores: trywait EAGAIN, timedwait ETIMEDOUT, posts wake waiters, getvalue") {
    sem_t s;
    REQUIRE(sem_init(&s, 0, 0) == 0);
    // errno is read at once: doctest's own output may change it.
    errno = 0;
    int r = sem_trywait(&s), e = errno;
    CHECK(r == -1);
    CHECK(e == EAGAIN);
    struct timespec until = abs_in(0.05);
    double t0 = now_s();
    errno = 0;
    r = sem_timedwait(&s, &until);
    e = errno;
    CHECK(r == -1);
    CHECK(e == ETIMEDOUT);
    CHECK(now_s() - t0 >= 0.045);

    std::atomic<int> taken{0};
    auto consumer = [&]() -> void* {
        for (int i = 0; i < 3; ++i) {
            while (sem_wait(&s) != 0) CHECK(errno == EINTR);
            ++taken;
        }
        return nullptr;
    };
    pthread_t c1 = spawn(&consumer), c2 = spawn(&consumer);
    sleep_ms(10);  // the consumers are (most likely) waiting; correct either way
    CHECK(taken == 0);
    for (int i = 0; i < 6; ++i) CHECK(sem_post(&s) == 0);
    CHECK(pthread_join(c1, nullptr) == 0);
    CHECK(pthread_join(c2, nullptr) == 0);
    CHECK(taken == 6);
    int v = -1;
    CHECK(sem_getvalue(&s, &v) == 0);
    CHECK(v == 0);
    sem_post(&s);
    sem_post(&s);
    CHECK(sem_getvalue(&s, &v) == 0);
    CHECK(v == 2);
    CHECK(sem_trywait(&s) == 0);
    until = abs_in(1.0);
    CHECK(sem_timedwait(&s, &until) == 0);
    CHECK(sem_destroy(&s) == 0);
}

TEST_CASE("barriers: nobody passes before all arrive; one serial thread per round") {
    constexpr int kN = 5, kRounds = 4;
    pthread_barrier_t b;
    REQUIRE(pthread_barrier_init(&b, nullptr, kN) == 0);
    std::atomic<int> arrived[kRounds] = {};
    std::atomic<int> serial[kRounds] = {};
    std::atomic<int> early{0};
    auto body = [&]() -> void* {
        for (int r = 0; r < kRounds; ++r) {
            ++arrived[r];
            int x = pthread_barrier_wait(&b);
            if (x == PTHREAD_BARRIER_SERIAL_THREAD) ++serial[r];
            else CHECK(x == 0);
            if (arrived[r] != kN) ++early;
        }
        return nullptr;
    };
    std::vector<pthread_t> ts;
    for (int i = 0; i < kN; ++i) ts.push_back(spawn(&body));
    for (auto t : ts) CHECK(pthread_join(t, nullptr) == 0);
    CHECK(early == 0);
    for (int r = 0; r < kRounds; ++r) CHECK(serial[r] == 1);
    CHECK(pthread_barrier_destroy(&b) == 0);
}

int main(int argc, char** argv) {
    bool mapped = shim_mapped();
    g_patched = mapped;
    if (!runs_as_expected("pthread_details", mapped)) return 1;
    doctest::Context ctx(argc, argv);
    return ctx.run();
}
