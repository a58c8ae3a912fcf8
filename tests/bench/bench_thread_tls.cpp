// Issue 13's costs of per-thread TLS (runtime/src/thread_tls.hpp), measured
// on the module alone (it is not wired into the runtime yet):
//
//   switch     a main <-> fiber round trip with raw Boost.Context, without a
//              thread-pointer switch, with wrfsbase, with arch_prctl; printed
//              per switch (half a round trip)
//   lifecycle  ThreadTls::create + destroy per second; and a whole "thread"
//              (fiber on a reused stack + its own block + exit duties) per
//              second, next to the same fiber without a block
//   memory     _dl_get_tls_static_info's figures; heap allocated and RSS
//              touched per parked block (each block switched to once, errno
//              and a __thread variable written); pages touched per block
//              placed by create_in at the top of its own mapping
//
//   bench_thread_tls [ROUND_TRIPS [BLOCKS]]   (default 2,000,000 and 10,000)
//
// Targets (issue 13): <= 12 KiB touched per parked thread for a C program;
// >= 500,000 thread create+join per second (the block's share of it here).
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_common.hpp"
#include "thread_tls.hpp"

namespace ctx = boost::context;
using greenshim::detail::ThreadTls;

namespace {

__thread long t_var = 1;

enum class Mode { none, tp_switch };

// ns per round trip main -> fiber -> main; with tp_switch, each side sets the
// other's thread pointer right before its resume.
double round_trip(long n, Mode mode) {
    ThreadTls* mine = ThreadTls::current();
    ThreadTls* other = mode == Mode::tp_switch ? ThreadTls::create() : nullptr;
    ctx::fiber f{[mine, mode](ctx::fiber&& c) {
        for (;;) {
            if (mode == Mode::tp_switch) ThreadTls::switch_to(mine);
            c = std::move(c).resume();
        }
        return std::move(c);
    }};
    if (other) ThreadTls::switch_to(other);
    f = std::move(f).resume();  // start it
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) {
        if (other) ThreadTls::switch_to(other);
        f = std::move(f).resume();
    }
    std::int64_t t1 = bench::now_ns();
    // f is unwound on its own TLS: it switches to ours before anything else
    // runs on main's side. (Unwinding needs none: its frames keep nothing.)
    f = {};
    ThreadTls::switch_to(mine);
    ThreadTls::destroy(other);
    return double(t1 - t0) / double(n);
}

// One stack, reused by every fiber (each ends before the next starts), as a
// pooled greenlet stack would be.
struct ReusedStack {
    ctx::stack_context sc;
    ctx::stack_context allocate() { return sc; }
    void deallocate(ctx::stack_context&) noexcept {}
};

// A whole "thread" per iteration: a fiber on the reused stack, with or
// without its own block (create, switch in, errno + __thread, exit duties,
// switch out, destroy). Threads per second.
double threads_per_s(long n, bool own_tls, ctx::stack_context sc) {
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) {
        ThreadTls* mine = ThreadTls::current();
        ThreadTls* t = own_tls ? ThreadTls::create() : nullptr;
        ctx::fiber f{std::allocator_arg, ReusedStack{sc}, [t, mine](ctx::fiber&& c) {
                         errno = 0;
                         ++t_var;
                         if (t) {
                             t->exit_duties();
                             ThreadTls::switch_to(mine);
                         }
                         return std::move(c);
                     }};
        if (t) ThreadTls::switch_to(t);
        f = std::move(f).resume();
        ThreadTls::destroy(t);
    }
    std::int64_t t1 = bench::now_ns();
    return double(n) * 1e9 / double(t1 - t0);
}

double create_destroy_per_s(long n) {
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) ThreadTls::destroy(ThreadTls::create());
    std::int64_t t1 = bench::now_ns();
    return double(n) * 1e9 / double(t1 - t0);
}

__attribute__((noinline)) void touch_tls() {
    errno = EAGAIN;
    t_var = 42;
}

// A parked thread's block: it ran once (errno and a __thread written).
__attribute__((noinline)) void run_once(ThreadTls* t) {
    ThreadTls* back = ThreadTls::current();
    ThreadTls::switch_to(t);
    touch_tls();
    ThreadTls::switch_to(back);
}

long rss_kib() { return bench::proc_status_field(0, "VmRSS"); }

}  // namespace

int main(int argc, char** argv) {
    long n = argc > 1 ? std::atol(argv[1]) : 2000000;
    long blocks = argc > 2 ? std::atol(argv[2]) : 10000;
    if (n <= 0 || blocks <= 0) {
        std::fprintf(stderr, "usage: bench_thread_tls [ROUND_TRIPS [BLOCKS]]\n");
        return 2;
    }
    if (!ThreadTls::supported()) {
        std::printf("thread_tls: unsupported here: %s\n", ThreadTls::unsupported_reason());
        return 0;
    }
    const ThreadTls::Info& info = ThreadTls::info();
    std::printf("thread_tls: glibc %s, static TLS + TCB %zu B (align %zu; TCB %zu B), switch by %s, malloc state %s\n",
                info.glibc_version, info.static_size, info.static_align, info.tcb_size,
                info.wrfsbase ? "wrfsbase" : "arch_prctl", info.malloc_shared ? "shared per OS thread" : "not glibc's");

    // 1. switch
    const int reps = 5;
    double none = 1e18, wr = 1e18, sys = 1e18;
    for (int r = 0; r < reps; ++r) {
        none = std::min(none, round_trip(n, Mode::none));
        if (info.wrfsbase) wr = std::min(wr, round_trip(n, Mode::tp_switch));
        ThreadTls::force_syscall_switch(true);
        sys = std::min(sys, round_trip(std::max(1000L, n / 20), Mode::tp_switch));
        ThreadTls::force_syscall_switch(false);
    }
    std::printf("switch (per switch = half a main -> fiber -> main round trip, best of %d):\n", reps);
    std::printf("  %-36s %8.1f ns\n", "fiber switch, shared TLS", none / 2);
    if (info.wrfsbase) std::printf("  %-36s %8.1f ns  (+%.1f)\n", "fiber switch + wrfsbase", wr / 2, (wr - none) / 2);
    std::printf("  %-36s %8.1f ns  (+%.1f)\n", "fiber switch + arch_prctl", sys / 2, (sys - none) / 2);

    // 2. lifecycle
    long m = std::max(1000L, n / 10);
    std::size_t stack_size = 64 * 1024;
    void* stack = mmap(nullptr, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ctx::stack_context sc;
    sc.sp = static_cast<char*>(stack) + stack_size;
    sc.size = stack_size;
    double cd = 0, with = 0, without = 0;
    for (int r = 0; r < reps; ++r) {
        cd = std::max(cd, create_destroy_per_s(m));
        with = std::max(with, threads_per_s(m, true, sc));
        without = std::max(without, threads_per_s(m, false, sc));
    }
    munmap(stack, stack_size);
    std::printf("lifecycle (best of %d, %ld each):\n", reps, m);
    std::printf("  %-36s %8.0f k/s  (%.0f ns)\n", "ThreadTls create + destroy", cd / 1e3, 1e9 / cd);
    std::printf("  %-36s %8.0f k/s  (%.0f ns)\n", "fiber thread, shared TLS", without / 1e3, 1e9 / without);
    std::printf("  %-36s %8.0f k/s  (%.0f ns)\n", "fiber thread, own TLS + exit duties", with / 1e3, 1e9 / with);

    // 3. memory: parked blocks
    std::vector<ThreadTls*> parked;
    parked.reserve(std::size_t(blocks));
    for (int i = 0; i < 100; ++i) ThreadTls::destroy(ThreadTls::create());  // warm up
    long rss0 = rss_kib();
    std::size_t heap0 = mallinfo2().uordblks;
    for (long i = 0; i < blocks; ++i) {
        ThreadTls* t = ThreadTls::create();
        run_once(t);
        parked.push_back(t);
    }
    long rss1 = rss_kib();
    std::size_t heap1 = mallinfo2().uordblks;
    for (ThreadTls* t : parked) ThreadTls::destroy(t);
    double rss_per = double(rss1 - rss0) * 1024 / double(blocks);
    double heap_per = double(heap1 - heap0) / double(blocks);

    // The same, each block at the top of its own mapping (as at the top of a
    // stack): pages touched, by mincore.
    std::size_t len = (ThreadTls::bytes_for_create_in() + 4095) / 4096 * 4096;
    long sample = std::min(blocks, 1000L), touched_pages = 0;
    std::vector<std::pair<void*, ThreadTls*>> placed;
    for (long i = 0; i < sample; ++i) {
        void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ThreadTls* t = ThreadTls::create_in(mem, len);
        run_once(t);
        unsigned char vec[16] = {};
        mincore(mem, len, vec);
        for (std::size_t p = 0; p < len / 4096; ++p) touched_pages += vec[p] & 1;
        placed.emplace_back(mem, t);
    }
    for (auto& [mem, t] : placed) {
        ThreadTls::destroy(t);
        munmap(mem, len);
    }
    double placed_per = double(touched_pages) * 4096 / double(sample);
    std::printf("memory per parked block (%ld blocks; this C++ program's static TLS is %zu B):\n", blocks,
                info.static_size);
    std::printf("  %-36s %8.0f B\n", "heap allocated (create)", heap_per);
    std::printf("  %-36s %8.0f B\n", "RSS touched (create)", rss_per);
    std::printf("  %-36s %8.0f B  (%ld-page mappings)\n", "pages touched (create_in)", placed_per, long(len / 4096));

    std::printf("result thread_tls switch_ns=%.1f switch_wrfsbase_ns=%.1f switch_arch_prctl_ns=%.1f "
                "create_destroy_per_s=%.0f thread_shared_per_s=%.0f thread_own_per_s=%.0f static_size=%zu "
                "heap_per_block=%.0f rss_per_block=%.0f pages_per_placed_block=%.0f\n",
                none / 2, info.wrfsbase ? wr / 2 : 0.0, sys / 2, cd, without, with, info.static_size, heap_per, rss_per,
                placed_per);
    char detail[96];
    std::snprintf(detail, sizeof detail, " (%.0f B)", std::max(rss_per, heap_per));
    bench::report_target("tls bytes per parked thread / 12 KiB", std::max(rss_per, heap_per) / 12288, 1.0, true,
                         detail);
    std::snprintf(detail, sizeof detail, " (%.0f/s)", with);
    bench::report_target("fiber thread with own TLS / 500k per s", with / 500000, 1.0, false, detail);
    return 0;
}
