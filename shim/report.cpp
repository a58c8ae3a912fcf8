// What the shim tells the user: the stats at exit (GREENSHIM_STATS), the
// park/wake trace (GREENSHIM_TRACE), the blocking monitor's reports
// (GREENSHIM_MONITOR), the deadlock report, and what the process does when
// the hub finds nothing left that could run. The counting, tracing and
// watching themselves live in the runtime (greenshim/diag.hpp); this file
// wires them to the configuration and to stderr.
#include <execinfo.h>
#include <fcntl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "greenshim/diag.hpp"
#include "shim.hpp"

namespace greenshim::shim {

namespace {

// Writes a whole string to fd, straight to libc (never parks).
void say(int fd, const char* s) noexcept { write_fully(fd, s, std::strlen(s)); }

void write_stats_at_exit() {
    const char* where = config().stats;
    int fd = 2;
    bool opened = false;
    if (std::strcmp(where, "1") != 0) {
        InternalScope internal;
        fd = ::open(where, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            std::fprintf(stderr, "greenshim: cannot write stats to %s: %s\n", where, std::strerror(errno));
            return;
        }
        opened = true;
    }
    char prefix[64];
    std::snprintf(prefix, sizeof prefix, "greenshim[%d] stats:", int(getpid()));
    write_stats(fd, prefix);
    if (opened) {
        InternalScope internal;
        ::close(fd);
    }
}

// ---- the monitor's backtraces ----
//
// The monitor thread cannot read the stack of a greenlet that is running on
// another thread: it sends backtrace_signal() to that thread, whose handler
// prints its own backtrace. backtrace() is called once up front so that
// libgcc's unwinder is loaded before any handler needs it.
int backtrace_signal() noexcept { return SIGRTMAX - 1; }
std::atomic<bool> g_backtrace_ours{false};

void on_backtrace_signal(int) {
    int saved = errno;
    void* frames[64];
    int n = backtrace(frames, 64);
    say(2, "greenshim: monitor: backtrace of the running greenlet:\n");
    // Skip this handler and the signal trampoline frame.
    if (n > 2) backtrace_symbols_fd(frames + 2, n - 2, 2);
    errno = saved;
}

void on_stall(pthread_t hub_thread, Greenlet* running, std::int64_t stalled_ns) {
    char line[512];
    if (running && !running->dead()) {
        char code[200];
        describe_code(greenlet_entry(*running), code, sizeof code);
        std::snprintf(line, sizeof line,
                      "greenshim: monitor: the hub has not run for %lld ms: greenlet %llu (%s, started at %s) has "
                      "been running without waiting (a CPU-bound loop, or a blocking call greenshim does not "
                      "cover)\n",
                      (long long)(stalled_ns / 1000000), (unsigned long long)running->id(), running->name().c_str(),
                      code);
    } else {
        std::snprintf(line, sizeof line, "greenshim: monitor: the hub has not run for %lld ms\n",
                      (long long)(stalled_ns / 1000000));
    }
    say(2, line);
    // Only if the program has not taken the signal for itself since.
    struct sigaction cur;
    if (g_backtrace_ours.load() && REAL(sigaction)(backtrace_signal(), nullptr, &cur) == 0 &&
        cur.sa_handler == on_backtrace_signal)
        REAL(pthread_kill)(hub_thread, backtrace_signal());
}

void start_monitor_with_backtraces(unsigned ms) noexcept {
    struct sigaction cur;
    if (REAL(sigaction)(backtrace_signal(), nullptr, &cur) == 0 && cur.sa_handler == SIG_DFL) {
        void* warm[2];
        (void)backtrace(warm, 2);
        struct sigaction sa{};
        sa.sa_handler = on_backtrace_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (REAL(sigaction)(backtrace_signal(), &sa, nullptr) == 0) g_backtrace_ours = true;
    }
    if (!start_monitor(ms, on_stall)) say(2, "greenshim: cannot start the monitor thread\n");
}

// The hub found nothing left that could ever run (hub.hpp, Stranded).
void on_stranded(Hub&, Stranded what) noexcept {
    // A child forked from a greenlet other than main, once that greenlet is
    // done: the process is, as when the last thread of a process exits.
    if (what == Stranded::finished) std::exit(0);
    deadlock_exit(nullptr);
}

}  // namespace

void start_diagnostics() noexcept {
    Hub::set_stranded_handler(on_stranded);
    const Config& c = config();
    if (!c.enabled) return;
    if (c.trace) set_trace(c.trace);  // a spec the table's parser accepted
    if (c.stats) {
        enable_timing();
        std::atexit(write_stats_at_exit);
    }
    if (c.monitor_ms) start_monitor_with_backtraces(c.monitor_ms);
}

void deadlock_exit(const char* what) noexcept {
    char line[256];
    if (what)
        std::snprintf(line, sizeof line,
                      "greenshim: deadlock: every greenlet is waiting (the main one in %s) and nothing (fd, timer, "
                      "child, signal) can wake any of them:\n",
                      what);
    else
        std::snprintf(line, sizeof line,
                      "greenshim: deadlock: every greenlet is waiting and nothing (fd, timer, child, signal) can "
                      "wake any of them:\n");
    say(2, line);
    write_greenlet_table(2);
    std::snprintf(line, sizeof line, "greenshim: exiting with status %d (deadlock)\n", kDeadlockExitStatus);
    say(2, line);
    // Output the program already produced is kept: stdio's locks are
    // recursive per OS thread, so a greenlet parked inside stdio cannot block
    // this flush.
    std::fflush(nullptr);
    _exit(kDeadlockExitStatus);
}

}  // namespace greenshim::shim
