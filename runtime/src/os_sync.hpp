// The runtime's own lock and condition variable, for its registries and its
// helper threads' queues: futexes through raw system calls.
//
// Why not std::mutex: it is glibc's pthread_mutex_t, whose calls the shim
// interposes, and the shim keeps its own state in a program's mutex there
// (the program's mutexes are greenlet locks, whoever takes them, on any OS
// thread). A lock of the runtime's must stay the kernel's on every OS thread
// (a hub, a helper, a carrier, a fork's atfork handler in a greenlet), so it
// never goes through the interposed functions at all.
//
// Costs: lock/unlock uncontended one compare-and-swap and one exchange
// (~5-10 ns); contended, a futex wait and wake. notify_*: an increment, and
// a futex wake system call (~1 us) whether or not anyone waits. May not: be
// used by greenlets to wait for each other (it blocks the OS thread).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <mutex>

#include "greenshim/raw_syscall.hpp"

namespace greenshim::detail {

inline long futex_raw(std::atomic<int>* word, int op, int val, const timespec* rel = nullptr) noexcept {
    return raw_syscall(SYS_futex, long(word), op, val, long(rel));
}

// Drepper's mutex ("Futexes Are Tricky", mutex 2): 0 free, 1 held, 2 held
// and maybe waited for. Meets BasicLockable (std::lock_guard, unique_lock).
class OsMutex {
public:
    void lock() noexcept {
        int c = 0;
        if (!word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) lock_slow(c);
    }
    bool try_lock() noexcept {
        int c = 0;
        return word_.compare_exchange_strong(c, 1, std::memory_order_acquire);
    }
    void unlock() noexcept {
        if (word_.exchange(0, std::memory_order_release) == 2) futex_raw(&word_, FUTEX_WAKE_PRIVATE, 1);
    }
    // In a fork's child: whoever held it did not come along.
    void reset() noexcept { word_.store(0, std::memory_order_relaxed); }

private:
    void lock_slow(int c) noexcept {
        if (c != 2) c = word_.exchange(2, std::memory_order_acquire);
        while (c != 0) {
            futex_raw(&word_, FUTEX_WAIT_PRIVATE, 2);
            c = word_.exchange(2, std::memory_order_acquire);
        }
    }
    std::atomic<int> word_{0};
};

// A sequence number the waiters sleep on: a wait reads it under the lock and
// sleeps only while it is unchanged, so a notify made after the read (once
// the lock is let go) is never lost. Spurious wakeups happen; callers loop.
class OsCondition {
public:
    void wait(std::unique_lock<OsMutex>& lk) noexcept { wait_ns(lk, -1); }
    // Waits at most ns nanoseconds (< 0: no limit); false if they passed
    // with no notify seen (the caller looks at its condition either way).
    bool wait_ns(std::unique_lock<OsMutex>& lk, std::int64_t ns) noexcept {
        int seen = seq_.load(std::memory_order_relaxed);
        lk.unlock();
        timespec rel{time_t(ns / 1000000000), long(ns % 1000000000)};
        long r = futex_raw(&seq_, FUTEX_WAIT_PRIVATE, seen, ns < 0 ? nullptr : &rel);
        lk.lock();
        return !(r == -ETIMEDOUT);
    }
    // Waits until pred() holds or `seconds` pass; pred()'s last value.
    template <class Pred>
    bool wait_for_seconds(std::unique_lock<OsMutex>& lk, int seconds, Pred pred) noexcept {
        timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        std::int64_t end = (std::int64_t(now.tv_sec) + seconds) * 1000000000 + now.tv_nsec;
        while (!pred()) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            std::int64_t left = end - (std::int64_t(now.tv_sec) * 1000000000 + now.tv_nsec);
            if (left <= 0) return pred();
            wait_ns(lk, left);
        }
        return true;
    }
    void notify_one() noexcept {
        seq_.fetch_add(1, std::memory_order_release);
        futex_raw(&seq_, FUTEX_WAKE_PRIVATE, 1);
    }
    void notify_all() noexcept {
        seq_.fetch_add(1, std::memory_order_release);
        futex_raw(&seq_, FUTEX_WAKE_PRIVATE, INT_MAX);
    }

private:
    std::atomic<int> seq_{0};
};

}  // namespace greenshim::detail
