// Soak client: N connections to an echo server on 127.0.0.1:PORT, each
// sending pseudo-random data in writes of varying size for SECONDS and
// checking that exactly the same bytes come back, in order.
//
//     soak_client PORT N SECONDS [SEED]
//
// One thread, its own non-blocking sockets and a level-triggered epoll loop
// (it runs unpatched: it is the reference the server under test must
// satisfy). Each connection's byte stream is a function of (SEED, connection,
// offset), so what comes back is compared byte by byte with what must come
// back, and an FNV-1a checksum of everything sent is compared with one of
// everything received. At most kWindow bytes are in flight per connection.
// When the time is up every connection stops sending, waits for the last of
// its echo, half-closes and waits for the server's EOF (nothing more may
// come).
//
// Prints "connections N bytes B checksums-equal K min-bytes M seconds S" and
// exits 0 only if every connection finished with equal checksums (K == N)
// and no byte was lost, added or changed; otherwise says what went wrong on
// stderr and exits 1. Gives up (exit 1) if the exchange stalls for 60 s.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr std::size_t kWindow = 64 * 1024;  // bytes sent and not yet echoed, per connection
constexpr std::size_t kMaxWrite = 16 * 1024;
constexpr double kStallSeconds = 60;

double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Byte `offset` of connection `id`'s stream: 8 bytes per mix() of the word index.
struct Stream {
    std::uint64_t key;
    std::uint64_t word_index = ~0ull;
    std::uint64_t word = 0;
    unsigned char at(std::uint64_t offset) {
        std::uint64_t w = offset >> 3;
        if (w != word_index) {
            word_index = w;
            word = mix(key ^ (w * 0xd1b54a32d192ed03ull));
        }
        return static_cast<unsigned char>(word >> ((offset & 7) * 8));
    }
};

struct Fnv {
    std::uint64_t h = 0xcbf29ce484222325ull;
    void add(const unsigned char* p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    }
};

enum class Phase { connecting, running, draining, closing, done };

struct Conn {
    int fd = -1;
    Phase phase = Phase::connecting;
    Stream out, in;  // the same stream, for sending and for checking
    std::uint64_t sent = 0, received = 0;
    Fnv fnv_sent, fnv_received;
    std::uint64_t rng;
    std::uint32_t interest = 0;
};

// Write sizes from 1 byte to kMaxWrite, small ones often.
std::size_t next_write_size(std::uint64_t& rng) {
    std::uint64_t r = mix(rng++);
    switch (r % 6) {
    case 0: return 1 + (r >> 8) % 8;
    case 1: return 1 + (r >> 8) % 200;
    case 2: return 1460;
    case 3: return 1 + (r >> 8) % 4096;
    case 4: return 4096 + (r >> 8) % (kMaxWrite - 4096);
    default: return kMaxWrite;
    }
}

int g_epoll = -1;
int g_failures = 0;

void fail(std::size_t id, const char* what) {
    std::fprintf(stderr, "soak_client: connection %zu: %s%s%s\n", id, what, errno ? ": " : "",
                 errno ? std::strerror(errno) : "");
    ++g_failures;
}

void set_interest(Conn& c, std::uint32_t want, std::size_t id) {
    if (c.interest == want) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = id;
    if (epoll_ctl(g_epoll, EPOLL_CTL_MOD, c.fd, &ev) != 0) fail(id, "epoll_ctl");
    c.interest = want;
}

// Sends while the window allows; true if something was sent.
bool send_some(Conn& c, std::size_t id) {
    unsigned char buf[kMaxWrite];
    bool progress = false;
    while (c.sent - c.received < kWindow) {
        std::size_t n = std::min<std::size_t>(next_write_size(c.rng), kWindow - (c.sent - c.received));
        for (std::size_t i = 0; i < n; ++i) buf[i] = c.out.at(c.sent + i);
        ssize_t r = send(c.fd, buf, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            fail(id, "send");
            c.phase = Phase::done;
            return progress;
        }
        c.fnv_sent.add(buf, std::size_t(r));
        c.sent += std::uint64_t(r);
        progress = true;
        // A partial send: the rest of that write is generated again next time.
        if (std::size_t(r) < n) break;
    }
    return progress;
}

// Receives what is there and checks it; true if something came.
bool receive_some(Conn& c, std::size_t id) {
    unsigned char buf[65536];
    bool progress = false;
    for (;;) {
        ssize_t r = recv(c.fd, buf, sizeof buf, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return progress;
            if (errno == EINTR) continue;
            fail(id, "recv");
            c.phase = Phase::done;
            return progress;
        }
        if (r == 0) {
            errno = 0;
            if (c.phase != Phase::closing || c.received != c.sent) {
                char what[128];
                std::snprintf(what, sizeof what, "EOF after %llu of %llu bytes echoed",
                              (unsigned long long)c.received, (unsigned long long)c.sent);
                fail(id, what);
            }
            c.phase = Phase::done;
            return true;
        }
        progress = true;
        if (c.received + std::uint64_t(r) > c.sent) {
            errno = 0;
            fail(id, "more bytes came back than were sent");
            c.phase = Phase::done;
            return progress;
        }
        for (ssize_t i = 0; i < r; ++i) {
            if (buf[i] != c.in.at(c.received + std::uint64_t(i))) {
                errno = 0;
                char what[128];
                std::snprintf(what, sizeof what, "byte %llu differs", (unsigned long long)(c.received + i));
                fail(id, what);
                c.phase = Phase::done;
                return progress;
            }
        }
        c.fnv_received.add(buf, std::size_t(r));
        c.received += std::uint64_t(r);
    }
}

// After the time is up: once everything sent came back, half-close and
// wait for the server's EOF.
void close_when_echoed(Conn& c, std::size_t id) {
    if (c.phase != Phase::draining || c.received != c.sent) return;
    if (shutdown(c.fd, SHUT_WR) != 0) fail(id, "shutdown");
    c.phase = Phase::closing;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: soak_client PORT N SECONDS [SEED]\n");
        return 2;
    }
    int port = std::atoi(argv[1]);
    long n = std::atol(argv[2]);
    double seconds = std::atof(argv[3]);
    std::uint64_t seed = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 1;
    if (port <= 0 || n < 1 || seconds < 0) return 2;
    signal(SIGPIPE, SIG_IGN);

    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    if (g_epoll < 0) {
        std::perror("soak_client: epoll_create1");
        return 1;
    }
    std::vector<Conn> conns(static_cast<std::size_t>(n));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    for (std::size_t i = 0; i < conns.size(); ++i) {
        Conn& c = conns[i];
        c.out.key = c.in.key = mix(seed * 1000003 + i);
        c.rng = mix(seed ^ (i << 20));
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            fail(i, "socket");
            return 1;
        }
        if (connect(c.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
            fail(i, "connect");
            return 1;
        }
        epoll_event ev{};
        ev.events = c.interest = EPOLLIN | EPOLLOUT;
        ev.data.u64 = i;
        if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, c.fd, &ev) != 0) {
            fail(i, "epoll_ctl");
            return 1;
        }
    }

    double t0 = now_s(), stop_at = t0 + seconds, last_progress = t0;
    std::size_t unfinished = conns.size();
    std::vector<epoll_event> events(1024);
    bool stopping = false;
    while (unfinished > 0 && g_failures == 0) {
        double t = now_s();
        if (!stopping && t >= stop_at) {
            stopping = true;
            for (std::size_t i = 0; i < conns.size(); ++i) {
                Conn& c = conns[i];
                if (c.phase == Phase::running) {
                    c.phase = Phase::draining;
                    set_interest(c, EPOLLIN, i);
                    close_when_echoed(c, i);
                }
            }
        }
        if (t - last_progress > kStallSeconds) {
            std::fprintf(stderr, "soak_client: no progress for %.0f s, %zu connections unfinished\n", kStallSeconds,
                         unfinished);
            return 1;
        }
        int k = epoll_wait(g_epoll, events.data(), int(events.size()), 100);
        if (k < 0 && errno != EINTR) {
            std::perror("soak_client: epoll_wait");
            return 1;
        }
        for (int e = 0; e < k; ++e) {
            std::size_t id = events[e].data.u64;
            Conn& c = conns[id];
            if (c.phase == Phase::done) continue;
            bool progress = false;
            if (c.phase == Phase::connecting) {
                int soerr = 0;
                socklen_t len = sizeof soerr;
                getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
                if (soerr) {
                    errno = soerr;
                    fail(id, "connect");
                    break;
                }
                c.phase = stopping ? Phase::draining : Phase::running;
                progress = true;
            }
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) progress |= receive_some(c, id);
            if (c.phase == Phase::running) progress |= send_some(c, id);
            close_when_echoed(c, id);
            if (c.phase == Phase::running)
                set_interest(c, EPOLLIN | (c.sent - c.received < kWindow ? EPOLLOUT : 0u), id);
            else if (c.phase != Phase::done)
                set_interest(c, EPOLLIN, id);
            if (c.phase == Phase::done) {
                close(c.fd);
                --unfinished;
            }
            if (progress) last_progress = now_s();
        }
    }
    if (g_failures) return 1;

    double elapsed = now_s() - t0;
    std::uint64_t bytes = 0, min_bytes = ~0ull;
    std::size_t equal = 0;
    for (std::size_t i = 0; i < conns.size(); ++i) {
        const Conn& c = conns[i];
        bytes += c.sent;
        min_bytes = std::min(min_bytes, c.sent);
        if (c.sent == c.received && c.fnv_sent.h == c.fnv_received.h) ++equal;
        else std::fprintf(stderr, "soak_client: connection %zu: checksums differ\n", i);
    }
    std::printf("connections %zu bytes %llu checksums-equal %zu min-bytes %llu seconds %.1f\n", conns.size(),
                (unsigned long long)bytes, equal, (unsigned long long)min_bytes, elapsed);
    if (equal != conns.size()) return 1;
    if (min_bytes == 0 && seconds > 0) {
        std::fprintf(stderr, "soak_client: a connection transferred nothing\n");
        return 1;
    }
    return 0;
}
