// The GREENSHIM_* settings: the table and its parsers (config.hpp says who
// uses them). Compiled into the library, greenshim-config and greenrun alike,
// so it needs nothing of the shim's but config.hpp, and of the runtime only
// the header of its trace families (greenrun links libc alone).
#include "greenshim/cold.hpp"
#include "config.hpp"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "greenshim/trace_families.hpp"

namespace greenshim::shim {

bool Expected::say(const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return false;
}

Shown shown(const char* v) noexcept {
    constexpr std::size_t kShown = 40;
    Shown s;
    std::size_t out = 0, i = 0;
    for (; v[i] && i < kShown; ++i) {
        unsigned char c = static_cast<unsigned char>(v[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') s.text[out++] = char(c);
        else out += std::size_t(std::snprintf(s.text + out, 5, "\\x%02x", c));
    }
    if (v[i]) out += std::size_t(std::snprintf(s.text + out, 4, "..."));
    s.text[out] = 0;
    return s;
}

Families families_text() noexcept {
    Families out;
    std::size_t len = 0;
    out.text[0] = 0;
    for (const char* const* f = kTraceFamilies; *f && len < sizeof out.text; ++f)
        len += std::size_t(std::snprintf(out.text + len, sizeof out.text - len, "%s%s", len ? "," : "", *f));
    return out;
}

namespace {

// ---- the parsers: each reads a non-empty value (empty means the default) ----

bool is_any(const char* v, std::initializer_list<const char*> words) {
    for (const char* w : words)
        if (!std::strcmp(v, w)) return true;
    return false;
}

bool flag(const char* v, bool& out, Expected& why) {
    if (is_any(v, {"1", "yes", "true"})) out = true;
    else if (is_any(v, {"0", "no", "false"})) out = false;
    else return why.say("0 or 1");
    return true;
}

// "16K", "1G": how a size bound is said (a whole number of K, M or G).
const char* size_text(std::size_t n, char (&buf)[24]) {
    const char* unit = "KMG";
    int u = -1;
    while (u < 2 && n >= 1024 && n % 1024 == 0) n /= 1024, ++u;
    if (u < 0) std::snprintf(buf, sizeof buf, "%zu", n);
    else std::snprintf(buf, sizeof buf, "%zu%c", n, unit[u]);
    return buf;
}

// A size from lo to hi: digits, then optionally K, M or G (either case),
// optionally followed by B or iB ("256K", "256KiB", "1g", "262144").
bool size(const char* v, std::size_t lo, std::size_t hi, std::size_t& out, Expected& why) {
    const char* p = v;
    unsigned long long n = 0;
    bool too_big = false;
    for (; *p >= '0' && *p <= '9'; ++p) {
        too_big = too_big || n > (~0ull - 9) / 10;
        n = n * 10 + unsigned(*p - '0');
    }
    unsigned long long mult = p == v ? 0 : 1;  // no digits: not a size
    if (mult && *p) {
        switch (*p++) {
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        default: mult = 0;
        }
        if (*p == 'i' && p[1] == 'B') p += 2;
        else if (*p == 'B') p += 1;
        if (*p) mult = 0;
    }
    if (mult == 0 || too_big || n > hi / mult || n * mult < lo) {
        char a[24], b[24];
        return why.say("a size from %s to %s (bytes, or with a K, M or G suffix)", size_text(lo, a),
                       size_text(hi, b));
    }
    out = std::size_t(n * mult);
    return true;
}

// A count of unit from 0 to hi in plain decimal digits.
bool count(const char* v, unsigned hi, const char* unit, unsigned& out, Expected& why) {
    unsigned long n = 0;
    const char* p = v;
    for (; *p >= '0' && *p <= '9' && n <= hi; ++p) n = n * 10 + unsigned(*p - '0');
    if (*p || n > hi) return why.say("%s from 0 to %u", unit, hi);
    out = unsigned(n);
    return true;
}

// One of a few words; out is its index.
bool one_of(const char* v, std::initializer_list<const char*> words, int& out, Expected& why) {
    int i = 0;
    for (const char* w : words) {
        if (!std::strcmp(v, w)) {
            out = i;
            return true;
        }
        ++i;
    }
    std::size_t len = 0;  // "a, b or c"
    for (const char* w : words) {
        const char* sep = !len ? "" : w == words.end()[-1] ? " or " : ", ";
        len += std::size_t(std::snprintf(why.text + len, sizeof why.text - len, "%s%s", sep, w));
    }
    return false;
}

// GREENSHIM_STATS: off, "1" for stderr, or a path (one with a '/') to append to.
bool stats(const char* v, const char*& out, Expected& why) {
    bool on = false;
    Expected unused;
    if (flag(v, on, unused)) out = on ? "1" : nullptr;
    else if (std::strchr(v, '/')) out = v;
    else return why.say("1, 0 or a file path with a '/'");
    return true;
}

// RATE of GREENSHIM_FAULTS: a decimal fraction, 0 < RATE <= 1, checked on the
// text: a plain decimal, not every spelling strtod reads ("1e-3", "0x1p-3").
bool valid_rate(const char* r) {
    while (*r == '0') ++r;
    bool one = *r == '1';
    if (one) ++r;
    if (*r == '.') ++r;
    else if (*r) return false;
    bool nonzero = false;
    for (; *r; ++r) {
        if (*r < '0' || *r > '9') return false;
        nonzero |= *r != '0';
    }
    return one ? !nonzero : nonzero;
}

// GREENSHIM_FAULTS=SEED:RATE, SEED a decimal number below 2^64.
bool faults(const char* v, Config& c, Expected& why) noexcept {
    const char* colon = std::strchr(v, ':');
    bool ok = colon && colon != v && colon[1] && valid_rate(colon + 1);
    for (const char* p = v; ok && p < colon; ++p) ok = *p >= '0' && *p <= '9';
    std::uint64_t seed = 0;
    double rate = 0;
    if (ok) {
        errno = 0;
        seed = std::strtoull(v, nullptr, 10);
        rate = std::strtod(colon + 1, nullptr);
        ok = errno == 0 && rate > 0 && rate <= 1;
    }
    if (!ok) return why.say("SEED:RATE, SEED below 2^64 and 0 < RATE <= 1, e.g. 42:0.05");
    c.faults_seed = seed;
    c.faults_rate = rate;
    return true;
}

bool is_family(const char* f, std::size_t len) {
    for (const char* const* k = kTraceFamilies; *k; ++k)
        if (std::strlen(*k) == len && !std::memcmp(*k, f, len)) return true;
    return false;
}

// GREENSHIM_TRACE: "0" (off), "1" or "all", or a comma list of families
// (no empty item: "sync," is a typo, not a list).
bool trace(const char* v, const char*& out, Expected& why) {
    bool ok = true;
    if (is_any(v, {"0", "1", "all"})) {
        out = std::strcmp(v, "0") ? v : nullptr;
        return true;
    }
    for (const char* p = v; ok; ++p) {
        std::size_t len = std::strcspn(p, ",");
        ok = len && is_family(p, len);
        p += len;
        if (!*p) break;
    }
    if (!ok) return why.say("all, or a comma list of %s", families_text().text);
    out = v;
    return true;
}

}  // namespace

// The table. Its order is the order of greenrun --help and of the README.
constexpr Setting kSettings[] = {
    {"GREENSHIM_STACK_SIZE",
     [](const char* v, Config& c, Expected& why) noexcept {
         return size(v, std::size_t(16) << 10, std::size_t(1) << 30, c.stack_size, why);
     },
     "--stack-size SIZE",
     "stack of each greenlet: bytes, or with a K/M/G suffix, 16K to 1G (committed lazily, a guard page below)",
     "stack of each greenlet thread (`pthread_create` without an explicit size) and of runtime greenlets: "
     "bytes or `K`/`M`/`G`, 16K to 1G",
     "1M for threads, 256K for runtime greenlets"},
    {"GREENSHIM_DISABLE",
     [](const char* v, Config& c, Expected& why) noexcept {
         bool off = false;
         if (!flag(v, off, why)) return false;
         c.enabled = !off;
         return true;
     },
     "--disable", "1: load the library but interpose nothing (for comparisons)",
     "`1`: the library is loaded but interposes nothing", "`0`"},
    {"GREENSHIM_INHERIT",
     [](const char* v, Config& c, Expected& why) noexcept { return flag(v, c.inherit, why); }, nullptr,
     "0: programs CMD execs run without the shim",
     "`0`: programs this one execs run without the shim (it is removed from their `LD_PRELOAD`)", "`1`"},
    {"GREENSHIM_FILE_IO",
     [](const char* v, Config& c, Expected& why) noexcept {
         int i = 0;
         if (!one_of(v, {"direct", "pool"}, i, why)) return false;
         c.file_io_pool = i == 1;
         return true;
     },
     nullptr, "pool: regular-file I/O on helper threads while the greenlet waits (slow storage); direct: in place",
     "`pool`: regular-file `open`/`read`/`write`/`pread`/`pwrite`/`fsync` run on the helper pool while the "
     "greenlet parks (for slow or network storage); `direct`: they run in place",
     "`direct`"},
    {"GREENSHIM_THREAD_LOCALS",
     [](const char* v, Config& c, Expected& why) noexcept {
         int i = 0;
         if (!one_of(v, {"thread", "shared"}, i, why)) return false;
         c.thread_locals_shared = i == 1;
         return true;
     },
     nullptr, "thread: each thread has its own __thread/thread_local/errno; shared: all share the OS thread's",
     "`thread`: each thread `pthread_create` makes has its own thread-locals (`__thread`, `thread_local` with "
     "destructors at thread exit, errno, glibc's per-thread state), as a real thread has; it relies on glibc "
     "2.36's internals, checked at start-up (one warning line and `shared` where a check fails; `shared` "
     "without a warning under sanitizers). `shared`: every thread shares the OS thread's, as before",
     "`thread`"},
    {"GREENSHIM_STATS",
     [](const char* v, Config& c, Expected& why) noexcept { return stats(v, c.stats, why); }, "--stats[=FILE]",
     "1: greenlet, switch, park and hub-time counters on stderr at exit; a path (with a /): appended there",
     "`1`: at exit, counters on stderr; a path with a `/`: appended to that file", "off"},
    {"GREENSHIM_MONITOR",
     [](const char* v, Config& c, Expected& why) noexcept {
         return count(v, 3600000, "milliseconds", c.monitor_ms, why);
     },
     "--monitor MS",
     "milliseconds: report (with a backtrace) any stretch longer than this in which the hub did not run: a "
     "CPU hog or an uncovered blocking call",
     "milliseconds: a watchdog thread reports any stretch longer than this in which the hub did not run, with "
     "a backtrace",
     "`0` (off)"},
    {"GREENSHIM_HANDOFF",
     [](const char* v, Config& c, Expected& why) noexcept {
         return count(v, 60000, "milliseconds", c.handoff_ms, why);
     },
     "--handoff MS",
     "milliseconds: a thread that runs this long without a call that waits (a CPU loop, a spin) goes on "
     "on a spare OS thread, or is preempted, so the others run; 0: never",
     "milliseconds: a greenlet thread that runs this long without a call that could wait (a CPU loop, a spin "
     "on a flag) goes on on a spare OS thread (`GREENSHIM_SPARES`) while the others go on, or, with none "
     "free, is preempted in its own code and goes to the back of the run queue; `0`: never (README, "
     "\"Threads that never wait\")",
     "`10`"},
    {"GREENSHIM_SPARES",
     [](const char* v, Config& c, Expected& why) noexcept {
         if (!std::strcmp(v, "auto")) {
             c.spares = kSparesAuto;
             return true;
         }
         return count(v, 1024, "`auto` or threads", c.spares, why);
     },
     "--spares N",
     "auto or 0-1024: spare OS threads a thread that runs without waiting is handed to (auto: CPUs - 1, at "
     "least 1; 0: preempt it instead)",
     "`auto` or a number of OS threads, 0 to 1024: at most this many spare (*carrier*) OS threads run a "
     "greenlet thread that ran `GREENSHIM_HANDOFF` ms without waiting, beside the others, until its next "
     "call into the shim (one caught blocked in a system call, using no CPU, may have one beyond these, up "
     "to 128 more); `auto`: one fewer than the CPUs the process may run on, at least 1; `0`: none, "
     "such a thread is preempted instead",
     "`auto`"},
    {"GREENSHIM_HUBS",
     [](const char* v, Config& c, Expected& why) noexcept {
         if (!std::strcmp(v, "auto")) {
             c.hubs = kHubsAuto;
             return true;
         }
         unsigned n = 0;
         if (!count(v, 1024, "hubs", n, why) || n == 0) return why.say("`auto` or hubs from 1 to 1024");
         c.hubs = n;
         return true;
     },
     "--hubs N",
     "auto or 1-1024: OS threads (hubs) that run the greenlet threads, each with its own event loop; a new "
     "thread runs on the first hub to come free (auto: the CPUs the process may run on; also greenrun -j N)",
     "`auto` or a number of hubs, 1 to 1024: the greenlet threads `pthread_create` makes run on this many OS "
     "threads, each a hub with its own event loop (the main thread's and `N`-1 workers, started at the first "
     "`pthread_create`), so I/O-bound threads use several cores; a new thread goes to the first hub to come "
     "free (a hub out of work takes those a busy one made; one that woke from a lock, condition-variable, sleep, "
     "one-fd or helper-pool wait may be given to an idle hub, and a preempted one that computes to a less busy hub). `auto`: the CPUs "
     "the process may run on. `greenrun -j N` is the same. README, \"Several hubs\"",
     "`1`"},
    {"GREENSHIM_TRACE",
     [](const char* v, Config& c, Expected& why) noexcept { return trace(v, c.trace, why); }, "--trace FAMILIES",
     "trace every park and wake of those families to stderr: all, or a comma list of {families}",
     "`all`, or a comma list of `{families}`: every park and wake of those waits traced on stderr", "off"},
    {"GREENSHIM_FAULTS", faults, nullptr,
     "SEED:RATE (e.g. 42:0.05, 0 < RATE <= 1): fault injection for tests; calls meet spurious EAGAIN/EINTR, "
     "short transfers and spurious wakes where the kernel may produce them",
     "`SEED:RATE` (e.g. `42:0.05`, a decimal `SEED` below 2^64, `0 < RATE <= 1`): fault injection, for "
     "testing. With probability `RATE` a call on an fd the program believes blocking meets, as the kernel may "
     "produce them, a spurious `EAGAIN` while the fd is ready (the greenlet parks and retries), an `EINTR` no "
     "signal caused (retried), a spurious wake (checked and waited again), a short transfer: reads of a stream "
     "socket return fewer bytes (visible, as POSIX allows), writes of stream sockets and of pipes above "
     "`PIPE_BUF` are cut and completed by the shim (invisible). Never on regular files, fds the program made "
     "`O_NONBLOCK` or `MSG_DONTWAIT` calls. Deterministic per `SEED` and schedule",
     "off"},
    {"GREENSHIM_FAULTS_REPORT",
     [](const char* v, Config& c, Expected& why) noexcept { return flag(v, c.faults_report, why); }, nullptr,
     "1: with GREENSHIM_FAULTS, the injected faults' counts on stderr at exit",
     "`1`: with `GREENSHIM_FAULTS`, print `greenshim: faults injected: eagain=N eintr=N short=N wake=N` on "
     "stderr at exit (if the program left stderr open)",
     "`0`"},
    {"GREENSHIM_LIB", nullptr, "--lib PATH", "path of libgreenshim.so to preload (greenrun only)",
     "(greenrun only) the `libgreenshim.so` to preload", "found beside greenrun"},
};
const std::size_t kSettingCount = sizeof kSettings / sizeof kSettings[0];

// The stack row's default text names kThreadStackDefault (and the runtime's
// own default, runtime/src/greenlet.cpp).
static_assert(kThreadStackDefault == std::size_t(1) << 20, "GREENSHIM_STACK_SIZE's default text says 1M");

// The CPUs this process may run on (its affinity mask), at least 1: `auto`
// for GREENSHIM_HUBS and GREENSHIM_SPARES.
GREENSHIM_STARTUP_CODE unsigned usable_cpus() noexcept {
    cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 1 ? unsigned(cpus) : 1;
}

}  // namespace greenshim::shim
