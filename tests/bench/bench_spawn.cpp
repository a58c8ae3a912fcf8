// Benchmark 6 (startup) without hyperfine: times how long commands take to
// start and exit, with posix_spawnp + waitpid.
//
//   bench_spawn RUNS 'CMD1' ['CMD2' ...]
//
// Each CMD is one string split on blanks; leading NAME=VALUE words are set in
// its environment (`LD_PRELOAD=/x/libgreenshim.so true`). The commands run in
// turn (CMD1, CMD2, ..., CMD1, ...) so that drift on the machine hits them
// alike, after RUNS/10 unmeasured warm-up rounds; stdout and stderr go to
// /dev/null. Prints the mean, median and minimum wall time of each, the
// median CPU time (user+sys from wait4: what the command itself spent, which
// other programs on a busy machine disturb far less than wall time), and
// `result spawn idx=I mean_ms=.. median_ms=.. min_ms=.. cpu_median_ms=..` lines.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.hpp"

extern char** environ;

namespace {

struct Cmd {
    std::string text;
    std::vector<std::string> env, argv;
    std::vector<double> ms, cpu_ms;
};

bool run(Cmd& c, bool record) {
    std::vector<char*> argv, envp;
    for (auto& a : c.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        bool overridden = false;
        for (auto& s : c.env)
            if (std::strncmp(*e, s.c_str(), s.find('=') + 1) == 0) overridden = true;
        if (!overridden) env.emplace_back(*e);
    }
    for (auto& s : c.env) env.push_back(s);
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    std::int64_t t0 = bench::now_ns();
    int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        std::fprintf(stderr, "bench_spawn: %s: %s\n", argv[0], std::strerror(rc));
        return false;
    }
    int st;
    struct rusage ru;
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {}
    std::int64_t t1 = bench::now_ns();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        std::fprintf(stderr, "bench_spawn: '%s' failed (status %d)\n", c.text.c_str(), st);
        return false;
    }
    if (record) {
        c.ms.push_back(double(t1 - t0) / 1e6);
        auto ms = [](const timeval& tv) { return double(tv.tv_sec) * 1e3 + double(tv.tv_usec) / 1e3; };
        c.cpu_ms.push_back(ms(ru.ru_utime) + ms(ru.ru_stime));
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench_spawn RUNS 'CMD1' ['CMD2' ...]\n");
        return 2;
    }
    int runs = std::atoi(argv[1]);
    if (runs <= 0) return 2;
    std::vector<Cmd> cmds;
    for (int i = 2; i < argc; ++i) {
        Cmd c;
        c.text = argv[i];
        std::istringstream in(c.text);
        std::string w;
        while (in >> w) {
            if (c.argv.empty() && w.find('=') != std::string::npos && w[0] != '=' && w[0] != '/')
                c.env.push_back(w);
            else
                c.argv.push_back(w);
        }
        if (c.argv.empty()) return 2;
        cmds.push_back(std::move(c));
    }
    int warm = std::max(1, runs / 10);
    for (int r = 0; r < warm + runs; ++r)
        for (auto& c : cmds)
            if (!run(c, r >= warm)) return 1;
    std::printf("startup: %d runs each, interleaved, after %d warm-up rounds (posix_spawnp + wait4)\n", runs, warm);
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        auto& v = cmds[i].ms;
        auto& cpu = cmds[i].cpu_ms;
        std::sort(v.begin(), v.end());
        std::sort(cpu.begin(), cpu.end());
        double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
        double med = v[v.size() / 2], cpu_med = cpu[cpu.size() / 2];
        std::printf("  %-60s mean %7.3f ms  median %7.3f ms  min %7.3f ms  cpu median %7.3f ms\n",
                    cmds[i].text.c_str(), mean, med, v[0], cpu_med);
        std::printf("result spawn idx=%zu mean_ms=%.4f median_ms=%.4f min_ms=%.4f cpu_median_ms=%.4f\n", i, mean,
                    med, v[0], cpu_med);
    }
    return 0;
}
