// Producers and consumers with std::thread, std::mutex and
// std::condition_variable around a bounded queue: a plain C++ program, no
// greenshim code. Under greenshim every std::thread is a greenlet and every
// wait parks it; the output is the same as with OS threads.
//
// Two producers put 60 numbered items each into a queue of capacity 4; three
// slow consumers (1 ms per item) take them until each takes a stop marker.
// Everything printed is deterministic: totals, per-producer order, bounds.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace {

constexpr int kProducers = 2;
constexpr int kConsumers = 3;
constexpr int kItems = 60;  // per producer
constexpr std::size_t kCapacity = 4;
constexpr int kStop = -1;

class BoundedQueue {
public:
    void put(int v) {
        std::unique_lock lock(mu_);
        if (q_.size() == kCapacity) ++full_waits_;
        not_full_.wait(lock, [&] { return q_.size() < kCapacity; });
        q_.push_back(v);
        if (q_.size() > max_len_) max_len_ = q_.size();
        not_empty_.notify_one();
    }
    int take() {
        std::unique_lock lock(mu_);
        not_empty_.wait(lock, [&] { return !q_.empty(); });
        int v = q_.front();
        q_.pop_front();
        taken_.push_back(v);
        not_full_.notify_one();
        return v;
    }
    // After all threads are joined.
    const std::vector<int>& taken() const { return taken_; }
    std::size_t max_len() const { return max_len_; }
    int full_waits() const { return full_waits_; }

private:
    std::mutex mu_;
    std::condition_variable not_full_, not_empty_;
    std::deque<int> q_;
    std::vector<int> taken_;  // in the order taken, all consumers
    std::size_t max_len_ = 0;
    int full_waits_ = 0;
};

}  // namespace

int main() {
    BoundedQueue q;
    std::vector<int> per_consumer(kConsumers, 0);
    std::vector<long> sums(kConsumers, 0);

    std::vector<std::thread> consumers;
    for (int c = 0; c < kConsumers; ++c) {
        consumers.emplace_back([&, c] {
            for (;;) {
                int v = q.take();
                if (v == kStop) break;
                ++per_consumer[c];
                sums[c] += v;
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
        producers.emplace_back([&, p] {
            for (int i = 0; i < kItems; ++i) q.put(p * 1000 + i);
        });
    }
    for (auto& t : producers) t.join();
    for (int c = 0; c < kConsumers; ++c) q.put(kStop);
    for (auto& t : consumers) t.join();

    int total = 0;
    long sum = 0;
    int busy_consumers = 0;
    for (int c = 0; c < kConsumers; ++c) {
        total += per_consumer[c];
        sum += sums[c];
        busy_consumers += per_consumer[c] > 0;
    }
    long want_sum = 0;
    for (int p = 0; p < kProducers; ++p)
        for (int i = 0; i < kItems; ++i) want_sum += p * 1000 + i;

    std::printf("consumed %d items, sum %ld (expected %d, %ld)\n", total, sum, kProducers * kItems, want_sum);
    for (int p = 0; p < kProducers; ++p) {
        std::vector<int> mine;
        for (int v : q.taken())
            if (v != kStop && v / 1000 == p) mine.push_back(v % 1000);
        bool in_order = int(mine.size()) == kItems;
        for (int i = 0; in_order && i < kItems; ++i) in_order = mine[i] == i;
        std::printf("producer %d: %zu items taken, in the order produced: %s\n", p, mine.size(), in_order ? "yes" : "NO");
    }
    std::printf("queue never longer than %zu: %s\n", kCapacity, q.max_len() <= kCapacity ? "yes" : "NO");
    std::printf("producers waited on a full queue: %s\n", q.full_waits() > 0 ? "yes" : "NO");
    std::printf("every consumer took items: %s\n", busy_consumers == kConsumers ? "yes" : "NO");
    std::printf("%d consumers stopped\n", kConsumers);
    bool ok = total == kProducers * kItems && sum == want_sum && q.max_len() <= kCapacity;
    return ok ? 0 : 1;
}
