/* Calls that wait with a signal mask of their own keep it for the whole wait,
 * as the kernel does: sigsuspend, pselect, ppoll and epoll_pwait. For each:
 *  - a signal blocked and already pending when the call comes, which the
 *    call's mask lets through, ends it at once with EINTR, its handler run
 *    (nginx's master waits for its workers' SIGCHLD in sigsuspend: under
 *    greenrun the handler ran as the mask changed and the wait slept on);
 *  - a SIGCHLD that comes during the wait (a child that exits after 100 ms)
 *    ends it with EINTR, while the program otherwise blocks SIGCHLD (make's
 *    jobserver waits in pselect so: make -j2 hung under greenrun, the mask
 *    in force only for the first look);
 *  - the program's own mask is back after the call;
 *  - another thread ran during the wait.
 * The same statements unpatched and under greenrun. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/wait.h>

static volatile sig_atomic_t handled;
static void on_signal(int sig) { handled = sig; }

enum { kSigsuspend, kPselect, kPpoll, kEpollPwait, kCalls };
static const char *const names[kCalls] = {"sigsuspend", "pselect", "ppoll", "epoll_pwait"};

/* Waits with mask in force, on an idle pipe for the fd calls (5 s at most). */
static int wait_with(int call, const sigset_t *mask, int idle_fd) {
    struct timespec five = {5, 0};
    switch (call) {
    case kSigsuspend: return sigsuspend(mask);
    case kPselect: {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(idle_fd, &r);
        return pselect(idle_fd + 1, &r, NULL, NULL, &five, mask);
    }
    case kPpoll: {
        struct pollfd p = {idle_fd, POLLIN, 0};
        return ppoll(&p, 1, &five, mask);
    }
    default: {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = idle_fd}, out;
        epoll_ctl(ep, EPOLL_CTL_ADD, idle_fd, &ev);
        int r = epoll_pwait(ep, &out, 1, 5000, mask);
        int err = errno;
        close(ep);
        errno = err;
        return r;
    }
    }
}

static int blocked(int sig) {
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    return sigismember(&now, sig) == 1;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t both, none;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGCHLD);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &both, NULL);
    int idle[2];
    if (pipe(idle) != 0) return 1;
    pthread_t tick = start(ticker, NULL);

    for (int call = 0; call < kCalls; ++call) {
        char what[160];
        /* Pending before the call. */
        handled = 0;
        kill(getpid(), SIGUSR1);
        int pending_first = handled == 0;
        double t0 = now_ms();
        int r = wait_with(call, &none, idle[0]);
        int err = errno;
        double took = now_ms() - t0;
        if (r != -1 || err != EINTR || handled != SIGUSR1 || took > 1000)
            fprintf(stderr, "%s, pending: r=%d errno=%d handled=%d took %.0f ms\n", names[call], r, err, (int)handled, took);
        snprintf(what, sizeof what, "%s: a signal pending before the call, let through by its mask, ends it at once with EINTR",
                 names[call]);
        say(what, pending_first && r == -1 && err == EINTR && handled == SIGUSR1 && took < 1000);

        /* Arriving during the wait. */
        handled = 0;
        int ticks0 = __atomic_load_n(&ticker_ticks, __ATOMIC_SEQ_CST);
        pid_t child = fork();
        if (child == 0) {
            usleep(100000);
            _exit(0);
        }
        t0 = now_ms();
        r = wait_with(call, &none, idle[0]);
        err = errno;
        took = now_ms() - t0;
        int ticked = __atomic_load_n(&ticker_ticks, __ATOMIC_SEQ_CST) - ticks0;
        waitpid(child, NULL, 0);
        if (r != -1 || err != EINTR || handled != SIGCHLD || took > 3000)
            fprintf(stderr, "%s, during: r=%d errno=%d handled=%d took %.0f ms\n", names[call], r, err, (int)handled, took);
        snprintf(what, sizeof what, "%s: a SIGCHLD the program blocks, let through by its mask, ends it with EINTR", names[call]);
        say(what, r == -1 && err == EINTR && handled == SIGCHLD && took < 3000);
        snprintf(what, sizeof what, "%s: the program's mask is back after it", names[call]);
        say(what, blocked(SIGUSR1) && blocked(SIGCHLD));
        snprintf(what, sizeof what, "%s: another thread ran while it waited", names[call]);
        if (ticked <= 0) fprintf(stderr, "%s: the ticker ticked %d times\n", names[call], ticked);
        say(what, ticked > 0);
    }
    __atomic_store_n(&ticker_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(tick, NULL);
    return all_ok ? 0 : 1;
}
