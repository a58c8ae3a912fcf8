// Load generator for benchmark 3 (echo): one thread, epoll, N TCP
// connections, each doing ping-pong with SIZE-byte messages (send one, wait
// for all of it to come back, send the next).
//
//   echo_load PORT CONNS SECONDS [--warmup S] [--size BYTES] [--server-pid PID]
//             [--ramp-batch K]
//
// Connections are opened at most K (default 64) at a time: a connection
// counts as up once its first echo is back, so the server's listen queue
// never overflows, whatever backlog the server asked for; it then
// idles until all are up. Then every connection starts its ping-pong: WARMUP
// seconds (default 1) run unmeasured, then SECONDS are measured: messages per
// second, p50 and p99 round-trip latency, and the load's own CPU use (near
// 100%: the load, not the server, is the limit). With --server-pid it also
// reads the server's /proc at both ends of the window: CPU use, CPU time per
// message, VmHWM, VmRSS and OS threads at the end; and /proc/stat, for the CPU
// time other processes took meanwhile (a busy machine shows there).
//
// Prints a human line and one `result echo key=value ...` line; exit 1 if a
// connection failed or was closed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace {

struct Conn {
    int fd = -1;
    int got = 0;           // bytes of the current echo received
    bool connected = false;
    bool up = false;       // first echo received
    std::int64_t sent_at = 0;
};

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: echo_load PORT CONNS SECONDS [--warmup S] [--size BYTES] [--server-pid PID] [--ramp-batch K]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) usage();
    int port = std::atoi(argv[1]);
    long nconns = std::atol(argv[2]);
    double seconds = std::atof(argv[3]);
    double warmup = 1.0;
    int size = 64;
    long server_pid = 0;
    long batch = 64;
    for (int i = 4; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage();
        if (a == "--warmup") warmup = std::atof(argv[++i]);
        else if (a == "--size") size = std::atoi(argv[++i]);
        else if (a == "--server-pid") server_pid = std::atol(argv[++i]);
        else if (a == "--ramp-batch") batch = std::atol(argv[++i]);
        else usage();
    }
    if (port <= 0 || nconns <= 0 || seconds <= 0 || size <= 0 || size > 65536 || batch <= 0) usage();

    rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rlim_t(nconns + 16) > rl.rlim_cur) {
        std::fprintf(stderr, "echo_load: %ld connections need more fds than RLIMIT_NOFILE %llu\n", nconns,
                     (unsigned long long)rl.rlim_cur);
        return 1;
    }

    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(uint16_t(port));

    int ep = epoll_create1(EPOLL_CLOEXEC);
    std::vector<Conn> conns(static_cast<std::size_t>(nconns));
    std::vector<char> msg(static_cast<std::size_t>(size), 'p'), rbuf(static_cast<std::size_t>(size));
    std::vector<std::uint32_t> lat;
    lat.reserve(1 << 20);
    long opened = 0, up = 0, errors = 0;
    long long total = 0, measured = 0;
    const int one = 1;

    auto fail = [&](const char* what, long i) {
        if (errors++ < 5)
            std::fprintf(stderr, "echo_load: connection %ld: %s: %s\n", i, what, errno ? std::strerror(errno) : "closed");
    };
    auto send_ping = [&](long i, std::int64_t now) -> bool {
        Conn& c = conns[std::size_t(i)];
        c.got = 0;
        c.sent_at = now;
        ssize_t w = write(c.fd, msg.data(), msg.size());
        if (w != ssize_t(msg.size())) {
            fail("write", i);
            return false;
        }
        return true;
    };
    auto open_one = [&]() -> bool {
        long i = opened++;
        Conn& c = conns[std::size_t(i)];
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            fail("socket", i);
            return false;
        }
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
            fail("connect", i);
            return false;
        }
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = std::uint64_t(i);
        epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
        return true;
    };

    std::int64_t t_begin = bench::now_ns();
    std::int64_t t_up = 0, t_measure = 0, t_end = 0;  // set once all are up
    long long cpu0 = 0, cpu1 = 0, busy0 = 0, busy1 = 0;
    std::int64_t self_cpu0 = 0, self_cpu1 = 0;
    auto self_cpu = [] {
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    };
    const std::int64_t ramp_limit = t_begin + 120 * std::int64_t(1000000000);
    std::vector<epoll_event> events(1024);
    bool measuring = false;

    while (errors == 0) {
        while (opened < nconns && opened - up < batch)
            if (!open_one()) break;
        std::int64_t now = bench::now_ns();
        if (t_up == 0 && up == nconns) {
            // All up: every connection starts its ping-pong now.
            t_up = now;
            t_measure = t_up + std::int64_t(warmup * 1e9);
            t_end = t_measure + std::int64_t(seconds * 1e9);
            for (long i = 0; i < nconns && errors == 0; ++i) send_ping(i, bench::now_ns());
            if (errors) break;
        }
        if (t_up == 0 && now > ramp_limit) {
            std::fprintf(stderr, "echo_load: only %ld of %ld connections up after 120 s\n", up, nconns);
            return 1;
        }
        if (t_up != 0 && !measuring && now >= t_measure) {
            measuring = true;
            self_cpu0 = self_cpu();
            busy0 = bench::machine_busy_ticks();
            if (server_pid > 0) cpu0 = bench::proc_cpu_ticks(server_pid);
        }
        if (t_up != 0 && now >= t_end) break;
        int timeout = 100;
        if (t_up != 0) {
            std::int64_t next = measuring ? t_end : t_measure;
            timeout = int(std::max<std::int64_t>(1, (next - now) / 1000000 + 1));
        }
        int n = epoll_wait(ep, events.data(), int(events.size()), timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::perror("epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; ++k) {
            long i = long(events[std::size_t(k)].data.u64);
            Conn& c = conns[std::size_t(i)];
            if (!c.connected) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errno = err;
                    fail("connect", i);
                    break;
                }
                c.connected = true;
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = std::uint64_t(i);
                epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
                if (!send_ping(i, bench::now_ns())) break;
                continue;
            }
            ssize_t r = read(c.fd, rbuf.data(), std::size_t(size - c.got));
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                if (r == 0) errno = 0;
                fail("read", i);
                break;
            }
            c.got += int(r);
            if (c.got < size) continue;
            std::int64_t t = bench::now_ns();
            ++total;
            if (!c.up) {
                // Up; it idles until all are (so the ramp does not compete
                // with the ping-pong of the connections already up).
                c.up = true;
                ++up;
                continue;
            } else if (measuring && t < t_end) {
                ++measured;
                std::int64_t d = t - c.sent_at;
                lat.push_back(std::uint32_t(std::min<std::int64_t>(d, 0xffffffffLL)));
            }
            if (!send_ping(i, t)) break;
        }
    }
    if (errors) {
        std::fprintf(stderr, "echo_load: %ld error(s); %ld of %ld connections were up\n", errors, up, nconns);
        return 1;
    }
    self_cpu1 = self_cpu();
    busy1 = bench::machine_busy_ticks();
    long hwm = -1, rss = -1, threads = -1;
    if (server_pid > 0) {
        cpu1 = bench::proc_cpu_ticks(server_pid);
        hwm = bench::proc_status_field(server_pid, "VmHWM");
        rss = bench::proc_status_field(server_pid, "VmRSS");
        threads = bench::proc_status_field(server_pid, "Threads");
    }
    double window = double(t_end - t_measure) / 1e9;
    double rate = double(measured) / window;
    double p50 = 0, p99 = 0;
    if (!lat.empty()) {
        std::size_t i50 = lat.size() / 2, i99 = std::min(lat.size() - 1, lat.size() * 99 / 100);
        std::nth_element(lat.begin(), lat.begin() + long(i50), lat.end());
        p50 = lat[i50] / 1e3;
        std::nth_element(lat.begin(), lat.begin() + long(i99), lat.end());
        p99 = lat[i99] / 1e3;
    }
    double tick = double(sysconf(_SC_CLK_TCK));
    double cpu_s = server_pid > 0 && cpu0 >= 0 && cpu1 >= 0 ? double(cpu1 - cpu0) / tick : -1;
    double cpu_pct = cpu_s >= 0 ? 100.0 * cpu_s / window : -1;
    double cpu_us_per_msg = cpu_s >= 0 && measured ? cpu_s * 1e6 / double(measured) : -1;
    double load_pct = 100.0 * double(self_cpu1 - self_cpu0) / 1e9 / window;
    // What the rest of the machine used meanwhile (percent of one CPU): high
    // means another program competed with the server or the load.
    double other_pct = -1;
    if (server_pid > 0 && cpu_s >= 0 && busy0 >= 0 && busy1 >= 0)
        other_pct = std::max(0.0, 100.0 * (double(busy1 - busy0) / tick - cpu_s) / window - load_pct);
    std::printf("echo_load: %ld conns x %d B ping-pong, %.2f s measured after %.2f s warm-up (ramp %.2f s): "
                "%.0f msgs/s, p50 %.1f us, p99 %.1f us, load CPU %.0f%%",
                nconns, size, window, warmup, double(t_up - t_begin) / 1e9, rate, p50, p99, load_pct);
    if (server_pid > 0)
        std::printf("; server CPU %.0f%%, %.2f us/msg, VmHWM %ld KiB, threads %ld; other processes %.0f%% CPU",
                    cpu_pct, cpu_us_per_msg, hwm, threads, other_pct);
    std::printf("\n");
    std::printf("result echo conns=%ld size=%d seconds=%.3f msgs=%lld rate=%.0f p50_us=%.1f p99_us=%.1f total_msgs=%lld "
                "ramp_s=%.2f server_cpu_pct=%.1f server_cpu_us_per_msg=%.3f server_hwm_kib=%ld server_rss_kib=%ld "
                "server_threads=%ld load_cpu_pct=%.1f other_cpu_pct=%.1f\n",
                nconns, size, window, measured, rate, p50, p99, total, double(t_up - t_begin) / 1e9, cpu_pct,
                cpu_us_per_msg, hwm, rss, threads, load_pct, other_pct);
    std::fflush(stdout);
    for (auto& c : conns)
        if (c.fd >= 0) close(c.fd);
    return 0;
}
