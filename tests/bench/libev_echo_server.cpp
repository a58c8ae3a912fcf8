// Benchmark 3: a single-thread libev echo server (the event loop greenshim's
// hub runs on, used directly with callbacks): the cost of libev itself
// between the hand-written epoll server and greenrun.
//
//   libev_echo_server [PORT]      (0 or none: a free port)
//
// Prints "listening PORT" once it listens on 127.0.0.1, then serves until
// killed. One ev_io per connection, level-triggered, one read and one write
// per readiness, as epoll_echo_server does.
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

struct Conn {
    ev_io io;  // first: the callback casts ev_io* to Conn*
    std::string pending;
};

char buf[16384];

void close_conn(struct ev_loop* loop, Conn* c) {
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    delete c;
}

void conn_cb(struct ev_loop* loop, ev_io* w, int revents) {
    Conn* c = reinterpret_cast<Conn*>(w);
    if (revents & EV_WRITE) {  // flushing what a short write left
        ssize_t n = write(w->fd, c->pending.data(), c->pending.size());
        if (n < 0 && errno != EAGAIN) return close_conn(loop, c);
        if (n > 0) c->pending.erase(0, std::size_t(n));
        if (c->pending.empty()) {
            ev_io_stop(loop, w);
            ev_io_set(w, w->fd, EV_READ);
            ev_io_start(loop, w);
        }
        return;
    }
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return close_conn(loop, c);
    if (n < 0) return;
    ssize_t m = write(w->fd, buf, std::size_t(n));
    if (m < 0) {
        if (errno != EAGAIN) return close_conn(loop, c);
        m = 0;
    }
    if (m < n) {
        c->pending.append(buf + m, std::size_t(n - m));
        ev_io_stop(loop, w);
        ev_io_set(w, w->fd, EV_WRITE);
        ev_io_start(loop, w);
    }
}

void accept_cb(struct ev_loop* loop, ev_io* w, int) {
    for (;;) {
        int fd = accept4(w->fd, nullptr, nullptr, SOCK_NONBLOCK);
        if (fd < 0) return;
        Conn* c = new Conn;
        ev_io_init(&c->io, conn_cb, fd, EV_READ);
        ev_io_start(loop, &c->io);
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
        std::perror("libev_echo_server: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof a;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
    std::printf("listening %d\n", ntohs(a.sin_port));
    std::fflush(stdout);

    struct ev_loop* loop = ev_default_loop(EVBACKEND_EPOLL);
    if (!loop) {
        std::fprintf(stderr, "libev_echo_server: no epoll backend\n");
        return 1;
    }
    ev_io lw;
    ev_io_init(&lw, accept_cb, lfd, EV_READ);
    ev_io_start(loop, &lw);
    ev_run(loop, 0);
    return 0;
}
