// Shared by the benchmark programs: a monotonic clock, target reporting, and
// reading /proc/PID/status fields.
//
// Every figure a benchmark compares with a target is a ratio of two things
// measured side by side in the same run. Each benchmark prints, for every
// target, one line:
//
//   target <name>: <ratio>x (<measured>) vs <op> <limit>x: MET
//   target <name>: <ratio>x (<measured>) vs <op> <limit>x: MISSED by 12.3%
//
// and machine-readable `result key=value ...` lines that scripts/bench
// collects into bench/results.md.
#pragma once

#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace bench {

inline std::int64_t now_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// MISSED by X%: how far the ratio is from the limit, relative to the limit.
// at_most: the target is ratio <= limit (a cost); else ratio >= limit.
inline bool report_target(const char* name, double ratio, double limit, bool at_most, const char* detail = "") {
    bool met = at_most ? ratio <= limit : ratio >= limit;
    double miss = at_most ? (ratio / limit - 1) * 100 : (1 - ratio / limit) * 100;
    if (met)
        std::printf("target %s: %.3fx%s vs %s %.2fx: MET\n", name, ratio, detail, at_most ? "<=" : ">=", limit);
    else
        std::printf("target %s: %.3fx%s vs %s %.2fx: MISSED by %.1f%%\n", name, ratio, detail,
                    at_most ? "<=" : ">=", limit, miss);
    std::fflush(stdout);
    return met;
}

// A numeric field of /proc/<pid>/status ("VmRSS", "VmHWM", "Threads", ...),
// in the unit the kernel prints (kB for Vm*); -1 if absent.
inline long proc_status_field(long pid, const char* field) {
    char path[64];
    if (pid > 0) std::snprintf(path, sizeof path, "/proc/%ld/status", pid);
    else std::snprintf(path, sizeof path, "/proc/self/status");
    FILE* f = std::fopen(path, "re");
    if (!f) return -1;
    char line[256];
    long v = -1;
    std::size_t n = std::strlen(field);
    while (std::fgets(line, sizeof line, f)) {
        if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
            v = std::strtol(line + n + 1, nullptr, 10);
            break;
        }
    }
    std::fclose(f);
    return v;
}

// utime + stime of a process (all its threads), in clock ticks; -1 if gone.
inline long long proc_cpu_ticks(long pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE* f = std::fopen(path, "re");
    if (!f) return -1;
    char buf[1024];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')');  // the command name may hold spaces
    if (!p) return -1;
    // fields after ") ": 3 state ... 14 utime 15 stime
    long long ut = 0, st = 0;
    int field = 2;
    for (const char* q = p + 1; *q; ++q) {
        if (*q == ' ') {
            ++field;
            if (field == 14) ut = std::strtoll(q + 1, nullptr, 10);
            if (field == 15) {
                st = std::strtoll(q + 1, nullptr, 10);
                break;
            }
        }
    }
    return ut + st;
}

// Busy CPU time of the whole machine, all CPUs, in clock ticks: user + nice
// + system + irq + steal from /proc/stat (guest time is inside user). Idle,
// iowait and softirq are left out: loopback TCP does its receive work in
// softirq, which the kernel accounts to no process, so leaving it out lets
//   machine busy - (our processes' utime + stime)
// measure what other processes took from the machine during a benchmark.
inline long long machine_busy_ticks() {
    FILE* f = std::fopen("/proc/stat", "re");
    if (!f) return -1;
    unsigned long long v[8] = {};
    int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                        &v[6], &v[7]);
    std::fclose(f);
    if (n < 8) return -1;
    // user nice system idle iowait irq softirq steal
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[7]);
}

}  // namespace bench
