// One thread writes 2 MiB in a single blocking writev (1,024 iovecs: IOV_MAX)
// to a stream socket and to a pipe while another reads it all back; both
// sums must match. Under greenrun it runs at GREENSHIM_STACK_SIZE=16K, the
// smallest stack the configuration accepts: the shim's own frames must fit.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define N_IOV 1024
#define TOTAL (2u << 20)

static unsigned char* data;
static int fds[2];

static void* writer(void* arg) {
    (void)arg;
    struct iovec* v = malloc(sizeof *v * N_IOV);  // the caller's vector: not on the small stack
    size_t per = TOTAL / N_IOV;
    for (int i = 0; i < N_IOV; ++i) {
        v[i].iov_base = data + (size_t)i * per;
        v[i].iov_len = per;
    }
    ssize_t n = writev(fds[1], v, N_IOV);
    free(v);
    close(fds[1]);
    return (void*)n;
}

static void* reader(void* arg) {
    (void)arg;
    static unsigned char buf[65536];
    uint64_t sum = 0, total = 0;
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < r; ++i) sum = sum * 31 + buf[i];
        total += (uint64_t)r;
    }
    static uint64_t out[2];
    out[0] = total;
    out[1] = sum;
    return out;
}

static void run(const char* kind) {
    if (kind[0] == 's' ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : pipe(fds)) {
        perror(kind);
        exit(1);
    }
    pthread_t w, r;
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&w, NULL, writer, NULL);
    void *wn, *got;
    pthread_join(w, &wn);
    pthread_join(r, &got);
    close(fds[0]);
    uint64_t expect = 0;
    for (size_t i = 0; i < TOTAL; ++i) expect = expect * 31 + data[i];
    uint64_t* g = got;
    printf("%s: writev returned %zd, reader got %llu bytes, sums %s\n", kind, (ssize_t)wn,
           (unsigned long long)g[0], g[1] == expect ? "equal" : "DIFFER");
    if (g[1] != expect || (ssize_t)wn != (ssize_t)TOTAL) exit(1);
}

int main(void) {
    data = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; ++i) data[i] = (unsigned char)(i * 7 + i / 4096);
    run("socket");
    run("pipe");
    return 0;
}
