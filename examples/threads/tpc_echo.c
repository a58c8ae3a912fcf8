/* A thread-per-connection TCP echo server on 127.0.0.1, like
 * examples/blocking/echo_threads.c but with a listen backlog of SOMAXCONN.
 *
 *     tpc_echo [MAX_CLIENTS]
 *
 * Prints "listening PORT" (a free port), accepts MAX_CLIENTS connections,
 * echoes each in a thread of its own, joins them and prints "served N
 * clients, B bytes". Exit 0.
 *
 * Why the backlog matters: when 10,000 clients connect at once (echo_client
 * with 10,000 threads), a listen queue of 128 overflows whatever the server
 * does; the kernel then drops SYNs and handshake ACKs (with syncookies, a
 * client may even think it is connected and later get a reset), and the run
 * stalls for 1-60 s of TCP retransmission backoff. That is the kernel's
 * behaviour, with or without greenshim; a deep queue avoids it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned long long echoed;

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("tpc_echo: read"); break; }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { perror("tpc_echo: write"); goto out; }
            off += w;
        }
        __atomic_fetch_add(&echoed, (unsigned long long)n, __ATOMIC_RELAXED);
    }
out:
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    int max_clients = argc > 1 ? atoi(argv[1]) : 1;
    if (max_clients < 1) return 2;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, SOMAXCONN) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("tpc_echo: bind/listen");
        return 1;
    }
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);

    pthread_t *threads = calloc((size_t)max_clients, sizeof *threads);
    if (!threads) return 1;
    int served = 0;
    while (served < max_clients) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("tpc_echo: accept");
            return 1;
        }
        if (pthread_create(&threads[served], NULL, serve, (void *)(intptr_t)c) != 0) {
            fprintf(stderr, "tpc_echo: pthread_create failed\n");
            return 1;
        }
        ++served;
    }
    close(lfd);
    for (int i = 0; i < served; ++i) pthread_join(threads[i], NULL);
    printf("served %d clients, %llu bytes\n", served, echoed);
    free(threads);
    return 0;
}
