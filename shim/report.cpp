// What the shim tells the user: the stats at exit (GREENSHIM_STATS), the
// park/wake trace (GREENSHIM_TRACE), the blocking monitor's reports
// (GREENSHIM_MONITOR), the deadlock report, and what the process does when
// the hub finds nothing left that could run. The counting, tracing and
// watching themselves live in the runtime (greenshim/diag.hpp); this file
// wires them to the configuration and to stderr.
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "greenshim/cold.hpp"
#include "greenshim/diag.hpp"
#include "shim.hpp"
#include "thread.hpp"

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
    // The one cost of own thread-locals that depends on the machine, and by
    // far the largest where it applies: say so where it can be seen.
    if (threads_own_thread_locals() && Greenlet::own_thread_locals_switch_by_syscall()) {
        char line[400];
        std::snprintf(line, sizeof line,
                      "%s thread pointer: switched with arch_prctl, a system call at each switch between threads "
                      "(this CPU or kernel does not allow wrfsbase: no FSGSBASE); GREENSHIM_THREAD_LOCALS=shared "
                      "avoids it, the threads then sharing __thread variables\n",
                      prefix);
        say(fd, line);
    }
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
    unwinder_load();  // (its reports' backtraces of suspended greenlets, from a signal handler: unwind.cpp)
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

// ---- the dump (greenrun --dump PID) ----
//
// greenshim-dump (libexec/greenshim, what greenrun --dump runs) asks for a
// dump with sigqueue(PID, SIGRTMAX-2, kDumpMagic). The shim holds that signal
// as it holds SIGSEGV (signal.cpp, hold_signal): one that does not carry the
// magic value is the program's, and goes to the program's handler or
// disposition exactly as unpatched (a plain kill -s SIGRTMAX-2 still kills a
// program that has no handler for it). Before it sends, the requester writes
// /tmp/greenshim-dump.<PID>.<its pid>: "+PATH" (the dump goes to PATH and to
// the process's stderr) or "=PATH" (to PATH only). That file must be a regular
// file of the process's own user, writable by nobody else; PATH must exist
// already (the requester makes it). Without a request file the dump goes to
// stderr. The dump is written in the handler (async-signal-safe, diag.hpp:
// write_greenlet_dump), on the hub's OS thread, so that a hub stuck in a
// CPU-bound greenlet still answers, with that greenlet's backtrace.
constexpr std::uintptr_t kDumpMagic = 0x67736864'00000000;  // "gshd" (low half: a forwarded requester)
constexpr std::uintptr_t kDumpMagicMask = 0xffffffff'00000000;

// With several hubs the process hub's handler asks each worker in turn for
// its part (write_worker_dump_part), with the same signal and this value,
// and waits for it (at most kWorkerDumpWaitMs: a worker stuck with signals
// blocked is skipped with a line saying so).
struct WorkerDump {
    std::atomic<int> fd{-1}, also{-1};
    std::atomic<bool> done{false};
};
WorkerDump g_worker_dump;
constexpr int kWorkerDumpWaitMs = 1000;

bool worker_dump_request(const siginfo_t* info) noexcept {
    return info->si_code == SI_QUEUE && info->si_value.sival_ptr == &g_worker_dump && info->si_pid == getpid();
}

void dump_workers(int sig, int fd, int also) noexcept {
    InternalScope internal;  // (libc's nanosleep and pthread_sigqueue, not the shim's)
    for (unsigned i = 0; Hub* w = Hub::worker(i); ++i) {
        g_worker_dump.fd.store(fd);
        g_worker_dump.also.store(also);
        g_worker_dump.done.store(false);
        sigval v;
        v.sival_ptr = &g_worker_dump;
        bool answered = pthread_sigqueue(hub_thread(*w), sig, v) == 0;
        for (int ms = 0; answered && !g_worker_dump.done.load(); ++ms) {
            if (ms == kWorkerDumpWaitMs) answered = false;
            timespec one{0, 1000000};
            nanosleep(&one, nullptr);
        }
        if (!answered) {
            char line[96];
            std::snprintf(line, sizeof line, "  (worker hub %u did not answer within %d ms)\n", i, kWorkerDumpWaitMs);
            say(fd, line);
            if (also >= 0) say(also, line);
        }
    }
}

bool dump_request(const siginfo_t* info, pid_t* requester) noexcept {
    if (info->si_code != SI_QUEUE) return false;
    auto v = reinterpret_cast<std::uintptr_t>(info->si_value.sival_ptr);
    if ((v & kDumpMagicMask) != kDumpMagic) return false;
    auto forwarded = pid_t(v & 0xffffffff);
    *requester = forwarded && info->si_pid == getpid() ? forwarded : info->si_pid;
    return true;
}

// The request's output file, open for appending (-1: none, or not a valid one).
int open_dump_output(pid_t requester, bool* also_stderr) noexcept {
    char path[64];
    std::snprintf(path, sizeof path, "/tmp/greenshim-dump.%d.%d", int(getpid()), int(requester));
    InternalScope internal;
    int rq = ::open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (rq < 0) return -1;
    char buf[1024];  // greenshim-dump refuses longer paths
    ssize_t n = -1;
    struct stat st;
    if (::fstat(rq, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022))
        n = ::read(rq, buf, sizeof buf - 1);
    ::close(rq);
    if (n < 3 || (buf[0] != '+' && buf[0] != '=') || buf[1] != '/') return -1;
    buf[n] = '\0';
    if (char* nl = std::strchr(buf, '\n')) *nl = '\0';
    *also_stderr = buf[0] == '+';
    int fd = ::open(buf + 1, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd >= 0 && (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        ::close(fd);
        fd = -1;
    }
    return fd;
}

void on_dump_signal(int sig, siginfo_t* info, void* uctx) {
    int saved = errno;
    if (worker_dump_request(info)) {  // on a worker hub's OS thread: its part
        write_worker_dump_part(g_worker_dump.fd.load(), g_worker_dump.also.load(), uctx);
        g_worker_dump.done.store(true);
        errno = saved;
        return;
    }
    pid_t requester;
    if (!dump_request(info, &requester)) {
        Hub* here = greenshim::detail::existing_hub();
        if (here && here->is_worker() && Hub::process_hub()) {
            // The program's own use of the number, process-directed, landed
            // on a worker (which lets it through for the dump's sake): to the
            // main thread, as the program's other signals go.
            InternalScope internal;
            pthread_sigqueue(hub_thread(*Hub::process_hub()), sig, info->si_value);
            errno = saved;
            return;
        }
        errno = saved;
        return pass_signal_to_program(sig, info, uctx);
    }
    // The greenlets live on the hub's OS thread; a process-directed signal
    // may land on another (a thread the program made before the shim's
    // constructor ran, say): hand it on, with the requester.
    Hub* hub = Hub::process_hub();
    if (hub && greenshim::detail::existing_hub() != hub) {
        sigval v;
        v.sival_ptr = reinterpret_cast<void*>(kDumpMagic | std::uint32_t(requester));
        pthread_sigqueue(hub_thread(*hub), sig, v);
        errno = saved;
        return;
    }
    // The backtraces need libgcc_s's unwinder, which a process that never
    // made a thread has not loaded (unwind.cpp). A dlopen in a handler is
    // safe only where the interrupted code holds none of the locks it takes:
    // the hub blocked in its poll (the usual case of a process one dumps).
    if (Hub* here = greenshim::detail::existing_hub(); here && here->blocked_in_poll()) unwinder_load();
    bool also_stderr = false;
    int fd = open_dump_output(requester, &also_stderr);
    int out = fd >= 0 ? fd : 2, also = fd >= 0 && also_stderr ? 2 : -1;
    write_greenlet_dump(out, also, uctx, /*end_line=*/false);
    dump_workers(sig, out, also);
    write_dump_end(out, also);
    if (fd >= 0) {
        InternalScope internal;
        ::close(fd);
    }
    errno = saved;
}

// The hub found nothing left that could ever run (hub.hpp, Stranded).
void on_stranded(Hub&, Stranded what) noexcept {
    // A child forked from a greenlet other than main, once that greenlet is
    // done: the process is, as when the last thread of a process exits.
    if (what == Stranded::finished) std::exit(0);
    deadlock_exit(nullptr);
}

}  // namespace

GREENSHIM_STARTUP_CODE void start_diagnostics() noexcept {
    Hub::set_stranded_handler(on_stranded);
    const Config& c = config();
    if (!c.enabled) return;
    if (c.trace) set_trace(c.trace);  // a spec the table's parser accepted
    if (c.stats) {
        enable_timing();
        std::atexit(write_stats_at_exit);
    }
    if (c.monitor_ms) start_monitor_with_backtraces(c.monitor_ms);
    hold_signal(dump_signal(), on_dump_signal);
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
    write_idle_hubs_table(2);
    std::snprintf(line, sizeof line, "greenshim: exiting with status %d (deadlock)\n", kDeadlockExitStatus);
    say(2, line);
    // Output the program already produced is kept: stdio's locks are
    // recursive per OS thread, so a greenlet parked inside stdio cannot block
    // this flush.
    std::fflush(nullptr);
    _exit(kDeadlockExitStatus);
}

int dump_signal() noexcept { return SIGRTMAX - 2; }

}  // namespace greenshim::shim
