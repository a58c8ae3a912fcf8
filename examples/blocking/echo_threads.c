/* A plain thread-per-connection TCP echo server on 127.0.0.1.
 *
 *     echo_threads [PORT [MAX_CLIENTS]]
 *
 * PORT 0 (the default) picks a free port. Prints "listening PORT" once the
 * socket listens. With MAX_CLIENTS > 0 it stops accepting after that many
 * connections, waits for their threads and prints "served N clients, B bytes"
 * before exiting 0; without, it serves until killed. */
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

static unsigned long long echoed; /* bytes, all clients */

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("echo_threads: read"); break; }
        if (n == 0) break;
        if (write_all(fd, buf, (size_t)n) < 0) { perror("echo_threads: write"); break; }
        __atomic_fetch_add(&echoed, (unsigned long long)n, __ATOMIC_RELAXED);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int max_clients = argc > 2 ? atoi(argv[2]) : 0;
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    /* SOMAXCONN: 10,000 clients connecting at once overflow a short queue in
     * the kernel (dropped handshakes, seconds of TCP retransmission). */
    if (listen(lfd, SOMAXCONN) != 0) { perror("listen"); return 1; }
    socklen_t alen = sizeof a;
    if (getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) { perror("getsockname"); return 1; }
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);

    pthread_t *threads = max_clients > 0 ? calloc((size_t)max_clients, sizeof *threads) : NULL;
    int served = 0;
    while (max_clients <= 0 || served < max_clients) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(intptr_t)c) != 0) { fprintf(stderr, "pthread_create\n"); return 1; }
        if (threads) threads[served] = t;
        else pthread_detach(t);
        ++served;
    }
    close(lfd);
    for (int i = 0; i < served; ++i) pthread_join(threads[i], NULL);
    printf("served %d clients, %llu bytes\n", served, echoed);
    free(threads);
    return 0;
}
