/* The shim's own fds (each hub's epoll fd and eventfd) stay out of the
 * program's way. The lowest free numbers stay the program's (a test suite
 * allocates two consecutive fds; a daemon expects its first open to be 3),
 * and a program that closes every fd from 3 up (a daemon's clean-up:
 * close_range, closefrom, a loop of close) keeps working threads: before,
 * that closed the hubs' epoll fds, and libev aborted. */
#include "common.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/syscall.h>

static int pipe_fds[2];

static void *reader(void *arg) {
    (void)arg;
    char c = 0;
    return (void *)(intptr_t)(read(pipe_fds[0], &c, 1) == 1 && c == 'x');
}

/* A thread that blocks in read until main writes 20 ms later: 1 if it got the byte. */
static int threads_still_wait_and_wake(void) {
    if (pipe(pipe_fds) != 0) return 0;
    pthread_t t = start(reader, NULL);
    usleep(20000);
    int ok = write(pipe_fds[1], "x", 1) == 1;
    void *got = NULL;
    pthread_join(t, &got);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return ok && got != NULL;
}

static void *nothing(void *arg) { return arg; }

int main(void) {
    int lowest = dup(0);  /* the lowest free number before any thread */
    close(lowest);
    pthread_join(start(nothing, NULL), NULL);  /* (under greenrun: the hubs exist now) */
    int a = dup(0), b = dup(0);
    say("close_all: after a thread ran, the lowest free fd is the same", a == lowest);
    say("close_all: two fds made in a row are consecutive", b == a + 1);
    close(a);
    close(b);
    say("close_all: threads wait and wake", threads_still_wait_and_wake());

    close_range(3, ~0U, 0);
    say("close_all: after close_range(3, ~0), threads wait and wake", threads_still_wait_and_wake());
    syscall(SYS_close_range, 3U, ~0U, 0U);
    say("close_all: after the raw close_range system call through syscall(), threads wait and wake",
        threads_still_wait_and_wake());
    closefrom(3);
    say("close_all: after closefrom(3), threads wait and wake", threads_still_wait_and_wake());
    for (int fd = 3; fd < 65536; ++fd) close(fd);
    say("close_all: after close() of every fd from 3 to 65535, threads wait and wake", threads_still_wait_and_wake());
    return all_ok ? 0 : 1;
}
