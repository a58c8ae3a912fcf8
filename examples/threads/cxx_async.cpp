// std::async, std::future, std::promise, std::packaged_task and
// std::shared_future: a plain C++ program, no greenshim code. libstdc++'s
// futures wait through syscall(SYS_futex), which greenshim turns into a
// greenlet park. Output is deterministic and the same with OS threads.
#include <chrono>
#include <cstdio>
#include <future>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

long sum_range(long from, long to) {
    long s = 0;
    for (long i = from; i < to; ++i) s += i % 7 == 0 ? i : 0;
    return s;
}

long slow_square(long x) {
    std::this_thread::sleep_for(20ms);
    return x * x;
}

}  // namespace

int main() {
    // 1. Split a sum over 8 std::async tasks.
    std::vector<std::future<long>> parts;
    for (long k = 0; k < 8; ++k) parts.push_back(std::async(std::launch::async, sum_range, k * 125000, (k + 1) * 125000));
    long total = 0;
    for (auto& f : parts) total += f.get();
    std::printf("async sum of multiples of 7 below 1000000: %ld (expected %ld)\n", total, sum_range(0, 1000000));

    // 2. Tasks that sleep run concurrently: 10 x 20 ms take well under 200 ms.
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::future<long>> squares;
    for (long i = 1; i <= 10; ++i) squares.push_back(std::async(std::launch::async, slow_square, i));
    long sq = 0;
    for (auto& f : squares) sq += f.get();
    auto took = std::chrono::steady_clock::now() - t0;
    std::printf("sum of squares 1..10: %ld, the sleeping tasks overlapped: %s\n", sq, took < 190ms ? "yes" : "NO");

    // 3. promise/future across threads, with a wait_for that times out first.
    std::promise<std::string> p;
    std::future<std::string> f = p.get_future();
    std::promise<void> go;
    std::future<void> go_f = go.get_future();
    std::thread setter([&] {
        go_f.wait();
        std::this_thread::sleep_for(30ms);
        p.set_value("value from the setter thread");
    });
    bool timed_out = f.wait_for(1ms) == std::future_status::timeout;
    go.set_value();
    std::printf("wait_for before the value: %s\n", timed_out ? "timeout" : "NOT a timeout");
    std::printf("get: %s\n", f.get().c_str());
    setter.join();

    // 4. An exception travels through a future.
    auto bad = std::async(std::launch::async, []() -> int { throw std::runtime_error("boom from a task"); });
    try {
        bad.get();
        std::printf("no exception: WRONG\n");
    } catch (const std::runtime_error& e) {
        std::printf("exception through the future: %s\n", e.what());
    }

    // 5. packaged_task run on a std::thread.
    std::packaged_task<int(int, int)> task([](int a, int b) { return a * b; });
    auto tf = task.get_future();
    std::thread runner(std::move(task), 6, 7);
    std::printf("packaged_task: %d\n", tf.get());
    runner.join();

    // 6. One shared_future released to five waiting threads.
    std::promise<int> start;
    std::shared_future<int> sf = start.get_future().share();
    std::vector<std::future<int>> waiters;
    for (int i = 0; i < 5; ++i)
        waiters.push_back(std::async(std::launch::async, [sf, i] { return sf.get() + i; }));
    std::this_thread::sleep_for(10ms);
    start.set_value(100);
    std::printf("shared_future waiters got:");
    for (auto& w : waiters) std::printf(" %d", w.get());
    std::printf("\n");

    // 7. launch::deferred runs on get(), in this thread.
    auto here = std::this_thread::get_id();
    auto d = std::async(std::launch::deferred, [here] { return std::this_thread::get_id() == here; });
    std::printf("deferred task ran in the caller: %s\n", d.get() ? "yes" : "NO");
    return total == sum_range(0, 1000000) && sq == 385 ? 0 : 1;
}
