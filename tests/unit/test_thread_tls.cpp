// ThreadTls (runtime/src/thread_tls.hpp): Boost.Context fibers, each with its
// own static TLS block, DTV and TCB, switched as a greenlet thread would be.
// Built with -fstack-protector-strong (tests/unit/meson.build). Under a
// sanitizer the module reports unsupported and every case but the first is
// skipped.
#include <dlfcn.h>
#include <locale.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <valgrind/valgrind.h>

#include "thread_tls.hpp"

namespace ctx = boost::context;
using greenshim::detail::ThreadTls;

namespace {

__thread int t_counter = 7;
__thread int t_fiber_id = 0;
__thread void* t_home __attribute__((tls_model("initial-exec"))) = nullptr;

// Fiber stacks mmap'd and registered with valgrind (as the runtime's are):
// otherwise a switch between two heap-allocated stacks looks to valgrind like
// a huge stack frame and it flags what the new stack reads.
struct RegisteredStack {
    static constexpr std::size_t kSize = 256 * 1024;
    unsigned id = 0;
    ctx::stack_context allocate() {
        void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        ctx::stack_context sc;
        sc.size = kSize;
        sc.sp = static_cast<char*>(p) + kSize;
        id = VALGRIND_STACK_REGISTER(p, sc.sp);
        return sc;
    }
    void deallocate(ctx::stack_context& sc) noexcept {
        VALGRIND_STACK_DEREGISTER(id);
        munmap(static_cast<char*>(sc.sp) - sc.size, sc.size);
    }
};

// A Boost.Context fiber with a block of its own, switched the way the
// runtime will switch greenlet threads: the thread pointer right before each
// context switch.
struct TlsFiber {
    ThreadTls* tls = nullptr;
    ThreadTls* resumer = nullptr;
    ctx::fiber f;
    ctx::fiber back;
    bool done = false;
    std::function<void(TlsFiber&)> body;

    explicit TlsFiber(std::function<void(TlsFiber&)> b, ThreadTls* t = nullptr)
        : tls(t ? t : ThreadTls::create()), body(std::move(b)) {
        REQUIRE(tls != nullptr);
        f = ctx::fiber(std::allocator_arg, RegisteredStack{}, [this](ctx::fiber&& c) {
            back = std::move(c);
            body(*this);
            tls->exit_duties();
            done = true;
            ThreadTls::switch_to(resumer);
            return std::move(back);
        });
    }
    // From outside: runs the fiber until it yields or ends.
    void resume() {
        resumer = ThreadTls::current();
        ThreadTls::switch_to(tls);
        f = std::move(f).resume();
    }
    // Inside the fiber: back to whoever resumed it.
    void yield() {
        ThreadTls::switch_to(resumer);
        back = std::move(back).resume();
    }
    void run_to_end() {
        while (!done) resume();
    }
    ~TlsFiber() {
        if (!done) run_to_end();
        ThreadTls::destroy(tls);
    }
    TlsFiber(const TlsFiber&) = delete;
};

#define SKIP_UNLESS_SUPPORTED()                                                  \
    do {                                                                         \
        if (!ThreadTls::supported()) {                                           \
            MESSAGE("ThreadTls unsupported: " << std::string(ThreadTls::unsupported_reason())); \
            return;                                                              \
        }                                                                        \
    } while (0)

// Round-robin until all are done.
void run_all(std::vector<TlsFiber*> fs) {
    for (bool any = true; any;) {
        any = false;
        for (TlsFiber* f : fs)
            if (!f->done) {
                f->resume();
                any = true;
            }
    }
}

std::uintptr_t stack_guard() {
    std::uintptr_t v;
    __asm__ volatile("mov %%fs:0x28, %0" : "=r"(v));
    return v;
}

std::vector<std::string> g_log;

struct Tracked {
    std::string name;
    explicit Tracked(const char* n) : name(std::string(n) + "@" + std::to_string(t_fiber_id)) {
        g_log.push_back("ctor " + name);
    }
    ~Tracked() { g_log.push_back("dtor " + name); }
};
// Function-local: each is constructed on its own first use (namespace-scope
// thread_locals of one file are all constructed on the first use of any).
Tracked& tl_a() {
    thread_local Tracked t("a");
    return t;
}
Tracked& tl_b() {
    thread_local Tracked t("b");
    return t;
}

volatile int g_seen_in_handler = -1;
void on_usr1(int) { g_seen_in_handler = t_counter; }

// Uses a stack buffer: with -fstack-protector-strong it checks %fs:0x28.
__attribute__((noinline)) int guarded(const char* s) {
    char buf[64];
    std::strncpy(buf, s, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    return int(std::strlen(buf));
}

}  // namespace

TEST_CASE("ThreadTls: supported here (glibc 2.36, x86-64), unless a sanitizer is loaded") {
#if defined(__SANITIZE_ADDRESS__)
    CHECK_FALSE(ThreadTls::supported());
    MESSAGE("reason: " << std::string(ThreadTls::unsupported_reason()));
#else
    INFO("reason: " << std::string(ThreadTls::unsupported_reason()));
    REQUIRE(ThreadTls::supported());
    const auto& i = ThreadTls::info();
    MESSAGE("glibc " << std::string(i.glibc_version) << ", static TLS " << i.static_size << " B (align " << i.static_align
                     << "), TCB " << i.tcb_size << " B, wrfsbase " << i.wrfsbase << ", malloc shared "
                     << i.malloc_shared << " (tcache at tp" << i.tcache_offset << ", arena at tp" << i.arena_offset
                     << ")");
    CHECK(i.static_size >= i.tcb_size);
    CHECK(i.tcb_size == 0x940);
    CHECK(i.malloc_shared == !RUNNING_ON_VALGRIND);
    if (RUNNING_ON_VALGRIND) CHECK_FALSE(i.wrfsbase);
    CHECK(std::string(ThreadTls::unsupported_reason()).empty());
#endif
}

TEST_CASE("ThreadTls: a __thread counter per fiber, inherited variables, errno") {
    SKIP_UNLESS_SUPPORTED();
    static int home;
    t_home = &home;
    REQUIRE(ThreadTls::inherit(&t_home, sizeof t_home));
    CHECK_FALSE(ThreadTls::inherit(&home, sizeof home));  // not TLS
    t_counter = 100;
    errno = EBADF;
    std::vector<int> seen_a, seen_b;
    void* home_a = nullptr;
    TlsFiber a([&](TlsFiber& self) {
        home_a = t_home;
        for (int i = 0; i < 3; ++i) {
            seen_a.push_back(++t_counter);
            errno = EINTR;
            self.yield();
            CHECK(errno == EINTR);
        }
    });
    TlsFiber b([&](TlsFiber& self) {
        for (int i = 0; i < 5; ++i) {
            seen_b.push_back(++t_counter);
            errno = ENOENT;
            self.yield();
            CHECK(errno == ENOENT);
        }
    });
    CHECK(ThreadTls::in(a.tls, t_counter) == 7);  // the TLS image, before a runs
    run_all({&a, &b});
    CHECK(seen_a == std::vector<int>{8, 9, 10});
    CHECK(seen_b == std::vector<int>{8, 9, 10, 11, 12});
    CHECK(home_a == &home);
    CHECK(t_counter == 100);
    CHECK(errno == EBADF);
}

TEST_CASE("ThreadTls: C++ thread_local constructed per fiber, destroyed in reverse order at its exit") {
    SKIP_UNLESS_SUPPORTED();
    g_log.clear();
    TlsFiber a([](TlsFiber& self) {
        t_fiber_id = 1;
        (void)tl_a().name;
        self.yield();
        (void)tl_b().name;
    });
    TlsFiber b([](TlsFiber& self) {
        t_fiber_id = 2;
        (void)tl_b().name;
        (void)tl_a().name;
        self.yield();
    });
    a.resume();
    b.resume();
    a.resume();  // a ends
    CHECK(a.done);
    b.resume();  // b ends
    CHECK(b.done);
    std::string joined;
    for (auto& l : g_log) joined += l + "; ";
    INFO(joined);
    CHECK(g_log == std::vector<std::string>{"ctor a@1", "ctor b@2", "ctor a@2", "ctor b@1", "dtor b@1", "dtor a@1",
                                            "dtor a@2", "dtor b@2"});
}

TEST_CASE("ThreadTls: strerror_r, uselocale and ctype per fiber") {
    SKIP_UNLESS_SUPPORTED();
    locale_t before = uselocale(nullptr);
    locale_t utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", nullptr);
    REQUIRE(utf8 != nullptr);
    TlsFiber a([&](TlsFiber& self) {
        CHECK(uselocale(nullptr) == LC_GLOBAL_LOCALE);
        uselocale(utf8);
        CHECK(MB_CUR_MAX == 6);
        self.yield();
        CHECK(uselocale(nullptr) == utf8);
        CHECK(MB_CUR_MAX == 6);
        char buf[128];
        CHECK(std::string(strerror_r(EINVAL, buf, sizeof buf)) == "Invalid argument");
        CHECK(std::string(strerror(12345)) == "Unknown error 12345");  // glibc's per-thread buffer, freed at exit
        uselocale(LC_GLOBAL_LOCALE);
    });
    TlsFiber b([&](TlsFiber& self) {
        CHECK(uselocale(nullptr) == LC_GLOBAL_LOCALE);
        CHECK(MB_CUR_MAX == 1);
        CHECK(std::isalpha('q'));
        CHECK(std::toupper('q') == 'Q');
        char buf[128];
        CHECK(std::string(strerror_r(ENOENT, buf, sizeof buf)) == "No such file or directory");
        self.yield();
        CHECK(uselocale(nullptr) == LC_GLOBAL_LOCALE);
    });
    run_all({&a, &b});
    CHECK(uselocale(nullptr) == before);

    // A thread made by a thread that has its own locale starts on the global
    // one (the block is made inside a fiber: a greenlet thread's
    // pthread_create).
    int nested_mb = 0;
    bool nested_alpha = false, outer_kept = false;
    TlsFiber outer([&](TlsFiber&) {
        uselocale(utf8);
        {
            TlsFiber inner([&](TlsFiber&) {
                nested_mb = int(MB_CUR_MAX);
                nested_alpha = std::isalpha('z') && std::tolower('Z') == 'z' && uselocale(nullptr) == LC_GLOBAL_LOCALE;
            });
            inner.run_to_end();
        }
        outer_kept = uselocale(nullptr) == utf8 && MB_CUR_MAX == 6;
        uselocale(LC_GLOBAL_LOCALE);
    });
    outer.run_to_end();
    CHECK(nested_mb == 1);
    CHECK(nested_alpha);
    CHECK(outer_kept);
    freelocale(utf8);
}

TEST_CASE("ThreadTls: fibers on an OS thread other than main") {
    SKIP_UNLESS_SUPPORTED();
    bool verified = false, restored = false, shared_tcache = false;
    std::vector<int> seen;
    std::string reason;
    std::thread th([&] {
        verified = ThreadTls::verify_running_thread();
        if (!verified) reason = ThreadTls::unsupported_reason();
        t_counter = 1000;
        errno = EDOM;
        void* freed_in_fiber = nullptr;
        {
            TlsFiber a([&](TlsFiber& self) {
                seen.push_back(++t_counter);
                self.yield();
                seen.push_back(++t_counter);
                freed_in_fiber = std::malloc(72);
                std::free(freed_in_fiber);
            });
            TlsFiber b([&](TlsFiber&) { seen.push_back(t_counter += 10); });
            run_all({&a, &b});
        }
        void* again = std::malloc(72);
        shared_tcache = again == freed_in_fiber;  // this thread's own tcache
        std::free(again);
        restored = t_counter == 1000 && errno == EDOM;
    });
    th.join();
    INFO(reason);
    CHECK(verified);
    CHECK(seen == std::vector<int>{8, 17, 9});
    CHECK(restored);
    if (ThreadTls::info().malloc_shared) CHECK(shared_tcache);
}

TEST_CASE("ThreadTls: a dlopen'ed module's __thread variables, for blocks made before and after the dlopen") {
    SKIP_UNLESS_SUPPORTED();
    std::vector<int> a_seen, b_seen, c_seen;
    int (*bump)() = nullptr;
    TlsFiber a([&](TlsFiber& self) {
        self.yield();  // the module is loaded meanwhile
        for (int i = 0; i < 3; ++i) a_seen.push_back(bump());
        self.yield();
        a_seen.push_back(bump());
    });
    TlsFiber b([&](TlsFiber& self) {
        self.yield();
        b_seen.push_back(bump());
        // A failed dlopen leaves a dlerror() result in this thread: exit_duties frees it.
        CHECK(dlopen("/nonexistent/libnothing.so", RTLD_NOW) == nullptr);
    });
    a.resume();
    b.resume();
    void* mod = dlopen(TLS_MOD_PATH, RTLD_NOW | RTLD_LOCAL);
    REQUIRE_MESSAGE(mod, dlerror());
    bump = reinterpret_cast<int (*)()>(dlsym(mod, "tls_mod_bump"));
    auto addr = reinterpret_cast<int* (*)()>(dlsym(mod, "tls_mod_addr"));
    bool found = bump && addr;
    REQUIRE(found);
    a.resume();
    b.resume();
    CHECK(bump() == 6);
    CHECK(bump() == 7);
    TlsFiber c([&](TlsFiber&) {
        c_seen.push_back(bump());
        c_seen.push_back(int(addr() != nullptr));
    });
    run_all({&a, &b, &c});
    CHECK(a_seen == std::vector<int>{6, 7, 8, 9});
    CHECK(b_seen == std::vector<int>{6});
    CHECK(c_seen == std::vector<int>{6, 1});
    CHECK(bump() == 8);
}

TEST_CASE("ThreadTls: pthread_self() is the fiber's own TCB") {
    SKIP_UNLESS_SUPPORTED();
    pthread_t main_self = pthread_self();
    pthread_t sa{}, sb{};
    TlsFiber a([&](TlsFiber& self) {
        sa = pthread_self();
        self.yield();
        CHECK(pthread_equal(sa, pthread_self()));
    });
    TlsFiber b([&](TlsFiber&) { sb = pthread_self(); });
    run_all({&a, &b});
    CHECK(sa == reinterpret_cast<pthread_t>(a.tls->thread_pointer()));
    CHECK(sb == reinterpret_cast<pthread_t>(b.tls->thread_pointer()));
    CHECK(sa != sb);
    CHECK(sa != main_self);
    CHECK(pthread_self() == main_self);
}

namespace {
std::vector<std::string> g_key_log;
pthread_key_t g_key_hi;
void key_dtor(void* v) {
    g_key_log.push_back(static_cast<const char*>(v));
    // Set again once: glibc runs another round for it.
    if (std::string(static_cast<const char*>(v)).find("again") == std::string::npos) {
        static const char again_a[] = "hi-a again", again_b[] = "hi-b again";
        pthread_setspecific(g_key_hi, std::string(static_cast<const char*>(v)) == "hi-a" ? again_a : again_b);
    }
}
}  // namespace

TEST_CASE("ThreadTls: glibc's pthread keys per fiber, with destructors at its exit") {
    SKIP_UNLESS_SUPPORTED();
    pthread_key_t lo;
    REQUIRE(pthread_key_create(&lo, nullptr) == 0);
    std::vector<pthread_key_t> filler;
    for (int i = 0; i < 40; ++i) {
        pthread_key_t k;
        REQUIRE(pthread_key_create(&k, nullptr) == 0);
        filler.push_back(k);
    }
    REQUIRE(pthread_key_create(&g_key_hi, key_dtor) == 0);
    REQUIRE(g_key_hi >= 32);  // in a second-level block, malloc'd by glibc
    static const char main_v[] = "main", hi_a[] = "hi-a", hi_b[] = "hi-b";
    pthread_setspecific(lo, main_v);
    pthread_setspecific(g_key_hi, main_v);
    g_key_log.clear();
    TlsFiber a([&](TlsFiber& self) {
        CHECK(pthread_getspecific(lo) == nullptr);
        CHECK(pthread_getspecific(g_key_hi) == nullptr);
        pthread_setspecific(lo, hi_a);
        pthread_setspecific(g_key_hi, hi_a);
        self.yield();
        CHECK(pthread_getspecific(lo) == hi_a);
        CHECK(pthread_getspecific(g_key_hi) == hi_a);
    });
    TlsFiber b([&](TlsFiber& self) {
        pthread_setspecific(g_key_hi, hi_b);
        self.yield();
        CHECK(pthread_getspecific(g_key_hi) == hi_b);
        CHECK(pthread_getspecific(lo) == nullptr);
    });
    run_all({&a, &b});
    CHECK(g_key_log == std::vector<std::string>{"hi-a", "hi-a again", "hi-b", "hi-b again"});
    CHECK(pthread_getspecific(lo) == main_v);
    CHECK(pthread_getspecific(g_key_hi) == main_v);
    pthread_setspecific(g_key_hi, nullptr);
    pthread_key_delete(g_key_hi);
    pthread_key_delete(lo);
    for (pthread_key_t k : filler) pthread_key_delete(k);
}

TEST_CASE("ThreadTls: malloc and free in fibers (glibc's tcache shared per OS thread)") {
    SKIP_UNLESS_SUPPORTED();
    std::vector<void*> from_a, from_b;
    TlsFiber a([&](TlsFiber& self) {
        for (int i = 0; i < 1000; ++i) from_a.push_back(std::malloc(std::size_t(16 + (i * 37) % 3000)));
        from_a.push_back(std::malloc(1 << 20));  // mmap'd
        self.yield();
        for (void* p : from_b) std::free(p);
    });
    TlsFiber b([&](TlsFiber& self) {
        for (int i = 0; i < 1000; ++i) from_b.push_back(std::calloc(1, std::size_t(8 + i % 500)));
        self.yield();
        for (void* p : from_a) std::free(p);
    });
    run_all({&a, &b});
    void* freed_in_fiber = nullptr;
    {
        TlsFiber c([&](TlsFiber&) {
            freed_in_fiber = std::malloc(40);
            std::free(freed_in_fiber);
        });
        c.run_to_end();
    }
    void* again = std::malloc(40);
    if (ThreadTls::info().malloc_shared) CHECK(again == freed_in_fiber);  // the tcache's head
    std::free(again);
}

namespace {
jmp_buf g_jb;
}

TEST_CASE("ThreadTls: the stack protector and the pointer guard (setjmp/longjmp) in fibers") {
    SKIP_UNLESS_SUPPORTED();
    std::uintptr_t main_guard = stack_guard(), fiber_guard = 0;
    int jumped = 0;
    TlsFiber a([&](TlsFiber& self) {
        fiber_guard = stack_guard();
        CHECK(guarded("hello, canary") == 13);
        self.yield();
        CHECK(guarded("still fine") == 10);
        if (setjmp(g_jb) == 0) longjmp(g_jb, 1);
        jumped = 1;
    });
    a.run_to_end();
    CHECK(fiber_guard == main_guard);
    CHECK(jumped == 1);
    CHECK(guarded("main") == 4);
}

TEST_CASE("ThreadTls: switching back restores the OS thread's own TLS exactly") {
    SKIP_UNLESS_SUPPORTED();
    ThreadTls* os = ThreadTls::current();
    pthread_t self_before = pthread_self();
    t_counter = 4242;
    errno = ERANGE;
    locale_t loc_before = uselocale(nullptr);
    TlsFiber a([&](TlsFiber& self) {
        t_counter = 1;
        errno = EAGAIN;
        self.yield();
        t_counter = 2;
    });
    a.resume();
    CHECK(ThreadTls::current() == os);
    CHECK(t_counter == 4242);
    CHECK(errno == ERANGE);
    a.run_to_end();
    CHECK(ThreadTls::current() == os);
    CHECK(pthread_self() == self_before);
    CHECK(t_counter == 4242);
    CHECK(errno == ERANGE);
    CHECK(uselocale(nullptr) == loc_before);
    CHECK(ThreadTls::in(os, t_counter) == 4242);
}

TEST_CASE("ThreadTls: a signal handler sees the running fiber's thread-locals; sched_getcpu works") {
    SKIP_UNLESS_SUPPORTED();
    struct sigaction sa {}, old{};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, &old);
    t_counter = 5;
    int in_fiber = -1, cpu = -1;
    TlsFiber a([&](TlsFiber&) {
        t_counter = 42;
        raise(SIGUSR1);
        in_fiber = g_seen_in_handler;
        cpu = sched_getcpu();
    });
    a.run_to_end();
    CHECK(in_fiber == 42);
    CHECK(cpu >= 0);
    raise(SIGUSR1);
    CHECK(g_seen_in_handler == 5);
    sigaction(SIGUSR1, &old, nullptr);
}

TEST_CASE("ThreadTls: fork from a fiber: the child keeps the fiber's TLS") {
    SKIP_UNLESS_SUPPORTED();
    int status = -1;
    TlsFiber a([&](TlsFiber&) {
        t_counter = 77;
        pid_t pid = fork();
        if (pid == 0) {
            bool ok = t_counter == 77 && pthread_self() == reinterpret_cast<pthread_t>(ThreadTls::current());
            errno = 0;
            void* p = std::malloc(100);
            ok = ok && p && errno == 0;
            std::free(p);
            char buf[64];
            ok = ok && std::string(strerror_r(EPIPE, buf, sizeof buf)) == "Broken pipe";
            // By exec: under valgrind an exiting child would report the
            // parent's fibers as leaks and exit 1.
            execl("/bin/sh", "sh", "-c", ok ? "exit 0" : "exit 3", static_cast<char*>(nullptr));
            _exit(4);
        }
        waitpid(pid, &status, 0);
    });
    a.run_to_end();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("ThreadTls: create_in puts the block at the top of the caller's memory") {
    SKIP_UNLESS_SUPPORTED();
    std::size_t n = ThreadTls::bytes_for_create_in();
    std::size_t len = (n + 4095) / 4096 * 4096;
    void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    ThreadTls* t = ThreadTls::create_in(mem, len);
    REQUIRE(t);
    CHECK(reinterpret_cast<char*>(t) > static_cast<char*>(mem));
    CHECK(reinterpret_cast<char*>(t) + ThreadTls::info().tcb_size <= static_cast<char*>(mem) + len);
    int seen = 0;
    {
        TlsFiber a([&](TlsFiber&) { seen = ++t_counter; }, t);
        a.tls->set_stack(mem, len);
        a.run_to_end();
    }
    CHECK(seen == 8);
    munmap(mem, len);
}

TEST_CASE("ThreadTls: 2,000 threads' worth of blocks come and go without growing the heap") {
    SKIP_UNLESS_SUPPORTED();
    auto one = [] {
        TlsFiber a([](TlsFiber&) {
            ++t_counter;
            errno = EIO;
            void* p = std::malloc(200);
            std::free(p);
            thread_local std::string s(100, 'x');  // a destructor to register, heap to free
            s += "y";
        });
        a.run_to_end();
    };
    for (int i = 0; i < 50; ++i) one();  // warm up the allocator
    std::size_t before = mallinfo2().uordblks;
    for (int i = 0; i < (RUNNING_ON_VALGRIND ? 200 : 2000); ++i) one();
    std::size_t after = mallinfo2().uordblks;
    INFO("heap in use " << before << " -> " << after);
    CHECK(after <= before + 4096);
}
