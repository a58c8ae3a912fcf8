/* The same blocking calls, built with -D_FORTIFY_SOURCE=2 as distributions
 * build their packages: with a fixed-size buffer and a length the compiler
 * cannot check, read/recv/recvfrom/poll become __read_chk, __recv_chk,
 * __recvfrom_chk and __poll_chk. Each call waits for a thread that writes
 * 200 ms later and must get its data. (An alarm ends a hang after 10 s.) */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *write_later(void *arg) {
    int fd = (int)(intptr_t)arg;
    usleep(200 * 1000);
    if (write(fd, "hello, fortified\n", 17) != 17) perror("write");
    return NULL;
}

static pthread_t writer(int fd) {
    pthread_t t;
    pthread_create(&t, NULL, write_later, (void *)(intptr_t)fd);
    return t;
}

static void show(const char *what, ssize_t n) {
    if (n < 0) printf("%-20s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-20s %zd\n", what, n);
    fflush(stdout);
}

int main(int argc, char **argv) {
    (void)argv;
    alarm(10);
    /* 64 bytes, but the compiler cannot prove it: the _chk variants are used */
    size_t len = 63 + (size_t)argc;
    char buf[64];
    int p[2], sv[2];
    pthread_t t;

    if (pipe(p) != 0) return 1;
    t = writer(p[1]);
    show("read (pipe)", read(p[0], buf, len));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);

    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    t = writer(sv[1]);
    show("recv (socketpair)", recv(sv[0], buf, len, 0));
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);

    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    t = writer(sv[1]);
    show("recvfrom", recvfrom(sv[0], buf, len, 0, NULL, NULL));
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);

    /* last: if poll blocks the whole process, the alarm ends it */
    if (pipe(p) != 0) return 1;
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {sv[0], POLLIN, 0}};
    size_t npf = (size_t)argc + 1; /* 2 */
    t = writer(sv[1]);
    int r = poll(pf, npf, -1);
    printf("%-20s %d, ready: %s %s\n", "poll", r, pf[0].revents ? "pipe" : "-",
           pf[1].revents & POLLIN ? "socket" : "-");
    pthread_join(t, NULL);
    return 0;
}
