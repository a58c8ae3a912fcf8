// Benchmark 1, switch: the cost of one round trip between two execution
// contexts on one core, three ways, side by side in one process:
//
//   greenlet   two greenlets switching with Greenlet::switch_to (A -> B -> A)
//   fiber      a raw boost::context::fiber resume round trip: the floor
//   condvar    two OS threads ping-ponging through a mutex + condition
//              variables, both pinned to one core (sched_setaffinity)
//   greenlet-tls  the same greenlets, each with thread-locals of its own, as
//              greenrun gives each thread: each switch also switches the
//              thread pointer (wrfsbase, or an arch_prctl system call where
//              the CPU or kernel does not allow it: then ROUND_TRIPS/20)
//   fiber-deep (for the analysis) the raw fiber round trip again, with the
//              resume made DEPTH non-inlined calls deep on both sides, as a
//              greenlet switch is (switch_to -> switch_with -> Runtime::jump
//              -> fiber::resume -> jump_fcontext): Boost's jump_fcontext leaves
//              by `jmp`, not `ret`, so the CPU's return-stack predictor is one
//              entry off after every switch and each return on the way back
//              mispredicts. The difference fiber-deep - fiber is that cost.
//
//   bench_switch [ROUND_TRIPS [REPS]]     (default 2,000,000 and 7)
//
// Each figure is the best of REPS repetitions (the condvar one runs
// ROUND_TRIPS/20 round trips: each costs microseconds, not nanoseconds).
// Target: greenlet <= 2x raw fiber.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "bench_common.hpp"
#include "greenshim/greenlet.hpp"

namespace ctx = boost::context;
using greenshim::Greenlet;

namespace {

// ns per round trip: A -> B -> A, both greenlets made with Greenlet::create;
// own_tls: each with thread-locals of its own (set_own_thread_locals), so
// each switch also switches the thread pointer; -1 if they cannot have them.
double greenlet_round_trip(long n, bool own_tls = false) {
    double result = 0;
    std::shared_ptr<Greenlet> a, b;
    b = Greenlet::create([&] {
        for (;;) a->switch_to();
    }, "bench-b");
    a = Greenlet::create([&] {
        b->switch_to();  // start b; it switches straight back
        std::int64_t t0 = bench::now_ns();
        for (long i = 0; i < n; ++i) b->switch_to();
        std::int64_t t1 = bench::now_ns();
        result = double(t1 - t0) / double(n);
    }, "bench-a");
    if (own_tls && !(a->set_own_thread_locals() && b->set_own_thread_locals())) return -1;
    a->switch_to();  // runs the loop; a returns to its parent (main) when done
    b.reset();       // b is suspended in its loop: unwound here
    a.reset();
    return result;
}

// ns per round trip: main -> fiber -> main with raw boost::context.
double fiber_round_trip(long n) {
    ctx::fiber f{[](ctx::fiber&& c) {
        for (;;) c = std::move(c).resume();
        return std::move(c);
    }};
    f = std::move(f).resume();  // start it
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) f = std::move(f).resume();
    std::int64_t t1 = bench::now_ns();
    return double(t1 - t0) / double(n);
}

// resume() DEPTH calls below the caller, none inlined.
template <int D>
__attribute__((noinline)) void resume_deep(ctx::fiber& f) {
    if constexpr (D == 0) {
        f = std::move(f).resume();
    } else {
        resume_deep<D - 1>(f);
        asm volatile("" ::: "memory");  // not a tail call
    }
}

// ns per round trip, the resume DEPTH calls deep on both sides.
template <int D>
double fiber_deep_round_trip(long n) {
    ctx::fiber f{[](ctx::fiber&& c) {
        for (;;) resume_deep<D>(c);
        return std::move(c);
    }};
    resume_deep<D>(f);
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) resume_deep<D>(f);
    std::int64_t t1 = bench::now_ns();
    return double(t1 - t0) / double(n);
}

bool pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;  // 0: the calling thread
}

// ns per round trip: thread A wakes B and waits, B wakes A; both on `cpu`.
double condvar_round_trip(long n, int cpu) {
    std::mutex m;
    std::condition_variable to_b, to_a;
    int turn = 0;  // 0: A's turn, 1: B's turn
    double result = 0;
    std::thread b([&] {
        pin_to(cpu);
        std::unique_lock lk(m);
        for (long i = 0; i <= n; ++i) {
            to_b.wait(lk, [&] { return turn == 1; });
            turn = 0;
            to_a.notify_one();
        }
    });
    std::thread a([&] {
        pin_to(cpu);
        std::unique_lock lk(m);
        // one warm-up round trip, then the timed ones
        turn = 1;
        to_b.notify_one();
        to_a.wait(lk, [&] { return turn == 0; });
        std::int64_t t0 = bench::now_ns();
        for (long i = 0; i < n; ++i) {
            turn = 1;
            to_b.notify_one();
            to_a.wait(lk, [&] { return turn == 0; });
        }
        std::int64_t t1 = bench::now_ns();
        result = double(t1 - t0) / double(n);
    });
    a.join();
    b.join();
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    long n = argc > 1 ? std::atol(argv[1]) : 2000000;
    int reps = argc > 2 ? std::atoi(argv[2]) : 7;
    if (n <= 0 || reps <= 0) {
        std::fprintf(stderr, "usage: bench_switch [ROUND_TRIPS [REPS]]\n");
        return 2;
    }
    long n_cv = std::max(1000L, n / 20);
    // The core this process may run on first (taskset may have narrowed it).
    cpu_set_t mine;
    CPU_ZERO(&mine);
    sched_getaffinity(0, sizeof mine, &mine);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &mine)) ++cpu;

    const bool tls_syscall = Greenlet::own_thread_locals_switch_by_syscall();
    long n_tls = tls_syscall ? n_cv : n;
    double g = 1e18, f = 1e18, c = 1e18, d1 = 1e18, d4 = 1e18, gt = 1e18;
    for (int r = 0; r < reps; ++r) {  // interleaved, so drift hits all alike
        g = std::min(g, greenlet_round_trip(n));
        gt = std::min(gt, greenlet_round_trip(n_tls, true));
        f = std::min(f, fiber_round_trip(n));
        c = std::min(c, condvar_round_trip(n_cv, cpu));
        d1 = std::min(d1, fiber_deep_round_trip<1>(n));
        d4 = std::min(d4, fiber_deep_round_trip<4>(n));
    }
    std::printf("switch: round trip (A -> B -> A), best of %d; %ld round trips (condvar: %ld, both threads on cpu %d)\n",
                reps, n, n_cv, cpu);
    std::printf("  %-34s %9.1f ns\n", "greenlet switch_to", g);
    std::printf("  %-34s %9.1f ns\n", "raw boost fiber resume", f);
    if (gt >= 0)
        std::printf("  %-34s %9.1f ns   (thread pointer: %s)\n", "greenlet switch_to, own TLS", gt,
                    tls_syscall ? "arch_prctl" : "wrfsbase");
    else
        std::printf("  %-34s %9s      (%s)\n", "greenlet switch_to, own TLS", "-",
                    Greenlet::own_thread_locals_unsupported());
    std::printf("  %-34s %9.1f ns\n", "OS threads, condvar", c);
    std::printf("  %-34s %9.1f ns   (analysis: return mispredictions)\n", "raw fiber, resume 1 call deep", d1);
    std::printf("  %-34s %9.1f ns   (+%.1f ns per level per round trip)\n", "raw fiber, resume 4 calls deep", d4,
                (d4 - f) / 4);
    std::printf("result switch greenlet_ns=%.1f fiber_ns=%.1f condvar_ns=%.1f greenlet_vs_fiber=%.3f condvar_vs_greenlet=%.2f "
                "fiber_deep1_ns=%.1f fiber_deep4_ns=%.1f greenlet_tls_ns=%.1f tls_switch=%s\n",
                g, f, c, g / f, c / g, d1, d4, gt, gt < 0 ? "none" : tls_syscall ? "arch_prctl" : "wrfsbase");
    char detail[96];
    std::snprintf(detail, sizeof detail, " (%.1f ns vs %.1f ns)", g, f);
    bench::report_target("switch greenlet/raw-fiber", g / f, 2.0, true, detail);
    return 0;
}
