// Start-up: configuration from GREENSHIM_* variables, and resolving the real
// libc functions. The library never fails on bad configuration: it warns once
// on stderr and uses the default (scripts/greenrun rejects bad values loudly).
#include <sys/auxv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "shim.hpp"

namespace greenshim::shim {

namespace {
Config g_config;
int g_config_state = 0;  // 0 not read, 1 reading, 2 read
}  // namespace

// One line on stderr for a value the library does not accept: the value is
// shown as typed, but at most 40 bytes of it (a huge value stays one short
// line), and with bytes that could break the line or the terminal (control
// characters, non-ASCII) written as \xNN.
void warn_ignored(const char* name, const char* v, const char* expected) noexcept {
    constexpr std::size_t kShown = 40;
    char shown[kShown * 4 + 4];
    std::size_t out = 0, i = 0;
    for (; v[i] && i < kShown; ++i) {
        unsigned char c = static_cast<unsigned char>(v[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') shown[out++] = char(c);
        else out += std::size_t(std::snprintf(shown + out, 5, "\\x%02x", c));
    }
    if (v[i]) out += std::size_t(std::snprintf(shown + out, 4, "..."));
    shown[out] = 0;
    std::fprintf(stderr, "greenshim: ignoring %s=%s (expected %s)\n", name, shown, expected);
}

namespace {

// Unset or empty: the default, silently (as greenrun treats them).
bool parse_bool(const char* name, const char* v, bool dflt) {
    if (!v || !*v) return dflt;
    if (!std::strcmp(v, "1") || !std::strcmp(v, "yes") || !std::strcmp(v, "true")) return true;
    if (!std::strcmp(v, "0") || !std::strcmp(v, "no") || !std::strcmp(v, "false")) return false;
    warn_ignored(name, v, "0 or 1");
    return dflt;
}

// A size: digits, then optionally K, M or G (either case), optionally
// followed by B or iB ("256K", "256KiB", "1g", "262144"); greenrun's
// check_size accepts exactly these.
std::size_t parse_size(const char* name, const char* v, std::size_t dflt, std::size_t lo, std::size_t hi,
                       const char* expected) {
    if (!v || !*v) return dflt;
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
        warn_ignored(name, v, expected);
        return dflt;
    }
    return std::size_t(n * mult);
}

// A count from 0 to hi in plain decimal digits; 0 turns the feature off.
unsigned long parse_uint(const char* name, const char* v, unsigned long dflt, unsigned long hi) {
    if (!v || !*v) return dflt;
    unsigned long n = 0;
    const char* p = v;
    for (; *p >= '0' && *p <= '9' && n <= hi; ++p) n = n * 10 + unsigned(*p - '0');
    if (*p || n > hi) {
        char expected[64];
        std::snprintf(expected, sizeof expected, "milliseconds from 0 to %lu", hi);
        warn_ignored(name, v, expected);
        return dflt;
    }
    return n;
}

// GREENSHIM_STATS: off, "1" for stderr, or a path (one with a '/') to append to.
const char* parse_stats(const char* v) {
    if (!v || !*v) return nullptr;
    if (!std::strcmp(v, "1") || !std::strcmp(v, "yes") || !std::strcmp(v, "true")) return "1";
    if (!std::strcmp(v, "0") || !std::strcmp(v, "no") || !std::strcmp(v, "false")) return nullptr;
    if (std::strchr(v, '/')) return v;
    warn_ignored("GREENSHIM_STATS", v, "1, 0 or a file path with a '/'");
    return nullptr;
}

// RATE of GREENSHIM_FAULTS: a decimal fraction, 0 < RATE <= 1, checked on the
// text (as greenrun checks it) so that both accept exactly the same values.
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

// GREENSHIM_FAULTS=SEED:RATE, SEED a decimal number below 2^64. Unset or
// empty: off. A bad value is ignored (off) with one warning.
bool parse_faults(const char* v, std::uint64_t& seed, double& rate) {
    if (!v || !*v) return false;
    const char* colon = std::strchr(v, ':');
    bool ok = colon && colon != v && colon[1] && valid_rate(colon + 1);
    for (const char* p = v; ok && p < colon; ++p) ok = *p >= '0' && *p <= '9';
    if (ok) {
        errno = 0;
        seed = std::strtoull(v, nullptr, 10);
        rate = std::strtod(colon + 1, nullptr);
        ok = errno == 0 && rate > 0 && rate <= 1;
    }
    if (!ok) warn_ignored("GREENSHIM_FAULTS", v, "SEED:RATE with 0 < RATE <= 1, e.g. 42:0.05");
    return ok;
}

void read_config() noexcept {
    // A setuid/setgid process reads nothing from the environment and stays inert.
    if (getauxval(AT_SECURE)) {
        g_config.enabled = false;
        return;
    }
    g_config.enabled = !parse_bool("GREENSHIM_DISABLE", std::getenv("GREENSHIM_DISABLE"), false);
    g_config.stack_size = parse_size("GREENSHIM_STACK_SIZE", std::getenv("GREENSHIM_STACK_SIZE"), 0, 16 << 10,
                                     std::size_t(1) << 30, "a size from 16K to 1G, e.g. 256K");
    if (g_config.stack_size) Greenlet::set_default_stack_size(g_config.stack_size);
    if (const char* v = std::getenv("GREENSHIM_FILE_IO"); v && *v) {
        if (!std::strcmp(v, "pool")) g_config.file_io_pool = true;
        else if (std::strcmp(v, "direct") != 0) warn_ignored("GREENSHIM_FILE_IO", v, "direct or pool");
    }
    g_config.inherit = parse_bool("GREENSHIM_INHERIT", std::getenv("GREENSHIM_INHERIT"), true);
    g_config.stats = parse_stats(std::getenv("GREENSHIM_STATS"));
    g_config.monitor_ms = unsigned(parse_uint("GREENSHIM_MONITOR", std::getenv("GREENSHIM_MONITOR"), 0, 3600000));
    if (const char* v = std::getenv("GREENSHIM_TRACE"); v && *v && std::strcmp(v, "0") != 0) g_config.trace = v;
    g_config.faults_report = parse_bool("GREENSHIM_FAULTS_REPORT", std::getenv("GREENSHIM_FAULTS_REPORT"), false);
    std::uint64_t seed = 0;
    double rate = 0;
    if (parse_faults(std::getenv("GREENSHIM_FAULTS"), seed, rate) && g_config.enabled) {
        g_config.faults_seed = seed;
        g_config.faults_rate = rate;
        faults::configure(seed, rate, g_config.faults_report);
    }
}
}  // namespace

const Config& config() noexcept {
    if (__builtin_expect(__atomic_load_n(&g_config_state, __ATOMIC_ACQUIRE) != 2, 0)) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&g_config_state, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            read_config();
            __atomic_store_n(&g_config_state, 2, __ATOMIC_RELEASE);
        } else if (expected == 1) {
            // Re-entered while reading (getenv is not hooked, but be safe):
            // the defaults are a fine answer meanwhile.
            static const Config defaults{};
            return defaults;
        }
    }
    return g_config;
}

bool may_park(Hub*& hub) noexcept {
    hub = nullptr;
    if (!config().enabled || runtime_internal() || in_signal_handler()) return false;
    hub = Hub::existing();
    return !hub || !hub->in_hub();
}

bool may_park() noexcept {
    Hub* hub;
    return may_park(hub);
}

namespace {
// The next definition after ours; failing that (libc itself was preloaded
// ahead of us, so there is no "next": the program's calls then reach libc
// directly, and only ours need it), libc's own.
void* find_real(const char* name) noexcept {
    if (void* f = dlsym(RTLD_NEXT, name)) return f;
    static void* libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    return libc ? dlsym(libc, name) : nullptr;
}
}  // namespace

void* resolve(const char* name) noexcept {
    void* f = find_real(name);
    if (!f) {
        std::fprintf(stderr, "greenshim: cannot find the real %s in libc\n", name);
        std::abort();
    }
    return f;
}

namespace {
// Functions of the table a glibc older than this one's (2.36) may lack: a
// program that calls one was linked against a glibc that has it, so a gap
// is only fatal when it is used (resolve() aborts then, naming it).
constexpr const char* kOptionalReal[] = {
    "close_range", "closefrom", "pthread_clockjoin_np", "sem_clockwait", "pthread_mutex_clocklock",
    "pthread_cond_clockwait", "pthread_rwlock_clockrdlock", "pthread_rwlock_clockwrlock",
};
bool optional_real(const char* name) noexcept {
    for (const char* o : kOptionalReal)
        if (!std::strcmp(o, name)) return true;
    return false;
}
// A required function that is missing is named once here; the process goes
// on, and aborts only if something calls it (resolve()).
template <class F>
void resolve_now(F& slot, const char* name) noexcept {
    if (__atomic_load_n(&slot, __ATOMIC_ACQUIRE)) return;
    void* f = find_real(name);
    if (!f && !optional_real(name)) std::fprintf(stderr, "greenshim: cannot find the real %s in libc\n", name);
    __atomic_store_n(&slot, reinterpret_cast<F>(f), __ATOMIC_RELEASE);
}
}  // namespace

// The whole table at start-up, so that no interposer ever resolves a symbol
// later: dlsym takes the loader's lock and may allocate, which a signal
// handler (sem_post, write) or an allocator's own lock must never meet. A call
// made before this constructor runs (from an earlier library's constructor)
// still resolves lazily in REAL().
void resolve_all_real() noexcept {
#define GREENSHIM_RESOLVE_NOW(fn) resolve_now(real_slot_##fn, #fn);
    GREENSHIM_REAL_FUNCTIONS(GREENSHIM_RESOLVE_NOW)
#undef GREENSHIM_RESOLVE_NOW
}

__attribute__((constructor)) static void greenshim_init() {
    resolve_all_real();
    (void)config();
    hold_fault_signals();
    start_diagnostics();
}

}  // namespace greenshim::shim
