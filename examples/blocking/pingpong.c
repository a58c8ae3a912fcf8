/* Ping-pong over a socketpair between two pthreads: main sends "ping N", the
 * other thread prints it and answers "pong N", which main prints. Each print
 * happens before the message that causes the next one is sent, so the output
 * strictly alternates: ping 0, pong 0, ping 1, ... */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ROUNDS 10
#define MSG 16 /* every message is exactly this long */

static int sv[2];

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { perror("write"); exit(1); }
        p += r;
        n -= (size_t)r;
    }
}

/* Reads exactly n bytes; 0 on EOF before the first byte. */
static int read_exact(int fd, char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { perror("read"); exit(1); }
        if (r == 0) {
            if (got == 0) return 0;
            fprintf(stderr, "short message\n");
            exit(1);
        }
        got += (size_t)r;
    }
    return 1;
}

static void send_msg(int fd, const char *word, int i) {
    char m[MSG];
    memset(m, 0, sizeof m);
    snprintf(m, sizeof m, "%s %d", word, i);
    write_all(fd, m, sizeof m);
}

static void *ponger(void *arg) {
    (void)arg;
    char m[MSG];
    int i = 0;
    while (read_exact(sv[1], m, sizeof m)) {
        printf("%s\n", m);
        fflush(stdout);
        send_msg(sv[1], "pong", i++);
    }
    close(sv[1]);
    return NULL;
}

int main(void) {
    pthread_t t;
    char m[MSG];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
    if (pthread_create(&t, NULL, ponger, NULL) != 0) return 1;
    for (int i = 0; i < ROUNDS; ++i) {
        send_msg(sv[0], "ping", i);
        if (!read_exact(sv[0], m, sizeof m)) { fprintf(stderr, "unexpected EOF\n"); return 1; }
        printf("%s\n", m);
        fflush(stdout);
    }
    shutdown(sv[0], SHUT_WR); /* the ponger sees EOF and quits */
    pthread_join(t, NULL);
    if (read(sv[0], m, sizeof m) != 0) { fprintf(stderr, "expected EOF\n"); return 1; }
    close(sv[0]);
    printf("done\n");
    return 0;
}
