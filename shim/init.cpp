// Start-up: configuration from GREENSHIM_* variables (the table of
// config.cpp), and resolving the real libc functions. The library never fails
// on bad configuration: it warns once on stderr and uses the default
// (greenrun, through greenshim-config --check, rejects bad values loudly).
#include <link.h>
#include <sys/auxv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "greenshim/cold.hpp"
#include "shim.hpp"

namespace greenshim::shim {

Config g_config;
GREENSHIM_STARTUP_DATA int g_config_state = 0;  // 0 not read, 1 reading, 2 read

// One line on stderr for a value the library does not accept, the value shown
// short and printable (config.hpp, shown()).
void warn_ignored(const char* name, const char* v, const char* expected) noexcept {
    std::fprintf(stderr, "greenshim: ignoring %s=%s (expected %s)\n", name, shown(v).text, expected);
}

namespace {

// Each variable of the table (config.cpp) in turn: unset or empty means the
// default, silently; a bad value is warned about once and leaves the default.
void read_settings(Config& c) noexcept {
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        const char* v = s.parse ? std::getenv(s.name) : nullptr;
        Expected why;
        if (v && *v && !s.parse(v, c, why)) warn_ignored(s.name, v, why.text);
    }
}

void read_config() noexcept {
    // A setuid/setgid process reads nothing from the environment and stays inert.
    if (getauxval(AT_SECURE)) {
        g_config.enabled = false;
        return;
    }
    read_settings(g_config);
    if (g_config.stack_size) Greenlet::set_default_stack_size(g_config.stack_size);
    // Injection belongs to the shim's own calls: none when it interposes nothing.
    if (!g_config.enabled) g_config.faults_rate = 0;
    if (g_config.faults_rate) faults::configure(g_config.faults_seed, g_config.faults_rate, g_config.faults_report);
}
}  // namespace

const Config& config_first() noexcept {
    if (__atomic_load_n(&g_config_state, __ATOMIC_ACQUIRE) != 2) {
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


namespace {
// libc itself, already loaded (null if it is not). (Not a function-local
// static: its guard, __cxa_guard_acquire, is code of its own that every
// process's start would fault in for this one use.)
void* g_libc = nullptr;
void* libc_handle() noexcept {
    void* libc = __atomic_load_n(&g_libc, __ATOMIC_ACQUIRE);
    if (!libc) {
        libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);  // (two threads may both ask: the same handle)
        __atomic_store_n(&g_libc, libc, __ATOMIC_RELEASE);
    }
    return libc;
}
// The next definition after ours; failing that (libc itself was preloaded
// ahead of us, so there is no "next": the program's calls then reach libc
// directly, and only ours need it), libc's own.
void* find_real(const char* name) noexcept {
    if (void* f = dlsym(RTLD_NEXT, name)) return f;
    void* libc = libc_handle();
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

// The slots (shim.hpp), start-up data (cold.hpp): the next function fills
// every one of them in every process.
#define GREENSHIM_DEFINE_SLOT(fn) GREENSHIM_STARTUP_DATA decltype(&::fn) real_slot_##fn = nullptr;
GREENSHIM_REAL_FUNCTIONS(GREENSHIM_DEFINE_SLOT)
#undef GREENSHIM_DEFINE_SLOT

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

GREENSHIM_STARTUP_DATA bool g_raw_sockio = false;
namespace {
// Whether fn is code of the module loaded as libc.so.6 (by address, not with
// dlsym on libc_handle(): the dlopen behind it mallocs, in every process).
struct InLibc {
    std::uintptr_t pc;
    bool yes;
};
GREENSHIM_STARTUP_CODE int check_libc(struct dl_phdr_info* info, std::size_t, void* arg) noexcept {
    auto* w = static_cast<InLibc*>(arg);
    if (!module_holds(info, w->pc)) return 0;
    w->yes = module_named(info, "libc.so.6");
    return 1;
}
GREENSHIM_STARTUP_CODE bool in_libc(const void* fn) noexcept {
    InLibc w{reinterpret_cast<std::uintptr_t>(fn), false};
    if (fn) dl_iterate_phdr(check_libc, &w);
    return w.yes;
}
}  // namespace

void raw_sockio_init() noexcept {
    g_raw_sockio = in_libc(reinterpret_cast<void*>(REAL(recvfrom))) && in_libc(reinterpret_cast<void*>(REAL(sendto)));
}

// The library's DT_FINI (shim/meson.build: -fini), in place of crti's _fini,
// which is as empty on x86-64 (destructors run from .fini_array): _fini sits
// alone at the end of our code, and calling it faulted in a page at every
// exit. This one is beside the other exit code (cold.hpp).
extern "C" GREENSHIM_EXIT_CODE void greenshim_fini() {}

__attribute__((constructor)) static void greenshim_init() {
    // Every interposer's entry and exit (ShimCall) touch these in the
    // thread's own block: the hub fetches them ahead of a resume.
    Hub::note_hot_thread_local(&t_shim_depth);
    Hub::note_hot_thread_local(&t_hand_back);
    resolve_all_real();
    raw_sockio_init();
    (void)config();
    hold_fault_signals();
    stall_init();
    sync_init();
    start_diagnostics();
}

}  // namespace greenshim::shim
