/* A single-threaded epoll echo client that holds N connections open at once.
 *
 *     conn_hold PORT N M [SIZE [WINDOW]]
 *
 * Phase 1: opens N TCP connections to 127.0.0.1:PORT; on each it sends
 * message 0 (SIZE bytes, default 64) and waits for its echo, so that when the
 * echo is back the server has accepted the connection and is serving it. At
 * most WINDOW (default 64) connections are between connect() and their first
 * echo at any time, so the server's listen backlog never overflows (an
 * overflow costs a 1 s SYN retransmit, not an error). When all N have echoed
 * and are still open it prints "connected N" and reads one line from stdin:
 * that is the moment to look at the server (all N served at once).
 *
 * Phase 2: messages 1..M-1 on every connection concurrently, each checked
 * byte for byte; then closes them all and prints "ok N M" (exit 0). Any error
 * or mismatch: a message on stderr and exit 1. EOF on stdin: exit 3.
 *
 * One OS thread, no greenshim code: it behaves the same with or without
 * libgreenshim.so preloaded (its sockets are O_NONBLOCK, which the shim leaves
 * alone). It needs N + a few file descriptors (RLIMIT_NOFILE). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { CONNECTING, SENDING, RECEIVING, HELD };

struct conn {
    int fd;
    int state;
    int msg;      /* message being exchanged */
    size_t done;  /* bytes of it sent / received */
    char *in;     /* SIZE bytes */
};

static int port, nconns, nmsgs, window = 64;
static size_t msgsize = 64;
static struct conn *conns;
static int ep;
static char *expected;

static void die(int id, const char *what) {
    fprintf(stderr, "conn_hold: connection %d: %s: %s\n", id, what, errno ? strerror(errno) : "mismatch");
    exit(1);
}

/* The bytes of message m on connection id, into expected. */
static void make_msg(int id, int m) {
    for (size_t i = 0; i < msgsize; ++i) expected[i] = (char)('a' + (id * 7 + m * 3 + (int)i) % 26);
    char head[48];
    int n = snprintf(head, sizeof head, "conn %d msg %d ", id, m);
    memcpy(expected, head, (size_t)n < msgsize ? (size_t)n : msgsize);
}

static void watch(int id, int op, unsigned events) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u32 = (uint32_t)id;
    errno = 0;
    if (epoll_ctl(ep, op, conns[id].fd, &ev) != 0) die(id, "epoll_ctl");
}

static void open_conn(int id) {
    struct conn *c = &conns[id];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    errno = 0;
    if (c->fd < 0) die(id, "socket");
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0) {
        c->state = SENDING;
    } else if (errno == EINPROGRESS) {
        c->state = CONNECTING;
    } else {
        die(id, "connect");
    }
    c->msg = 0;
    c->done = 0;
    watch(id, EPOLL_CTL_ADD, EPOLLOUT);
}

/* Advances connection id after an event. Returns 1 when it finished the
 * message it was on (and was left unwatched), else 0. */
static int step(int id, int last_msg) {
    struct conn *c = &conns[id];
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) die(id, "getsockopt");
        if (err == EINPROGRESS || err == EALREADY) return 0;
        if (err) {
            errno = err;
            die(id, "connect");
        }
        c->state = SENDING;
    }
    if (c->state == SENDING) {
        make_msg(id, c->msg);
        while (c->done < msgsize) {
            ssize_t r = send(c->fd, expected + c->done, msgsize - c->done, MSG_NOSIGNAL);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
            errno = r < 0 ? errno : 0;
            if (r <= 0) die(id, "send");
            c->done += (size_t)r;
        }
        c->state = RECEIVING;
        c->done = 0;
        watch(id, EPOLL_CTL_MOD, EPOLLIN);
        return 0;
    }
    if (c->state == RECEIVING) {
        while (c->done < msgsize) {
            ssize_t r = recv(c->fd, c->in + c->done, msgsize - c->done, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
            if (r == 0) {
                errno = 0;
                die(id, "recv: early EOF");
            }
            if (r < 0) die(id, "recv");
            c->done += (size_t)r;
        }
        make_msg(id, c->msg);
        errno = 0;
        if (memcmp(c->in, expected, msgsize) != 0) die(id, "echo differs");
        c->done = 0;
        if (c->msg < last_msg) {
            ++c->msg;
            c->state = SENDING;
            watch(id, EPOLL_CTL_MOD, EPOLLOUT);
            return 0;
        }
        c->state = HELD;
        watch(id, EPOLL_CTL_DEL, 0);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: conn_hold PORT N M [SIZE [WINDOW]]\n");
        return 2;
    }
    port = atoi(argv[1]);
    nconns = atoi(argv[2]);
    nmsgs = atoi(argv[3]);
    if (argc > 4) msgsize = (size_t)atol(argv[4]);
    if (argc > 5) window = atoi(argv[5]);
    if (nconns < 1 || nmsgs < 1 || msgsize < 1 || window < 1) return 2;
    signal(SIGPIPE, SIG_IGN);

    conns = calloc((size_t)nconns, sizeof *conns);
    expected = malloc(msgsize);
    char *inbufs = malloc(msgsize * (size_t)nconns);
    if (!conns || !expected || !inbufs) return 1;
    for (int i = 0; i < nconns; ++i) conns[i].in = inbufs + msgsize * (size_t)i;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die(-1, "epoll_create1");
    enum { kEvents = 256 };
    struct epoll_event evs[kEvents];

    /* Phase 1: every connection echoes message 0, at most `window` in flight. */
    int opened = 0, held = 0;
    while (held < nconns) {
        while (opened < nconns && opened - held < window) open_conn(opened++);
        int n = epoll_wait(ep, evs, kEvents, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die(-1, "epoll_wait");
        for (int i = 0; i < n; ++i) held += step((int)evs[i].data.u32, 0);
    }
    printf("connected %d\n", nconns);
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 3;

    /* Phase 2: the other messages, on all connections at once. */
    int finished = 0;
    if (nmsgs > 1) {
        for (int id = 0; id < nconns; ++id) {
            conns[id].msg = 1;
            conns[id].state = SENDING;
            conns[id].done = 0;
            watch(id, EPOLL_CTL_ADD, EPOLLOUT);
        }
        while (finished < nconns) {
            int n = epoll_wait(ep, evs, kEvents, -1);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) die(-1, "epoll_wait");
            for (int i = 0; i < n; ++i) finished += step((int)evs[i].data.u32, nmsgs - 1);
        }
    }
    for (int id = 0; id < nconns; ++id) close(conns[id].fd);
    close(ep);
    printf("ok %d %d\n", nconns, nmsgs);
    return 0;
}
