// main() of shim_tests: the doctest runner, after checking loudly that
// libgreenshim.so is really preloaded and active; and the child modes the
// exec tests run this binary in (they must not start doctest).
#define DOCTEST_CONFIG_IMPLEMENT
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "helpers.hpp"

namespace shimtest {

std::string self_exe() {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return {};
    return std::string(buf, std::size_t(n));
}

int wait_status(pid_t pid) {
    int st = 0;
    pid_t r;
    do r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    if (r != pid) return 200;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 100 + WTERMSIG(st);
    return 201;
}

pid_t fork_exec_self(const std::vector<std::string>& args) {
    std::string exe = self_exe();
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) != 0) return -1;
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        execv(exe.c_str(), argv.data());
        _exit(127);
    }
    close(sync[1]);
    char c;
    while (read(sync[0], &c, 1) > 0) {
    }
    close(sync[0]);
    return pid;
}

}  // namespace shimtest

namespace {

// ---- child modes: raw syscalls only ----

void raw_sleep_ms(long ms) {
    timespec ts{ms / 1000, (ms % 1000) * 1000000L};
    syscall(SYS_nanosleep, &ts, nullptr);
}

int child_main(int argc, char** argv) {
    std::string mode = argv[1];
    long arg = argc > 2 ? std::strtol(argv[2], nullptr, 10) : -1;
    if (mode == "--check-fd") {
        long a = syscall(SYS_fcntl, int(arg), F_GETFL);
        raw_sleep_ms(150);
        long b = syscall(SYS_fcntl, int(arg), F_GETFL);
        if (a < 0 || b < 0) return 2;
        if ((a | b) & O_NONBLOCK) {
            std::fprintf(stderr, "check-fd: fd %ld O_NONBLOCK at start=%d, 150 ms later=%d\n", arg,
                         int((a & O_NONBLOCK) != 0), int((b & O_NONBLOCK) != 0));
            return 1;
        }
        return 0;
    }
    if (mode == "--blocking-read") {
        if (argc > 3) raw_sleep_ms(std::strtol(argv[3], nullptr, 10));
        char c;
        long r = syscall(SYS_read, int(arg), &c, 1);
        if (r == 1) return 0;
        if (r < 0 && errno == EAGAIN) return 3;
        return 4;
    }
    if (mode == "--hold") {
        raw_sleep_ms(arg);
        return 0;
    }
    std::fprintf(stderr, "shim_tests: unknown child mode %s\n", mode.c_str());
    return 99;
}

// ---- is the shim really there? ----

bool maps_contain(const char* what) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line))
        if (line.find(what) != std::string::npos) return true;
    return false;
}

std::string shim_problem() {
    if (!maps_contain("libgreenshim.so")) return "libgreenshim.so is not mapped (is LD_PRELOAD set?)";
    void* def = dlsym(RTLD_DEFAULT, "read");
    Dl_info info{};
    if (!def || !dladdr(def, &info) || !info.dli_fname || !std::strstr(info.dli_fname, "libgreenshim.so"))
        return std::string("read() resolves to ") + (info.dli_fname ? info.dli_fname : "?") +
               ", not to libgreenshim.so";
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void* real = libc ? dlsym(libc, "read") : nullptr;
    if (!real || real == def) return "read() in libc.so.6 is the same function as the default read()";
    const char* dis = std::getenv("GREENSHIM_DISABLE");
    if (dis && *dis && std::strcmp(dis, "0") && std::strcmp(dis, "no") && std::strcmp(dis, "false"))
        return "GREENSHIM_DISABLE is set: the shim is loaded but inert";
    // Functional check: a pipe the program makes blocking is non-blocking
    // underneath, and the program's fcntl does not show it.
    int fds[2];
    if (pipe(fds) != 0) return "pipe() failed";
    long raw = syscall(SYS_fcntl, fds[0], F_GETFL);
    int view = fcntl(fds[0], F_GETFL);
    close(fds[0]);
    close(fds[1]);
    if (!(raw & O_NONBLOCK) || (view & O_NONBLOCK))
        return "pipe() is not interposed (raw O_NONBLOCK " + std::to_string((raw & O_NONBLOCK) != 0) +
               ", fcntl view " + std::to_string((view & O_NONBLOCK) != 0) + ")";
    return {};
}

}  // namespace

TEST_CASE("the shim is preloaded and active") {
    std::string problem = shim_problem();
    INFO(problem);
    CHECK(problem.empty());
}

int main(int argc, char** argv) {
    if (argc >= 2 && std::strncmp(argv[1], "--", 2) == 0 &&
        (!std::strcmp(argv[1], "--check-fd") || !std::strcmp(argv[1], "--blocking-read") ||
         !std::strcmp(argv[1], "--hold")))
        return child_main(argc, argv);

    // GREENSHIM_TESTS_REFERENCE=1 runs without the shim check, to confirm on
    // the bare kernel what a test expects (only for cases that need no
    // greenlet concurrency: a plain blocking read would block the thread).
    const char* ref = std::getenv("GREENSHIM_TESTS_REFERENCE");
    std::string problem = (ref && !std::strcmp(ref, "1")) ? std::string() : shim_problem();
    if (!problem.empty()) {
        std::fprintf(stderr,
                     "\n*** shim_tests: THE SHIM IS NOT ACTIVE: %s\n"
                     "*** run under meson test (env shim_env) or with "
                     "LD_PRELOAD=.../build/shim/libgreenshim.so\n\n",
                     problem.c_str());
        return 1;
    }
    // Writes to a closed peer must report EPIPE instead of killing us.
    signal(SIGPIPE, SIG_IGN);

    doctest::Context ctx;
    ctx.applyCommandLine(argc, argv);
    return ctx.run();
}
