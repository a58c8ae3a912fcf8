// The ceiling for benchmark 3: a hand-written single-thread epoll echo
// server, the least work an echo server on one thread can do per message
// (level-triggered epoll_wait amortised over a batch, one read, one write).
//
//   epoll_echo_server [PORT] [--threads N]      (PORT 0 or none: a free port)
//
// Prints "listening PORT" once it listens on 127.0.0.1, then serves until
// killed. --threads N: N threads, each with its own SO_REUSEPORT listening
// socket on the port and its own epoll loop (the kernel spreads the
// connections over them): the ceiling on N cores. Like echo_threads it leaves Nagle on (the client sets TCP_NODELAY;
// in ping-pong nothing is ever held back).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

// One loop: its epoll set and the bytes its connections could not write yet
// (never happens with small messages on loopback, but an echo server must
// not drop them).
struct Loop {
    int ep = -1;
    int lfd = -1;
    std::vector<std::string> pending;

    void drop(int fd) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        if (std::size_t(fd) < pending.size()) pending[std::size_t(fd)].clear();
    }

    void on_readable(int fd, char* buf, std::size_t cap) {
        ssize_t n = read(fd, buf, cap);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(fd);
            return;
        }
        if (n < 0) return;
        ssize_t w = write(fd, buf, std::size_t(n));
        if (w < 0) {
            if (errno != EAGAIN) {
                drop(fd);
                return;
            }
            w = 0;
        }
        if (w < n) {  // keep the rest; wait until writable, stop reading meanwhile
            if (pending.size() <= std::size_t(fd)) pending.resize(std::size_t(fd) + 1);
            pending[std::size_t(fd)].append(buf + w, std::size_t(n - w));
            epoll_event ev{};
            ev.events = EPOLLOUT;
            ev.data.fd = fd;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
    }

    void on_writable(int fd) {
        std::string& p = pending[std::size_t(fd)];
        ssize_t w = write(fd, p.data(), p.size());
        if (w < 0) {
            if (errno != EAGAIN) drop(fd);
            return;
        }
        p.erase(0, std::size_t(w));
        if (p.empty()) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.fd = fd;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
    }

    void run() {
        ep = epoll_create1(EPOLL_CLOEXEC);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = lfd;
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
        std::vector<char> buf(16384);
        std::vector<epoll_event> events(1024);
        for (;;) {
            int n = epoll_wait(ep, events.data(), int(events.size()), -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                std::perror("epoll_wait");
                std::exit(1);
            }
            for (int i = 0; i < n; ++i) {
                int fd = events[std::size_t(i)].data.fd;
                if (fd == lfd) {
                    for (;;) {
                        int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
                        if (c < 0) break;  // EAGAIN: all accepted (or a transient error)
                        epoll_event cev{};
                        cev.events = EPOLLIN;
                        cev.data.fd = c;
                        epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                    }
                } else if (events[std::size_t(i)].events & EPOLLOUT) {
                    on_writable(fd);
                } else {
                    on_readable(fd, buf.data(), buf.size());
                }
            }
        }
    }
};

// A listening socket on 127.0.0.1:port (SO_REUSEPORT when several share it).
int listen_on(int& port, bool reuseport) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(uint16_t(port));
    if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 1024) != 0) {
        std::perror("epoll_echo_server: bind/listen");
        std::exit(1);
    }
    socklen_t alen = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
    port = ntohs(a.sin_port);
    return lfd;
}

}  // namespace

int main(int argc, char** argv) {
    int port = 0, threads = 1;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
        else port = std::atoi(argv[i]);
    }
    if (threads < 1) threads = 1;
    signal(SIGPIPE, SIG_IGN);
    std::vector<Loop> loops(static_cast<std::size_t>(threads) + 0);
    for (Loop& l : loops) l.lfd = listen_on(port, threads > 1);  // (the first picks the port)
    std::printf("listening %d\n", port);
    std::fflush(stdout);
    std::vector<std::thread> others;
    for (std::size_t i = 1; i < loops.size(); ++i) others.emplace_back([&loops, i] { loops[i].run(); });
    loops[0].run();
}
