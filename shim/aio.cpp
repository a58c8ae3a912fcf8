// Waits made below libc: liburing and libaio enter the kernel themselves
// (io_uring_enter; io_getevents through syscall()), so a thread waiting in
// io_uring_wait_cqe or io_getevents would stop the one OS thread, and every
// other greenlet thread with it. Their exported functions that can wait are
// interposed here. Each does first what cannot block (submit, peek, reap
// with a zero timeout); while the call would wait, the greenlet parks; then
// the real function is called again in a way that no longer waits, so the
// results (negative errno values, *cqe_ptr, counts) are the library's own.
//
// liburing: an io_uring fd polls readable while its completion queue holds a
// CQE, so a greenlet waiting for the first CQE parks on the ring fd. Waiting
// for more CQEs while some are there (the fd stays readable), or on a ring
// whose completions appear only when its task enters the kernel
// (IORING_SETUP_IOPOLL, IORING_SETUP_DEFER_TASKRUN), parks on a back-off
// timer instead, entering the kernel without waiting at each turn.
// (io_uring_wait_cqe and io_uring_peek_cqe are inline in liburing.h: they
// call __io_uring_get_cqe when no CQE is there.)
//
// libaio: an aio context is not pollable (an iocb may name an eventfd, but
// only the program knows), so io_getevents reaps with a zero timeout and
// parks on a back-off timer in between; with the ring empty a reap costs no
// system call (libaio reads the ring's head and tail itself).
//
// The back-off starts at 50 us and doubles up to 2 ms: a completion is seen
// ~1 ms late (median; 4.6 ms at most, as a timer of less than 1 ms lasts
// 1 ms in libev's epoll_wait) and an idle io_getevents costs ~1.3 % of a CPU
// on the 2-core test VM (tests/threads/native/aio_getevents.c prints the
// latency).
//
// Neither library is libc and most programs link neither, so their functions
// are not in shim.hpp's table of required ones (which aborts when one is
// missing). Each is looked up here on the first call, which only a program
// linked with the library can make, by the version whose ABI this file
// implements; shim/exports.map gives our interposers the same versions, so
// another ABI (libaio's io_getevents@LIBAIO_0.1) stays the library's own.
// Not found (not expected) means -ENOSYS.
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>

#include "shim.hpp"

#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif

using namespace greenshim;
using namespace greenshim::shim;

namespace {

template <class F>
F optional_real(F& slot, const char* name, const char* version) noexcept {
    F f = __atomic_load_n(&slot, __ATOMIC_ACQUIRE);
    if (__builtin_expect(f == nullptr, 0)) {
        f = reinterpret_cast<F>(dlvsym(RTLD_NEXT, name, version));
        if (f) __atomic_store_n(&slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

// ---- liburing ----

// The head of liburing's struct io_uring (liburing.h): ABI since liburing
// 2.0, as programs inline code that reads it. Only fields 2.0 had are used.
struct SqRing {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
    void* sqes;
    unsigned sqe_head, sqe_tail;
    size_t ring_sz;
    void* ring_ptr;
    unsigned pad[4];
};
struct CqRing {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
    io_uring_cqe* cqes;
    size_t ring_sz;
    void* ring_ptr;
    unsigned pad[4];
};
struct Ring {
    SqRing sq;
    CqRing cq;
    unsigned flags;    // IORING_SETUP_*
    int ring_fd;       // -1 once liburing >= 2.4 closed it (io_uring_close_ring_fd)
    unsigned features; // IORING_FEAT_*
};
static_assert(offsetof(Ring, flags) == 192 && offsetof(Ring, features) == 200);

using Cqe = io_uring_cqe;
using Ts = __kernel_timespec;

using GetCqeFn = int (*)(Ring*, Cqe**, unsigned, unsigned, sigset_t*);
using WaitCqesFn = int (*)(Ring*, Cqe**, unsigned, Ts*, sigset_t*);
using RingFn = int (*)(Ring*);
using SubmitWaitFn = int (*)(Ring*, unsigned);

GetCqeFn real_get_cqe_slot;
WaitCqesFn real_wait_cqes_slot, real_submit_wait_timeout_slot;
RingFn real_submit_slot, real_sqring_wait_slot;
SubmitWaitFn real_submit_wait_slot;

GetCqeFn real_get_cqe() { return optional_real(real_get_cqe_slot, "__io_uring_get_cqe", "LIBURING_2.0"); }
WaitCqesFn real_wait_cqes() { return optional_real(real_wait_cqes_slot, "io_uring_wait_cqes", "LIBURING_2.0"); }
RingFn real_submit() { return optional_real(real_submit_slot, "io_uring_submit", "LIBURING_2.0"); }

unsigned cq_ready(const Ring* r) noexcept {
    return __atomic_load_n(r->cq.ktail, __ATOMIC_ACQUIRE) - __atomic_load_n(r->cq.khead, __ATOMIC_RELAXED);
}
// Whether io_uring_submit took fewer SQEs than `pending` (the SQEs prepared
// before it): the kernel then does not wait. Not with SQPOLL, where the
// kernel's thread takes them meanwhile and the count only says what it saw.
unsigned sq_pending(const Ring* r) noexcept { return r->sq.sqe_tail - __atomic_load_n(r->sq.khead, __ATOMIC_ACQUIRE); }
bool partly_submitted(const Ring* r, int submitted, unsigned pending) noexcept {
    return !(r->flags & IORING_SETUP_SQPOLL) && unsigned(submitted) < pending;
}
// The kernel's own test for a full SQ ring (entries it was shown, not yet taken).
bool sq_full(const Ring* r) noexcept {
    return __atomic_load_n(r->sq.ktail, __ATOMIC_RELAXED) - __atomic_load_n(r->sq.khead, __ATOMIC_ACQUIRE) >=
           *r->sq.kring_entries;
}
bool fd_reports_cqes(const Ring* r) noexcept { return !(r->flags & (IORING_SETUP_IOPOLL | IORING_SETUP_DEFER_TASKRUN)); }
bool may_park_on(const Ring* r) noexcept { return may_park() && r && r->ring_fd >= 0; }

// Has the kernel post what it holds back (overflowed CQEs, deferred task
// work, IOPOLL completions) without waiting: io_uring_get_events, which
// liburing only has from 2.3.
void get_events(const Ring* r) noexcept {
    int saved = errno;
    REAL(syscall)(SYS_io_uring_enter, r->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, nullptr, 0);
    errno = saved;
}

// liburing's timeouts are relative, any value: the kernel adds seconds and
// nanoseconds as they are, and a sum <= 0 has passed.
Deadline deadline_of(std::int64_t sec, std::int64_t nsec) noexcept {
    __int128 ns = __int128(sec) * 1000000000 + nsec;
    if (ns <= 0) return monotonic_ns();
    return ns >= INT64_MAX ? kForever : deadline_after_ns(std::int64_t(ns));
}

constexpr std::int64_t kBackoffFirstNs = 50000, kBackoffMostNs = 2000000;

enum class Ended { ready, timeout, interrupted, closed, nomem };

WaitSite g_uring{"io_uring wait", "io", WaitSite::Arg::fd};
WaitSite g_sqring{"io_uring SQ ring full (polling)", "io", WaitSite::Arg::fd};
WaitSite g_aio{"io_getevents (polling)", "io"};

// One park: on fd (readable) if fd >= 0, else on a timer until `next`; never
// past the deadline. A signal handler ends it whatever its flags: neither
// io_uring_enter nor io_getevents is restarted after a handler.
Ended park(WaitSite& site, std::intptr_t arg, int fd, Deadline next, Deadline deadline) {
    int r = park_as(site, arg, Interruptible::always, EndsBy::other_thread, [&](Hub& hub) {
        return fd >= 0 ? hub.wait_fd(fd, kReadable, deadline) : hub.sleep_until(next < deadline ? next : deadline);
    });
    switch (r) {
    case -EINTR: return Ended::interrupted;
    case -EBADF: return Ended::closed;
    case -ENOMEM: return Ended::nomem;
    default: return Ended::ready;  // woken, or a step of the back-off ended: look again
    }
}

// Parks until the completion queue holds `want` CQEs, the deadline passes or
// a signal handler runs.
Ended wait_cq(Ring* ring, unsigned want, Deadline deadline) {
    std::int64_t backoff = kBackoffFirstNs;
    for (;;) {
        if (cq_ready(ring) < want &&
            (!fd_reports_cqes(ring) ||
             (__atomic_load_n(ring->sq.kflags, __ATOMIC_RELAXED) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))))
            get_events(ring);
        unsigned ready = cq_ready(ring);
        if (ready >= want) return Ended::ready;
        if (deadline != kForever && monotonic_ns() >= deadline) return Ended::timeout;
        bool on_fd = ready == 0 && fd_reports_cqes(ring);
        Ended e = park(g_uring, ring->ring_fd, on_fd ? ring->ring_fd : -1,
                       on_fd ? kForever : deadline_after_ns(backoff), deadline);
        if (e != Ended::ready) return e;
        if (!on_fd) backoff = backoff * 2 > kBackoffMostNs ? kBackoffMostNs : backoff * 2;
    }
}

// Sets *cqe_ptr as liburing's peek does, without waiting.
void peek(Ring* ring, Cqe** cqe_ptr, sigset_t* sigmask) { real_get_cqe()(ring, cqe_ptr, 0, 0, sigmask); }

// liburing's _io_uring_get_cqe (queue.c) with the greenlet parked where the
// kernel would wait: submit (all prepared SQEs) if asked, then wait for
// wait_nr CQEs or the timeout (needs IORING_FEAT_EXT_ARG), then return what
// liburing returns.
int get_cqe(Ring* ring, Cqe** cqe_ptr, bool submit, unsigned wait_nr, Ts* ts, sigset_t* sigmask) {
    bool had = cq_ready(ring) > 0;
    int submitted = 0;
    if (submit) {
        unsigned pending = sq_pending(ring);
        submitted = real_submit()(ring);
        if (submitted < 0) {
            peek(ring, cqe_ptr, sigmask);
            return submitted;
        }
        // The kernel waits only once it took every SQE; when it did not
        // (a bad SQE), liburing returns. (Without a timeout liburing would
        // first enter again with the rest.)
        if (partly_submitted(ring, submitted, pending)) {
            peek(ring, cqe_ptr, sigmask);
            return had ? 0 : submitted;
        }
    }
    Deadline deadline = ts ? deadline_of(ts->tv_sec, ts->tv_nsec) : kForever;
    for (;;) {
        Ended e = wait_cq(ring, wait_nr, deadline);
        if (e == Ended::closed || e == Ended::nomem) {
            *cqe_ptr = nullptr;
            return e == Ended::closed ? -EBADF : -ENOMEM;
        }
        if (submitted == 0) {
            if (e == Ended::interrupted) {
                peek(ring, cqe_ptr, sigmask);
                return -EINTR;
            }
            // Enough CQEs, or the time is up: the real call, now without
            // waiting, answers as liburing does (0 and a CQE, or -ETIME).
            static Ts zero = {0, 0};
            return ts ? real_wait_cqes()(ring, cqe_ptr, wait_nr, &zero, sigmask)
                      : real_get_cqe()(ring, cqe_ptr, 0, wait_nr, sigmask);
        }
        // After submitting, io_uring_enter returns the count submitted, not
        // how the wait ended. liburing returns 0 if a CQE was there before,
        // else that count; without a timeout, a signal makes it wait again.
        if (e == Ended::interrupted && !had && !ts) continue;
        peek(ring, cqe_ptr, sigmask);
        return had ? 0 : submitted;
    }
}

// io_uring_wait_cqes, shared with io_uring_wait_cqe_timeout.
int wait_cqes(Ring* ring, Cqe** cqe_ptr, unsigned wait_nr, Ts* ts, sigset_t* sigmask) {
    WaitCqesFn real = real_wait_cqes();
    if (!real || !real_get_cqe()) return -ENOSYS;
    // A kernel without IORING_FEAT_EXT_ARG (before 5.11) times out through a
    // timeout SQE: liburing submits it and calls __io_uring_get_cqe (ours).
    if (!may_park_on(ring) || wait_nr <= cq_ready(ring) || (ts && !(ring->features & IORING_FEAT_EXT_ARG)) ||
        (ts && !kernel_reads(reinterpret_cast<const struct timespec*>(ts))))
        return real(ring, cqe_ptr, wait_nr, ts, sigmask);
    return get_cqe(ring, cqe_ptr, false, wait_nr, ts, sigmask);
}

// ---- libaio ----

// libaio's io_context_t is a pointer to the kernel's aio ring.
using AioCtx = void*;
using GetEventsFn = int (*)(AioCtx, long, long, io_event*, struct timespec*);
using PGetEventsFn = int (*)(AioCtx, long, long, io_event*, struct timespec*, sigset_t*);
GetEventsFn real_getevents_slot;
PGetEventsFn real_pgetevents_slot;

// Reaps until min_nr events are in, the timeout passes (the count so far) or
// a signal handler runs (-EINTR if none came, as the kernel says).
// reap(max, at) reaps up to max events into at without waiting.
template <class Reap>
int getevents(long min_nr, long nr, io_event* events, const struct timespec* timeout, Reap&& reap) {
    Deadline deadline = timeout ? deadline_of(timeout->tv_sec, timeout->tv_nsec) : kForever;
    std::int64_t backoff = kBackoffFirstNs;
    long got = 0;
    for (;;) {
        int r = reap(nr - got, events + got);
        if (r < 0) return got > 0 ? int(got) : r;
        got += r;
        if (got >= min_nr || (deadline != kForever && monotonic_ns() >= deadline)) return int(got);
        Ended e = park(g_aio, -1, -1, deadline_after_ns(backoff), deadline);
        if (e == Ended::interrupted || e == Ended::nomem) return got > 0 ? int(got) : e == Ended::nomem ? -ENOMEM : -EINTR;
        backoff = backoff * 2 > kBackoffMostNs ? kBackoffMostNs : backoff * 2;
    }
}

// Whether io_getevents(min_nr, nr, timeout) may wait here: anything the
// kernel refuses (min_nr > nr, an unreadable timeout) or that cannot wait
// goes to the real function, which answers at once.
bool aio_may_wait(long min_nr, long nr, const struct timespec* timeout) noexcept {
    if (!may_park() || min_nr <= 0 || nr < min_nr) return false;
    if (!timeout) return true;
    return kernel_reads(timeout) && (timeout->tv_sec != 0 || timeout->tv_nsec != 0);
}

}  // namespace

// ---- liburing's entry points that wait ----

SHIM_EXPORT int gs___io_uring_get_cqe(Ring*, Cqe**, unsigned, unsigned, sigset_t*) __asm__("__io_uring_get_cqe");
SHIM_EXPORT int gs___io_uring_get_cqe(Ring* ring, Cqe** cqe_ptr, unsigned submit, unsigned wait_nr, sigset_t* sigmask) {
    SHIM_ENTER;
    GetCqeFn real = real_get_cqe();
    if (!real || !real_submit()) return -ENOSYS;
    if (!may_park_on(ring) || wait_nr <= cq_ready(ring)) return real(ring, cqe_ptr, submit, wait_nr, sigmask);
    return get_cqe(ring, cqe_ptr, submit != 0, wait_nr, nullptr, sigmask);
}

SHIM_EXPORT int gs_io_uring_wait_cqes(Ring*, Cqe**, unsigned, Ts*, sigset_t*) __asm__("io_uring_wait_cqes");
SHIM_EXPORT int gs_io_uring_wait_cqes(Ring* ring, Cqe** cqe_ptr, unsigned wait_nr, Ts* ts, sigset_t* sigmask) {
    SHIM_ENTER;
    return wait_cqes(ring, cqe_ptr, wait_nr, ts, sigmask);
}

SHIM_EXPORT int gs_io_uring_wait_cqe_timeout(Ring*, Cqe**, Ts*) __asm__("io_uring_wait_cqe_timeout");
SHIM_EXPORT int gs_io_uring_wait_cqe_timeout(Ring* ring, Cqe** cqe_ptr, Ts* ts) {
    SHIM_ENTER;
    return wait_cqes(ring, cqe_ptr, 1, ts, nullptr);
}

SHIM_EXPORT int gs_io_uring_submit_and_wait_timeout(Ring*, Cqe**, unsigned, Ts*, sigset_t*) __asm__(
    "io_uring_submit_and_wait_timeout");
SHIM_EXPORT int gs_io_uring_submit_and_wait_timeout(Ring* ring, Cqe** cqe_ptr, unsigned wait_nr, Ts* ts,
                                                   sigset_t* sigmask) {
    SHIM_ENTER;
    WaitCqesFn real = optional_real(real_submit_wait_timeout_slot, "io_uring_submit_and_wait_timeout", "LIBURING_2.2");
    if (!real || !real_get_cqe() || !real_submit() || !real_wait_cqes()) return -ENOSYS;
    if (!may_park_on(ring) || wait_nr <= cq_ready(ring) || (ts && !(ring->features & IORING_FEAT_EXT_ARG)) ||
        (ts && !kernel_reads(reinterpret_cast<const struct timespec*>(ts))))
        return real(ring, cqe_ptr, wait_nr, ts, sigmask);
    return get_cqe(ring, cqe_ptr, true, wait_nr, ts, sigmask);
}

// Returns what io_uring_enter returns: the count submitted, else how the
// wait ended (0 or -EINTR).
SHIM_EXPORT int gs_io_uring_submit_and_wait(Ring*, unsigned) __asm__("io_uring_submit_and_wait");
SHIM_EXPORT int gs_io_uring_submit_and_wait(Ring* ring, unsigned wait_nr) {
    SHIM_ENTER;
    SubmitWaitFn real = optional_real(real_submit_wait_slot, "io_uring_submit_and_wait", "LIBURING_2.0");
    if (!real || !real_submit()) return -ENOSYS;
    if (!may_park_on(ring) || wait_nr <= cq_ready(ring)) return real(ring, wait_nr);
    unsigned pending = sq_pending(ring);
    int submitted = real_submit()(ring);
    if (submitted < 0 || partly_submitted(ring, submitted, pending)) return submitted;  // the kernel does not wait then
    switch (wait_cq(ring, wait_nr, kForever)) {
    case Ended::interrupted: return submitted > 0 ? submitted : -EINTR;
    case Ended::closed: return submitted > 0 ? submitted : -EBADF;
    case Ended::nomem: return submitted > 0 ? submitted : -ENOMEM;
    default: return submitted;
    }
}

// SQPOLL: waits for room in the SQ ring, which the kernel's SQ thread makes
// as it takes SQEs; no fd reports it, hence the back-off timer. The kernel
// returns 0 even when a signal ends the wait.
SHIM_EXPORT int gs___io_uring_sqring_wait(Ring*) __asm__("__io_uring_sqring_wait");
SHIM_EXPORT int gs___io_uring_sqring_wait(Ring* ring) {
    SHIM_ENTER;
    RingFn real = optional_real(real_sqring_wait_slot, "__io_uring_sqring_wait", "LIBURING_2.0");
    if (!real) return -ENOSYS;
    if (!may_park_on(ring) || !(ring->flags & IORING_SETUP_SQPOLL)) return real(ring);
    std::int64_t backoff = kBackoffFirstNs;
    while (sq_full(ring)) {
        if (park(g_sqring, ring->ring_fd, -1, deadline_after_ns(backoff), kForever) != Ended::ready) return 0;
        backoff = backoff * 2 > kBackoffMostNs ? kBackoffMostNs : backoff * 2;
    }
    return real(ring);
}

// ---- libaio ----

SHIM_EXPORT int gs_io_getevents(AioCtx, long, long, io_event*, struct timespec*) __asm__("io_getevents");
SHIM_EXPORT int gs_io_getevents(AioCtx ctx, long min_nr, long nr, io_event* events, struct timespec* timeout) {
    SHIM_ENTER;
    GetEventsFn real = optional_real(real_getevents_slot, "io_getevents", "LIBAIO_0.4");
    if (!real) return -ENOSYS;
    if (!aio_may_wait(min_nr, nr, timeout)) return real(ctx, min_nr, nr, events, timeout);
    return getevents(min_nr, nr, events, timeout, [&](long max, io_event* at) {
        struct timespec zero = {0, 0};
        return real(ctx, 0, max, at, &zero);
    });
}

SHIM_EXPORT int gs_io_pgetevents(AioCtx, long, long, io_event*, struct timespec*, sigset_t*) __asm__("io_pgetevents");
SHIM_EXPORT int gs_io_pgetevents(AioCtx ctx, long min_nr, long nr, io_event* events, struct timespec* timeout,
                                 sigset_t* sigmask) {
    SHIM_ENTER;
    PGetEventsFn real = optional_real(real_pgetevents_slot, "io_pgetevents", "LIBAIO_0.5");
    if (!real) return -ENOSYS;
    if (!aio_may_wait(min_nr, nr, timeout)) return real(ctx, min_nr, nr, events, timeout, sigmask);
    // The mask applies during each reap, as ppoll's does here (poll.cpp).
    return getevents(min_nr, nr, events, timeout, [&](long max, io_event* at) {
        struct timespec zero = {0, 0};
        return real(ctx, 0, max, at, &zero, sigmask);
    });
}
