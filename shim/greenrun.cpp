// greenrun: runs a command with libgreenshim.so preloaded, so that its
// blocking calls switch greenlets instead of blocking the thread.
//
// A program of libc alone, linked statically (shim/meson.build): it starts,
// checks the GREENSHIM_* variables with the library's own parsers (the table
// of config.cpp, in this process) and execs the command, all in a small part
// of a millisecond, so that a test suite or a build system that starts
// thousands of processes under it pays for the library alone. It is not
// preloaded anywhere and interposes nothing. `greenrun --compare` execs
// scripts/lib/compare.py with python3 and `greenrun --dump` execs
// greenshim-dump, as they always did.
//
// Where things are, from this program's own directory (/proc/self/exe):
//   a build tree   build/shim/: the library, greenshim-dump beside it;
//                  compare.py in the source tree's scripts/lib/
//   an install     bin/: the library in lib*/, greenshim-dump in
//                  libexec/greenshim/, compare.py in share/greenshim/
// (scripts/greenrun, in a checkout, execs build/shim/greenrun.)
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "config.hpp"

using namespace greenshim::shim;

namespace {

// From shim/meson.build: the version, the install layout relative to bindir,
// and the source tree's compare.py (for a greenrun run from its build tree).
constexpr const char* kVersion = GREENRUN_VERSION;
constexpr const char* kLibFromBin = GREENRUN_LIB_FROM_BIN;
constexpr const char* kLibexecFromBin = GREENRUN_LIBEXEC_FROM_BIN;
constexpr const char* kDataFromBin = GREENRUN_DATA_FROM_BIN;
constexpr const char* kSourceCompare = GREENRUN_SOURCE_COMPARE;

char g_self_dir[PATH_MAX];

void usage(std::FILE* out) {
    std::fputs(
        "usage: greenrun [options] [--] CMD [ARGS...]\n"
        "\n"
        "Runs CMD with libgreenshim.so preloaded (added to any LD_PRELOAD already set).\n"
        "greenrun replaces itself with CMD: CMD's exit status is greenrun's, and a\n"
        "death by signal N is reported by your shell as 128+N, exactly as without it.\n"
        "\n"
        "options:\n"
        "  --print-lib         print the library path that would be preloaded, and exit\n"
        "  --dump PID [--dump-to FILE] [--dump-timeout S] [--raw]\n"
        "                      make running process PID (under greenshim) print every\n"
        "                      greenlet thread: number, name, state, the call it waits\n"
        "                      in (on which fd, lock, child), start function, backtrace.\n"
        "                      Sent as SIGRTMAX-2 with greenshim's sigqueue value (the\n"
        "                      program's own SIGRTMAX-2 handler never sees it); the\n"
        "                      process does not stop. The dump goes to its stderr, or\n"
        "                      to FILE only, and is printed here (greenrun --dump --help)\n"
        "  --compare [OPTS] -- CMD [ARGS...]\n"
        "                      run CMD unpatched and patched, compare exit status and\n"
        "                      output, measure both (greenrun --compare --help)\n"
        "  -h, --help          this text\n"
        "  --version           greenrun's version\n"
        "  -j N                same as --hubs N (GREENSHIM_HUBS)\n"
        "  and the option shown beside a variable below, which sets that variable\n"
        "\n",
        out);
    print_help_env(out);  // from the settings' table (config.hpp)
    std::fputs(
        "\n"
        "A deadlock (every greenlet waits for another, nothing else could wake any)\n"
        "is reported on stderr with each greenlet and where it waits; the process\n"
        "then exits with status 86.\n",
        out);
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("greenrun: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::exit(2);
}

bool is_file(const char* path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool is_executable(const char* path) { return access(path, X_OK) == 0; }

// dir/rest, or false when it does not fit.
bool join(char (&out)[PATH_MAX], const char* dir, const char* rest) {
    int n = std::snprintf(out, sizeof out, "%s/%s", dir, rest);
    return n > 0 && std::size_t(n) < sizeof out;
}

void find_self_dir(const char* argv0) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) path[n] = 0;
    else if (!std::strchr(argv0, '/') || !realpath(argv0, path)) path[0] = 0;
    char* slash = std::strrchr(path, '/');
    if (slash) *slash = 0;
    std::snprintf(g_self_dir, sizeof g_self_dir, "%s", path);
}

// The first DIR/*/NAME that is a file, DIR's entries in sorted order (as a
// shell's glob).
bool find_in_subdirs(char (&out)[PATH_MAX], const char* dir, const char* name) {
    DIR* d = opendir(dir);
    if (!d) return false;
    char best[NAME_MAX + 1] = "";
    while (const dirent* e = readdir(d)) {
        if (e->d_name[0] == '.' || (best[0] && std::strcmp(e->d_name, best) >= 0)) continue;
        char sub[PATH_MAX];
        if (std::snprintf(sub, sizeof sub, "%s/%s", e->d_name, name) < int(sizeof sub) && join(out, dir, sub) &&
            is_file(out))
            std::snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    if (!best[0]) return false;
    char sub[PATH_MAX];
    std::snprintf(sub, sizeof sub, "%s/%s", best, name);
    return join(out, dir, sub);
}

// The library to preload: GREENSHIM_LIB as given, or the first found (its
// real path): beside this program (a build tree), in the libdir of an install,
// in lib/*/, lib/ or lib64/ beside bin/. quiet: "" instead of dying.
const char* find_lib(bool quiet) {
    static char found[PATH_MAX];
    if (const char* lib = std::getenv("GREENSHIM_LIB"); lib && *lib) {
        if (is_file(lib)) return lib;
        if (quiet) return "";
        die("GREENSHIM_LIB=%s: no such file", shown(lib).text);
    }
    const char* dir = g_self_dir;
    char c[PATH_MAX], up[PATH_MAX];
    bool ok = (join(c, dir, "libgreenshim.so") && is_file(c)) ||
              (join(up, dir, kLibFromBin) && join(c, up, "libgreenshim.so") && is_file(c)) ||
              (join(up, dir, "../lib") && find_in_subdirs(c, up, "libgreenshim.so")) ||
              (join(c, dir, "../lib/libgreenshim.so") && is_file(c)) ||
              (join(c, dir, "../lib64/libgreenshim.so") && is_file(c));
    if (ok && realpath(c, found)) return found;
    if (quiet) return "";
    die("libgreenshim.so not found (build it with scripts/test, or set GREENSHIM_LIB)");
}

// A helper program: beside the library, in libexec/greenshim of an install,
// beside this program (a build tree).
const char* find_helper(const char* lib, const char* name) {
    static char found[PATH_MAX];
    char dir[PATH_MAX];
    std::snprintf(dir, sizeof dir, "%s", lib);
    if (char* slash = std::strrchr(dir, '/')) {
        *slash = 0;
        if (join(found, dir, name) && is_executable(found)) return found;
    }
    if (join(dir, g_self_dir, kLibexecFromBin) && join(found, dir, name) && is_executable(found)) return found;
    if (join(found, g_self_dir, name) && is_executable(found)) return found;
    return nullptr;
}

[[noreturn]] void exec_or_die(const char* path, char** argv) {
    execv(path, argv);
    std::fprintf(stderr, "greenrun: %s: %s\n", path, std::strerror(errno));
    std::exit(126);
}

// --dump and the rest: greenshim-dump takes them (the pid, --raw, --help),
// every "--dump" dropped and "--dump=" taken off.
[[noreturn]] void dump(char** args) {
    const char* helper = find_helper(find_lib(true), "greenshim-dump");
    if (!helper) die("--dump: greenshim-dump not found (build it: ninja -C build)");
    char** argv = args - 1;  // argv[0] in the slot before (the program name or an option): ours now
    int n = 0;
    argv[n++] = const_cast<char*>(helper);
    for (char** a = args; *a; ++a) {
        if (!std::strcmp(*a, "--dump")) continue;
        argv[n++] = !std::strncmp(*a, "--dump=", 7) ? *a + 7 : *a;
    }
    argv[n] = nullptr;
    exec_or_die(helper, argv);
}

// --compare: compare.py (stdlib python3) does the work.
[[noreturn]] void compare(const char* lib, char** args) {
    char compare_py[PATH_MAX], dir[PATH_MAX];
    if (!(join(dir, g_self_dir, kDataFromBin) && join(compare_py, dir, "compare.py") && is_file(compare_py))) {
        if (!is_file(kSourceCompare)) die("--compare: compare.py not found beside greenrun");
        std::snprintf(compare_py, sizeof compare_py, "%s", kSourceCompare);
    }
    char py[PATH_MAX] = "/usr/bin/python3";
    if (!is_executable(py)) {
        const char* path = std::getenv("PATH");
        bool found = false;
        for (const char* p = path ? path : ""; *p && !found;) {
            std::size_t len = std::strcspn(p, ":");
            found = std::snprintf(py, sizeof py, "%.*s/python3", int(len), p) < int(sizeof py) && len &&
                    is_executable(py);
            p += len + (p[len] == ':');
        }
        if (!found) die("--compare needs python3");
    }
    std::size_t n = 0;
    while (args[n]) ++n;
    char** argv = static_cast<char**>(std::malloc((n + 5) * sizeof *argv));
    if (!argv) die("out of memory");
    argv[0] = py;
    argv[1] = compare_py;
    argv[2] = const_cast<char*>("--lib");
    argv[3] = const_cast<char*>(lib);
    for (std::size_t i = 0; i <= n; ++i) argv[4 + i] = args[i];
    exec_or_die(py, argv);
}

// Does a name opt (its first len bytes), alone or as opt=VALUE (with_value)?
bool is_opt(const char* a, const char* opt, std::size_t len, bool with_value) {
    return !std::strncmp(a, opt, len) && (a[len] == 0 || (with_value && a[len] == '='));
}
bool is_opt(const char* a, const char* opt) { return is_opt(a, opt, std::strlen(opt), true); }

// What a missing value should have been, after its placeholder in the table
// ("--monitor needs milliseconds").
const char* value_noun(const char* placeholder) {
    static constexpr const char* kNouns[][2] = {
        {"MS", "milliseconds"}, {"FAMILIES", "a list of families"}, {"PATH", "a path"}};
    for (const auto& n : kNouns)
        if (!std::strcmp(placeholder, n[0])) return n[1];
    return "a value";
}

// The options that set a variable come from the settings' table (each
// Setting's option, config.cpp), so a new setting's option needs nothing
// here: "--opt VALUE" (also --opt=VALUE) sets VALUE; "--opt" alone sets 1;
// "--opt[=FILE]" sets 1, or FILE (./FILE when it has no '/': the library
// takes a value with a '/' as a path). *a is one of them: the variable set
// and a moved past its value; false otherwise.
bool set_from_table(char**& a) {
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        if (!s.option) continue;
        std::size_t len = std::strcspn(s.option, " [");
        const char* rest = s.option + len;  // "", " VALUE" or "[=FILE]"
        if (!is_opt(*a, s.option, len, *rest != 0)) continue;
        const char* value = (*a)[len] == '=' ? *a + len + 1 : nullptr;
        char path[PATH_MAX + 2];
        if (*rest == ' ' && !value) {
            if (!a[1]) die("%.*s needs %s", int(len), s.option, value_noun(rest + 1));
            value = *++a;
        } else if (*rest == '[' && value && !std::strchr(value, '/')) {
            std::snprintf(path, sizeof path, "./%s", value);
            value = path;
        }
        setenv(s.name, value ? value : "1", 1);
        return true;
    }
    return false;
}

}  // namespace

int main(int, char** argv) {
    find_self_dir(argv[0]);
    bool print_lib = false, comparing = false;
    char** a = argv + 1;
    for (; *a; ++a) {
        if (!std::strcmp(*a, "-h") || !std::strcmp(*a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!std::strcmp(*a, "--version")) {
            std::printf("greenrun %s\n", kVersion);
            return 0;
        }
        if (!std::strncmp(*a, "-j", 2) && (*a)[2] != '-') {  // -j N, -jN: make's spelling of --hubs N
            const char* n = (*a)[2] ? *a + 2 : a[1];
            if (!n) die("-j needs a number of hubs (or auto)");
            if (!(*a)[2]) ++a;
            setenv("GREENSHIM_HUBS", n, 1);
            continue;
        }
        if (set_from_table(a)) continue;
        if (!std::strcmp(*a, "--print-lib")) print_lib = true;
        else if (is_opt(*a, "--dump") || is_opt(*a, "--dump-to") || is_opt(*a, "--dump-timeout")) dump(a);
        else if (!std::strcmp(*a, "--compare")) {
            comparing = true;  // the rest is compare.py's
            ++a;
            break;
        } else if (!std::strcmp(*a, "--")) {
            ++a;
            break;
        } else if (**a == '-') die("unknown option %s (see greenrun --help)", *a);
        else break;
    }

    const char* lib = find_lib(false);
    // Every GREENSHIM_* value checked with the library's own parsers, so that
    // a bad one stops here, in one line, before anything runs.
    if (!check_environment()) return 2;
    if (print_lib) {
        std::printf("%s\n", lib);
        return 0;
    }
    if (comparing) compare(lib, a);
    if (!*a) {
        usage(stderr);
        return 2;
    }
    const char* old = std::getenv("LD_PRELOAD");
    if (old && *old) {
        std::size_t len = std::strlen(old) + 1 + std::strlen(lib) + 1;
        char* preload = static_cast<char*>(std::malloc(len));
        if (!preload) die("out of memory");
        std::snprintf(preload, len, "%s:%s", old, lib);
        setenv("LD_PRELOAD", preload, 1);
    } else {
        setenv("LD_PRELOAD", lib, 1);
    }
    // As a shell's `command -v`: a path must be an executable file; a name
    // must be in PATH (a file there that cannot run fails as the exec of a
    // shell would, status 126).
    if (std::strchr(*a, '/') && !(is_file(*a) && is_executable(*a))) die("%s: command not found", *a);
    execvp(*a, a);
    if (errno == ENOENT || errno == ENOTDIR) die("%s: command not found", *a);
    std::fprintf(stderr, "greenrun: %s: %s\n", *a, std::strerror(errno));
    return 126;
}
