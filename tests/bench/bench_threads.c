// What a greenlet thread costs, as a plain C program sees it (no greenshim
// code): run it as it is and under greenrun, and compare.
//
//   bench_threads create [N]   N pthread_create + pthread_join in a row
//                              (default 200,000): threads per second
//   bench_threads parked [N]   N threads blocked in read() on one pipe
//                              (default 10,000): RSS per parked thread
//
// Each thread touches a __thread variable, so that a thread with thread-locals
// of its own (greenrun's default) pays for them as a real thread does.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static __thread long t_touch;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(void) {
    FILE* f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static void* touch(void* arg) {
    t_touch = (long)arg;
    return (void*)t_touch;
}

static void* park(void* arg) {
    int fd = (int)(long)arg;
    t_touch = fd;
    char c;
    return (void*)(long)read(fd, &c, 1);
}

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "create";
    long n = argc > 2 ? atol(argv[2]) : (!strcmp(mode, "parked") ? 10000 : 200000);
    if (!strcmp(mode, "create")) {
        long long t0 = now_ns();
        for (long i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, touch, (void*)i) != 0) return 1;
            pthread_join(t, NULL);
        }
        double s = (double)(now_ns() - t0) / 1e9;
        printf("result threads create_join_per_s=%.0f ns_each=%.0f\n", (double)n / s, s * 1e9 / (double)n);
        return 0;
    }
    if (!strcmp(mode, "parked")) {
        pthread_t* t = calloc((size_t)n, sizeof *t);
        int fds[2];
        if (!t || pipe(fds) != 0) return 1;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);  // the same stacks both ways
        long before = rss_kib();
        for (long i = 0; i < n; i++) {
            int r = pthread_create(&t[i], &attr, park, (void*)(long)fds[0]);
            if (r != 0) {
                fprintf(stderr, "bench_threads: pthread_create %ld: %s\n", i, strerror(r));
                return 1;
            }
        }
        usleep(200000);  // all of them parked in read
        long during = rss_kib();
        for (long i = 0; i < n; i++) (void)!write(fds[1], "x", 1);  // one byte each
        for (long i = 0; i < n; i++) pthread_join(t[i], NULL);
        printf("result threads parked=%ld rss_per_thread_bytes=%.0f\n", n, (double)(during - before) * 1024 / (double)n);
        return 0;
    }
    fprintf(stderr, "usage: bench_threads create|parked [N]\n");
    return 2;
}
