/* A single-threaded epoll echo server that makes its sockets non-blocking
 * itself (fcntl O_NONBLOCK) and runs its own edge-triggered epoll loop, with a
 * timerfd as watchdog. It tests itself: a fork()ed child opens CONNS blocking
 * connections and, for ROUNDS rounds, writes a message on each and then reads
 * every echo back. The server stops when all connections are closed, reaps
 * the child and prints what it saw.
 *
 *     epoll_echo [CONNS [ROUNDS [SIZE]]]     (defaults 8 50 1000) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

static int conns = 8, rounds = 50;
static size_t msgsize = 1000;

/* ---- the client child: plain blocking sockets ---- */

static int client(int port) {
    int *fds = calloc((size_t)conns, sizeof *fds);
    char *out = malloc(msgsize), *in = malloc(msgsize);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    for (int c = 0; c < conns; ++c) {
        fds[c] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[c] < 0 || connect(fds[c], (struct sockaddr *)&a, sizeof a) != 0) { perror("client connect"); return 1; }
    }
    for (int r = 0; r < rounds; ++r) {
        for (int c = 0; c < conns; ++c) {
            for (size_t i = 0; i < msgsize; ++i) out[i] = (char)('A' + (c + r + (int)i) % 26);
            for (size_t done = 0; done < msgsize;) {
                ssize_t n = write(fds[c], out + done, msgsize - done);
                if (n <= 0) { perror("client write"); return 1; }
                done += (size_t)n;
            }
        }
        for (int c = 0; c < conns; ++c) {
            for (size_t done = 0; done < msgsize;) {
                ssize_t n = read(fds[c], in + done, msgsize - done);
                if (n <= 0) { fprintf(stderr, "client read: %s\n", n ? strerror(errno) : "EOF"); return 1; }
                done += (size_t)n;
            }
            for (size_t i = 0; i < msgsize; ++i)
                if (in[i] != (char)('A' + (c + r + (int)i) % 26)) { fprintf(stderr, "client: echo differs\n"); return 1; }
        }
    }
    for (int c = 0; c < conns; ++c) close(fds[c]);
    printf("client: %d connections x %d rounds of %zu bytes ok\n", conns, rounds, msgsize);
    fflush(stdout);
    return 0;
}

/* ---- the server: O_NONBLOCK set by hand, edge-triggered epoll ---- */

struct conn {
    char *pending; /* bytes read but not yet written back */
    size_t len, cap;
    int out_armed;
};

static struct conn *table[65536];
static unsigned long long echoed;

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) { perror("fcntl"); exit(1); }
    if (!(fcntl(fd, F_GETFL) & O_NONBLOCK)) { fprintf(stderr, "O_NONBLOCK did not stick\n"); exit(1); }
}

static void modify(int ep, int fd, int want_out) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (want_out ? EPOLLOUT : 0), .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) { perror("epoll_ctl mod"); exit(1); }
}

/* Writes what is pending; -1 on a hard error. */
static int flush_conn(int ep, int fd, struct conn *c) {
    size_t off = 0;
    while (off < c->len) {
        ssize_t n = write(fd, c->pending + off, c->len - off);
        if (n > 0) { off += (size_t)n; echoed += (unsigned long long)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    memmove(c->pending, c->pending + off, c->len - off);
    c->len -= off;
    int want_out = c->len > 0;
    if (want_out != c->out_armed) {
        modify(ep, fd, want_out);
        c->out_armed = want_out;
    }
    return 0;
}

/* Reads all that is there (edge-triggered); 1 when the peer has closed. */
static int drain(int fd, struct conn *c) {
    for (;;) {
        if (c->cap - c->len < 4096) {
            c->cap = c->cap ? c->cap * 2 : 16384;
            c->pending = realloc(c->pending, c->cap);
        }
        ssize_t n = read(fd, c->pending + c->len, c->cap - c->len);
        if (n > 0) { c->len += (size_t)n; continue; }
        if (n == 0) return 1;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
    }
}

int main(int argc, char **argv) {
    if (argc > 1) conns = atoi(argv[1]);
    if (argc > 2) rounds = atoi(argv[2]);
    if (argc > 3) msgsize = (size_t)atol(argv[3]);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) { perror("listen socket"); return 1; }
    set_nonblock(lfd);

    /* Before anything connects, accept must say EAGAIN, not wait. */
    if (accept(lfd, NULL, NULL) >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        fprintf(stderr, "accept on an idle non-blocking socket: %s\n", strerror(errno));
        return 1;
    }
    printf("server: accept on idle listener says EAGAIN\n");

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        close(lfd);
        _exit(client(ntohs(a.sin_port)));
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec watchdog = {.it_value = {20, 0}};
    if (ep < 0 || tfd < 0 || timerfd_settime(tfd, 0, &watchdog, NULL) != 0) { perror("epoll/timerfd"); return 1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    int accepted = 0, closed = 0, max_ready = 0, wakeups = 0;
    while (!(accepted == conns && closed == conns)) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { perror("epoll_wait"); return 1; }
        ++wakeups;
        if (n > max_ready) max_ready = n;
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            if (fd == tfd) {
                fprintf(stderr, "server: watchdog fired (accepted %d, closed %d)\n", accepted, closed);
                kill(pid, SIGKILL);
                return 1;
            }
            if (fd == lfd) {
                for (;;) {
                    int c = accept(lfd, NULL, NULL);
                    if (c < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                        if (errno == EINTR || errno == ECONNABORTED) continue;
                        perror("accept");
                        return 1;
                    }
                    if (c >= 65536) { fprintf(stderr, "fd too large\n"); return 1; }
                    set_nonblock(c);
                    table[c] = calloc(1, sizeof(struct conn));
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLET, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) { perror("epoll_ctl add"); return 1; }
                    ++accepted;
                }
                continue;
            }
            struct conn *c = table[fd];
            int eof = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) eof = drain(fd, c);
            if (eof >= 0 && flush_conn(ep, fd, c) < 0) eof = -1;
            if (eof != 0) {
                if (eof < 0) perror("connection");
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(c->pending);
                free(c);
                table[fd] = NULL;
                ++closed;
            }
        }
    }
    close(lfd);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    printf("server: %d connections, %llu bytes echoed\n", accepted, echoed);
    printf("server: client exit status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    fprintf(stderr, "server: %d wakeups, at most %d events at once\n", wakeups, max_ready);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
