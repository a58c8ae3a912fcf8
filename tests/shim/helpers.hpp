// Helpers for the shim tests: programs that run with libgreenshim.so
// preloaded and expect, from every interposed call, exactly what a blocking
// program would see unpatched.
//
// Conventions:
//  * fds are made with the plain libc calls (pipe, socketpair, socket), so the
//    shim sees them created, as it would in any program;
//  * timing: lower bounds are strict (a call must never return early), upper
//    bounds generous (two slow cores, tests run in parallel);
//  * every spawned greenlet is joined before its test case returns;
//  * a call that a buggy shim could turn into a thread-blocking call runs under
//    an AlarmGuard (SIGALRM interrupts the kernel call) so a failure is a
//    failed assertion, never a hung test.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "greenshim/greenshim.hpp"

namespace shimtest {

// ---- time ----

inline double now_s() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

struct Stopwatch {
    double t0 = now_s();
    double elapsed() const { return now_s() - t0; }
};

// ---- the kernel's view, past the shim ----

inline long raw_getfl(int fd) { return syscall(SYS_fcntl, fd, F_GETFL); }
inline bool raw_nonblock(int fd) { return (raw_getfl(fd) & O_NONBLOCK) != 0; }
// The program's view (through the interposed fcntl).
inline bool nonblock_view(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// ---- fds ----

inline void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// A pipe made with the program's own pipe()/pipe2().
struct Pipe {
    int r = -1, w = -1;
    explicit Pipe(int flags = -1) {
        int fds[2];
        int rc = flags < 0 ? ::pipe(fds) : ::pipe2(fds, flags);
        REQUIRE(rc == 0);
        r = fds[0];
        w = fds[1];
    }
    Pipe(const Pipe&) = delete;
    Pipe& operator=(const Pipe&) = delete;
    ~Pipe() {
        close_fd(r);
        close_fd(w);
    }
};

// A socketpair made with the program's own socketpair().
struct SockPair {
    int a = -1, b = -1;
    explicit SockPair(int type = SOCK_STREAM, int domain = AF_UNIX) {
        int fds[2];
        REQUIRE(::socketpair(domain, type, 0, fds) == 0);
        a = fds[0];
        b = fds[1];
    }
    SockPair(const SockPair&) = delete;
    SockPair& operator=(const SockPair&) = delete;
    ~SockPair() {
        close_fd(a);
        close_fd(b);
    }
};

inline sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(std::uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

inline int local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
    return ntohs(a.sin_port);
}

// A TCP listener on 127.0.0.1 with an ephemeral port.
struct Listener {
    int fd = -1;
    int port = -1;
    Listener() {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a = loopback(0);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd, 64) == 0);
        port = local_port(fd);
        REQUIRE(port > 0);
    }
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    ~Listener() { close_fd(fd); }
};

// A blocking TCP connect to 127.0.0.1:port; the fd, or -errno.
inline int tcp_connect(int port) {
    int c = ::socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0) return -errno;
    sockaddr_in a = loopback(port);
    if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        int e = errno;
        ::close(c);
        return -e;
    }
    return c;
}

inline void set_timeo(int fd, int opt, int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    REQUIRE(setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) == 0);
}

// Data of n bytes with a pattern that catches reordering and loss.
inline std::vector<char> pattern(std::size_t n, unsigned seed = 1) {
    std::vector<char> v(n);
    std::uint32_t x = seed * 2654435761u + 12345u;
    for (std::size_t i = 0; i < n; ++i) {
        x = x * 1103515245u + 12345u;
        v[i] = char(x >> 16);
    }
    return v;
}

// Reads exactly n bytes with plain read() in chunks of varying size (stops
// early at EOF or error).
inline std::vector<char> read_n(int fd, std::size_t n) {
    std::vector<char> out;
    out.reserve(n);
    static const std::size_t sizes[] = {65536, 1000, 7, 131072, 4096, 33333};
    std::vector<char> buf(131072);
    std::size_t k = 0;
    while (out.size() < n) {
        std::size_t want = sizes[k++ % 6];
        if (want > n - out.size()) want = n - out.size();
        ssize_t r = ::read(fd, buf.data(), want);
        if (r <= 0) break;
        out.insert(out.end(), buf.data(), buf.data() + r);
    }
    return out;
}

// Reads until EOF (or error).
inline std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t r = ::read(fd, buf, sizeof buf);
        if (r <= 0) break;
        out.append(buf, std::size_t(r));
    }
    return out;
}

// The result of a call: return value and errno right after it.
struct Res {
    long r = 0;
    int err = 0;
};
template <class F>
Res call(F&& f) {
    errno = 0;
    long r = long(f());
    return {r, errno};
}

// ---- guards ----

// Arms SIGALRM (a handler without SA_RESTART) so that a call a buggy shim
// passes to the kernel as a blocking call is interrupted with EINTR instead
// of hanging the test. Disarmed on destruction.
class AlarmGuard {
public:
    explicit AlarmGuard(double seconds) {
        struct sigaction sa {};
        sa.sa_handler = [](int) {};
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGALRM, &sa, &old_);
        itimerval it{};
        it.it_value.tv_sec = time_t(seconds);
        it.it_value.tv_usec = suseconds_t((seconds - double(time_t(seconds))) * 1e6);
        setitimer(ITIMER_REAL, &it, nullptr);
    }
    ~AlarmGuard() {
        itimerval z{};
        setitimer(ITIMER_REAL, &z, nullptr);
        sigaction(SIGALRM, &old_, nullptr);
    }
    AlarmGuard(const AlarmGuard&) = delete;
    AlarmGuard& operator=(const AlarmGuard&) = delete;

private:
    struct sigaction old_ {};
};

// Runs f in a greenlet and waits up to `limit` seconds for it; if it is still
// running then, calls rescue() (which must make it return) and joins it.
// Returns {finished in time, f's result}.
template <class F, class R>
auto within(double limit, F f, R rescue) {
    auto t = greenshim::spawn(std::move(f));
    bool in_time = t.join(limit);
    if (!in_time) {
        rescue();
        t.join();
    }
    return std::make_pair(in_time, t.value());
}

// ---- the test binary as a child process ----

// Path of this executable (for fork+exec / posix_spawn checkers).
std::string self_exe();

// Child modes of the test binary (see main.cpp), reached with argv[1]:
//   --check-fd FD      exit 0 if FD is blocking now and 150 ms later, 1 if
//                      O_NONBLOCK was seen, 2 if FD is not open
//   --blocking-read FD [MS]  after MS ms, one raw read(FD, 1 byte): exit 0
//                      with data, 3 on EAGAIN, 4 on another error or EOF
//   --hold MS          sleep MS ms (raw syscall) holding every inherited fd
// Checkers use raw syscalls only: they report the kernel's truth.

// waitpid, then the exit status (or 100 + signal number).
int wait_status(pid_t pid);

// fork() + execv of this binary with args; waits until the exec happened
// (a CLOEXEC pipe closes) and returns the pid.
pid_t fork_exec_self(const std::vector<std::string>& args);

}  // namespace shimtest
