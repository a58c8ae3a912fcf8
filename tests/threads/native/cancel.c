/* pthread_cancel (deferred, the default type): a thread waiting in a
 * cancellation point ends there, as pthread_exit(PTHREAD_CANCELED) ends it.
 *  - its cleanup handlers (pthread_cleanup_push) and thread-specific data
 *    destructors run; a condition wait's handler runs with the mutex held;
 *  - what it waited for is not consumed: data that comes later is still
 *    there for others, a thread it was joining can still be joined;
 *  - one pending when a cancellation point begins acts there, before the
 *    call does anything; none acts while cancellation is disabled;
 *  - a thread that has ended is no error;
 *  - 1,000 threads cancelled wherever they are (before they first ran, in
 *    a sleep, a read, a condition wait, computing between calls) all end.
 * (A process-shared semaphore is glibc's own under greenrun, its wait a
 * poll on a timer. fgets: glibc's stdio reads through its internal read, a cancellation
 * point too; under greenrun the stdio interposer waits for the fd first.)
 * Each case waits until the thread has said it is about to wait; a short
 * sleep then gives it time to be in the wait (the outcome is the same if it
 * is not yet: it acts as the call begins). The same statements unpatched
 * and under greenrun (siege -t ends its users so: greenrun used to refuse
 * it, ENOTSUP). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <semaphore.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>

static int ready;           /* the thread is about to wait */
static int cleanups;        /* cleanup handlers run */
static int destructed;      /* thread-specific data destructors run */
static int got_past;        /* a thread went on after the point it should have ended at */
static pthread_key_t key;

static void count_cleanup(void *arg) { __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST); }
static void close_fd(void *fd) { close((int)(long)fd); }
static void close_file(void *f) { fclose((FILE *)f); }
static void count_destructor(void *v) { (void)v; __atomic_add_fetch(&destructed, 1, __ATOMIC_SEQ_CST); }

static void wait_ready(void) {
    while (!__atomic_load_n(&ready, __ATOMIC_SEQ_CST)) usleep(1000);
    usleep(20000);
}

/* Cancels t once it is about to wait; whether it ended cancelled, within 5 s. */
static int cancel_and_join(pthread_t t) {
    wait_ready();
    double t0 = now_ms();
    if (pthread_cancel(t) != 0) return 0;
    void *res = NULL;
    if (pthread_join(t, &res) != 0) return 0;
    return res == PTHREAD_CANCELED && now_ms() - t0 < 5000;
}

/* ---- each blocking call, one thread blocked in it ---- */

enum { kRead, kRecv, kAccept, kSleep, kNanosleep, kPoll, kSelect, kEpoll, kSemWait, kSemShared, kSigwait, kWaitpid,
       kFgets, kCalls };
static const char *const names[kCalls] = {"read", "recv", "accept", "sleep", "nanosleep", "poll", "select",
                                          "epoll_wait", "sem_wait", "sem_wait (process-shared)", "sigwait",
                                          "waitpid", "fgets"};
static int fds[2];   /* a pipe or socketpair: the thread waits on fds[0] */
static int listener;
static sem_t sem;
static pid_t child;

static void *blocker(void *arg) {
    int call = (int)(long)arg;
    char c;
    pthread_setspecific(key, &c);
    pthread_cleanup_push(count_cleanup, &cleanups);
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    switch (call) {
    case kRead: (void)read(fds[0], &c, 1); break;
    case kRecv: (void)recv(fds[0], &c, 1, 0); break;
    case kAccept: (void)accept(listener, NULL, NULL); break;
    case kSleep: sleep(30); break;
    case kNanosleep: {
        struct timespec ts = {30, 0};
        nanosleep(&ts, NULL);
        break;
    }
    case kPoll: {
        struct pollfd p = {fds[0], POLLIN, 0};
        poll(&p, 1, 30000);
        break;
    }
    case kSelect: {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fds[0], &r);
        struct timeval tv = {30, 0};
        select(fds[0] + 1, &r, NULL, NULL, &tv);
        break;
    }
    case kEpoll: {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[0]}, out;
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev);
        pthread_cleanup_push(close_fd, (void *)(long)ep);
        epoll_wait(ep, &out, 1, 30000);
        pthread_cleanup_pop(1);
        break;
    }
    case kSemWait:
    case kSemShared: sem_wait(&sem); break;
    case kSigwait: {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR2);
        int sig;
        sigwait(&s, &sig);
        break;
    }
    case kWaitpid: waitpid(child, NULL, 0); break;
    case kFgets: {
        char line[16];
        FILE *f = fdopen(dup(fds[0]), "r");
        pthread_cleanup_push(close_file, f);
        (void)!fgets(line, sizeof line, f);  /* stdio reads through libc's internal read */
        pthread_cleanup_pop(1);
        break;
    }
    }
    __atomic_store_n(&got_past, 1, __ATOMIC_SEQ_CST);
    pthread_cleanup_pop(0);
    return NULL;
}

static void blocked_calls(void) {
    for (int call = 0; call < kCalls; ++call) {
        int pipe_like = call == kRecv ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : pipe(fds);
        if (pipe_like != 0) {
            perror("pipe");
            exit(2);
        }
        if (call == kAccept) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            listener = socket(AF_INET, SOCK_STREAM, 0);
            bind(listener, (struct sockaddr *)&a, sizeof a);
            listen(listener, 4);
        }
        if (call == kSemWait || call == kSemShared) sem_init(&sem, call == kSemShared, 0);
        if (call == kWaitpid) {
            child = fork();
            if (child == 0) {
                char c;
                (void)read(fds[0], &c, 1);  /* until the parent writes */
                _exit(0);
            }
        }
        ready = cleanups = destructed = got_past = 0;
        pthread_t t;
        pthread_create(&t, NULL, blocker, (void *)(long)call);
        int ended = cancel_and_join(t);
        char what[128];
        snprintf(what, sizeof what, "%s: the thread ended cancelled, its cleanup handler and key destructor run",
                 names[call]);
        say(what, ended && cleanups == 1 && destructed == 1 && !got_past);
        if (call == kRead || call == kRecv || call == kFgets) {
            /* what it waited for is still there for the next reader */
            char c = 0;
            int wrote = write(fds[1], "x", 1) == 1;
            snprintf(what, sizeof what, "%s: a byte written after is still there to read", names[call]);
            say(what, wrote && read(fds[0], &c, 1) == 1 && c == 'x');
        }
        if (call == kSemWait || call == kSemShared) {
            sem_post(&sem);
            snprintf(what, sizeof what, "%s: the unit posted after is still there to take", names[call]);
            say(what, sem_trywait(&sem) == 0);
            sem_destroy(&sem);
        }
        if (call == kWaitpid) {
            int status = -1;
            (void)!write(fds[1], "x", 1);
            say("waitpid: the child is still there to reap", waitpid(child, &status, 0) == child && status == 0);
        }
        if (call == kAccept) close(listener);
        close(fds[0]);
        close(fds[1]);
    }
}

/* ---- a condition wait: the handler runs with the mutex held ---- */

static pthread_mutex_t m;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int held_in_handler;

static void unlock_in_handler(void *arg) {
    (void)arg;
    /* an error-checking mutex: locking it again is EDEADLK only for its owner */
    held_in_handler = pthread_mutex_lock(&m) == EDEADLK;
    pthread_mutex_unlock(&m);
}

static void *cond_waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    pthread_cleanup_push(unlock_in_handler, NULL);
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    for (;;) pthread_cond_wait(&cv, &m);  /* nobody signals */
    pthread_cleanup_pop(0);
    return NULL;
}

static void cond_wait_case(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&m, &a);
    ready = held_in_handler = 0;
    pthread_t t;
    pthread_create(&t, NULL, cond_waiter, NULL);
    int ended = cancel_and_join(t);
    say("pthread_cond_wait: ended cancelled, its handler ran with the mutex held", ended && held_in_handler);
    int lock = pthread_mutex_lock(&m);
    say("pthread_cond_wait: the mutex is free after", lock == 0);
    pthread_mutex_unlock(&m);
}

/* ---- a join: the thread it was joining can still be joined ---- */

static int joined_fds[2];
static pthread_t joined;

static void *reads_one(void *arg) {
    (void)arg;
    char c;
    (void)read(joined_fds[0], &c, 1);
    return (void *)42L;
}
static void *joiner(void *arg) {
    (void)arg;
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    pthread_join(joined, NULL);
    __atomic_store_n(&got_past, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void join_case(void) {
    if (pipe(joined_fds) != 0) exit(2);
    ready = got_past = 0;
    pthread_create(&joined, NULL, reads_one, NULL);
    pthread_t t;
    pthread_create(&t, NULL, joiner, NULL);
    int ended = cancel_and_join(t);
    say("pthread_join: the joining thread ended cancelled", ended && !got_past);
    (void)!write(joined_fds[1], "x", 1);
    void *res = NULL;
    say("pthread_join: the thread it joined can still be joined", pthread_join(joined, &res) == 0 && res == (void *)42L);
    close(joined_fds[0]);
    close(joined_fds[1]);
}

/* ---- disabled, then enabled: pthread_testcancel acts ---- */

static double slept_ms;
static void *disabled_sleeper(void *arg) {
    (void)arg;
    int old = -1;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    double t0 = now_ms();
    usleep(200000);  /* a cancellation point, cancelled meanwhile: it sleeps on */
    slept_ms = now_ms() - t0;
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    pthread_testcancel();
    __atomic_store_n(&got_past, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void disabled_case(void) {
    ready = got_past = 0;
    pthread_t t;
    pthread_create(&t, NULL, disabled_sleeper, NULL);
    int ended = cancel_and_join(t);
    say("disabled: the sleep went on to its end, then pthread_testcancel ended the thread",
        ended && !got_past && slept_ms >= 190);
}

/* ---- pending when a call begins: it acts before the call does anything ---- */

static int go;
static int pending_fds[2];
static void *pending_writer(void *arg) {
    (void)arg;
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&go, __ATOMIC_SEQ_CST)) sched_yield();  /* not a cancellation point */
    (void)!write(pending_fds[1], "y", 1);
    __atomic_store_n(&got_past, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void pending_case(void) {
    if (pipe(pending_fds) != 0) exit(2);
    ready = got_past = go = 0;
    pthread_t t;
    pthread_create(&t, NULL, pending_writer, NULL);
    wait_ready();
    int sent = pthread_cancel(t) == 0;
    __atomic_store_n(&go, 1, __ATOMIC_SEQ_CST);
    void *res = NULL;
    int joined_ok = pthread_join(t, &res) == 0 && res == PTHREAD_CANCELED;
    struct pollfd p = {pending_fds[0], POLLIN, 0};
    say("pending: write ended the thread before writing anything",
        sent && joined_ok && !got_past && poll(&p, 1, 0) == 0);
    close(pending_fds[0]);
    close(pending_fds[1]);
}

/* ---- a thread that has ended ---- */

static void *returns_7(void *arg) {
    (void)arg;
    __atomic_store_n(&ready, 1, __ATOMIC_SEQ_CST);
    return (void *)7L;
}

static void ended_case(void) {
    ready = 0;
    pthread_t t;
    pthread_create(&t, NULL, returns_7, NULL);
    wait_ready();
    usleep(50000);
    int r = pthread_cancel(t);
    void *res = NULL;
    say("ended: cancelling a thread that has returned is no error, and it joins with its value",
        r == 0 && pthread_join(t, &res) == 0 && res == (void *)7L);
}

/* ---- many threads, cancelled wherever they are ---- */

enum { kStressThreads = 1000 };
static int stress_cleanups;
static int stress_pipe[2];
static pthread_mutex_t stress_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stress_cv = PTHREAD_COND_INITIALIZER;

static void unlock_stress_m(void *arg) {
    (void)arg;
    pthread_mutex_unlock(&stress_m);
}

static void *stress_thread(void *arg) {
    long i = (long)arg;
    pthread_cleanup_push(count_cleanup, &stress_cleanups);
    switch (i % 4) {
    case 0:
        for (;;) {  /* computing between short sleeps */
            for (volatile int k = 0; k < 2000; ++k) {}
            usleep(2000);
        }
    case 1: {
        char c;
        (void)read(stress_pipe[0], &c, 1);  /* nobody writes */
        break;
    }
    case 2:
        pthread_mutex_lock(&stress_m);
        pthread_cleanup_push(unlock_stress_m, NULL);
        for (;;) pthread_cond_wait(&stress_cv, &stress_m);  /* broadcast now and then: spurious for it */
        pthread_cleanup_pop(1);
        break;
    default: sleep(30);
    }
    __atomic_store_n(&got_past, 1, __ATOMIC_SEQ_CST);
    pthread_cleanup_pop(0);
    return NULL;
}

static void stress_case(void) {
    if (pipe(stress_pipe) != 0) exit(2);
    got_past = 0;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 128 * 1024);
    static pthread_t t[kStressThreads];
    int made = 0;
    for (long i = 0; i < kStressThreads; ++i) {
        if (pthread_create(&t[i], &a, stress_thread, (void *)i) != 0) break;
        ++made;
        /* some cancelled before they have run, some while the rest start */
        if (i % 7 == 0) pthread_cancel(t[i]);
        if (i % 50 == 0) pthread_cond_broadcast(&stress_cv);
    }
    usleep(20000);
    pthread_cond_broadcast(&stress_cv);
    for (int i = 0; i < made; ++i)
        if (i % 7 != 0) pthread_cancel(t[i]);
    int cancelled = 0;
    double t0 = now_ms();
    for (int i = 0; i < made; ++i) {
        void *res = NULL;
        cancelled += pthread_join(t[i], &res) == 0 && res == PTHREAD_CANCELED;
    }
    fprintf(stderr, "stress: %d threads made, %d ended cancelled, %d handlers, joined in %.0f ms\n", made,
            cancelled, stress_cleanups, now_ms() - t0);
    say("stress: 1000 threads cancelled wherever they were: every one ended cancelled, its handler run once",
        made == kStressThreads && cancelled == made && stress_cleanups == made && !got_past);
    close(stress_pipe[0]);
    close(stress_pipe[1]);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);  /* for sigwait, in every thread */
    pthread_key_create(&key, count_destructor);
    blocked_calls();
    cond_wait_case();
    join_case();
    disabled_case();
    pending_case();
    ended_case();
    stress_case();
    return all_ok ? 0 : 1;
}
