/* Blocking calls in one thread must not stop the others.
 *
 * For each scenario, one thread makes a blocking call that some other party
 * (a thread, a child process, a timer) releases after DELAY ms, while a ticker
 * thread counts 10 ms ticks. Each line says what the call returned, whether
 * it waited for its release, and whether the ticker went on meanwhile.
 *
 *     thread_stall [SCENARIO...]      (default: all; "list" prints the names)
 *
 * Under an OS-thread pthread library every answer is trivially "yes"; under
 * greenshim the threads are greenlets of one OS thread, so a call that blocks
 * the OS thread instead of parking shows up as "ticker ran: NO" (or hangs,
 * if the releaser is a thread of this process: an alarm kills it after 10 s). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/select.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DELAY_MS 200

static volatile int ticks;  /* written by the ticker only */
static volatile int ticking = 1;

static void *ticker(void *arg) {
    (void)arg;
    while (ticking) {
        usleep(10 * 1000);
        ++ticks;
    }
    return NULL;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* ---- releasers: a thread that sleeps DELAY_MS, then acts ---- */

typedef void (*action_fn)(intptr_t);
struct later {
    action_fn fn;
    intptr_t arg;
};

static void *later_main(void *p) {
    struct later l = *(struct later *)p;
    free(p);
    usleep(DELAY_MS * 1000);
    l.fn(l.arg);
    return NULL;
}

static pthread_t after_delay(action_fn fn, intptr_t arg) {
    struct later *l = malloc(sizeof *l);
    l->fn = fn;
    l->arg = arg;
    pthread_t t;
    if (pthread_create(&t, NULL, later_main, l) != 0) die("pthread_create");
    return t;
}

static void write_byte(intptr_t fd) {
    if (write((int)fd, "x", 1) != 1) die("releaser write");
}

/* A child process that waits DELAY_MS, then sends sig to us (0: just exits 7). */
static pid_t child_after_delay(int sig) {
    pid_t parent = getpid();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        usleep(DELAY_MS * 1000);
        if (sig) kill(parent, sig);
        _exit(7);
    }
    return pid;
}

static void reap(pid_t pid) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
}

static const char *err_name(int e) {
    switch (e) {
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EBADF: return "EBADF";
    default: return strerrorname_np(e) ? strerrorname_np(e) : "?";
    }
}

static char result[256];

static void ret_or_errno(long r) {
    if (r < 0) snprintf(result, sizeof result, "-1 %s", err_name(errno));
    else snprintf(result, sizeof result, "%ld", r);
}

/* ---- the scenarios: each blocks once; the caller measures ---- */

static void s_usleep(void) { ret_or_errno(usleep(DELAY_MS * 1000)); }

static void s_nanosleep(void) {
    struct timespec ts = {0, DELAY_MS * 1000000L};
    ret_or_errno(nanosleep(&ts, NULL));
}

static void s_pipe_read(void) {
    int p[2];
    char c;
    if (pipe(p) != 0) die("pipe");
    pthread_t t = after_delay(write_byte, p[1]);
    ret_or_errno(read(p[0], &c, 1));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

/* A pipe the shim did not see made (raw syscall): blocking, "borrowed". */
static void s_raw_pipe_read(void) {
    int p[2];
    char c;
    if (syscall(SYS_pipe2, p, 0) != 0) die("SYS_pipe2");
    pthread_t t = after_delay(write_byte, p[1]);
    ret_or_errno(read(p[0], &c, 1));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

static void s_socket_recv(void) {
    int sv[2];
    char c;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    pthread_t t = after_delay(write_byte, sv[1]);
    ret_or_errno(recv(sv[0], &c, 1, 0));
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
}

static struct sockaddr_in listen_addr;
static void connect_to_listener(intptr_t unused) {
    (void)unused;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&listen_addr, sizeof listen_addr) != 0) die("releaser connect");
    close(c);
}

static void s_accept(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    memset(&listen_addr, 0, sizeof listen_addr);
    listen_addr.sin_family = AF_INET;
    listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof listen_addr;
    if (bind(l, (struct sockaddr *)&listen_addr, sizeof listen_addr) != 0 || listen(l, 4) != 0 ||
        getsockname(l, (struct sockaddr *)&listen_addr, &len) != 0) die("listen");
    pthread_t t = after_delay(connect_to_listener, 0);
    int c = accept(l, NULL, NULL);
    snprintf(result, sizeof result, "%s", c >= 0 ? "a connection" : err_name(errno));
    pthread_join(t, NULL);
    if (c >= 0) close(c);
    close(l);
}

static void s_poll(void) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    pthread_t t = after_delay(write_byte, p[1]);
    struct pollfd pf = {p[0], POLLIN, 0};
    ret_or_errno(poll(&pf, 1, -1));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

static void s_select(void) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    pthread_t t = after_delay(write_byte, p[1]);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    ret_or_errno(select(p[0] + 1, &r, NULL, NULL, NULL));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

static void s_epoll_wait(void) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pthread_t t = after_delay(write_byte, p[1]);
    ret_or_errno(epoll_wait(ep, &out, 1, -1));
    pthread_join(t, NULL);
    close(ep);
    close(p[0]);
    close(p[1]);
}

static void s_waitpid(void) {
    pid_t pid = child_after_delay(0);
    int st = 0;
    pid_t r = waitpid(pid, &st, 0);
    if (r == pid && WIFEXITED(st)) snprintf(result, sizeof result, "child exited %d", WEXITSTATUS(st));
    else ret_or_errno(r);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int flag;

static void set_flag_signal(intptr_t unused) {
    (void)unused;
    pthread_mutex_lock(&mu);
    flag = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void s_cond_wait(void) {
    flag = 0;
    pthread_t t = after_delay(set_flag_signal, 0);
    pthread_mutex_lock(&mu);
    int r = 0;
    while (!flag && r == 0) r = pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    snprintf(result, sizeof result, "%d, flag %d", r, flag);
    pthread_join(t, NULL);
}

static void s_cond_timedwait(void) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += DELAY_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&mu);
    int r = pthread_cond_timedwait(&cv, &mu, &dl);
    pthread_mutex_unlock(&mu);
    snprintf(result, sizeof result, "%s", r ? err_name(r) : "0");
}

static void *hold_mutex(void *arg) {
    (void)arg;
    pthread_mutex_lock(&mu);
    flag = 1;
    usleep(DELAY_MS * 1000);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void s_mutex_lock(void) {
    flag = 0;
    pthread_t t;
    pthread_create(&t, NULL, hold_mutex, NULL);
    while (!flag) usleep(1000); /* the holder has it */
    ret_or_errno(pthread_mutex_lock(&mu));
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
}

static sem_t sem;
static void post_sem(intptr_t unused) {
    (void)unused;
    sem_post(&sem);
}

static void s_sem_wait(void) {
    sem_init(&sem, 0, 0);
    pthread_t t = after_delay(post_sem, 0);
    ret_or_errno(sem_wait(&sem));
    pthread_join(t, NULL);
    sem_destroy(&sem);
}

static void s_sem_timedwait(void) {
    sem_init(&sem, 0, 0);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += DELAY_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    ret_or_errno(sem_timedwait(&sem, &dl));
    sem_destroy(&sem);
}

static void *sleeper(void *arg) {
    usleep(DELAY_MS * 1000);
    return arg;
}

static void s_join(void) {
    pthread_t t;
    void *v = NULL;
    pthread_create(&t, NULL, sleeper, (void *)42);
    int r = pthread_join(t, &v);
    snprintf(result, sizeof result, "%d, value %ld", r, (long)(intptr_t)v);
}

static pthread_barrier_t barrier;
static void *late_barrier(void *arg) {
    (void)arg;
    usleep(DELAY_MS * 1000);
    pthread_barrier_wait(&barrier);
    return NULL;
}

static void s_barrier(void) {
    pthread_barrier_init(&barrier, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, late_barrier, NULL);
    int r = pthread_barrier_wait(&barrier);
    snprintf(result, sizeof result, "%s", r == 0 || r == PTHREAD_BARRIER_SERIAL_THREAD ? "passed" : err_name(r));
    pthread_join(t, NULL);
    pthread_barrier_destroy(&barrier);
}

static int futex_word;
static void futex_wake(intptr_t unused) {
    (void)unused;
    __atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void s_futex(void) {
    futex_word = 0;
    pthread_t t = after_delay(futex_wake, 0);
    while (__atomic_load_n(&futex_word, __ATOMIC_SEQ_CST) == 0)
        syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    snprintf(result, sizeof result, "woken, word %d", futex_word);
    pthread_join(t, NULL);
}

static void s_sigwait(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pid_t pid = child_after_delay(SIGUSR1);
    int sig = 0;
    int r = sigwait(&set, &sig);
    snprintf(result, sizeof result, "%d, %s", r, sig == SIGUSR1 ? "SIGUSR1" : "other signal");
    reap(pid);
}

static void s_signalfd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int fd = signalfd(-1, &set, 0);
    if (fd < 0) die("signalfd");
    pid_t pid = child_after_delay(SIGUSR1);
    struct signalfd_siginfo si;
    ssize_t r = read(fd, &si, sizeof si);
    if (r == sizeof si) snprintf(result, sizeof result, "%s", si.ssi_signo == SIGUSR1 ? "SIGUSR1" : "other");
    else ret_or_errno(r);
    close(fd);
    reap(pid);
}

static void on_usr2(int sig) { (void)sig; }

static void s_pause(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    pid_t pid = child_after_delay(SIGUSR2);
    ret_or_errno(pause());
    reap(pid);
}

static void s_timerfd(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {.it_value = {0, DELAY_MS * 1000000L}};
    timerfd_settime(fd, 0, &its, NULL);
    uint64_t n = 0;
    ssize_t r = read(fd, &n, sizeof n);
    if (r == sizeof n) snprintf(result, sizeof result, "expirations %llu", (unsigned long long)n);
    else ret_or_errno(r);
    close(fd);
}

static void eventfd_add(intptr_t fd) { eventfd_write((int)fd, 5); }

/* eventfd_read() is glibc's helper, not read(): it reads inside libc. */
static void s_eventfd_read(void) {
    int fd = eventfd(0, 0);
    pthread_t t = after_delay(eventfd_add, fd);
    eventfd_t v = 0;
    int r = eventfd_read(fd, &v);
    if (r == 0) snprintf(result, sizeof result, "value %llu", (unsigned long long)v);
    else ret_or_errno(r);
    pthread_join(t, NULL);
    close(fd);
}

static void s_rcvtimeo(void) {
    int sv[2];
    char c;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    struct timeval tv = {0, DELAY_MS * 1000};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ret_or_errno(recv(sv[0], &c, 1, 0));
    close(sv[0]);
    close(sv[1]);
}

/* A signal whose handler lacks SA_RESTART interrupts a blocking read: EINTR.
 * It is sent to the main thread (pthread_kill) so no other thread takes it. */
static pthread_t main_thread;
static void on_alarm(int sig) { (void)sig; }
static void kill_main(intptr_t sig) { pthread_kill(main_thread, (int)sig); }

static void s_read_eintr(void) {
    int p[2];
    char c;
    if (pipe(p) != 0) die("pipe");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    pthread_t t = after_delay(kill_main, SIGALRM);
    ret_or_errno(read(p[0], &c, 1));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    signal(SIGALRM, SIG_DFL);
}

/* With SA_RESTART the read goes on after the handler and gets the byte a
 * thread writes 100 ms after the signal. */
static void write_byte_later(intptr_t fd) {
    usleep(100 * 1000);
    write_byte(fd);
}
static void s_read_restart(void) {
    int p[2];
    char c;
    if (pipe(p) != 0) die("pipe");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    pthread_t t1 = after_delay(kill_main, SIGALRM);
    pthread_t t2 = after_delay(write_byte_later, p[1]);
    ret_or_errno(read(p[0], &c, 1));
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    close(p[0]);
    close(p[1]);
    signal(SIGALRM, SIG_DFL);
}

static char lock_path[64];
static int lock_fd_a;
static void *hold_flock(void *arg) {
    (void)arg;
    if (flock(lock_fd_a, LOCK_EX) != 0) die("flock holder");
    flag = 1;
    usleep(DELAY_MS * 1000);
    flock(lock_fd_a, LOCK_UN);
    return NULL;
}

/* Two open file descriptions of one file: flock conflicts even within one
 * process, so the waiter must wait for the holder thread. */
static void s_flock(void) {
    snprintf(lock_path, sizeof lock_path, "/tmp/thread_stall.%d", (int)getpid());
    lock_fd_a = open(lock_path, O_RDWR | O_CREAT, 0600);
    int b = open(lock_path, O_RDWR);
    unlink(lock_path);
    flag = 0;
    pthread_t t;
    pthread_create(&t, NULL, hold_flock, NULL);
    while (!flag) usleep(1000);
    ret_or_errno(flock(b, LOCK_EX));
    pthread_join(t, NULL);
    close(b);
    close(lock_fd_a);
}

static void *hold_ofd_lock(void *arg) {
    (void)arg;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(lock_fd_a, F_OFD_SETLKW, &fl) != 0) die("F_OFD_SETLKW holder");
    flag = 1;
    usleep(DELAY_MS * 1000);
    fl.l_type = F_UNLCK;
    fcntl(lock_fd_a, F_OFD_SETLK, &fl);
    return NULL;
}

/* Open file description locks, like flock, conflict between two opens of a
 * file in one process. */
static void s_ofd_lock(void) {
    snprintf(lock_path, sizeof lock_path, "/tmp/thread_stall.%d", (int)getpid());
    lock_fd_a = open(lock_path, O_RDWR | O_CREAT, 0600);
    int b = open(lock_path, O_RDWR);
    unlink(lock_path);
    flag = 0;
    pthread_t t;
    pthread_create(&t, NULL, hold_ofd_lock, NULL);
    while (!flag) usleep(1000);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    ret_or_errno(fcntl(b, F_OFD_SETLKW, &fl));
    pthread_join(t, NULL);
    close(b);
    close(lock_fd_a);
}

/* As pipe_read, but first a child inherits the pipe (no O_CLOEXEC, and it
 * closes nothing: sloppy but common) and execs a program. The pipe is shared
 * with the child only in passing: the child has exited before the read. */
static void s_pipe_read_after_exec(void) {
    int p[2];
    char c;
    if (pipe(p) != 0) die("pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        execlp("true", "true", (char *)NULL);
        _exit(127);
    }
    reap(pid);
    pthread_t t = after_delay(write_byte, p[1]);
    ret_or_errno(read(p[0], &c, 1));
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

struct scenario {
    const char *name;
    void (*fn)(void);
    int waits; /* 1: must take about DELAY_MS */
};

static const struct scenario scenarios[] = {
    {"usleep", s_usleep, 1},
    {"nanosleep", s_nanosleep, 1},
    {"pipe_read", s_pipe_read, 1},
    {"raw_pipe_read", s_raw_pipe_read, 1},
    {"pipe_read_after_exec", s_pipe_read_after_exec, 1},
    {"socket_recv", s_socket_recv, 1},
    {"accept", s_accept, 1},
    {"poll", s_poll, 1},
    {"select", s_select, 1},
    {"epoll_wait", s_epoll_wait, 1},
    {"waitpid", s_waitpid, 1},
    {"cond_wait", s_cond_wait, 1},
    {"cond_timedwait", s_cond_timedwait, 1},
    {"mutex_lock", s_mutex_lock, 1},
    {"sem_wait", s_sem_wait, 1},
    {"sem_timedwait", s_sem_timedwait, 1},
    {"join", s_join, 1},
    {"barrier", s_barrier, 1},
    {"futex", s_futex, 1},
    {"sigwait", s_sigwait, 1},
    {"signalfd", s_signalfd, 1},
    {"pause", s_pause, 1},
    {"timerfd", s_timerfd, 1},
    {"eventfd_read", s_eventfd_read, 1},
    {"rcvtimeo", s_rcvtimeo, 1},
    {"read_eintr", s_read_eintr, 1},
    {"read_restart", s_read_restart, 1},
    {"flock", s_flock, 1},
    {"ofd_lock", s_ofd_lock, 1},
};
#define NSCEN (sizeof scenarios / sizeof scenarios[0])

static void run(const struct scenario *s) {
    int t0 = ticks;
    double m0 = now_ms();
    result[0] = 0;
    s->fn();
    double ms = now_ms() - m0;
    int n = ticks - t0;
    printf("%-20s %-22s waited: %s; ticker ran: %s\n", s->name, result,
           !s->waits ? "-" : ms >= DELAY_MS * 0.9 ? "yes" : "NO (too early)",
           n >= 5 ? "yes" : "NO");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "list")) {
        for (size_t i = 0; i < NSCEN; ++i) printf("%s\n", scenarios[i].name);
        return 0;
    }
    /* SIGUSR1 is only ever taken by sigwait/signalfd: blocked everywhere. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    alarm(10); /* a hang is a failure, not a stuck test */
    main_thread = pthread_self();

    pthread_t t;
    pthread_create(&t, NULL, ticker, NULL);
    usleep(30 * 1000);
    for (size_t i = 0; i < NSCEN; ++i) {
        int wanted = argc < 2;
        for (int a = 1; a < argc; ++a) wanted |= !strcmp(argv[a], scenarios[i].name);
        if (wanted) run(&scenarios[i]);
    }
    ticking = 0;
    pthread_join(t, NULL);
    return 0;
}
