// Churn client: opens and closes TOTAL connections to an echo server on
// 127.0.0.1:PORT, BATCH at a time, each with one tiny checked echo.
//
//     churn_client PORT TOTAL BATCH
//
// A batch: connect BATCH blocking sockets, send an 8-byte message on each,
// read every echo back (so the server has accepted each connection and a
// thread serves it: BATCH threads are alive at once), then close them all.
// Sources cycle over 127.0.0.1-127.0.0.200 so that TIME_WAIT (this side
// closes first) never runs out of ports, whatever tcp_tw_reuse says.
// Prints "ok TOTAL SECONDS" and exits 0, or says what failed and exits 1.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr int kSources = 200;

double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

int fail(long id, const char* what) {
    std::fprintf(stderr, "churn_client: connection %ld: %s: %s\n", id, what, errno ? std::strerror(errno) : "mismatch");
    return -1;
}

int open_one(long id, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(id, "socket");
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);  // the port is picked at connect
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + std::uint32_t(id % kSources));
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dst.sin_port = htons(std::uint16_t(port));
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
        connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
        fail(id, "connect");
        close(fd);
        return -1;
    }
    return fd;
}

bool exchange_all(long first, const std::vector<int>& fds) {
    char out[9], in[8];  // 8 digits and the NUL of snprintf
    for (std::size_t i = 0; i < fds.size(); ++i) {
        std::snprintf(out, sizeof out, "%08lu", static_cast<unsigned long>(first + long(i)) % 100000000ul);
        if (write(fds[i], out, 8) != 8) return fail(first + long(i), "write") == 0;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
        std::snprintf(out, sizeof out, "%08lu", static_cast<unsigned long>(first + long(i)) % 100000000ul);
        std::size_t got = 0;
        while (got < 8) {
            errno = 0;
            ssize_t r = read(fds[i], in + got, 8 - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return fail(first + long(i), r == 0 ? "read: early EOF" : "read") == 0;
            got += std::size_t(r);
        }
        errno = 0;
        if (std::memcmp(in, out, 8) != 0) return fail(first + long(i), "echo differs") == 0;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: churn_client PORT TOTAL BATCH\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    long total = std::atol(argv[2]);
    long batch = std::atol(argv[3]);
    if (port <= 0 || total < 0 || batch < 1) return 2;
    signal(SIGPIPE, SIG_IGN);
    double t0 = now_s();
    std::vector<int> fds;
    for (long done = 0; done < total;) {
        long k = batch < total - done ? batch : total - done;
        fds.clear();
        bool ok = true;
        for (long i = 0; i < k && ok; ++i) {
            int fd = open_one(done + i, port);
            ok = fd >= 0;
            if (ok) fds.push_back(fd);
        }
        ok = ok && exchange_all(done, fds);
        for (int fd : fds) close(fd);
        if (!ok) return 1;
        done += k;
    }
    std::printf("ok %ld %.2f\n", total, now_s() - t0);
    return 0;
}
