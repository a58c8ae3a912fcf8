/* Echo client: N threads connect to 127.0.0.1:PORT at once, each sends M
 * messages of SIZE bytes (default 64), one at a time, and checks that each
 * comes back intact. Prints "ok N M" and exits 0, or says what went wrong on
 * stderr and exits 1.
 *
 *     echo_client PORT N M [SIZE]
 *
 * All N connections are open before any message is sent (a barrier), so a
 * server must really serve them concurrently. */
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

static int port, nclients, nmsgs;
static size_t msgsize = 64;
static pthread_barrier_t all_connected;
static int failures;

static void fail(int id, const char *what) {
    fprintf(stderr, "client %d: %s: %s\n", id, what, errno ? strerror(errno) : "mismatch");
    __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);
}

static void *client(void *arg) {
    int id = (int)(intptr_t)arg;
    char *out = malloc(msgsize), *in = malloc(msgsize);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    errno = 0;
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (!ok) fail(id, "connect");
    pthread_barrier_wait(&all_connected);
    for (int m = 0; ok && m < nmsgs; ++m) {
        for (size_t i = 0; i < msgsize; ++i) out[i] = (char)('a' + (id * 7 + m * 3 + (int)i) % 26);
        int n = snprintf(in, msgsize, "client %d message %d ", id, m);
        memcpy(out, in, (size_t)n < msgsize ? (size_t)n : msgsize);
        for (size_t done = 0; done < msgsize;) {
            ssize_t r = write(fd, out + done, msgsize - done);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { fail(id, "write"); ok = 0; break; }
            done += (size_t)r;
        }
        for (size_t done = 0; ok && done < msgsize;) {
            errno = 0;
            ssize_t r = read(fd, in + done, msgsize - done);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { fail(id, r == 0 ? "read: early EOF" : "read"); ok = 0; break; }
            done += (size_t)r;
        }
        errno = 0;
        if (ok && memcmp(in, out, msgsize) != 0) { fail(id, "echo differs"); ok = 0; }
    }
    if (fd >= 0) close(fd);
    free(out);
    free(in);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: echo_client PORT N M [SIZE]\n");
        return 2;
    }
    port = atoi(argv[1]);
    nclients = atoi(argv[2]);
    nmsgs = atoi(argv[3]);
    if (argc > 4) msgsize = (size_t)atol(argv[4]);
    if (nclients < 1 || nmsgs < 0 || msgsize < 1) return 2;
    signal(SIGPIPE, SIG_IGN);
    pthread_t *t = calloc((size_t)nclients, sizeof *t);
    pthread_barrier_init(&all_connected, NULL, (unsigned)nclients);
    for (int i = 0; i < nclients; ++i)
        if (pthread_create(&t[i], NULL, client, (void *)(intptr_t)i) != 0) { fprintf(stderr, "pthread_create\n"); return 1; }
    for (int i = 0; i < nclients; ++i) pthread_join(t[i], NULL);
    if (failures) {
        printf("FAILED %d of %d\n", failures, nclients);
        return 1;
    }
    printf("ok %d %d\n", nclients, nmsgs);
    return 0;
}
