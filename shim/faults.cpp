// Fault injection: the per-thread random draws and the counters (faults.hpp).
#include "faults.hpp"

#include <atomic>
#include <cstdio>

#include "shim.hpp"

namespace greenshim::shim::faults {

namespace {
std::uint64_t g_seed = 0;
std::uint64_t g_threshold = 0;  // a draw below it injects: RATE * 2^64
bool g_report = false;
std::atomic<std::uint32_t> g_threads{0};
std::atomic<std::uint64_t> g_eagain{0}, g_eintr{0}, g_short{0}, g_wakes{0};

struct ThreadDraws {
    bool seeded = false;
    int wake_fd = -1;  // the wait the last spurious wake ended, until a real one
    int wake_events = 0;
    std::uint64_t state = 0;
};
thread_local ThreadDraws t_draws __attribute__((tls_model("initial-exec")));

std::uint64_t splitmix64(std::uint64_t& s) noexcept {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::uint64_t draw() noexcept {
    ThreadDraws& t = t_draws;
    if (!t.seeded) {
        // Threads in their order of first use: the main thread is 0.
        std::uint64_t index = g_threads.fetch_add(1, std::memory_order_relaxed);
        t.state = g_seed ^ (index * 0xd1b54a32d192ed03ull);
        t.seeded = true;
    }
    return splitmix64(t.state);
}

bool hit() noexcept { return draw() < g_threshold; }

void count(std::atomic<std::uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }

// At exit, when asked: written with the real write(2), nothing buffered.
__attribute__((destructor)) void report_at_exit() {
    if (!g_active || !g_report) return;
    Counts c = counts();
    char line[160];
    int n = std::snprintf(line, sizeof line,
                          "greenshim: faults injected: eagain=%llu eintr=%llu short=%llu wake=%llu\n",
                          (unsigned long long)c.eagain, (unsigned long long)c.eintr,
                          (unsigned long long)c.short_transfers, (unsigned long long)c.wakes);
    if (n > 0) (void)!REAL(write)(2, line, std::size_t(n));
}
}  // namespace

void configure(std::uint64_t seed, double rate, bool report) noexcept {
    g_seed = seed;
    // 2^64 * rate, saturating at 1 (every draw but the largest hits).
    g_threshold = rate >= 1.0 ? ~std::uint64_t(0) : std::uint64_t(rate * 18446744073709551616.0);
    g_report = report;
    g_active = g_threshold != 0;
}

Failure failure() noexcept {
    std::uint64_t r = draw();
    if (r >= g_threshold) return Failure::none;
    return (r & 1) ? Failure::eintr : Failure::eagain;
}

void injected(Failure f) noexcept {
    if (f == Failure::eagain) count(g_eagain);
    else if (f == Failure::eintr) count(g_eintr);
}

bool spurious_wake(int fd, int events) noexcept {
    ThreadDraws& t = t_draws;
    if (t.wake_fd == fd && t.wake_events == events) {  // its caller came back: wait for real
        t.wake_fd = -1;
        return false;
    }
    if (!hit()) return false;
    t.wake_fd = fd;
    t.wake_events = events;
    count(g_wakes);
    return true;
}

std::size_t shorter(std::size_t n) noexcept {
    if (n < 2 || !hit()) return n;
    count(g_short);
    return 1 + std::size_t(draw() % (n - 1));
}

Counts counts() noexcept {
    return {g_eagain.load(std::memory_order_relaxed), g_eintr.load(std::memory_order_relaxed),
            g_short.load(std::memory_order_relaxed), g_wakes.load(std::memory_order_relaxed)};
}

}  // namespace greenshim::shim::faults
