// The sleep family: park the greenlet on a timer instead of the thread.
#include <climits>
#include <limits>

#include "shim.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {

bool valid(const struct timespec* ts) noexcept {
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000L;
}

std::int64_t to_ns(const struct timespec& ts) noexcept { return ns_saturating(ts.tv_sec, ts.tv_nsec); }

void from_ns(std::int64_t ns, struct timespec* ts) noexcept {
    if (ns < 0) ns = 0;
    ts->tv_sec = time_t(ns / 1000000000);
    ts->tv_nsec = long(ns % 1000000000);
}

// Sleeps until deadline; 0, or EINTR with the time left in *left_ns. A sleep
// too long for any timer (ns past INT64_MAX: kForever) that nothing but a
// signal can end sleeps in the kernel once nothing else can run.
WaitSite g_sleep{"sleep", "sleep"};

int sleep_until(Deadline deadline, std::int64_t* left_ns) noexcept {
    for (;;) {
        int r = park_as(g_sleep, -1, cancellable(Interruptible::always), EndsBy::signal_only,
                        [&](Hub& hub) { return hub.sleep_until(deadline); });
        if (r == -EDEADLK) {
            struct timespec forever = {std::numeric_limits<time_t>::max(), 999999999};
            while (REAL(nanosleep)(&forever, &forever) == 0) {
            }
            r = errno == EINTR ? -EINTR : 0;
        }
        std::int64_t left = deadline == kForever ? INT64_MAX : deadline - monotonic_ns();
        if (r == -EINTR) {
            if (left_ns) *left_ns = left > 0 ? left : 0;
            return EINTR;
        }
        if (r == -ENOMEM) return ENOMEM;
        if (left <= 0) return 0;
    }
}

}  // namespace

SHIM_EXPORT int nanosleep(const struct timespec* req, struct timespec* rem) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(nanosleep)(req, rem);
    if (!req || !kernel_reads(req)) {
        errno = EFAULT;
        return -1;
    }
    if (!valid(req)) {
        errno = EINVAL;
        return -1;
    }
    std::int64_t left = 0;
    int err = sleep_until(deadline_after_ns(to_ns(*req)), &left);
    if (err) {
        if (err == EINTR && rem) from_ns(left, rem);
        errno = err;
        return -1;
    }
    return 0;
}

SHIM_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec* req, struct timespec* rem) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(clock_nanosleep)(clock, flags, req, rem);
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME && clock != CLOCK_TAI)
        return REAL(clock_nanosleep)(clock, flags, req, rem);  // CPU clocks, bad ids: the kernel's answer
    if (!req || !kernel_reads(req)) return EFAULT;
    if (!valid(req)) return EINVAL;
    std::int64_t ns = to_ns(*req);
    if (flags & TIMER_ABSTIME) {
        struct timespec now;
        clock_gettime(clock, &now);
        ns -= to_ns(now);
    }
    std::int64_t left = 0;
    int err = sleep_until(ns <= 0 ? monotonic_ns() : deadline_after_ns(ns), &left);
    // The time left is reported only for relative sleeps, as POSIX says.
    if (err == EINTR && rem && !(flags & TIMER_ABSTIME)) from_ns(left, rem);
    return err;
}

SHIM_EXPORT int usleep(useconds_t usec) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(usleep)(usec);
    struct timespec ts = {time_t(usec / 1000000), long(usec % 1000000) * 1000};
    return nanosleep(&ts, nullptr);
}

SHIM_EXPORT unsigned int sleep(unsigned int seconds) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(sleep)(seconds);
    struct timespec ts = {time_t(seconds), 0}, rem = {0, 0};
    if (nanosleep(&ts, &rem) == 0) return 0;
    // Interrupted: the seconds left, rounded up as glibc does.
    return unsigned(rem.tv_sec + (rem.tv_nsec ? 1 : 0));
}
