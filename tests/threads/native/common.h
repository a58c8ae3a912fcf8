/* Shared by the C programs of tests/threads/native: each prints statements
 * ending "yes" (or "NO") that must be the same unpatched and under greenrun,
 * and exits 0 only if all are "yes". Figures go to stderr. */
#pragma once
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMMON_FN static __attribute__((unused))

static int all_ok = 1;

/* Signals thread t with SIGUSR1, caught by a handler with SA_RESTART, until
 * *done: a signal that came before its wait began interrupted nothing, the
 * next one will. Returns whether the handler ran. */
static volatile sig_atomic_t usr1_handled;
COMMON_FN void note_usr1(int sig) {
    (void)sig;
    usr1_handled = 1;
}
COMMON_FN int interrupt_until_done(pthread_t t, int *done) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    while (!__atomic_load_n(done, __ATOMIC_SEQ_CST)) {
        pthread_kill(t, SIGUSR1);
        usleep(5000);
    }
    return usr1_handled;
}

COMMON_FN void say(const char *what, int ok) {
    printf("%s: %s\n", what, ok ? "yes" : "NO");
    fflush(stdout);
    all_ok &= ok;
}

COMMON_FN double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Whether libgreenshim.so is mapped: the program runs under greenrun. */
COMMON_FN int under_shim(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, "libgreenshim") != NULL;
    if (f) fclose(f);
    return found;
}

/* The process's OS threads, without the kernel's io_uring workers and SQPOLL
 * threads ("iou-wrk-PID", "iou-sqp-PID"), which the kernel counts in the
 * thread group but the program did not create. */
COMMON_FN int os_threads(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
            fclose(f);
        }
        if (strncmp(comm, "iou-", 4) != 0) ++n;
    }
    if (d) closedir(d);
    return n;
}

/* The OS threads greenshim runs the greenlet threads on once one was made:
 * its hubs (GREENSHIM_HUBS, 1 by default; "auto": the CPUs). */
COMMON_FN int shim_hubs(void) {
    const char *v = getenv("GREENSHIM_HUBS");
    if (!v || !*v) return 1;
    if (!strcmp(v, "auto")) {
        cpu_set_t set;
        return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    }
    return atoi(v);
}

/* "N OS threads (one under greenshim)": `unpatched` threads without the
 * shim, its hubs (1 by default) with it. */
COMMON_FN int threads_as_expected(int seen, int unpatched) {
    int want = under_shim() ? shim_hubs() : unpatched;
    if (seen != want) fprintf(stderr, "OS threads: saw %d, expected %d\n", seen, want);
    return seen == want;
}

/* Starts a thread; a failure ends the program. */
COMMON_FN pthread_t start(void *(*fn)(void *), void *arg) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(1);
    }
    return t;
}

/* A thread that ticks every 1 ms until ticker_stop is set: it ran while
 * another waited if ticker_ticks grew meanwhile. */
static int ticker_stop, ticker_ticks;

COMMON_FN void *ticker(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&ticker_stop, __ATOMIC_SEQ_CST)) {
        usleep(1000);
        __atomic_fetch_add(&ticker_ticks, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

/* Starts a fresh ticker and returns once it has ticked (on a loaded machine
 * a new OS thread may take milliseconds to first run: counted from here, the
 * ticks say only whether it ran during the wait that follows); ticker_end
 * stops it and says how often it ticked since. */
static int ticker_first;
COMMON_FN pthread_t ticker_begin(void) {
    __atomic_store_n(&ticker_stop, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&ticker_ticks, 0, __ATOMIC_SEQ_CST);
    pthread_t t = start(ticker, NULL);
    while (__atomic_load_n(&ticker_ticks, __ATOMIC_SEQ_CST) == 0) usleep(200);
    ticker_first = __atomic_load_n(&ticker_ticks, __ATOMIC_SEQ_CST);
    return t;
}

COMMON_FN int ticker_end(pthread_t t) {
    int ticked = __atomic_load_n(&ticker_ticks, __ATOMIC_SEQ_CST) - ticker_first;
    __atomic_store_n(&ticker_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    return ticked;
}
