// The ceiling for benchmark 3: a hand-written single-thread epoll echo
// server, the least work an echo server on one thread can do per message
// (level-triggered epoll_wait amortised over a batch, one read, one write).
//
//   epoll_echo_server [PORT]      (0 or none: a free port)
//
// Prints "listening PORT" once it listens on 127.0.0.1, then serves until
// killed. Like echo_threads it leaves Nagle on (the client sets TCP_NODELAY;
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
#include <vector>

namespace {

// Bytes a connection could not write yet (never happens with small messages
// on loopback, but an echo server must not drop them).
std::vector<std::string> pending;
int ep;

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

}  // namespace

int main(int argc, char** argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(uint16_t(port));
    if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 1024) != 0) {
        std::perror("epoll_echo_server: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
    std::printf("listening %d\n", ntohs(a.sin_port));
    std::fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char buf[16384];
    std::vector<epoll_event> events(1024);
    for (;;) {
        int n = epoll_wait(ep, events.data(), int(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::perror("epoll_wait");
            return 1;
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
                on_readable(fd, buf, sizeof buf);
            }
        }
    }
}
