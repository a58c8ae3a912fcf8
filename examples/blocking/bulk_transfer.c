/* Blocking transfers must be whole: one write()/send()/writev()/sendfile() of
 * megabytes on a blocking pipe or stream socket returns only when all of it
 * is written, however slowly the other side (a thread) reads; MSG_WAITALL
 * fills the buffer; MSG_PEEK leaves the data; datagrams keep their
 * boundaries. Prints the return values and checksums: a fixed output.
 *
 *     bulk_transfer [PART...]   parts: pipe socketpair writev sendfile waitall dgram (default all) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BIG (4 * 1024 * 1024)

static unsigned char *pattern;

static uint32_t fnv(const unsigned char *p, size_t n, uint32_t h) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* A slow reader: reads `want` bytes in 7000-byte bites, pausing now and then. */
struct reader {
    int fd;
    size_t want, got;
    uint32_t sum;
};

static void *slow_reader(void *arg) {
    struct reader *r = arg;
    unsigned char buf[7000];
    int bites = 0;
    r->sum = 2166136261u;
    while (r->got < r->want) {
        ssize_t n = read(r->fd, buf, sizeof buf < r->want - r->got ? sizeof buf : r->want - r->got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        r->sum = fnv(buf, (size_t)n, r->sum);
        r->got += (size_t)n;
        if (++bites % 64 == 0) usleep(2000);
    }
    return NULL;
}

static void report(const char *what, long ret, struct reader *r) {
    printf("%-28s returned %ld; reader got %zu bytes, checksum %s\n", what, ret, r->got,
           r->sum == fnv(pattern, r->got, 2166136261u) ? "ok" : "WRONG");
    fflush(stdout);
}

static pthread_t start_reader(struct reader *r, int fd, size_t want) {
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->want = want;
    pthread_t t;
    pthread_create(&t, NULL, slow_reader, r);
    return t;
}

static void tcp_pair(int sv[2]) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len)) {
        perror("listen");
        exit(1);
    }
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sv[0], (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
    sv[1] = accept(l, NULL, NULL);
    close(l);
}

/* 1 MiB in 1000-byte pieces, a pause every 100 pieces */
static void *piecemeal_writer(void *arg) {
    int fd = (int)(intptr_t)arg;
    for (size_t o = 0; o < 1024 * 1024; o += 1000) {
        size_t n = 1024 * 1024 - o < 1000 ? 1024 * 1024 - o : 1000;
        if (write(fd, pattern + o, n) != (ssize_t)n) { perror("writer"); exit(1); }
        if ((o / 1000) % 100 == 99) usleep(5000);
    }
    return NULL;
}

static void *dgram_writer(void *arg) {
    int fd = (int)(intptr_t)arg;
    usleep(50 * 1000);
    for (int i = 1; i <= 5; ++i) send(fd, pattern, (size_t)i * 100, 0);
    return NULL;
}

static struct sockaddr_in udp_dest;
static void *udp_writer(void *arg) {
    int fd = (int)(intptr_t)arg;
    usleep(50 * 1000);
    for (int i = 1; i <= 5; ++i)
        sendto(fd, pattern, (size_t)i * 1000, 0, (struct sockaddr *)&udp_dest, sizeof udp_dest);
    return NULL;
}

static int nparts;
static char **parts;
static int want(const char *part) {
    if (nparts == 0) return 1;
    for (int i = 0; i < nparts; ++i)
        if (!strcmp(parts[i], part)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    nparts = argc - 1;
    parts = argv + 1;
    signal(SIGPIPE, SIG_IGN);
    pattern = malloc(BIG);
    for (size_t i = 0; i < BIG; ++i) pattern[i] = (unsigned char)((i * 2654435761u) >> 13);
    struct reader r;
    pthread_t t;
    int p[2], sv[2];
    long ret;

    /* Each big write is followed by closing the writing end, so a short
     * write shows as a short count rather than a reader waiting forever. */

    if (want("pipe")) {
        /* one write() on a pipe */
        if (pipe(p) != 0) return 1;
        t = start_reader(&r, p[0], BIG);
        ret = write(p[1], pattern, BIG);
        close(p[1]);
        pthread_join(t, NULL);
        report("pipe write(4 MiB)", ret, &r);
        close(p[0]);
    }

    if (want("socketpair")) {
        /* send() on a unix stream socketpair */
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        t = start_reader(&r, sv[1], BIG);
        ret = send(sv[0], pattern, BIG, 0);
        close(sv[0]);
        pthread_join(t, NULL);
        report("socketpair send(4 MiB)", ret, &r);
        close(sv[1]);
    }

    if (want("writev")) {
        /* writev() of 1024 pieces on TCP */
        tcp_pair(sv);
        struct iovec iov[1024];
        for (int i = 0; i < 1024; ++i) iov[i] = (struct iovec){pattern + (size_t)i * (BIG / 1024), BIG / 1024};
        t = start_reader(&r, sv[1], BIG);
        ret = writev(sv[0], iov, 1024);
        close(sv[0]);
        pthread_join(t, NULL);
        report("tcp writev(1024 x 4 KiB)", ret, &r);
        close(sv[1]);
    }

    if (want("sendfile")) {
        /* sendfile() of a 4 MiB file on TCP (sendfile64 when off_t is 64-bit) */
        char path[] = "/tmp/bulk_transfer.XXXXXX";
        int f = mkstemp(path);
        unlink(path);
        if (f < 0 || write(f, pattern, BIG) != BIG) { perror("temp file"); return 1; }
        off_t off = 0;
        tcp_pair(sv);
        t = start_reader(&r, sv[1], BIG);
        ret = sendfile(sv[0], f, &off, BIG);
        close(sv[0]);
        pthread_join(t, NULL);
        report("tcp sendfile(4 MiB)", ret, &r);
        printf("%-28s offset now %ld\n", "", (long)off);
        close(sv[1]);
        close(f);
    }

    unsigned char *buf = malloc(BIG);
    if (want("waitall")) {
        /* recv(MSG_PEEK) then recv(MSG_WAITALL) of 1 MiB sent by a thread in bits */
        socketpair(AF_UNIX, SOCK_STREAM, 0, p);
        pthread_create(&t, NULL, piecemeal_writer, (void *)(intptr_t)p[0]);
        ssize_t peeked = recv(p[1], buf, 10, MSG_PEEK);
        printf("%-28s returned %zd, same bytes: %s\n", "recv(MSG_PEEK, 10)", peeked,
               peeked > 0 && !memcmp(buf, pattern, (size_t)peeked) ? "yes" : "no");
        ssize_t all = recv(p[1], buf, 1024 * 1024, MSG_WAITALL);
        pthread_join(t, NULL);
        printf("%-28s returned %zd, data %s\n", "recv(MSG_WAITALL, 1 MiB)", all,
               all == 1024 * 1024 && !memcmp(buf, pattern, 1024 * 1024) ? "intact" : "WRONG");
        close(p[0]);
        close(p[1]);
    }

    if (want("dgram")) {
        /* datagrams keep their boundaries: SOCK_DGRAM and SOCK_SEQPACKET pairs, UDP */
        int types[2] = {SOCK_DGRAM, SOCK_SEQPACKET};
        const char *names[2] = {"unix dgram", "unix seqpacket"};
        for (int k = 0; k < 2; ++k) {
            socketpair(AF_UNIX, types[k], 0, p);
            pthread_create(&t, NULL, dgram_writer, (void *)(intptr_t)p[0]);
            printf("%-28s sizes:", names[k]);
            for (int i = 0; i < 5; ++i) printf(" %zd", recv(p[1], buf, BIG, 0));
            printf("\n");
            pthread_join(t, NULL);
            close(p[0]);
            close(p[1]);
        }
        int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t alen = sizeof a;
        bind(u1, (struct sockaddr *)&a, sizeof a);
        getsockname(u1, (struct sockaddr *)&a, &alen);
        udp_dest = a;
        pthread_create(&t, NULL, udp_writer, (void *)(intptr_t)u2);
        printf("%-28s sizes:", "udp recvfrom");
        for (int i = 0; i < 5; ++i) {
            struct sockaddr_in from;
            socklen_t flen = sizeof from;
            printf(" %zd", recvfrom(u1, buf, BIG, 0, (struct sockaddr *)&from, &flen));
        }
        printf("\n");
        pthread_join(t, NULL);
        close(u1);
        close(u2);
    }

    free(buf);
    return 0;
}
