/* A program that uses libev itself. libev keeps some settings per process,
 * not per loop: the allocator (ev_set_allocator) and the fatal-error callback
 * (ev_set_syserr_cb). The shim's hubs are libev loops too; when they shared
 * the program's libev, a hub made after the program had set its allocator
 * replaced it with the shim's, and from then on the program's own loop grew
 * and freed, through the shim's allocator, arrays its own had made.
 *
 * The program counts the calls of its allocator. Threads block on pipes
 * (under greenrun: greenlets whose fds a hub watches), before and after it
 * sets its allocator a second time (a hub made before, and one already there
 * when it is set); then it makes its own loop grow. Its allocator must see
 * every allocation of its loop and none of anyone else's. Its loop then runs
 * a timer and an io watcher to the end. */
#include "common.h"

#include <ev.h>

enum { kThreads = 300, kOwnWatchers = 200 };

static long allocator_calls;
static void *counting_realloc(void *ptr, long size) {
    ++allocator_calls;
    if (size) return realloc(ptr, (size_t)size);
    free(ptr);
    return NULL;
}

static void *reader(void *arg) {
    int fd = *(int *)arg;
    char c;
    return (void *)(long)(read(fd, &c, 1) == 1 && c == 'x');
}

static int threads_block_and_end(int n) {
    static int fds[kThreads][2];
    static pthread_t t[kThreads];
    for (int i = 0; i < n; ++i) {
        if (pipe(fds[i])) return 0;
        pthread_create(&t[i], NULL, reader, &fds[i][0]);
    }
    /* Under greenrun this lets each reader run into its read and park there,
     * its fd then watched by a hub, before anything is written. The outcome
     * is the same whether they have or not. */
    sched_yield();
    int ok = 1;
    for (int i = 0; i < n; ++i) ok &= write(fds[i][1], "x", 1) == 1;
    for (int i = 0; i < n; ++i) {
        void *r;
        pthread_join(t[i], &r);
        ok &= r != NULL;
        close(fds[i][0]);
        close(fds[i][1]);
    }
    return ok;
}

static int timer_fired, pipe_read;
static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)w, (void)revents;
    timer_fired = 1;
    ev_break(loop, EVBREAK_ALL);
}
static void on_pipe(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop, (void)revents;
    char c;
    pipe_read = read(w->fd, &c, 1) == 1;
    ev_io_stop(loop, w);
}

int main(void) {
    ev_set_allocator(counting_realloc);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    say("the program's loop is made", loop != NULL);
    if (!loop) return 1;
    long after_loop = allocator_calls;
    say("its allocator made the loop's memory", after_loop > 0);

    say("20 threads blocked on pipes and were woken", threads_block_and_end(20));
    say("its allocator saw no other loop's memory", allocator_calls == after_loop);
    ev_set_allocator(counting_realloc);
    say("300 threads blocked on pipes and were woken", threads_block_and_end(kThreads));
    say("set again, its allocator saw no other loop's memory", allocator_calls == after_loop);

    /* Watchers on fds up to ~kOwnWatchers: libev grows its fd array. */
    static ev_io idle_watchers[kOwnWatchers];
    int nfds = 0;
    for (int i = 0; i < kOwnWatchers; ++i) {
        int fd = dup(0);
        if (fd < 0) break;
        ev_io_init(&idle_watchers[i], on_pipe, fd, EV_READ);
        ev_io_start(loop, &idle_watchers[i]);
        ev_io_stop(loop, &idle_watchers[i]);
        ++nfds;
    }
    say("its loop grew through its allocator", allocator_calls > after_loop);

    int p[2];
    if (pipe(p)) return 1;
    ev_io pw;
    ev_io_init(&pw, on_pipe, p[0], EV_READ);
    ev_io_start(loop, &pw);
    ev_timer tw;
    ev_timer_init(&tw, on_timer, 0.05, 0.);
    ev_timer_start(loop, &tw);
    if (write(p[1], "y", 1) != 1) return 1;
    ev_run(loop, 0);
    say("its loop ran an io watcher and a timer", pipe_read && timer_fired);

    long before_destroy = allocator_calls;
    ev_loop_destroy(loop);
    say("its loop was freed through its allocator", allocator_calls > before_destroy);
    for (int i = 0; i < nfds; ++i) close(idle_watchers[i].fd);
    return all_ok ? 0 : 1;
}
