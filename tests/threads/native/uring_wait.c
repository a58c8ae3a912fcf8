/* liburing waits completed by another thread.
 *
 * liburing enters the kernel itself (io_uring_enter), so without the shim's
 * liburing interposers a thread waiting for a CQE stops the one OS thread:
 * the thread that would complete the I/O never runs and the program hangs.
 * Each case has one thread wait in a liburing call while another does what
 * ends the wait (a write to the pipe the waiter's SQE reads, a signal) or
 * runs beside it (a ticker during a timeout):
 *
 *   1. io_uring_wait_cqe, a read on a pipe another thread writes;
 *   2. io_uring_wait_cqe_timeout that times out (-ETIME) while a ticker runs;
 *   3. io_uring_submit_and_wait(1), then io_uring_wait_cqe_nr(2) with the
 *      two reads completed one after the other;
 *   4. io_uring_wait_cqes with a timeout, completed before it;
 *   5. io_uring_submit_and_wait_timeout that times out after submitting
 *      (liburing then returns the count submitted);
 *   6. io_uring_wait_cqe interrupted by a signal whose handler has
 *      SA_RESTART: io_uring_enter is never restarted, liburing says -EINTR;
 *   7. io_uring_wait_cqe and io_uring_submit_and_wait on an
 *      IORING_SETUP_SQPOLL ring.
 *
 * The writers wait a little (usleep) before writing so that the waiter is in
 * its wait; the results do not depend on it. */
#include "common.h"  /* first: it defines _GNU_SOURCE */

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>


static struct io_uring ring;

static void prep_read(struct io_uring *r, int fd, char *buf, unsigned len, __u64 data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(r);
    if (!sqe) { fprintf(stderr, "uring_wait: SQ ring full\n"); exit(1); }
    io_uring_prep_read(sqe, fd, buf, len, 0);
    io_uring_sqe_set_data64(sqe, data);
}

static void make_pipe(int p[2]) {
    if (pipe(p) != 0) { perror("pipe"); exit(1); }
}

static void put(int fd, const char *s) {
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) { perror("write"); exit(1); }
}

/* A thread that writes s to fd after `delay_us`, noting how many OS threads
 * the process has and whether *done is still 0 (the waiter still waits). */
struct writer {
    int fd;
    const char *s;
    unsigned delay_us;
    const int *done;
    int threads, waiter_waiting;
};

static void *write_later(void *arg) {
    struct writer *w = arg;
    usleep(w->delay_us);
    w->threads = os_threads();
    w->waiter_waiting = w->done ? !__atomic_load_n(w->done, __ATOMIC_SEQ_CST) : 1;
    put(w->fd, w->s);
    return NULL;
}

/* ---- 1. io_uring_wait_cqe in a thread, a writer thread completes it ---- */

static int p1[2];
static sem_t submitted;
static char buf1[64];
static int ret1 = 1, res1, done1, submit_and_wait1;
static __u64 data1;

static void *waiter1(void *arg) {
    struct io_uring *r = arg;
    prep_read(r, p1[0], buf1, sizeof buf1 - 1, 41);
    struct io_uring_cqe *cqe = NULL;
    if (submit_and_wait1) {
        sem_post(&submitted);
        ret1 = io_uring_submit_and_wait(r, 1) == 1 ? io_uring_peek_cqe(r, &cqe) : -1;
    } else {
        io_uring_submit(r);
        sem_post(&submitted);
        ret1 = io_uring_wait_cqe(r, &cqe);
    }
    if (ret1 == 0) {
        res1 = cqe->res;
        data1 = cqe->user_data;
        io_uring_cqe_seen(r, cqe);
    }
    __atomic_store_n(&done1, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void case1(struct io_uring *r, const char *label, int submit_and_wait) {
    submit_and_wait1 = submit_and_wait;
    make_pipe(p1);
    memset(buf1, 0, sizeof buf1);
    ret1 = 1;
    done1 = 0;
    pthread_t w = start(waiter1, r);
    sem_wait(&submitted);
    struct writer wr = {p1[1], "hello uring", 20000, &done1, 0, 0};
    pthread_t t = start(write_later, &wr);
    pthread_join(t, NULL);
    pthread_join(w, NULL);
    char what[200];
    snprintf(what, sizeof what, "%s: %s with the read of \"hello uring\" (11 bytes, data 41)", label,
             submit_and_wait ? "io_uring_submit_and_wait(1) returned 1" : "io_uring_wait_cqe returned 0");
    say(what, ret1 == 0 && res1 == 11 && data1 == 41 && strcmp(buf1, "hello uring") == 0);
    snprintf(what, sizeof what, "%s: the writer ran while the waiter waited", label);
    say(what, wr.waiter_waiting);
    snprintf(what, sizeof what, "%s: OS threads meanwhile: 3 (1 under greenshim)", label);
    say(what, threads_as_expected(wr.threads, 3));
    close(p1[0]);
    close(p1[1]);
}

/* ---- 2. a timeout, with a ticker running meanwhile ---- */

static void case2(void) {
    pthread_t t = ticker_begin();
    struct __kernel_timespec ts = {0, 100 * 1000 * 1000};
    struct io_uring_cqe *cqe = (struct io_uring_cqe *)&ts;
    double t0 = now_ms();
    int ret = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
    double waited = now_ms() - t0;
    int ticked = ticker_end(t);
    fprintf(stderr, "uring_wait: io_uring_wait_cqe_timeout(100 ms) took %.1f ms; the ticker ticked %d times\n", waited, ticked);
    say("2: io_uring_wait_cqe_timeout(100 ms) with nothing to complete returned -ETIME, cqe NULL",
        ret == -ETIME && cqe == NULL);
    say("2: it took at least 100 ms", waited >= 99.9);
    say("2: a ticker thread ran meanwhile (at least 3 ticks of 1 ms)", ticked >= 3);
}

/* ---- 3. io_uring_submit_and_wait(1), io_uring_wait_cqe_nr(2) ---- */

static int p3a[2], p3b[2], ret3a = 1, ret3b = 1, done3;
static char buf3[3][16];
static unsigned ready3;

static void *waiter3(void *arg) {
    (void)arg;
    prep_read(&ring, p3a[0], buf3[0], sizeof buf3[0] - 1, 1);
    ret3a = io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe *cqe;
    if (io_uring_peek_cqe(&ring, &cqe) == 0) io_uring_cqe_seen(&ring, cqe);
    prep_read(&ring, p3a[0], buf3[1], sizeof buf3[1] - 1, 2);
    prep_read(&ring, p3b[0], buf3[2], sizeof buf3[2] - 1, 3);
    io_uring_submit(&ring);
    sem_post(&submitted);
    ret3b = io_uring_wait_cqe_nr(&ring, &cqe, 2);
    ready3 = io_uring_cq_ready(&ring);
    io_uring_cq_advance(&ring, ready3);
    __atomic_store_n(&done3, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void case3(void) {
    make_pipe(p3a);
    make_pipe(p3b);
    pthread_t w = start(waiter3, NULL);
    struct writer first = {p3a[1], "one", 20000, NULL, 0, 0};
    pthread_t t = start(write_later, &first);
    pthread_join(t, NULL);
    sem_wait(&submitted);
    struct writer second = {p3a[1], "two", 10000, &done3, 0, 0}, third = {p3b[1], "three", 30000, &done3, 0, 0};
    pthread_t t2 = start(write_later, &second), t3 = start(write_later, &third);
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    pthread_join(w, NULL);
    say("3: io_uring_submit_and_wait(1) returned 1 (one SQE submitted) once \"one\" was read",
        ret3a == 1 && strcmp(buf3[0], "one") == 0);
    say("3: io_uring_wait_cqe_nr(2) returned 0 with 2 CQEs, after \"two\" and \"three\" were read",
        ret3b == 0 && ready3 == 2 && strcmp(buf3[1], "two") == 0 && strcmp(buf3[2], "three") == 0);
    say("3: the third writer ran while the waiter waited for its second CQE", third.waiter_waiting);
    close(p3a[0]); close(p3a[1]); close(p3b[0]); close(p3b[1]);
}

/* ---- 4. io_uring_wait_cqes with a timeout, completed before it ---- */

static void case4(void) {
    int p[2];
    char buf[16] = "";
    make_pipe(p);
    prep_read(&ring, p[0], buf, sizeof buf - 1, 4);
    io_uring_submit(&ring);
    struct writer wr = {p[1], "four", 20000, NULL, 0, 0};
    pthread_t t = start(write_later, &wr);
    struct __kernel_timespec ts = {5, 0};
    struct io_uring_cqe *cqe = NULL;
    double t0 = now_ms();
    int ret = io_uring_wait_cqes(&ring, &cqe, 1, &ts, NULL);
    double waited = now_ms() - t0;
    say("4: io_uring_wait_cqes(1, 5 s) returned 0 with the read of \"four\" well before the timeout",
        ret == 0 && cqe && cqe->res == 4 && cqe->user_data == 4 && strcmp(buf, "four") == 0 && waited < 4000);
    if (ret == 0) io_uring_cqe_seen(&ring, cqe);
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

/* ---- 5. io_uring_submit_and_wait_timeout times out after submitting ---- */

static void case5(void) {
    int p[2];
    char buf[16] = "";
    make_pipe(p);
    pthread_t t = ticker_begin();
    prep_read(&ring, p[0], buf, sizeof buf - 1, 5);
    struct __kernel_timespec ts = {0, 50 * 1000 * 1000};
    struct io_uring_cqe *cqe = (struct io_uring_cqe *)&ts;
    double t0 = now_ms();
    int ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
    double waited = now_ms() - t0;
    int ticked = ticker_end(t);
    fprintf(stderr, "uring_wait: io_uring_submit_and_wait_timeout(50 ms) took %.1f ms, returned %d\n", waited, ret);
    printf("5: io_uring_submit_and_wait_timeout(1, 50 ms) on an empty pipe returned %d, cqe %s\n", ret,
           cqe == NULL ? "NULL" : "set");
    say("5: after at least 50 ms, with the ticker running meanwhile", waited >= 49.9 && ticked >= 3);
    put(p[1], "five");
    ret = io_uring_wait_cqe(&ring, &cqe);
    say("5: the read then completed with \"five\"", ret == 0 && cqe->res == 4 && strcmp(buf, "five") == 0);
    if (ret == 0) io_uring_cqe_seen(&ring, cqe);
    close(p[0]);
    close(p[1]);
}

/* ---- 6. a signal interrupts io_uring_wait_cqe ---- */

static int p6[2], ret6 = 1, done6;
static void *waiter6(void *arg) {
    (void)arg;
    struct io_uring_cqe *cqe = NULL;
    ret6 = io_uring_wait_cqe(&ring, &cqe);
    __atomic_store_n(&done6, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void case6(void) {
    char buf[16] = "";
    make_pipe(p6);
    prep_read(&ring, p6[0], buf, sizeof buf - 1, 6);
    io_uring_submit(&ring);
    pthread_t w = start(waiter6, NULL);
    int handled = interrupt_until_done(w, &done6);
    pthread_join(w, NULL);
    say("6: a signal (SA_RESTART handler) made io_uring_wait_cqe return -EINTR", ret6 == -EINTR && handled);
    put(p6[1], "six");
    struct io_uring_cqe *cqe;
    int ret = io_uring_wait_cqe(&ring, &cqe);
    say("6: the read then completed with \"six\"", ret == 0 && cqe->res == 3 && strcmp(buf, "six") == 0);
    if (ret == 0) io_uring_cqe_seen(&ring, cqe);
    close(p6[0]);
    close(p6[1]);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    sem_init(&submitted, 0, 0);
    int e = io_uring_queue_init(8, &ring, 0);
    if (e < 0) { fprintf(stderr, "uring_wait: io_uring_queue_init: %s\n", strerror(-e)); return 1; }
    case1(&ring, "1", 0);
    case2();
    case3();
    case4();
    case5();
    case6();

    /* 7. The same as 1 on a ring whose submissions a kernel thread takes. */
    struct io_uring sq;
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SQPOLL;
    params.sq_thread_idle = 50;
    e = io_uring_queue_init_params(8, &sq, &params);
    if (e < 0) {
        printf("7: an IORING_SETUP_SQPOLL ring: not available here (%s)\n", strerror(-e));
    } else {
        case1(&sq, "7 (SQPOLL)", 0);
        case1(&sq, "7 (SQPOLL)", 1);
        io_uring_queue_exit(&sq);
    }
    io_uring_queue_exit(&ring);
    return all_ok ? 0 : 1;
}
