// The GREENSHIM_* settings, in one table (kSettings, config.cpp). Everything
// else is made from it: the library reads its variables by walking it
// (read_config, init.cpp), and greenshim-config (greenshim_config.cpp), built
// from the same table and parsers, checks them for greenrun and prints
// greenrun --help's environment part and the README's table. So greenrun and
// the library accept exactly the same values, and the texts cannot drift.
//
// A new setting: a field of Config below, one entry in kSettings (its parser,
// greenrun option, help line, README meaning and default), and the code that
// acts on the field; then `build/shim/greenshim-config --markdown` for the
// README (the test readme_config_table fails until it matches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

namespace greenshim::shim {

// GREENSHIM_SPARES=auto: one fewer than the CPUs the process may run on, at
// least 1 (stall.cpp resolves it).
inline constexpr unsigned kSparesAuto = ~0u;
// GREENSHIM_HUBS=auto: the CPUs the process may run on (thread.cpp resolves it).
inline constexpr unsigned kHubsAuto = ~0u;
// The CPUs the process may run on (its affinity mask), at least 1.
unsigned usable_cpus() noexcept;

struct Config {
    bool enabled = true;            // false: GREENSHIM_DISABLE=1 or a setuid/setgid process
    std::size_t stack_size = 0;     // GREENSHIM_STACK_SIZE, 0 = unset (kThreadStackDefault, the runtime's)
    bool file_io_pool = false;      // GREENSHIM_FILE_IO=pool: regular-file I/O on the helper pool
    bool thread_locals_shared = false;  // GREENSHIM_THREAD_LOCALS=shared: threads share the OS thread's
    bool inherit = true;            // GREENSHIM_INHERIT=0: exec'd programs run without the shim
    const char* stats = nullptr;    // GREENSHIM_STATS: "1" (stderr) or a file to append to
    unsigned monitor_ms = 0;        // GREENSHIM_MONITOR: report a hub stalled this long
    unsigned handoff_ms = 10;       // GREENSHIM_HANDOFF: take the OS thread back after this long, 0 = never
    unsigned spares = kSparesAuto;  // GREENSHIM_SPARES: carrier OS threads at most (stall.cpp), 0 = none
    unsigned hubs = 1;              // GREENSHIM_HUBS: OS threads running greenlet threads (thread.cpp)
    const char* trace = nullptr;    // GREENSHIM_TRACE: families to trace, or "all"
    double faults_rate = 0;         // GREENSHIM_FAULTS=SEED:RATE (faults.hpp), 0 = off
    std::uint64_t faults_seed = 0;
    bool faults_report = false;     // GREENSHIM_FAULTS_REPORT=1: the counts on stderr at exit
};

// A greenlet thread's stack when GREENSHIM_STACK_SIZE is unset: C code run
// as a thread expects far more than a runtime greenlet's 256 KiB. The table's
// default text for GREENSHIM_STACK_SIZE says this number (config.cpp checks).
inline constexpr std::size_t kThreadStackDefault = std::size_t(1) << 20;

// What a bad value should have been: the text after "expected" in both
// messages, "greenshim: ignoring NAME=VALUE (expected ...)" (the library)
// and "greenrun: NAME=VALUE: expected ..." (greenshim-config --check).
struct Expected {
    char text[160];
    // Always false, so that a parser ends with `return why.say(...)`.
    bool say(const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));
};

struct Setting {
    const char* name;
    // Reads a non-empty value into the config; false (and why) for a bad one,
    // which leaves the config as it was. nullptr: greenrun's alone (the
    // library does not read it, greenrun checks it itself).
    bool (*parse)(const char* value, Config& into, Expected& why) noexcept;
    const char* option;   // greenrun's option that sets it, or nullptr
    const char* help;     // greenrun --help: what it does, one line (plain text)
    const char* meaning;  // the README's table: what it does, in full (markdown)
    const char* dflt;     // the default, as both say it (markdown: `code`)
};
// In both texts, {families} stands for GREENSHIM_TRACE's families:
// families_text(), the runtime's list (kTraceFamilies, greenshim/
// trace_families.hpp) as "io,socket,...".
struct Families {
    char text[128];
};
Families families_text() noexcept;

extern const Setting kSettings[];
extern const std::size_t kSettingCount;

// A value as both messages show it: at most its first 40 bytes (a huge value
// stays one short line), control, backslash and non-ASCII bytes as \xNN,
// "..." if there was more.
struct Shown {
    char text[40 * 4 + 4];
};
Shown shown(const char* value) noexcept;

// ---- for the programs outside the library (config_text.cpp) ----

// Every GREENSHIM_* variable of the environment checked with the library's
// own parsers: the first bad one is named on stderr in one line,
// "greenrun: NAME=VALUE: expected ...", and the answer is false.
bool check_environment() noexcept;
// The environment part of greenrun --help: each setting, its option, its
// help line and default, wrapped within 80 columns.
void print_help_env(std::FILE* out) noexcept;
// A table text as shown: {families} filled in; for plain text (code false),
// markdown's backticks dropped.
struct Rendered {
    char text[2048];
};
Rendered render(const char* text, bool code) noexcept;

}  // namespace greenshim::shim
