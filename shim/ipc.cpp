// System V message queues and semaphores (msgrcv, msgsnd, semop,
// semtimedop) and POSIX message queues (mq_receive, mq_send and their timed
// forms).
//
// A blocking one waited in the kernel, on the one OS thread: a receiver
// waiting for a message that another thread of the process was about to send
// held that thread, and the sender with it, for ever. And a System V wait
// the stall tick's signal interrupted returned EINTR, where the program had
// no handler at all: the kernel never restarts these after a handler
// (signal(7)).
//
// System V objects have no fd to wait on: the shim makes the call with
// IPC_NOWAIT and, while it would block, parks through retry_with_backoff, as
// for glibc's process-shared objects (sync.cpp): a send, a receive or a
// semop made in this process wakes the waiters here at once (they retry);
// one made by another process is seen at the next try, within ~2 ms.
//
// A POSIX message queue is an fd (Linux): the greenlet parks until it is
// readable (or writable), then tries with a deadline already past, which the
// kernel answers at once (ETIMEDOUT: still empty, or full). On a queue
// opened O_NONBLOCK that try says EAGAIN, which is the call's answer.

#include "shim.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

WaitSite g_msgrcv{"msgrcv (retrying)", "sync"};
WaitSite g_msgsnd{"msgsnd (retrying)", "sync"};
WaitSite g_semop{"semop (retrying)", "sync"};

// Greenlets of this process waiting on any System V queue or semaphore set:
// woken after each change made here. (Start-up data, cold.hpp: its
// destructor reads it at every exit.)
GREENSHIM_STARTUP_DATA WaitQueue g_sysv_changed;

void sysv_changed() {
    if (!g_sysv_changed.empty()) g_sysv_changed.notify_all();
}

// A System V wait, retried with IPC_NOWAIT until try_once stops saying
// `busy` (ENOMSG for msgrcv, EAGAIN for the rest) or the deadline passes.
// An object removed while a blocked call waits on it ends the wait with
// EIDRM; a try made afterwards finds no such id (EINVAL): after a try that
// found the object, the shim answers EIDRM as the kernel would have.
template <class Try>
int sysv_wait(WaitSite& site, Deadline deadline, bool cancellation_point, int busy, Try&& try_once) {
    WaitScope what(site);
    Backoff how = kSharedBackoff;
    how.queue = &g_sysv_changed;
    how.never_restarted = true;
    how.cancellation_point = cancellation_point;
    bool found = false;
    return retry_with_backoff(
        deadline,
        [&] {
            if (try_once() >= 0) return 0;
            if (errno == busy) found = true;
            else if (errno == EINVAL && found) errno = EIDRM;
            return -1;
        },
        [&](int e) { return e == busy; }, how);
}

// semop's operations with IPC_NOWAIT added to each; false if there are too
// many to copy (the call is then made as it is).
constexpr size_t kMaxCopiedOps = 64;
bool with_nowait(const struct sembuf* ops, size_t n, struct sembuf* out) noexcept {
    if (n > kMaxCopiedOps) return false;
    for (size_t i = 0; i < n; ++i) {
        out[i] = ops[i];
        out[i].sem_flg = short(out[i].sem_flg | IPC_NOWAIT);
    }
    return true;
}

bool all_nowait(const struct sembuf* ops, size_t n) noexcept {
    for (size_t i = 0; i < n; ++i)
        if (!(ops[i].sem_flg & IPC_NOWAIT)) return false;
    return true;
}

int semop_until(int id, struct sembuf* ops, size_t n, const struct timespec* rel) {
    auto real = REAL(semtimedop);
    struct sembuf copy[kMaxCopiedOps];
    if (!may_park() || !ops || all_nowait(ops, n) || (rel && (!kernel_reads(rel) || bad_time(rel))) ||
        !with_nowait(ops, n, copy))
        return call_libc(real, id, ops, n, rel);
    Deadline deadline = rel ? deadline_after_ns(std::int64_t(rel->tv_sec) * 1000000000 + rel->tv_nsec) : kForever;
    long result = 0;
    int r = sysv_wait(g_semop, deadline, false, EAGAIN, [&] { return result = real(id, copy, n, nullptr); });
    if (r < 0) return -1;
    sysv_changed();
    return int(result);
}

// A try at a POSIX queue that never blocks: a deadline already past.
constexpr struct timespec kPast = {0, 0};

template <class Try>
ssize_t mq_wait(mqd_t q, int events, Deadline deadline, Try&& try_once) {
    for (;;) {
        ssize_t r = try_once();
        if (r >= 0 || errno != ETIMEDOUT) return r;
        // (Restarted after a handler with SA_RESTART, deadline or not, as
        // the kernel restarts the queue's own wait.)
        if (park_until_ready(q, events, deadline, Interruptible::unless_restart) < 0) {
            if (errno == EAGAIN) errno = ETIMEDOUT;  // (the caller's own deadline)
            return -1;
        }
    }
}

// The caller's absolute time (CLOCK_REALTIME), checked as the kernel checks
// it before anything else; false: make the call as it is (EFAULT, EINVAL).
bool usable_time(const struct timespec* abs) noexcept { return kernel_reads(abs) && !bad_time(abs); }

// abs: nullptr for no deadline (mq_receive, mq_send).
ssize_t receive_until(mqd_t q, char* msg, size_t size, unsigned* prio, const struct timespec* abs) {
    auto real = REAL(mq_timedreceive);
    if (!may_park() || (abs && !usable_time(abs)))
        return abs ? call_libc(real, q, msg, size, prio, abs) : call_libc(REAL(mq_receive), q, msg, size, prio);
    Deadline deadline = abs ? deadline_at(CLOCK_REALTIME, abs) : kForever;
    return mq_wait(q, kReadable, deadline, [&] { return real(q, msg, size, prio, &kPast); });
}

int send_until(mqd_t q, const char* msg, size_t size, unsigned prio, const struct timespec* abs) {
    auto real = REAL(mq_timedsend);
    if (!may_park() || (abs && !usable_time(abs)))
        return abs ? call_libc(real, q, msg, size, prio, abs) : call_libc(REAL(mq_send), q, msg, size, prio);
    Deadline deadline = abs ? deadline_at(CLOCK_REALTIME, abs) : kForever;
    return int(mq_wait(q, kWritable, deadline, [&] { return ssize_t(real(q, msg, size, prio, &kPast)); }));
}
}  // namespace

SHIM_EXPORT ssize_t msgrcv(int id, void* msg, size_t size, long type, int flags) {
    SHIM_CANCEL_POINT;
    auto real = REAL(msgrcv);
    if (!may_park() || (flags & IPC_NOWAIT)) {
        ssize_t r = real(id, msg, size, type, flags);
        if (r >= 0) sysv_changed();
        return r;
    }
    ssize_t got = 0;
    if (sysv_wait(g_msgrcv, kForever, true, ENOMSG, [&] { return got = real(id, msg, size, type, flags | IPC_NOWAIT); }) < 0)
        return -1;
    sysv_changed();
    return got;
}

SHIM_EXPORT int msgsnd(int id, const void* msg, size_t size, int flags) {
    SHIM_CANCEL_POINT;
    auto real = REAL(msgsnd);
    if (!may_park() || (flags & IPC_NOWAIT)) {
        int r = real(id, msg, size, flags);
        if (r == 0) sysv_changed();
        return r;
    }
    if (sysv_wait(g_msgsnd, kForever, true, EAGAIN, [&] { return real(id, msg, size, flags | IPC_NOWAIT); }) < 0)
        return -1;
    sysv_changed();
    return 0;
}

SHIM_EXPORT int semop(int id, struct sembuf* ops, size_t n) {
    SHIM_ENTER;
    return semop_until(id, ops, n, nullptr);
}

SHIM_EXPORT int semtimedop(int id, struct sembuf* ops, size_t n, const struct timespec* timeout) {
    SHIM_ENTER;
    return semop_until(id, ops, n, timeout);
}

SHIM_EXPORT ssize_t mq_timedreceive(mqd_t q, char* msg, size_t size, unsigned* prio, const struct timespec* abs) {
    SHIM_CANCEL_POINT;
    return receive_until(q, msg, size, prio, abs);
}

SHIM_EXPORT ssize_t mq_receive(mqd_t q, char* msg, size_t size, unsigned* prio) {
    SHIM_CANCEL_POINT;
    return receive_until(q, msg, size, prio, nullptr);
}

SHIM_EXPORT int mq_timedsend(mqd_t q, const char* msg, size_t size, unsigned prio, const struct timespec* abs) {
    SHIM_CANCEL_POINT;
    return send_until(q, msg, size, prio, abs);
}

SHIM_EXPORT int mq_send(mqd_t q, const char* msg, size_t size, unsigned prio) {
    SHIM_CANCEL_POINT;
    return send_until(q, msg, size, prio, nullptr);
}
