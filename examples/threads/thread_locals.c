/* Thread-locals, one per thread: what a threaded program relies on when each
 * of its threads keeps its own __thread variables and glibc per-thread state.
 * Plain C, no greenshim code; the output is the same with OS threads and
 * under greenrun (where every thread is a greenlet on one OS thread, with
 * thread-locals of its own: GREENSHIM_THREAD_LOCALS=thread).
 *
 *     thread_locals MODE [PLUGIN.so]
 *
 * MODE:
 *   counter   8 threads count to 1000 in a __thread counter, waiting between
 *   session   40 connections, a thread each: a __thread session pointer set
 *             once, used after every blocking read
 *   epoll     4 threads, each polling its own epoll fd chosen by a __thread index
 *   dlopen    a dlopen'ed library's __thread counter (PLUGIN.so), per thread
 *   libc      errno, strerror's buffer, uselocale per thread
 *   keys      pthread keys with destructors at thread exit
 *   fork      fork from a thread: the child keeps that thread's thread-locals
 *   signal    a signal handler reads the interrupted thread's __thread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char* what) {
    perror(what);
    exit(1);
}

/* Lets the other threads run: under greenrun a sleep parks this thread. */
static void pause_a_little(void) { usleep(1000); }

static void start_all(pthread_t* t, int n, void* (*fn)(void*)) {
    for (long i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn, (void*)i) != 0) die("pthread_create");
}

static void join_all(pthread_t* t, int n, long* results) {
    for (int i = 0; i < n; i++) {
        void* r;
        pthread_join(t[i], &r);
        if (results) results[i] = (long)r;
    }
}

/* ---- counter ---- */
static __thread long t_count;

static void* count_to_1000(void* arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        t_count++;
        if (i % 250 == 0) pause_a_little();
    }
    return (void*)t_count;
}

static int mode_counter(void) {
    pthread_t t[8];
    long r[8];
    start_all(t, 8, count_to_1000);
    join_all(t, 8, r);
    for (int i = 0; i < 8; i++) printf("thread %d counted %ld\n", i, r[i]);
    printf("main's counter: %ld\n", t_count);
    return 0;
}

/* ---- session ---- */
enum { kConns = 40, kMessages = 5 };
struct Session {
    int id;
    int fd;
    int handled;
};
static struct Session g_sessions[kConns];
static __thread struct Session* t_session;

static void* serve(void* arg) {
    struct Session* s = &g_sessions[(long)arg];
    t_session = s; /* once, when the connection starts */
    char buf[64];
    for (;;) {
        ssize_t n = read(t_session->fd, buf, sizeof buf); /* blocks: other connections run */
        if (n <= 0) break;
        t_session->handled++;
        char reply[64];
        int len = snprintf(reply, sizeof reply, "session %d, message %d", t_session->id, t_session->handled);
        if (write(t_session->fd, reply, (size_t)len) != len) die("write");
    }
    return NULL;
}

static int mode_session(void) {
    int client[kConns];
    pthread_t t[kConns];
    for (int i = 0; i < kConns; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
        g_sessions[i] = (struct Session){i, sv[1], 0};
        client[i] = sv[0];
    }
    start_all(t, kConns, serve);
    int wrong = 0;
    for (int m = 1; m <= kMessages; m++) {
        for (int i = 0; i < kConns; i++) /* every connection has a message waiting */
            if (write(client[i], "hello", 5) != 5) die("write");
        for (int i = 0; i < kConns; i++) {
            char got[64], want[64];
            ssize_t n = read(client[i], got, sizeof got - 1);
            got[n > 0 ? n : 0] = 0;
            snprintf(want, sizeof want, "session %d, message %d", i, m);
            if (strcmp(got, want) != 0) {
                if (wrong++ < 3) printf("connection %d got \"%s\", expected \"%s\"\n", i, got, want);
            }
        }
    }
    for (int i = 0; i < kConns; i++) close(client[i]);
    join_all(t, kConns, NULL);
    printf("%d connections x %d messages: %d answered in another connection's session\n", kConns, kMessages, wrong);
    return 0;
}

/* ---- epoll ---- */
enum { kPollers = 4, kEvents = 10 };
static int g_epfd[kPollers];
static int g_pipe[kPollers][2];
static __thread int t_index;
static pthread_barrier_t g_polling;

static void* poll_own(void* arg) {
    t_index = (int)(long)arg;
    g_epfd[t_index] = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = g_pipe[t_index][0]};
    epoll_ctl(g_epfd[t_index], EPOLL_CTL_ADD, g_pipe[t_index][0], &ev);
    pthread_barrier_wait(&g_polling);
    long got = 0;
    while (got < kEvents) {
        struct epoll_event out;
        int n = epoll_wait(g_epfd[t_index], &out, 1, 3000);
        if (n <= 0) break; /* 3 s without an event: give up */
        char c;
        if (read(out.data.fd, &c, 1) == 1 && c == 'a' + t_index) got++;
    }
    close(g_epfd[t_index]);
    return (void*)got;
}

static int mode_epoll(void) {
    pthread_t t[kPollers];
    long r[kPollers];
    pthread_barrier_init(&g_polling, NULL, kPollers + 1);
    for (int i = 0; i < kPollers; i++)
        if (pipe(g_pipe[i]) != 0) die("pipe");
    start_all(t, kPollers, poll_own);
    pthread_barrier_wait(&g_polling);
    for (int e = 0; e < kEvents; e++)
        for (int i = 0; i < kPollers; i++) {
            char c = (char)('a' + i);
            if (write(g_pipe[i][1], &c, 1) != 1) die("write");
            pause_a_little();
        }
    join_all(t, kPollers, r);
    for (int i = 0; i < kPollers; i++) printf("poller %d: %ld of %d events on its own epoll fd\n", i, r[i], kEvents);
    return 0;
}

/* ---- dlopen ---- */
static int (*g_plugin_bump)(void);

static void* bump_plugin(void* arg) {
    (void)arg;
    int v = 0;
    for (int i = 0; i < 100; i++) {
        v = g_plugin_bump();
        if (i % 25 == 0) pause_a_little();
    }
    return (void*)(long)v;
}

static int mode_dlopen(const char* plugin) {
    void* h = dlopen(plugin, RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    g_plugin_bump = (int (*)(void))dlsym(h, "plugin_bump");
    if (!g_plugin_bump) die("dlsym");
    printf("main bumps the plugin's counter to %d\n", g_plugin_bump());
    pthread_t t[4];
    long r[4];
    start_all(t, 4, bump_plugin);
    join_all(t, 4, r);
    for (int i = 0; i < 4; i++) printf("thread %d: the plugin's __thread counter reached %ld\n", i, r[i]);
    printf("main's is still %d\n", g_plugin_bump() - 1);
    return 0;
}

/* ---- libc ---- */
static void* libc_state(void* arg) {
    long i = (long)arg;
    int bad = 0;
    /* errno */
    errno = 1000 + (int)i;
    pause_a_little();
    if (errno != 1000 + i) bad |= 1;
    /* strerror's buffer for an unknown number is the thread's own */
    char want[64];
    snprintf(want, sizeof want, "Unknown error %ld", 5000 + i);
    const char* s = strerror(5000 + (int)i);
    pause_a_little();
    if (strcmp(s, want) != 0) bad |= 2;
    char buf[64];
    if (strerror_r(EPIPE, buf, sizeof buf) != buf && strcmp(strerror_r(EPIPE, buf, sizeof buf), "Broken pipe") != 0)
        bad |= 4;
    /* a locale of the thread's own: one multibyte, one not */
    locale_t loc = newlocale(LC_ALL_MASK, i % 2 ? "C.UTF-8" : "C", (locale_t)0);
    if (!loc) return (void*)8L;
    uselocale(loc);
    pause_a_little();
    if ((int)MB_CUR_MAX != (i % 2 ? 6 : 1)) bad |= 16;
    uselocale(LC_GLOBAL_LOCALE);
    freelocale(loc);
    return (void*)(long)bad;
}

static int mode_libc(void) {
    pthread_t t[6];
    long r[6];
    start_all(t, 6, libc_state);
    join_all(t, 6, r);
    for (int i = 0; i < 6; i++)
        printf("thread %d: errno %s, strerror buffer %s, strerror_r %s, locale %s\n", i, r[i] & 1 ? "LOST" : "kept",
               r[i] & 2 ? "OVERWRITTEN" : "kept", r[i] & 4 ? "WRONG" : "ok", r[i] & 24 ? "WRONG" : "its own");
    return 0;
}

/* ---- keys ---- */
static pthread_key_t g_key;
static int g_destroyed[5];

static void key_destructor(void* v) { g_destroyed[(long)v - 1]++; }

static void* set_key(void* arg) {
    pthread_setspecific(g_key, (void*)((long)arg + 1));
    pause_a_little();
    return (void*)((long)pthread_getspecific(g_key) - 1);
}

static int mode_keys(void) {
    pthread_key_create(&g_key, key_destructor);
    pthread_t t[5];
    long r[5];
    start_all(t, 5, set_key);
    join_all(t, 5, r);
    for (int i = 0; i < 5; i++)
        printf("thread %d: its key held %ld; destructor ran %d time(s) by join\n", i, r[i], g_destroyed[i]);
    return 0;
}

/* ---- fork ---- */
static __thread int t_mark = 7;
static pthread_key_t g_fork_key;
static long g_key_in_prepare = -1;

/* An atfork handler runs in the thread that forks, with its keys. */
static void prepare(void) { g_key_in_prepare = (long)pthread_getspecific(g_fork_key); }

static void* fork_from_thread(void* arg) {
    (void)arg;
    t_mark = 42;
    pthread_setspecific(g_fork_key, (void*)42L);
    pause_a_little();
    pid_t pid = fork();
    if (pid == 0) _exit(t_mark); /* the child's only thread: this one, with its thread-locals */
    int status = 0;
    waitpid(pid, &status, 0);
    return (void*)(long)(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static int mode_fork(void) {
    pthread_t t;
    long r;
    pthread_key_create(&g_fork_key, NULL);
    pthread_setspecific(g_fork_key, (void*)7L);
    pthread_atfork(prepare, NULL, NULL);
    pthread_create(&t, NULL, fork_from_thread, NULL);
    join_all(&t, 1, &r);
    printf("the child of a thread saw its mark %ld; main's is %d\n", r, t_mark);
    printf("the atfork handler saw the forking thread's key: %ld\n", g_key_in_prepare);
    return 0;
}

/* ---- signal ---- */
static __thread int t_name;
static volatile sig_atomic_t g_seen;

static void on_usr1(int sig) {
    (void)sig;
    g_seen = t_name;
}

static pthread_mutex_t g_raise_lock = PTHREAD_MUTEX_INITIALIZER;

static void* raise_in_thread(void* arg) {
    t_name = 100 + (int)(long)arg;
    pause_a_little();
    /* One raise at a time: g_seen is one global, which another thread's
     * handler would otherwise overwrite before this one reads it back. */
    pthread_mutex_lock(&g_raise_lock);
    raise(SIGUSR1); /* delivered to this thread, which runs the handler */
    long seen = g_seen;
    pthread_mutex_unlock(&g_raise_lock);
    return (void*)seen;
}

static int mode_signal(void) {
    signal(SIGUSR1, on_usr1);
    pthread_t t[3];
    long r[3];
    start_all(t, 3, raise_in_thread);
    join_all(t, 3, r);
    for (int i = 0; i < 3; i++) printf("thread %d: its handler saw %ld\n", i, r[i]);
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char* mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "counter")) return mode_counter();
    if (!strcmp(mode, "session")) return mode_session();
    if (!strcmp(mode, "epoll")) return mode_epoll();
    if (!strcmp(mode, "dlopen") && argc > 2) return mode_dlopen(argv[2]);
    if (!strcmp(mode, "libc")) return mode_libc();
    if (!strcmp(mode, "keys")) return mode_keys();
    if (!strcmp(mode, "fork")) return mode_fork();
    if (!strcmp(mode, "signal")) return mode_signal();
    fprintf(stderr, "usage: thread_locals counter|session|epoll|dlopen PLUGIN|libc|keys|fork|signal\n");
    return 2;
}
