/* A fork()ed child that echoes over pipes, as a plain blocking program.
 *
 * Part 1: the child reads lines from one pipe and writes them back upper-cased
 * on another; the parent sends a few lines, prints each answer, closes its end
 * and reports the child's exit status (3, on purpose).
 *
 * Part 2: the child becomes /bin/cat (with LD_PRELOAD removed from its
 * environment, so cat is a program that knows nothing of greenshim and gets
 * the pipes in the blocking mode it expects). A second thread of the parent
 * feeds it 256 KiB while the main thread reads them back; the parent prints
 * the byte count and a checksum. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CAT_BYTES (256 * 1024)

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { perror("write"); exit(1); }
        p += r;
        n -= (size_t)r;
    }
}

/* Reads one line (with its '\n') into buf; returns its length, 0 at EOF. */
static size_t read_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { perror("read"); exit(1); }
        if (r == 0) break;
        if (buf[n++] == '\n') break;
    }
    buf[n] = 0;
    return n;
}

static int upper_child(int in, int out) {
    char buf[256];
    size_t n;
    while ((n = read_line(in, buf, sizeof buf)) > 0) {
        for (size_t i = 0; i < n; ++i) buf[i] = (char)toupper((unsigned char)buf[i]);
        write_all(out, buf, n);
    }
    return 3;
}

static int report(pid_t pid, const char *what) {
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) { perror("waitpid"); return 1; }
    }
    if (WIFEXITED(st)) printf("%s exited %d\n", what, WEXITSTATUS(st));
    else printf("%s killed by signal %d\n", what, WTERMSIG(st));
    return 0;
}

static int part1(void) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) { perror("pipe"); return 1; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        _exit(upper_child(down[0], up[1]));
    }
    close(down[0]);
    close(up[1]);
    char buf[256];
    for (int i = 0; i < 5; ++i) {
        int n = snprintf(buf, sizeof buf, "hello number %d\n", i);
        write_all(down[1], buf, (size_t)n);
        if (read_line(up[0], buf, sizeof buf) == 0) { fprintf(stderr, "child hung up\n"); return 1; }
        printf("got: %s", buf);
    }
    close(down[1]);
    if (read_line(up[0], buf, sizeof buf) != 0) { fprintf(stderr, "expected EOF\n"); return 1; }
    close(up[0]);
    return report(pid, "upper child");
}

static unsigned char pattern(size_t i) { return (unsigned char)((i * 131u + (i >> 9)) & 0xff); }

static void *feeder(void *arg) {
    int fd = (int)(intptr_t)arg;
    unsigned char chunk[4096];
    for (size_t off = 0; off < CAT_BYTES; off += sizeof chunk) {
        for (size_t i = 0; i < sizeof chunk; ++i) chunk[i] = pattern(off + i);
        write_all(fd, chunk, sizeof chunk);
    }
    close(fd);
    return NULL;
}

static int part2(void) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) { perror("pipe"); return 1; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        if (dup2(down[0], 0) < 0 || dup2(up[1], 1) < 0) _exit(126);
        close(down[0]); close(down[1]); close(up[0]); close(up[1]);
        unsetenv("LD_PRELOAD");
        execlp("cat", "cat", (char *)NULL);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    pthread_t t;
    if (pthread_create(&t, NULL, feeder, (void *)(intptr_t)down[1]) != 0) return 1;
    unsigned char buf[8192];
    size_t total = 0, bad = 0;
    uint32_t sum = 2166136261u; /* FNV-1a */
    for (;;) {
        ssize_t r = read(up[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { perror("read"); return 1; }
        if (r == 0) break;
        for (ssize_t i = 0; i < r; ++i) {
            if (buf[i] != pattern(total + (size_t)i)) ++bad;
            sum = (sum ^ buf[i]) * 16777619u;
        }
        total += (size_t)r;
    }
    pthread_join(t, NULL);
    close(up[0]);
    printf("cat echoed %zu bytes, %zu wrong, checksum %08x\n", total, bad, sum);
    return report(pid, "cat");
}

int main(void) {
    if (part1() != 0) return 1;
    if (part2() != 0) return 1;
    return 0;
}
