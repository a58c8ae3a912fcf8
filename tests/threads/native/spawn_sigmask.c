/* A new process starts with the signal mask of the thread that made it:
 * fork's child and exec's image keep the calling thread's mask (POSIX), and
 * posix_spawn's, popen's and system's child starts with the caller's unless
 * the spawn attributes set one. Under greenrun a thread's mask is its own
 * view, not its OS thread's: that is the main thread's with one hub, and a
 * worker hub's OS thread blocks nearly every signal (the program's signals
 * go to the main thread). A child must still get its thread's mask, or a
 * child exec'd from a worker cannot be stopped with SIGTERM.
 *
 * Each of 8 threads blocks two signals of its own (so that a child given
 * another thread's mask, or the OS thread's, is told apart), then starts a
 * child five ways; each child compares the mask the kernel gave it
 * (rt_sigprocmask, below libc and the shim) with the one it was told. The
 * child of a plain fork then unblocks one: the kernel's mask must follow. */
#include "common.h"

#include <spawn.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>

extern char **environ;

enum { kThreads = 8, kWays = 5 };
static const char *const way_names[kWays] = {"fork", "fork and exec", "posix_spawn", "popen", "system"};
static const char *self_path;
static int child_ok[kThreads][kWays];
static int on_worker;  /* threads that ran on another OS thread than main's (stderr only) */
/* All 8 wait here first: woken together, some are given to an idle hub
 * under greenrun -j 2 (README, "Several hubs"), whose OS thread blocks the
 * program's signals. */
static pthread_barrier_t all_started;

/* The kernel's mask of the calling OS thread, signals 1-64 as bits 0-63. */
static uint64_t kernel_mask(void) {
    uint64_t m = 0;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, sizeof m);
    return m;
}

/* The calling thread's mask as the program sees it (pthread_sigmask). */
static uint64_t thread_mask(void) {
    sigset_t set;
    uint64_t m = 0;
    pthread_sigmask(SIG_SETMASK, NULL, &set);
    for (int s = 1; s <= 64; ++s)
        if (sigismember(&set, s) == 1) m |= UINT64_C(1) << (s - 1);
    return m;
}

/* "check MASK": exits 0 if this process started with MASK blocked. */
static int check(const char *hex) {
    uint64_t want = strtoull(hex, NULL, 16), got = kernel_mask();
    if (got != want) fprintf(stderr, "child: mask %016llx, expected %016llx\n", (unsigned long long)got, (unsigned long long)want);
    return got == want ? 0 : 1;
}

static int status_ok(int st) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

static void *thread_main(void *arg) {
    int i = (int)(intptr_t)arg;
    pthread_barrier_wait(&all_started);
    if (syscall(SYS_gettid) != getpid()) __atomic_add_fetch(&on_worker, 1, __ATOMIC_RELAXED);
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGUSR2);
    sigaddset(&mine, SIGRTMIN + 2 + i);
    pthread_sigmask(SIG_BLOCK, &mine, NULL);
    uint64_t want = thread_mask();
    char hex[32], cmd[4200];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)want);
    char *argv[] = {(char *)self_path, "check", hex, NULL};
    int st;

    pid_t pid = fork();
    if (pid == 0) {
        /* Its only thread now: what it unblocks, the kernel unblocks. */
        if (kernel_mask() != want) _exit(1);
        sigset_t usr2;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
        _exit(kernel_mask() == (want & ~(UINT64_C(1) << (SIGUSR2 - 1))) ? 0 : 2);
    }
    child_ok[i][0] = pid > 0 && waitpid(pid, &st, 0) == pid && status_ok(st);

    pid = fork();
    if (pid == 0) {
        execve(self_path, argv, environ);
        _exit(127);
    }
    child_ok[i][1] = pid > 0 && waitpid(pid, &st, 0) == pid && status_ok(st);

    child_ok[i][2] = posix_spawn(&pid, self_path, NULL, NULL, argv, environ) == 0 && waitpid(pid, &st, 0) == pid &&
                     status_ok(st);

    snprintf(cmd, sizeof cmd, "exec '%s' check %s", self_path, hex);
    FILE *p = popen(cmd, "r");
    child_ok[i][3] = p && status_ok(pclose(p));

    child_ok[i][4] = status_ok(system(cmd));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "check")) return check(argv[2]);
    self_path = "/proc/self/exe";
    static char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        self_path = path;
    }
    pthread_t t[kThreads];
    pthread_barrier_init(&all_started, NULL, kThreads);
    for (int i = 0; i < kThreads; ++i) t[i] = start(thread_main, (void *)(intptr_t)i);
    for (int i = 0; i < kThreads; ++i) pthread_join(t[i], NULL);
    fprintf(stderr, "spawn_sigmask: %d of %d threads ran on another OS thread than main's\n", on_worker, kThreads);
    for (int w = 0; w < kWays; ++w) {
        int ok = 1;
        for (int i = 0; i < kThreads; ++i) ok &= child_ok[i][w];
        char what[128];
        snprintf(what, sizeof what, "spawn_sigmask: each %s child started with its thread's signal mask", way_names[w]);
        say(what, ok);
    }
    return all_ok ? 0 : 1;
}
