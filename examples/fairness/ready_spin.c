// A thread that waits for another by looping on a call that never has to
// wait: a ready fd (poll, select, epoll_wait, write), a busy poll with a zero
// timeout, a non-blocking read that keeps saying EAGAIN, sigaction. Another
// thread sets the flag after usleep(20000). With OS threads this ends at once;
// on one OS thread it ends only if the spinning thread gives way.
//
//   ready_spin [MODE...]   (default: every mode)
// Prints "MODE: done" for each mode, in order.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_int flag;
static int pipe_rd, pipe_wr, udp;  // pipe_rd: empty, O_NONBLOCK; pipe_wr: writable

static void die(const char* what) {
    perror(what);
    exit(1);
}

static void* setter(void* arg) {
    (void)arg;
    usleep(20000);
    atomic_store(&flag, 1);
    return NULL;
}

static void spin_poll(void) {
    struct pollfd p = {pipe_wr, POLLOUT, 0};
    while (!atomic_load(&flag))
        if (poll(&p, 1, -1) != 1) die("poll");
}
static void spin_poll0(void) {
    struct pollfd p = {pipe_rd, POLLIN, 0};
    while (!atomic_load(&flag))
        if (poll(&p, 1, 0) != 0) die("poll 0");
}
static void spin_select(void) {
    while (!atomic_load(&flag)) {
        fd_set w;
        FD_ZERO(&w);
        FD_SET(pipe_wr, &w);
        struct timeval tv = {5, 0};
        if (select(pipe_wr + 1, NULL, &w, NULL, &tv) != 1) die("select");
    }
}
static void spin_epoll(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = pipe_wr};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pipe_wr, &ev) != 0) die("epoll");
    while (!atomic_load(&flag))
        if (epoll_wait(ep, &ev, 1, -1) != 1) die("epoll_wait");
    close(ep);
}
static void spin_write(void) {
    while (!atomic_load(&flag))  // datagrams nobody reads: the kernel drops them
        if (write(udp, "x", 1) != 1) die("write");
}
static void spin_read_eagain(void) {
    char c;
    while (!atomic_load(&flag))
        if (read(pipe_rd, &c, 1) != -1 || errno != EAGAIN) die("read");
}
static void spin_sigaction(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    while (!atomic_load(&flag))
        if (sigaction(SIGUSR2, &sa, NULL) != 0) die("sigaction");
}

static const struct {
    const char* name;
    void (*spin)(void);
} modes[] = {
    {"poll", spin_poll},   {"poll0", spin_poll0}, {"select", spin_select},           {"epoll", spin_epoll},
    {"write", spin_write}, {"read", spin_read_eagain}, {"sigaction", spin_sigaction},
};

static void* spinner(void* arg) {
    ((void (*)(void))arg)();
    return NULL;
}

static void run(const char* name) {
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; ++i) {
        if (strcmp(modes[i].name, name) != 0) continue;
        atomic_store(&flag, 0);
        pthread_t a, b;
        if (pthread_create(&a, NULL, spinner, (void*)modes[i].spin) != 0) die("pthread_create");
        if (pthread_create(&b, NULL, setter, NULL) != 0) die("pthread_create");
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        printf("%s: done\n", name);
        fflush(stdout);
        return;
    }
    fprintf(stderr, "ready_spin: unknown mode %s\n", name);
    exit(2);
}

int main(int argc, char** argv) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    pipe_rd = p[0];
    pipe_wr = p[1];
    fcntl(pipe_rd, F_SETFL, O_NONBLOCK);
    int sink = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    udp = socket(AF_INET, SOCK_DGRAM, 0);
    if (sink < 0 || udp < 0 || bind(sink, (struct sockaddr*)&a, sizeof a) != 0 ||
        getsockname(sink, (struct sockaddr*)&a, &len) != 0 || connect(udp, (struct sockaddr*)&a, len) != 0)
        die("udp");
    if (argc > 1) {
        for (int i = 1; i < argc; ++i) run(argv[i]);
    } else {
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; ++i) run(modes[i].name);
    }
    return 0;
}
