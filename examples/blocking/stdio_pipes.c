/* C stdio on pipes and sockets the program made itself: the everyday
 * patterns of older C programs.
 *
 * 1. fork; the child points its stdout at a pipe (dup2, no exec) and printf()s
 *    256 KiB, more than a pipe holds, while the parent waits 200 ms before it
 *    starts reading. The child must block in printf until there is room.
 * 2. fdopen(pipe, "r") + fgets() while the writer (a thread) writes its line
 *    only after 200 ms: fgets must wait for it.
 * 3. A line protocol over a socketpair wrapped in FILE*s (fdopen "r+"):
 *    two threads exchange 20 questions and answers with fprintf/fgets.
 *
 * Each part prints what it saw; the output is fixed. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_LINES 4096 /* 4096 lines of 64 bytes = 256 KiB */

static int part1(void) {
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); return 1; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        close(p[0]);
        if (dup2(p[1], 1) < 0) _exit(126);
        close(p[1]);
        for (int i = 0; i < CHILD_LINES; ++i)
            if (printf("child line %05d %046d\n", i, i) < 0) {
                fprintf(stderr, "child: printf failed at line %d: %s\n", i, strerror(errno));
                _exit(2);
            }
        if (fflush(stdout) != 0) {
            fprintf(stderr, "child: fflush failed: %s\n", strerror(errno));
            _exit(3);
        }
        _exit(0);
    }
    close(p[1]);
    usleep(200 * 1000);
    char buf[8192];
    size_t total = 0, lines = 0;
    for (;;) {
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("read"); return 1; }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
        total += (size_t)n;
    }
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    printf("part 1: read %zu bytes, %zu lines from the child's printf; child exit %d\n", total, lines,
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}

static void *late_writer(void *arg) {
    int fd = (int)(intptr_t)arg;
    usleep(200 * 1000);
    const char *msg = "a line written late\nand a second one\n";
    if (write(fd, msg, strlen(msg)) < 0) perror("write");
    close(fd);
    return NULL;
}

static int part2(void) {
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, late_writer, (void *)(intptr_t)p[1]);
    FILE *in = fdopen(p[0], "r");
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, in)) printf("part 2: fgets got: %s", line), ++n;
    printf("part 2: %d lines, then %s\n", n, ferror(in) ? "an ERROR" : "EOF");
    fclose(in);
    pthread_join(t, NULL);
    return 0;
}

static int sv[2];

static void *answerer(void *arg) {
    (void)arg;
    FILE *f = fdopen(sv[1], "r+");
    char line[256];
    while (fgets(line, sizeof line, f)) {
        int q;
        if (sscanf(line, "question %d", &q) != 1) break;
        fprintf(f, "answer %d\n", q * q);
        fflush(f);
    }
    fclose(f);
    return NULL;
}

static int part3(void) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, answerer, NULL);
    FILE *f = fdopen(sv[0], "r+");
    char line[256];
    int ok = 0;
    for (int q = 0; q < 20; ++q) {
        fprintf(f, "question %d\n", q);
        fflush(f);
        if (!fgets(line, sizeof line, f)) {
            printf("part 3: no answer to question %d (%s)\n", q, ferror(f) ? "error" : "EOF");
            break;
        }
        int a;
        if (sscanf(line, "answer %d", &a) == 1 && a == q * q) ++ok;
    }
    shutdown(sv[0], SHUT_WR);
    pthread_join(t, NULL);
    fclose(f);
    printf("part 3: %d of 20 answers right\n", ok);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* a broken part reports, it does not kill the rest */
    int (*parts[])(void) = {part1, part2, part3};
    for (int i = 0; i < 3; ++i) {
        if (parts[i]()) return 1;
        fflush(stdout);
    }
    return 0;
}
