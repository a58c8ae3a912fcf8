/* Waits in System V message queues and semaphores and in POSIX message
 * queues (shim/ipc.cpp), each released by another thread of the process
 * after a usleep (under greenrun: a timer of the same hub), or by another
 * process. Before the shim covered them, the waiter held its OS thread in
 * the kernel: the release never came, and the stall tick's signal ended a
 * System V wait with EINTR. The same statements both ways; figures on
 * stderr.
 *
 *   msgrcv        a thread waits for a message main sends after usleep(20000)
 *   msgsnd        a thread sends to a full queue; main receives one message
 *                 after usleep(20000), and the send completes
 *   msgrcv-fork   a thread waits for a message a forked child sends 50 ms on
 *   msgrcv-eintr  a handler (SA_RESTART) interrupts a thread's msgrcv: EINTR,
 *                 which the kernel never restarts
 *   semop         a thread takes a semaphore at 0; main adds 1 after
 *                 usleep(20000)
 *   semtimedop    a take of a semaphore at 0 with a 50 ms timeout: EAGAIN,
 *                 after 50 ms or more, while main napped meanwhile
 *   msgrcv-removed  main removes the queue a thread waits on: EIDRM
 *   mq_receive    a thread waits on a POSIX queue; main sends after
 *                 usleep(20000)
 *   mq_timedreceive  a 50 ms deadline on an empty queue: ETIMEDOUT
 *   mq-restart    a handler (SA_RESTART) interrupts a thread's mq_timedreceive
 *                 (deadline 5 s on) 5 times, then main sends: the wait was
 *                 restarted each time, and the message arrives */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdatomic.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/wait.h>

struct message {
    long type;
    char text[16];
};

static int queue;
static atomic_int finished;

static void *receive_one(void *arg) {
    struct message m;
    ssize_t n = msgrcv(queue, &m, sizeof m.text, 0, 0);
    *(long *)arg = n == 6 && strcmp(m.text, "hello") == 0;
    atomic_store(&finished, 1);
    return NULL;
}

static void send_hello(void) {
    struct message m = {1, "hello"};
    if (msgsnd(queue, &m, 6, 0) != 0) perror("msgsnd");
}

static void msgrcv_case(void) {
    pthread_t t;
    long got = 0;
    atomic_store(&finished, 0);
    pthread_create(&t, NULL, receive_one, &got);
    usleep(20000);
    send_hello();
    pthread_join(t, NULL);
    say("msgrcv: a thread got the message main sent after usleep(20000)", got);
}

enum { kFill = 8 };
static void *send_more(void *arg) {
    struct message m = {2, "more"};
    *(long *)arg = msgsnd(queue, &m, 5, 0) == 0;
    atomic_store(&finished, 1);
    return NULL;
}

static void msgsnd_case(void) {
    /* A queue of kFill messages of 16 bytes: full once they are in. */
    struct msqid_ds ds;
    msgctl(queue, IPC_STAT, &ds);
    ds.msg_qbytes = kFill * 16;
    if (msgctl(queue, IPC_SET, &ds) != 0) perror("msgctl");
    struct message m = {1, "0123456789abcde"};
    for (int i = 0; i < kFill; ++i) msgsnd(queue, &m, 16, IPC_NOWAIT);
    int full = msgsnd(queue, &m, 16, IPC_NOWAIT) != 0 && errno == EAGAIN;
    pthread_t t;
    long sent = 0;
    atomic_store(&finished, 0);
    pthread_create(&t, NULL, send_more, &sent);
    usleep(20000);
    int waited = !atomic_load(&finished);
    struct message r;
    msgrcv(queue, &r, sizeof r.text, 1, 0);
    pthread_join(t, NULL);
    int drained = 0;
    while (msgrcv(queue, &r, sizeof r.text, 0, IPC_NOWAIT) >= 0) ++drained;
    fprintf(stderr, "msgsnd: full %d, waited %d, sent %ld, %d left\n", full, waited, sent, drained);
    say("msgsnd: a send to a full queue waited, and completed once main took a message", full && waited && sent && drained == kFill);
}

static void msgrcv_fork_case(void) {
    pthread_t t;
    long got = 0;
    atomic_store(&finished, 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(50000);
        struct message m = {1, "hello"};
        _exit(msgsnd(queue, &m, 6, 0) == 0 ? 0 : 1);
    }
    pthread_create(&t, NULL, receive_one, &got);
    pthread_join(t, NULL);
    int status = -1;
    waitpid(pid, &status, 0);
    say("msgrcv-fork: a thread got the message a child process sent 50 ms on", got && status == 0);
}

static void *receive_interrupted(void *arg) {
    struct message m;
    ssize_t n = msgrcv(queue, &m, sizeof m.text, 0, 0);
    *(long *)arg = n == -1 && errno == EINTR;
    atomic_store(&finished, 1);
    return NULL;
}

static void msgrcv_eintr_case(void) {
    pthread_t t;
    long eintr = 0;
    atomic_store(&finished, 0);
    pthread_create(&t, NULL, receive_interrupted, &eintr);
    int handled = interrupt_until_done(t, (int *)&finished);
    pthread_join(t, NULL);
    say("msgrcv-eintr: a handler with SA_RESTART ended a thread's msgrcv with EINTR", handled && eintr);
}

static void *receive_removed(void *arg) {
    struct message m;
    ssize_t n = msgrcv(queue, &m, sizeof m.text, 0, 0);
    *(long *)arg = n == -1 && errno == EIDRM;
    return NULL;
}

static void msgrcv_removed_case(void) {
    pthread_t t;
    long eidrm = 0;
    pthread_create(&t, NULL, receive_removed, &eidrm);
    usleep(20000);
    msgctl(queue, IPC_RMID, NULL);
    pthread_join(t, NULL);
    queue = -1;
    say("msgrcv-removed: removing the queue a thread waited on ended its msgrcv with EIDRM", eidrm);
}

static int sems;
static void *take_sem(void *arg) {
    struct sembuf op = {0, -1, 0};
    *(long *)arg = semop(sems, &op, 1) == 0;
    atomic_store(&finished, 1);
    return NULL;
}

static void semop_case(void) {
    pthread_t t;
    long took = 0;
    atomic_store(&finished, 0);
    pthread_create(&t, NULL, take_sem, &took);
    usleep(20000);
    int waited = !atomic_load(&finished);
    struct sembuf op = {0, 1, 0};
    semop(sems, &op, 1);
    pthread_join(t, NULL);
    say("semop: a thread took the semaphore main gave after usleep(20000)", took && waited && semctl(sems, 0, GETVAL) == 0);
}

static void *timed_take(void *arg) {
    struct sembuf op = {0, -1, 0};
    struct timespec limit = {0, 50000000};
    double t0 = now_ms();
    int r = semtimedop(sems, &op, 1, &limit);
    double took = now_ms() - t0;
    fprintf(stderr, "semtimedop: %d (errno %d) after %.1f ms\n", r, errno, took);
    *(long *)arg = r == -1 && errno == EAGAIN && took >= 50;
    atomic_store(&finished, 1);
    return NULL;
}

static void semtimedop_case(void) {
    pthread_t t;
    long timed_out = 0;
    int naps = 0;
    atomic_store(&finished, 0);
    pthread_create(&t, NULL, timed_take, &timed_out);
    while (!atomic_load(&finished)) {
        usleep(5000);
        ++naps;
    }
    pthread_join(t, NULL);
    fprintf(stderr, "semtimedop: main napped %d times\n", naps);
    say("semtimedop: a take with a 50 ms timeout gave EAGAIN after 50 ms, main napping meanwhile", timed_out && naps >= 3);
}

static mqd_t mq;
static void *mq_take(void *arg) {
    char buf[64];
    unsigned prio = 0;
    ssize_t n = mq_receive(mq, buf, sizeof buf, &prio);
    *(long *)arg = n == 6 && strcmp(buf, "hello") == 0 && prio == 3;
    return NULL;
}

static void mq_receive_case(void) {
    pthread_t t;
    long got = 0;
    pthread_create(&t, NULL, mq_take, &got);
    usleep(20000);
    if (mq_send(mq, "hello", 6, 3) != 0) perror("mq_send");
    pthread_join(t, NULL);
    say("mq_receive: a thread got the message main sent after usleep(20000)", got);
}

static void mq_timedreceive_case(void) {
    char buf[64];
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_nsec += 50000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_nsec -= 1000000000;
        at.tv_sec += 1;
    }
    double t0 = now_ms();
    ssize_t n = mq_timedreceive(mq, buf, sizeof buf, NULL, &at);
    int err = errno;
    double took = now_ms() - t0;
    fprintf(stderr, "mq_timedreceive: %zd (errno %d) after %.1f ms\n", n, err, took);
    say("mq_timedreceive: an empty queue with a 50 ms deadline gave ETIMEDOUT", n == -1 && err == ETIMEDOUT && took >= 45);
}

static void *mq_take_timed(void *arg) {
    char buf[64];
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += 5;
    ssize_t n = mq_timedreceive(mq, buf, sizeof buf, NULL, &at);
    if (n < 0) fprintf(stderr, "mq-restart: %zd, errno %d\n", n, errno);
    *(long *)arg = n == 6 && strcmp(buf, "again") == 0;
    return NULL;
}

static void mq_restart_case(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    usr1_handled = 0;
    pthread_t t;
    long got = 0;
    pthread_create(&t, NULL, mq_take_timed, &got);
    for (int i = 0; i < 5; ++i) {
        usleep(5000);
        pthread_kill(t, SIGUSR1);
    }
    usleep(5000);
    if (mq_send(mq, "again", 6, 0) != 0) perror("mq_send");
    pthread_join(t, NULL);
    say("mq-restart: a handler with SA_RESTART restarted a thread's mq_timedreceive, which got the message", usr1_handled && got);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    queue = msgget(IPC_PRIVATE, 0600);
    sems = semget(IPC_PRIVATE, 1, 0600);
    char name[64];
    snprintf(name, sizeof name, "/greenshim-ipc-%d", (int)getpid());
    struct mq_attr attr = {0, 4, 64, 0, {0}};
    mq = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    if (queue < 0 || sems < 0 || mq == (mqd_t)-1) {
        perror("msgget/semget/mq_open");
        return 1;
    }
    mq_unlink(name);  /* (gone with the process) */
    msgrcv_case();
    msgsnd_case();
    msgrcv_fork_case();
    msgrcv_eintr_case();
    msgrcv_removed_case();
    semop_case();
    semtimedop_case();
    mq_receive_case();
    mq_timedreceive_case();
    mq_restart_case();
    semctl(sems, 0, IPC_RMID);
    mq_close(mq);
    return all_ok ? 0 : 1;
}
