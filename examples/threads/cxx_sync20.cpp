// C++20 synchronisation: std::latch, std::barrier, std::counting_semaphore,
// std::binary_semaphore, std::atomic<T>::wait/notify, std::jthread with
// std::stop_token and std::condition_variable_any. A plain C++ program, no
// greenshim code; libstdc++ implements these waits with
// syscall(SYS_futex, ...) (and sem_t), which greenshim parks on. Output is
// deterministic and the same with OS threads.
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <mutex>
#include <semaphore>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

int main() {
    bool ok = true;

    // 1. std::latch: 6 workers count down; main waits for all of them.
    {
        std::latch done(6);
        std::atomic<int> work{0};
        std::vector<std::jthread> ts;
        for (int i = 0; i < 6; ++i)
            ts.emplace_back([&, i] {
                std::this_thread::sleep_for(std::chrono::milliseconds(5 * (6 - i)));
                work += i + 1;
                done.count_down();
            });
        done.wait();
        std::printf("latch: all 6 counted down, work %d\n", work.load());
        ok &= work == 21;
    }

    // 2. std::barrier with a completion step: 4 threads, 3 phases.
    {
        std::atomic<int> arrived{0};
        int phase = 0;
        std::vector<int> seen_per_phase;
        std::barrier sync(4, [&]() noexcept {
            seen_per_phase.push_back(arrived.exchange(0));
            ++phase;
        });
        std::vector<std::jthread> ts;
        for (int i = 0; i < 4; ++i)
            ts.emplace_back([&] {
                for (int k = 0; k < 3; ++k) {
                    ++arrived;
                    sync.arrive_and_wait();
                }
            });
        ts.clear();  // joins
        std::printf("barrier: %d phases, arrivals per phase:", phase);
        for (int n : seen_per_phase) std::printf(" %d", n);
        std::printf("\n");
        ok &= phase == 3;
    }

    // 3. std::counting_semaphore(2): 8 threads, never more than 2 inside.
    {
        std::counting_semaphore<8> slots(2);
        std::atomic<int> inside{0}, most{0}, finished{0};
        std::vector<std::jthread> ts;
        for (int i = 0; i < 8; ++i)
            ts.emplace_back([&] {
                slots.acquire();
                int now = ++inside;
                int m = most.load();
                while (now > m && !most.compare_exchange_weak(m, now)) {}
                std::this_thread::sleep_for(10ms);
                --inside;
                ++finished;
                slots.release();
            });
        ts.clear();
        std::printf("counting_semaphore: %d finished, at most %d inside at once\n", finished.load(), most.load());
        ok &= finished == 8 && most == 2;
        bool got = slots.try_acquire_for(5ms) && slots.try_acquire_for(5ms);
        bool third = slots.try_acquire_for(20ms);
        std::printf("counting_semaphore: two try_acquire_for succeed: %s, a third times out: %s\n", got ? "yes" : "NO",
                    third ? "NO" : "yes");
    }

    // 4. std::binary_semaphore ping-pong: strict alternation.
    {
        std::binary_semaphore ping(0), pong(0);
        std::vector<int> order;
        std::jthread other([&] {
            for (int i = 0; i < 5; ++i) {
                ping.acquire();
                order.push_back(2 * i + 1);
                pong.release();
            }
        });
        for (int i = 0; i < 5; ++i) {
            order.push_back(2 * i);
            ping.release();
            pong.acquire();
        }
        other.join();
        std::printf("binary_semaphore ping-pong:");
        for (int v : order) std::printf(" %d", v);
        std::printf("\n");
    }

    // 5. std::atomic<int>::wait / notify_all: waiters sleep until the value changes.
    {
        std::atomic<int> flag{0};
        std::atomic<int> woke{0};
        std::vector<std::jthread> ts;
        for (int i = 0; i < 5; ++i)
            ts.emplace_back([&] {
                flag.wait(0);
                woke += flag.load();
            });
        std::this_thread::sleep_for(20ms);
        int early = woke.load();
        flag.store(7);
        flag.notify_all();
        ts.clear();
        std::printf("atomic wait: none woke early: %s, after notify_all woke %d (sum %d)\n", early == 0 ? "yes" : "NO",
                    woke.load() / 7, woke.load());
        ok &= early == 0 && woke == 35;
    }

    // 6. std::atomic<bool> hand-off chain with notify_one.
    {
        constexpr int kN = 6;
        std::atomic<int> turn{0};
        std::vector<int> order;
        std::vector<std::jthread> ts;
        for (int i = kN - 1; i >= 0; --i)
            ts.emplace_back([&, i] {
                for (int t = turn.load(); t != i; t = turn.load()) turn.wait(t);
                order.push_back(i);
                turn.store(i + 1);
                turn.notify_all();
            });
        ts.clear();
        std::printf("atomic turn-taking order:");
        for (int v : order) std::printf(" %d", v);
        std::printf("\n");
    }

    // 7. std::jthread stop: a worker waiting on condition_variable_any with its stop_token.
    {
        std::mutex mu;
        std::condition_variable_any cv;
        int ticks = 0;
        bool stopped_by_token = false;
        std::jthread worker([&](std::stop_token st) {
            std::unique_lock lock(mu);
            while (!st.stop_requested()) {
                if (!cv.wait(lock, st, [&] { return ticks > 100; })) {
                    stopped_by_token = st.stop_requested();
                    break;
                }
            }
        });
        std::this_thread::sleep_for(20ms);
        worker.request_stop();
        worker.join();
        std::printf("jthread: the worker saw request_stop(): %s\n", stopped_by_token ? "yes" : "NO");
        ok &= stopped_by_token;
    }
    return ok ? 0 : 1;
}
