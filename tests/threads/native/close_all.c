/* The shim's own fds (each hub's epoll fd and eventfd, also when libev
 * remakes its epoll set, and the pidfd a waitpid parks on) stay out of the
 * program's way. The lowest free numbers stay the program's (a test suite
 * allocates two consecutive fds; a daemon expects its first open to be 3),
 * and a program that closes every fd from 3 up (a daemon's clean-up:
 * close_range, closefrom, a loop of close) keeps working threads: before,
 * that closed the hubs' epoll fds, and libev aborted. */
#include "common.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static void *reader(void *arg) {
    int fd = *(int *)arg;
    char c = 0;
    return (void *)(intptr_t)(read(fd, &c, 1) == 1 && c == 'x');
}

/* A thread blocks in read on p[0] until main writes to p[1] 20 ms later
 * (the wait's watcher may stay armed after): 1 if it got the byte. */
static int wait_and_wake(int p[2]) {
    pthread_t t = start(reader, &p[0]);
    usleep(20000);
    int ok = write(p[1], "x", 1) == 1;
    void *got = NULL;
    pthread_join(t, &got);
    return ok && got != NULL;
}

static int threads_still_wait_and_wake(void) {
    int p[2];
    if (pipe(p) != 0) return 0;
    int ok = wait_and_wake(p);
    close(p[0]);
    close(p[1]);
    return ok;
}

static void *nothing(void *arg) { return arg; }

/* Makes an event loop remake its epoll set, if the program has one: a
 * thread waits on pipe p and is woken, then p's read end is closed while a
 * dup (numbered from 100, not at a lower free number) keeps its file open,
 * and the pipe made readable. libev then meets an event for a number it no
 * longer watches, closes its epoll fd and makes another (a 20 ms sleep lets
 * it poll). Returns whether the pipe still works through the dup; closes p. */
static int remake_the_loops_epoll_set(int p[2]) {
    int ok = wait_and_wake(p);
    int kept = fcntl(p[0], F_DUPFD_CLOEXEC, 100);
    close(p[0]);
    ok &= write(p[1], "y", 1) == 1;
    usleep(20000);
    char c = 0;
    ok &= kept >= 0 && read(kept, &c, 1) == 1 && c == 'y';
    close(kept);
    close(p[1]);
    return ok;
}

/* close() as a library's inline system call makes it: behind the shim's back. */
static void raw_close(int fd) {
#if defined(__x86_64__)
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_close), "D"((long)fd) : "rcx", "r11", "memory");
    (void)r;
#else
    syscall(SYS_close, fd);
#endif
}

/* A pipe whose wait's watcher may stay armed is closed behind the shim's
 * back, then the epoll set remade: libev re-adds every armed watcher's fd,
 * the closed one among them. Returns whether that went through. */
static int closed_unseen_then_remade(void) {
    int a[2], b[2];
    if (pipe(a) != 0 || pipe(b) != 0) return 0;
    int ok = wait_and_wake(a);
    raw_close(a[0]);
    ok &= remake_the_loops_epoll_set(b);
    close(a[1]);
    return ok;
}

/* How many pidfds this process holds (under greenrun, a waitpid parks on one). */
static int pidfds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        char path[300], link[64];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len > 0) {
            link[len] = 0;
            n += strcmp(link, "anon_inode:[pidfd]") == 0;
        }
    }
    if (d) closedir(d);
    return n;
}

static void *wait_for_child(void *arg) {
    pid_t pid = *(pid_t *)arg;
    int status = 0;
    return (void *)(intptr_t)(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

/* A thread waits in waitpid for a child that exits (status 7) when its pipe
 * closes; meanwhile the program's fd numbers and forks are its own, and
 * close_range(3, ~0) (which closes the pipe) leaves the wait working. */
static void while_a_thread_waits_for_a_child(void) {
    int p[2];
    if (pipe(p) != 0) return;
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(p[1]);
        while (read(p[0], &c, 1) > 0) {
        }
        _exit(7);
    }
    close(p[0]);
    int lowest = dup(0);
    close(lowest);
    pthread_t waiter = start(wait_for_child, &child);
    /* Under greenrun, until the wait holds its pidfd (bounded): the checks below see it in progress. */
    for (int i = 0; i < 2000 && under_shim() && pidfds() == 0; ++i) usleep(1000);
    int a = dup(0);
    say("close_all: while a thread waits in waitpid, the lowest free fd is the same", a == lowest);
    close(a);
    pid_t forked = fork();
    if (forked == 0) _exit(pidfds() == 0 ? 0 : 1);
    int status = -1;
    say("close_all: a child forked meanwhile inherits no fd of that wait",
        waitpid(forked, &status, 0) == forked && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close_range(3, ~0U, 0);
    void *got = NULL;
    pthread_join(waiter, &got);
    say("close_all: after close_range(3, ~0), the thread in waitpid sees its child exit (status 7)", got != NULL);
}

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
    while_a_thread_waits_for_a_child();
    lowest = dup(0);
    close(lowest);
    int p[2];
    say("close_all: a pipe read through a dup after its first number was closed",
        pipe(p) == 0 && remake_the_loops_epoll_set(p));
    a = dup(0);
    say("close_all: after the event loop remade its epoll set, the lowest free fd is the same", a == lowest);
    close(a);
    say("close_all: after an fd closed by a raw system call and an epoll set remade, threads wait and wake",
        closed_unseen_then_remade() && threads_still_wait_and_wake());

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
