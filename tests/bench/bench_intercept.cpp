// Benchmark 2, intercept: what the shim adds to a read() or write() that is
// ready at once (no wait), on a socketpair: the interposer's own cost.
//
//   bench_intercept [--lib PATH] [--iters N] [--reps R]
//       the driver: runs this same binary R times with LD_PRELOAD=PATH and R
//       times without, alternating, and compares the best run of each.
//   bench_intercept --child N
//       one run: N x (write 64 bytes to one end, read them at the other end);
//       prints the best ns per call (read or write) of 5 inner passes; then
//       the same with send/recv(MSG_DONTWAIT).
//
// The shim turns a read/write on a socket into recvfrom/sendto with
// MSG_DONTWAIT (strace shows it), a cheaper path through the kernel than
// read/write (no VFS layer). So the direct send/recv(MSG_DONTWAIT) figure,
// which makes exactly the syscalls the shim makes, is also printed: the shim's
// read minus that is the interposer's own cost.
//
// The binary is plain C++ (no greenshim code linked); under LD_PRELOAD its
// read/write go through libgreenshim.so's interposers. The child says which
// library its `write` resolves to, so a run that was not intercepted shows.
// Target: intercepted <= 1.05x direct.
#include <dlfcn.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"

extern char** environ;

namespace {

int child(long n) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        std::perror("socketpair");
        return 1;
    }
    Dl_info info{};
    void* w = dlsym(RTLD_DEFAULT, "write");
    const char* who = (w && dladdr(w, &info) && info.dli_fname) ? info.dli_fname : "?";
    const char* slash = std::strrchr(who, '/');
    char buf[64];
    std::memset(buf, 'x', sizeof buf);
    double best = 1e18, best_sr = 1e18;
    for (int pass = 0; pass < 5; ++pass) {
        std::int64_t t0 = bench::now_ns();
        for (long i = 0; i < n; ++i) {
            if (write(sv[0], buf, sizeof buf) != (ssize_t)sizeof buf) { std::perror("write"); return 1; }
            if (read(sv[1], buf, sizeof buf) != (ssize_t)sizeof buf) { std::perror("read"); return 1; }
        }
        std::int64_t t1 = bench::now_ns();
        best = std::min(best, double(t1 - t0) / double(2 * n));
        for (long i = 0; i < n; ++i) {
            if (send(sv[0], buf, sizeof buf, MSG_DONTWAIT) != (ssize_t)sizeof buf) { std::perror("send"); return 1; }
            if (recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) != (ssize_t)sizeof buf) { std::perror("recv"); return 1; }
        }
        std::int64_t t2 = bench::now_ns();
        best_sr = std::min(best_sr, double(t2 - t1) / double(2 * n));
    }
    std::printf("%.2f %.2f %s\n", best, best_sr, slash ? slash + 1 : who);
    return 0;
}

// Runs `self --child n` with or without LD_PRELOAD=lib; returns ns/call.
double run_child(const char* self, long n, const char* lib, std::string& resolved, double& sr) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) env.emplace_back(*e);
    if (lib) env.push_back(std::string("LD_PRELOAD=") + lib);
    std::vector<char*> envp;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string ns = std::to_string(n);
    char* argv[] = {const_cast<char*>(self), const_cast<char*>("--child"), ns.data(), nullptr};
    int pfd[2];
    if (pipe(pfd) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    pid_t pid;
    int rc = posix_spawn(&pid, self, &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        errno = rc;
        std::perror("posix_spawn");
        return -1;
    }
    std::string out;
    char b[256];
    ssize_t r;
    while ((r = read(pfd[0], b, sizeof b)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0) out.append(b, std::size_t(r));
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::fprintf(stderr, "bench_intercept: child failed (%s)\n", lib ? "preloaded" : "direct");
        return -1;
    }
    double v = -1;
    char name[200] = "?";
    if (std::sscanf(out.c_str(), "%lf %lf %199s", &v, &sr, name) < 2) return -1;
    resolved = name;
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    const char* lib = nullptr;
    long iters = 200000;
    int reps = 5;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--child" && i + 1 < argc) return child(std::atol(argv[i + 1]));
        if (a == "--lib" && i + 1 < argc) lib = argv[++i];
        else if (a == "--iters" && i + 1 < argc) iters = std::atol(argv[++i]);
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: bench_intercept [--lib PATH] [--iters N] [--reps R] | --child N\n");
            return 2;
        }
    }
    if (!lib) lib = std::getenv("GREENSHIM_LIB");
    if (!lib || access(lib, R_OK) != 0) {
        std::fprintf(stderr, "bench_intercept: give the library with --lib PATH (or GREENSHIM_LIB)\n");
        return 2;
    }
    if (iters <= 0 || reps <= 0) return 2;
    // The binary itself, by absolute path (posix_spawn does not search PATH).
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return 1;
    self[sl] = 0;

    double direct = 1e18, shim = 1e18, direct_sr = 1e18, shim_sr = 1e18;
    std::string direct_name, shim_name;
    for (int r = 0; r < reps; ++r) {
        double dsr = -1, ssr = -1;
        double d = run_child(self, iters, nullptr, direct_name, dsr);
        double s = run_child(self, iters, lib, shim_name, ssr);
        if (d < 0 || s < 0) return 1;
        direct = std::min(direct, d);
        shim = std::min(shim, s);
        direct_sr = std::min(direct_sr, dsr);
        shim_sr = std::min(shim_sr, ssr);
    }
    if (shim_name.find("greenshim") == std::string::npos) {
        std::fprintf(stderr, "bench_intercept: under LD_PRELOAD, write resolves to %s, not the shim\n",
                     shim_name.c_str());
        return 1;
    }
    std::printf("intercept: ready 64-byte read()/write() on a socketpair, ns per call, best of %d runs x 5 passes x %ld write+read\n",
                reps, iters);
    std::printf("  %-58s %8.1f ns\n", ("read/write, direct (write -> " + direct_name + ")").c_str(), direct);
    std::printf("  %-58s %8.1f ns  (%+.1f ns)\n", ("read/write, LD_PRELOAD (write -> " + shim_name + ")").c_str(), shim,
                shim - direct);
    std::printf("  %-58s %8.1f ns\n", "send/recv(MSG_DONTWAIT), direct (the shim's syscalls)", direct_sr);
    std::printf("  %-58s %8.1f ns\n", "send/recv(MSG_DONTWAIT), LD_PRELOAD", shim_sr);
    std::printf("  %-58s %+8.1f ns\n", "interposer's own cost (shim read/write - direct send/recv)", shim - direct_sr);
    std::printf("result intercept direct_ns=%.1f shim_ns=%.1f added_ns=%.1f ratio=%.3f direct_sr_ns=%.1f shim_sr_ns=%.1f "
                "own_ns=%.1f\n",
                direct, shim, shim - direct, shim / direct, direct_sr, shim_sr, shim - direct_sr);
    char detail[96];
    std::snprintf(detail, sizeof detail, " (%.1f ns vs %.1f ns)", shim, direct);
    bench::report_target("intercept shim/direct", shim / direct, 1.05, true, detail);
    return 0;
}
