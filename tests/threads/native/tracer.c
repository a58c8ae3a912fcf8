/* A tracer's waits. waitpid and co. tell a tracer of its tracees' stops
 * without WUNTRACED (ptrace(2)), and no fd says so: a pidfd is readable only
 * when its child exits. strace under greenrun hung in its first wait, the
 * shim having parked it on the child's pidfd alone.
 *
 * A child makes itself a tracee (PTRACE_TRACEME) and stops; the parent, which
 * has not called ptrace yet, waits for it with waitpid(pid, &st, 0). The
 * parent then follows each of the child's system calls (PTRACE_SYSCALL: two
 * stops each) until it exits: first alone, then with a thread beside it that
 * ticks every 2 ms, which the tracer's waits must not stop. */
#include "common.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

enum { kSyscalls = 100 };

static int tracing_done;
static void *tick_every_2ms(void *arg) {
    long *ticks = arg;
    while (!__atomic_load_n(&tracing_done, __ATOMIC_SEQ_CST)) {
        usleep(2000);
        ++*ticks;
    }
    return NULL;
}

static void trace_one(const char *how) {
    char what[200];
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        raise(SIGSTOP);
        for (int i = 0; i < kSyscalls; ++i) {
            (void)getppid();
            usleep(1000);
        }
        _exit(7);
    }
    double t0 = now_ms();
    int st = 0;
    pid_t r = waitpid(pid, &st, 0);
    snprintf(what, sizeof what, "%s: waitpid(pid, 0) returns the new tracee's stop (SIGSTOP)", how);
    say(what, r == pid && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP);
    if (r != pid) return;
    double first = now_ms() - t0;
    long stops = 0;
    for (;;) {
        if (ptrace(PTRACE_SYSCALL, pid, NULL, NULL) != 0) break;
        if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st)) break;
        ++stops;
    }
    snprintf(what, sizeof what, "%s: every system call of the tracee was seen, and its exit status", how);
    say(what, WIFEXITED(st) && WEXITSTATUS(st) == 7 && stops >= 2 * kSyscalls);
    fprintf(stderr, "%s: first stop after %.1f ms, %ld stops, all in %.1f ms\n", how, first, stops, now_ms() - t0);
}

int main(void) {
    trace_one("alone");
    long ticks = 0;
    pthread_t t = start(tick_every_2ms, &ticks);
    double t0 = now_ms();
    trace_one("beside a ticking thread");
    double took = now_ms() - t0;
    __atomic_store_n(&tracing_done, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    /* The tracee sleeps 1 ms a call: >= 100 ms; the ticker's 2 ms make
     * >= 50 ticks unless the tracer's waits held its thread. */
    fprintf(stderr, "ticker: %ld ticks in %.1f ms\n", ticks, took);
    say("the ticking thread ran while the tracer waited", ticks >= 20);
    return all_ok ? 0 : 1;
}
