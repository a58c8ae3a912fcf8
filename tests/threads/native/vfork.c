/* vfork as programs use it (CPython's subprocess, shells, spawn helpers): the
 * child borrows the parent's memory, changes its own fds, signal handlers
 * and mask, and execs or _exits; the parent's threads go on.
 *
 * Under the shim vfork used to be a fork (correct, but it copies the page
 * tables, and the parent then pays a copy-on-write fault per page it
 * writes). It is a real vfork now, and the child must leave the parent's
 * state as it found it: its fd table (what is non-blocking underneath, who
 * waits on what), its signal handlers and masks. And what the new program
 * inherits must block as it expects.
 *
 * Run as `vfork report`, it prints whether its stdin and stdout are
 * non-blocking (the exec'd side). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>

static const char *self;

static int nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

static int report(void) {
    printf("stdin %s, stdout %s\n", nonblocking(0) ? "non-blocking" : "blocking",
           nonblocking(1) ? "non-blocking" : "blocking");
    return 0;
}

struct reader {
    int fd;
    char got[64];
};
static void *read_line(void *arg) {
    struct reader *r = arg;
    size_t n = 0;
    while (n + 1 < sizeof r->got) {
        ssize_t k = read(r->fd, r->got + n, sizeof r->got - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
        if (r->got[n - 1] == '\n') break;
    }
    r->got[n] = 0;
    return NULL;
}

static int ticks_stop;
static void *tick(void *arg) {
    long *ticks = arg;
    while (!__atomic_load_n(&ticks_stop, __ATOMIC_SEQ_CST)) {
        usleep(1000);
        __atomic_add_fetch(ticks, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static volatile sig_atomic_t usr1_count;
static void on_usr1(int sig) {
    (void)sig;
    ++usr1_count;
}

static int wait_status(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* (Its own function: the caller's locals are not the vfork child's to clobber.) */
static pid_t spawn_true(void) {
    pid_t pid = vfork();
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "report") == 0) return report();
    self = argv[0];

    /* 1. The child writes into the parent's memory: a vfork, not a fork. */
    static volatile int shared_word;
    pid_t pid = vfork();
    if (pid == 0) {
        shared_word = 42;
        _exit(0);
    }
    say("the child's write is seen by the parent (one memory)", pid > 0 && wait_status(pid) == 0 && shared_word == 42);

    /* 2. A thread waits on a pipe while the child takes the pipe's write end
     * as its stdout and execs a program that writes the line there; the
     * child also closes the parent's read end in its own table, resets
     * SIGUSR1 and unblocks everything. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t blocked, mask_before, mask_after;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &blocked, &mask_before);

    int out[2], in[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(in, O_CLOEXEC)) return 1;
    struct reader r = {out[0], {0}};
    pthread_t reader_thread, ticker;
    long ticks = 0;
    pthread_create(&reader_thread, NULL, read_line, &r);
    pthread_create(&ticker, NULL, tick, &ticks);
    sched_yield();  /* (under greenrun the reader is parked on out[0] now; either way it reads the line) */

    pid = vfork();
    if (pid == 0) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGUSR1, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(in[0], 0) != 0 || dup2(out[1], 1) != 1) _exit(126);
        close(out[0]);
        close(in[1]);
        execl(self, self, "report", (char *)NULL);
        _exit(127);
    }
    int status = pid > 0 ? wait_status(pid) : -1;
    close(out[1]);
    close(in[0]);
    pthread_join(reader_thread, NULL);
    say("the new program ran and exited 0", status == 0);
    say("it inherited a blocking stdin and stdout; its line reached the waiting thread",
        strcmp(r.got, "stdin blocking, stdout blocking\n") == 0);

    /* The parent's own state is as it was. */
    pthread_sigmask(SIG_SETMASK, NULL, &mask_after);
    say("the parent's signal mask is its own", sigismember(&mask_after, SIGUSR2) == 1 &&
                                                    sigismember(&mask_after, SIGUSR1) == 0);
    raise(SIGUSR1);
    say("the parent's SIGUSR1 handler still runs", usr1_count == 1);
    int p2[2];
    if (pipe(p2)) return 1;
    struct reader r2 = {p2[0], {0}};
    pthread_create(&reader_thread, NULL, read_line, &r2);
    sched_yield();
    say("its pipes still carry lines to waiting threads",
        write(p2[1], "again\n", 6) == 6 && pthread_join(reader_thread, NULL) == 0 && strcmp(r2.got, "again\n") == 0);
    close(p2[0]);
    close(p2[1]);
    pthread_sigmask(SIG_SETMASK, &mask_before, NULL);

    /* 3. An exec that fails: the child reports errno through a pipe. */
    int err[2];
    if (pipe2(err, O_CLOEXEC)) return 1;
    pid = vfork();
    if (pid == 0) {
        execl("/nonexistent/program", "x", (char *)NULL);
        int e = errno;
        (void)!write(err[1], &e, sizeof e);
        _exit(127);
    }
    close(err[1]);
    int child_errno = 0;
    ssize_t got = read(err[0], &child_errno, sizeof child_errno);
    close(err[0]);
    say("a failed exec: ENOENT through the pipe, status 127",
        got == sizeof child_errno && child_errno == ENOENT && wait_status(pid) == 127);

    /* 4. Many in a row, a thread ticking meanwhile. */
    int all_zero = 1;
    for (int i = 0; i < 200; ++i) {
        pid = spawn_true();
        all_zero &= pid > 0 && wait_status(pid) == 0;
    }
    __atomic_store_n(&ticks_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(ticker, NULL);
    say("200 children of /bin/true exited 0", all_zero);
    say("the ticking thread ran meanwhile", __atomic_load_n(&ticks, __ATOMIC_SEQ_CST) > 0);
    return all_ok ? 0 : 1;
}
