// Benchmark 4, scale: N greenlets parked in sleep on one OS thread, through
// the gevent-style API (greenshim::spawn + greenshim::sleep).
//
//   bench_scale N [STACK_SIZE]      (STACK_SIZE in bytes, K or M; default:
//                                    the runtime's default, 256K)
//
// Measures the VmRSS growth from before the first spawn to when all N are
// parked (RSS per parked greenlet = delta / N), the spawn rate (spawn() calls
// per second) and the spawn-to-parked rate (each greenlet has started, taken a
// stack and parked in its sleep). Also prints VmPTE (page tables, not in
// VmRSS) and the number of kernel mappings.
//
// Each stack is two kernel mappings (stack + guard page): when 2N would pass
// vm.max_map_count, N is cut to what fits and the output says so (the
// runtime would otherwise fail an mmap in the middle).
// Target: <= 8 KiB per parked greenlet.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench_common.hpp"
#include "greenshim/gevent.hpp"

namespace {

long count_maps() {
    FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = std::fgetc(f)) != EOF)
        if (c == '\n') ++n;
    std::fclose(f);
    return n;
}

long read_long_file(const char* path) {
    FILE* f = std::fopen(path, "re");
    if (!f) return -1;
    long v = -1;
    if (std::fscanf(f, "%ld", &v) != 1) v = -1;
    std::fclose(f);
    return v;
}

std::size_t parse_size(const char* s) {
    char* end;
    double v = std::strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
    }
    return std::size_t(v);
}

long parked = 0;

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench_scale N [STACK_SIZE]\n");
        return 2;
    }
    long want = std::atol(argv[1]);
    if (want <= 0) return 2;
    if (argc > 2) greenshim::Greenlet::set_default_stack_size(parse_size(argv[2]));
    std::size_t stack = greenshim::Greenlet::default_stack_size();

    // Create the hub (and its own greenlet) before the baseline.
    greenshim::sleep(0);
    long max_maps = read_long_file("/proc/sys/vm/max_map_count");
    long maps0 = count_maps();
    long n = want;
    const char* limited = "";
    if (max_maps > 0 && maps0 >= 0 && 2 * n + maps0 + 64 > max_maps) {
        n = (max_maps - maps0 - 64) / 2;
        limited = " (LIMITED by vm.max_map_count)";
        if (n <= 0) {
            std::fprintf(stderr, "bench_scale: no room under vm.max_map_count=%ld\n", max_maps);
            return 1;
        }
    }

    long rss0 = bench::proc_status_field(0, "VmRSS");
    long pte0 = bench::proc_status_field(0, "VmPTE");
    std::int64_t t0 = bench::now_ns();
    for (long i = 0; i < n; ++i) {
        greenshim::spawn([] {
            ++parked;
            greenshim::sleep(86400);
        });  // the handle is dropped: the greenlet runs on
    }
    std::int64_t t1 = bench::now_ns();
    // Let every spawned greenlet start and park (sleep(0) runs each ready one once).
    while (parked < n) greenshim::sleep(0);
    std::int64_t t2 = bench::now_ns();
    long rss1 = bench::proc_status_field(0, "VmRSS");
    long pte1 = bench::proc_status_field(0, "VmPTE");
    long maps1 = count_maps();
    long hwm = bench::proc_status_field(0, "VmHWM");
    long threads = bench::proc_status_field(0, "Threads");

    double per = double(rss1 - rss0) * 1024.0 / double(n);
    double spawn_rate = double(n) / (double(t1 - t0) / 1e9);
    double park_rate = double(n) / (double(t2 - t0) / 1e9);
    std::printf("scale: %ld greenlets parked in sleep%s, stack size %zu KiB, vm.max_map_count %ld, OS threads %ld\n",
                n, limited, stack / 1024, max_maps, threads);
    std::printf("  VmRSS %ld -> %ld KiB: %.0f bytes (%.2f KiB) per parked greenlet; VmHWM %ld KiB\n", rss0, rss1,
                per, per / 1024, hwm);
    std::printf("  VmPTE (page tables, not in VmRSS) %ld -> %ld KiB: %.0f bytes per greenlet; mappings %ld -> %ld\n",
                pte0, pte1, double(pte1 - pte0) * 1024.0 / double(n), maps0, maps1);
    std::printf("  spawn() %.0f /s; spawn + start + park %.0f /s (%.2f s for all)\n", spawn_rate, park_rate,
                double(t2 - t0) / 1e9);
    std::printf("result scale wanted=%ld n=%ld stack_kib=%zu rss_per_greenlet_b=%.0f pte_per_greenlet_b=%.0f "
                "spawn_per_s=%.0f park_per_s=%.0f seconds=%.2f rss_kib=%ld threads=%ld limited=%d max_map_count=%ld\n",
                want, n, stack / 1024, per, double(pte1 - pte0) * 1024.0 / double(n), spawn_rate, park_rate,
                double(t2 - t0) / 1e9, rss1, threads, n < want ? 1 : 0, max_maps);
    char detail[96];
    std::snprintf(detail, sizeof detail, " (%.2f KiB per greenlet / 8 KiB)", per / 1024);
    char name[64];
    std::snprintf(name, sizeof name, "scale %ld x %zuK-stack rss/8KiB", n, stack / 1024);
    bench::report_target(name, per / 8192.0, 1.0, true, detail);
    std::fflush(stdout);
    // N greenlets are parked: leave without unwinding each of them.
    _exit(0);
}
