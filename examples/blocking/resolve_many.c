/* Resolves N names at once, one pthread each, with plain getaddrinfo.
 *
 *     resolve_many N SUFFIX      e.g. resolve_many 100 .slow.test
 *
 * Prints "resolved N/N in S s" (names host1SUFFIX .. hostNSUFFIX). */
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static const char *suffix;
static int ok;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *resolve(void *arg) {
    char name[256];
    snprintf(name, sizeof name, "host%d%s", (int)(intptr_t)arg, suffix);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int r = getaddrinfo(name, "80", &hints, &res);
    if (r == 0) {
        pthread_mutex_lock(&lock);
        ok++;
        pthread_mutex_unlock(&lock);
        freeaddrinfo(res);
    } else {
        fprintf(stderr, "%s: %s\n", name, gai_strerror(r));
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: resolve_many N SUFFIX\n");
        return 2;
    }
    int n = atoi(argv[1]);
    suffix = argv[2];
    pthread_t *t = calloc((size_t)n, sizeof *t);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, resolve, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("resolved %d/%d in %.2f s\n", ok, n, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return ok == n ? 0 : 1;
}
