/* Synchronisation shared with OS threads the shim did not make. Two threads
 * are started with libc's own pthread_create, found in libc by dlsym, as an
 * allocator starts its background threads (jemalloc's): under greenrun they
 * stay OS threads, each with a hub of its own once it waits, beside four
 * greenlet threads on the main hub. They share a mutex, condition
 * variables, a semaphore, an rwlock, a barrier, pthread_once, a private
 * futex and a join, and one of them streams checksummed bytes through a
 * socket pair that a greenlet thread echoes (each side waits on its own end,
 * on its own hub). Each thread sets a value of a key whose destructor must
 * run as it ends, the OS threads' included: the shim keeps those threads'
 * values too, and glibc, which knows nothing of its keys, ran none (a
 * malloc replacement's per-thread record, left in its list, broke it).
 * Unpatched all six are OS threads: the same statements. */
#include "common.h"  /* (first: it defines _GNU_SOURCE) */

#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#define OS_THREADS 2
#define GREEN_THREADS 4
#define ALL (OS_THREADS + GREEN_THREADS)
#define INCREMENTS 20000
#define ITEMS 3000  /* produced by each OS thread, consumed by the greenlet threads */
#define PINGS 2000
#define ROUNDS 40

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long counter;  /* under mu */

/* A bounded queue: OS threads put, greenlet threads take. */
static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER, not_full = PTHREAD_COND_INITIALIZER;
static long queue[8];
static int qhead, qlen, producers_left = OS_THREADS;
static long consumed_sum, consumed_count;  /* under qmu */

static sem_t ping, pong;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static long pair_a, pair_b;  /* equal whenever a reader holds rw */
static int torn;
static pthread_barrier_t barrier;
static int barrier_serial;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_runs;
static uint32_t fword;  /* the futex ping-pong: 0 the OS thread's turn... */
static int futex_ok = 1;
static int sv[2];  /* the OS thread 1 streams into sv[0]; a greenlet thread echoes from sv[1] */
#define STREAM_BYTES (1 << 20)
static uint64_t sent_sum, echoed_sum;
static long echoed_bytes;

static uint64_t mix(uint64_t h, const unsigned char *p, long n) {
    for (long i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
/* Writes all of p, in the pieces write() takes. */
static int write_all(int fd, const unsigned char *p, long n) {
    while (n > 0) {
        ssize_t w = write(fd, p, (size_t)n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= w;
    }
    return 0;
}
/* OS thread 1: sends STREAM_BYTES in pieces of 1 to 8 KiB while it reads
 * the echo back, then half-closes and reads to the end. */
static void *stream_reader(void *arg) {
    (void)arg;
    unsigned char buf[8192];
    long got = 0;
    uint64_t h = 14695981039346656037ull;
    for (;;) {
        ssize_t r = read(sv[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        h = mix(h, buf, r);
        got += r;
    }
    echoed_sum = h;
    echoed_bytes = got;
    return NULL;
}
static void stream(void) {
    typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    create_fn libc_create = (create_fn)dlsym(libc, "pthread_create");
    pthread_t reader;
    libc_create(&reader, NULL, stream_reader, NULL);  /* an OS thread too: reads while this one writes */
    unsigned char buf[8192];
    uint64_t h = 14695981039346656037ull, x = 88172645463325252ull;
    for (long left = STREAM_BYTES; left > 0;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        long n = 1 + (long)(x % sizeof buf);
        if (n > left) n = left;
        for (long i = 0; i < n; ++i) buf[i] = (unsigned char)(x >> (i % 56));
        h = mix(h, buf, n);
        if (write_all(sv[0], buf, n) < 0) break;
        left -= n;
    }
    sent_sum = h;
    shutdown(sv[0], SHUT_WR);
    pthread_join(reader, NULL);
}
/* A greenlet thread: echoes sv[1] until the end. */
static void *echo(void *arg) {
    (void)arg;
    unsigned char buf[4096];
    for (;;) {
        ssize_t r = read(sv[1], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || write_all(sv[1], buf, r) < 0) break;
    }
    shutdown(sv[1], SHUT_WR);
    return NULL;
}

static void once_init(void) {
    usleep(20000);  /* the others wait for it, wherever they run */
    __atomic_add_fetch(&once_runs, 1, __ATOMIC_SEQ_CST);
}

static long futex(uint32_t *w, int op, uint32_t v) {
    return syscall(SYS_futex, w, op | FUTEX_PRIVATE_FLAG, v, NULL, NULL, 0);
}
/* Waits until *w == want, then sets it to next and wakes the other. */
static void futex_turn(uint32_t want, uint32_t next) {
    uint32_t v;
    while ((v = __atomic_load_n(&fword, __ATOMIC_ACQUIRE)) != want) {
        if (futex(&fword, FUTEX_WAIT, v) < 0 && errno != EAGAIN && errno != EINTR) futex_ok = 0;
    }
    __atomic_store_n(&fword, next, __ATOMIC_RELEASE);
    futex(&fword, FUTEX_WAKE, 1);
}

static void common_work(int id) {
    pthread_once(&once, once_init);
    for (int i = 0; i < INCREMENTS; ++i) {
        pthread_mutex_lock(&mu);
        long c = counter;
        counter = c + 1;
        pthread_mutex_unlock(&mu);
    }
    for (int r = 0; r < ROUNDS; ++r) {
        if (id % 2 == 0) {
            pthread_rwlock_rdlock(&rw);
            if (pair_a != pair_b) torn = 1;
            pthread_rwlock_unlock(&rw);
        } else {
            pthread_rwlock_wrlock(&rw);
            pair_a++;
            sched_yield();
            pair_b++;
            pthread_rwlock_unlock(&rw);
        }
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            __atomic_add_fetch(&barrier_serial, 1, __ATOMIC_SEQ_CST);
    }
}

static void *late(void *arg) {
    usleep(30000);
    return (void *)((intptr_t)arg * 3);
}
static pthread_t late_thread;
static void *late_result;

static pthread_key_t exit_key;
static int key_destructor_runs[ALL];
static void key_destructor(void *value) { __atomic_add_fetch((int *)value, 1, __ATOMIC_SEQ_CST); }

static void *os_thread(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_setspecific(exit_key, &key_destructor_runs[id]);
    common_work(id);
    for (long i = 1; i <= ITEMS; ++i) {
        pthread_mutex_lock(&qmu);
        while (qlen == 8) pthread_cond_wait(&not_full, &qmu);
        queue[(qhead + qlen++) % 8] = i * (id + 1);
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&qmu);
    }
    pthread_mutex_lock(&qmu);
    --producers_left;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&qmu);
    if (id == 0) {
        for (int i = 0; i < PINGS; ++i) {
            sem_post(&ping);
            sem_wait(&pong);
        }
        for (int i = 0; i < PINGS; ++i) futex_turn(0, 1);
    } else {
        pthread_join(late_thread, &late_result);  /* a greenlet thread, from an OS thread */
        stream();
    }
    return NULL;
}

static void *green_thread(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_setspecific(exit_key, &key_destructor_runs[id]);
    common_work(id);
    for (;;) {
        pthread_mutex_lock(&qmu);
        while (qlen == 0 && producers_left > 0) pthread_cond_wait(&not_empty, &qmu);
        if (qlen == 0) {
            pthread_mutex_unlock(&qmu);
            break;
        }
        long v = queue[qhead];
        qhead = (qhead + 1) % 8;
        --qlen;
        consumed_sum += v;
        ++consumed_count;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&qmu);
    }
    if (id == OS_THREADS) {
        for (int i = 0; i < PINGS; ++i) {
            sem_wait(&ping);
            sem_post(&pong);
        }
        for (int i = 0; i < PINGS; ++i) futex_turn(1, 0);
    }
    return NULL;
}

int main(void) {
    typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    create_fn libc_create = libc ? (create_fn)dlsym(libc, "pthread_create") : NULL;
    if (!libc_create) {
        printf("libc's pthread_create not found\n");
        return 1;
    }
    pthread_key_create(&exit_key, key_destructor);
    sem_init(&ping, 0, 0);
    sem_init(&pong, 0, 0);
    pthread_barrier_init(&barrier, NULL, ALL);
    pthread_create(&late_thread, NULL, late, (void *)(intptr_t)14);
    pthread_t echoer;
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pthread_create(&echoer, NULL, echo, NULL);
    pthread_t os[OS_THREADS], green[GREEN_THREADS];
    for (int i = 0; i < OS_THREADS; ++i) libc_create(&os[i], NULL, os_thread, (void *)(intptr_t)i);
    for (int i = 0; i < GREEN_THREADS; ++i) pthread_create(&green[i], NULL, green_thread, (void *)(intptr_t)(OS_THREADS + i));
    for (int i = 0; i < GREEN_THREADS; ++i) pthread_join(green[i], NULL);
    for (int i = 0; i < OS_THREADS; ++i) pthread_join(os[i], NULL);
    pthread_join(echoer, NULL);

    long want_sum = 0;
    for (int p = 0; p < OS_THREADS; ++p) want_sum += (long)(p + 1) * ITEMS * (ITEMS + 1) / 2;
    say("the mutex kept every increment", counter == (long)ALL * INCREMENTS);
    say("every item put by the OS threads was taken once by the greenlet threads",
        consumed_count == (long)OS_THREADS * ITEMS && consumed_sum == want_sum);
    say("semaphores passed the token both ways", sem_trywait(&ping) != 0 && sem_trywait(&pong) != 0);
    say("readers never saw a write half done", !torn && pair_a == pair_b && pair_a == (long)(ALL / 2) * ROUNDS);
    say("the barrier let everyone through each round, with one serial thread", barrier_serial == ROUNDS);
    say("pthread_once ran its routine once", once_runs == 1);
    say("the futex ping-pong ended with the word as it began", futex_ok && fword == 0);
    say("an OS thread joined a greenlet thread and got its value", (intptr_t)late_result == 42);
    say("a greenlet thread echoed every byte two OS threads streamed, in order",
        echoed_bytes == STREAM_BYTES && echoed_sum == sent_sum);
    int once_each = 1;
    for (int i = 0; i < ALL; ++i) once_each &= __atomic_load_n(&key_destructor_runs[i], __ATOMIC_SEQ_CST) == 1;
    say("each thread's key destructor ran once as it ended, the OS threads' too", once_each);
    return all_ok ? 0 : 1;
}
