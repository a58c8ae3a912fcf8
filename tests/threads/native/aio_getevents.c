/* libaio's io_getevents waiting for an iocb another thread submits.
 *
 * libaio makes the io_getevents system call itself: without the shim's
 * interposer a thread waiting in it stops the one OS thread and the thread
 * that would submit the I/O never runs. The shim reaps with a zero timeout
 * and parks on a back-off timer (50 us doubling to 2 ms) in between; this
 * prints on stderr how late it saw each completion.
 *
 *   1. io_getevents(min_nr 1) in a thread; another thread io_submits a write
 *      to a temporary file after a delay (libaio writes to a regular file
 *      without O_DIRECT complete within io_submit), 20 rounds;
 *   2. io_getevents(min_nr 2, nr 4) with the two writes submitted apart;
 *   3. io_getevents with a 50 ms timeout and nothing submitted: 0 events,
 *      while a ticker thread runs;
 *   4. a signal whose handler has SA_RESTART: io_getevents is never
 *      restarted, libaio says -EINTR;
 *   5. io_pgetevents, completed by another thread. */
#include "common.h"  /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <libaio.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>


static io_context_t ctx;
static int fd;

/* Submits a write of s at offset off after delay_us; notes when io_submit
 * returned, the OS threads and whether the waiter still waited. */
struct submitter {
    const char *s;
    long long off;
    unsigned delay_us;
    const int *done;
    struct iocb cb;
    int ret, threads, waiter_waiting;
    double submitted_ms;
};

static void *submit_later(void *arg) {
    struct submitter *s = arg;
    usleep(s->delay_us);
    s->threads = os_threads();
    s->waiter_waiting = s->done ? !__atomic_load_n(s->done, __ATOMIC_SEQ_CST) : 1;
    io_prep_pwrite(&s->cb, fd, (void *)s->s, strlen(s->s), s->off);
    s->cb.data = (void *)s->s;
    struct iocb *list[1] = {&s->cb};
    s->ret = io_submit(ctx, 1, list);
    s->submitted_ms = now_ms();
    return NULL;
}

/* A thread waiting in io_getevents (or io_pgetevents) for min_nr events. */
struct waiter {
    long min_nr, nr;
    int pget;
    struct io_event ev[4];
    int ret, done;
    double got_ms;
};

static void *wait_events(void *arg) {
    struct waiter *w = arg;
    w->ret = w->pget ? io_pgetevents(ctx, w->min_nr, w->nr, w->ev, NULL, NULL)
                     : io_getevents(ctx, w->min_nr, w->nr, w->ev, NULL);
    w->got_ms = now_ms();
    __atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static int file_has(long long off, const char *s) {
    char buf[64] = "";
    ssize_t n = pread(fd, buf, strlen(s), off);
    return n == (ssize_t)strlen(s) && memcmp(buf, s, strlen(s)) == 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- 1 and 5 ---- */

static void one_by_another(int pget, int rounds, const char *label) {
    double late[32];
    int ok = 1, waiting = 1, threads_ok = 1;
    for (int i = 0; i < rounds; ++i) {
        struct waiter w = {1, 4, pget, {{0}}, 1, 0, 0};
        pthread_t tw = start(wait_events, &w);
        /* Delays from 0.1 ms to 20 ms: the back-off is at different steps. */
        unsigned delay = i % 2 ? 20000 : 100 + 1000 * (unsigned)i;
        struct submitter s = {"hello aio", 16LL * i, delay, &w.done, {0}, 0, 0, 0, 0};
        pthread_t ts = start(submit_later, &s);
        pthread_join(ts, NULL);
        pthread_join(tw, NULL);
        ok &= s.ret == 1 && w.ret == 1 && w.ev[0].obj == &s.cb && w.ev[0].data == (void *)s.s &&
              w.ev[0].res == 9 && w.ev[0].res2 == 0 && file_has(16LL * i, "hello aio");
        waiting &= s.waiter_waiting;
        if (i == 0) threads_ok = threads_as_expected(s.threads, 3);
        late[i] = w.got_ms - s.submitted_ms;
    }
    qsort(late, (size_t)rounds, sizeof late[0], cmp_double);
    fprintf(stderr, "aio_getevents: %s: completion seen after io_submit returned: min %.3f ms, median %.3f ms, max %.3f ms (%d rounds)\n",
            label, late[0], late[rounds / 2], late[rounds - 1], rounds);
    char what[200];
    snprintf(what, sizeof what, "%s: %d rounds: the waiter got the event of the write the other thread submitted", label, rounds);
    say(what, ok);
    snprintf(what, sizeof what, "%s: the submitter ran while the waiter waited", label);
    say(what, waiting);
    snprintf(what, sizeof what, "%s: OS threads meanwhile: 3 (1 under greenshim)", label);
    say(what, threads_ok);
}

/* ---- 2 ---- */

static void two_apart(void) {
    struct waiter w = {2, 4, 0, {{0}}, 1, 0, 0};
    pthread_t tw = start(wait_events, &w);
    struct submitter a = {"first", 1000, 10000, &w.done, {0}, 0, 0, 0, 0};
    struct submitter b = {"second", 2000, 30000, &w.done, {0}, 0, 0, 0, 0};
    pthread_t ta = start(submit_later, &a), tb = start(submit_later, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_join(tw, NULL);
    say("2: io_getevents(min_nr 2, nr 4) returned 2 events once both writes were submitted",
        w.ret == 2 && w.ev[0].obj == &a.cb && w.ev[1].obj == &b.cb && w.ev[0].res == 5 && w.ev[1].res == 6);
    say("2: the second submitter ran while the waiter had one event", b.waiter_waiting);
}

/* ---- 3 ---- */

static void timeout(void) {
    pthread_t t = ticker_begin();
    struct io_event ev[1];
    struct timespec ts = {0, 50 * 1000 * 1000};
    double t0 = now_ms();
    int ret = io_getevents(ctx, 1, 1, ev, &ts);
    double waited = now_ms() - t0;
    int ticked = ticker_end(t);
    fprintf(stderr, "aio_getevents: io_getevents(50 ms) took %.1f ms; the ticker ticked %d times\n", waited, ticked);
    say("3: io_getevents(min_nr 1, 50 ms) with nothing submitted returned 0 after at least 50 ms",
        ret == 0 && waited >= 49.9);
    say("3: a ticker thread ran meanwhile (at least 3 ticks of 1 ms)", ticked >= 3);
}

/* ---- 4 ---- */

static void interrupted(void) {
    struct waiter w = {1, 1, 0, {{0}}, 1, 0, 0};
    pthread_t tw = start(wait_events, &w);
    int handled = interrupt_until_done(tw, &w.done);
    pthread_join(tw, NULL);
    say("4: a signal (SA_RESTART handler) made io_getevents return -EINTR", w.ret == -EINTR && handled);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[] = "/tmp/greenshim-aio-XXXXXX";
    fd = mkstemp(path);
    if (fd < 0) { perror("mkstemp"); return 1; }
    unlink(path);
    int e = io_setup(8, &ctx);
    if (e < 0) { fprintf(stderr, "aio_getevents: io_setup: %s\n", strerror(-e)); return 1; }
    one_by_another(0, 20, "1");
    two_apart();
    timeout();
    interrupted();
    one_by_another(1, 4, "5 (io_pgetevents)");
    io_destroy(ctx);
    close(fd);
    return all_ok ? 0 : 1;
}
