/* Several hubs under load (issue 14): run by greenrun with GREENSHIM_HUBS=2,
 * where the threads are placed on two OS threads in turn, and unpatched; the
 * statements are the same both ways. At once, for a few seconds:
 *   - 8 threads increment one counter under one mutex, 20,000 times each;
 *   - 4 producers and 4 consumers pass 40,000 numbered items through a
 *     bounded queue (a mutex and two condition variables, the consumers'
 *     waits timed), summed both sides;
 *   - 4 pairs pass a token back and forth 2,000 times through semaphores;
 *   - 4 TCP loopback connections and 4 socket pairs each carry 1 MiB of
 *     checksummed bytes one way and the same back (an echo thread), written
 *     and read by two different threads (so by two hubs: one fd watched by
 *     both);
 *   - a thread makes 300 pipes, one at a time, a new thread reads each to its
 *     end and closes it while the maker waits on a barrier (the fd numbers are
 *     reused at once, on both hubs);
 *   - 200 short threads are made and joined, 8 at a time, by a
 *     thread of each hub.
 * Nothing may be lost, duplicated or hang. The lock and queue threads look at
 * a __thread variable of theirs after every wait: a thread that a hub gives
 * to another between waits (share_ready) takes its thread-locals along. */
#include "common.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <semaphore.h>
#include <sys/socket.h>

/* ---- a thread's own thread-locals, looked at after each wait ---- */
static __thread long t_me;
static long g_next_me; /* (__atomic) */
static long g_tls_lost; /* (__atomic) */
/* Whether threads have thread-locals of their own: not under greenrun with
 * GREENSHIM_THREAD_LOCALS=shared, nor with a sanitizer loaded (the shim
 * then shares them, README), where the threads of one OS thread overwrite
 * t_me by design. (A probe thread cannot tell: it may run on another hub.) */
static int g_own_tls;
static int own_thread_locals(void) {
    const char *mode = getenv("GREENSHIM_THREAD_LOCALS");
    if (mode && strcmp(mode, "shared") == 0) return 0;
    return !dlsym(RTLD_DEFAULT, "__asan_init") && !dlsym(RTLD_DEFAULT, "__tsan_init") &&
           !dlsym(RTLD_DEFAULT, "__msan_init");
}
static long tls_mine(void) { return t_me = __atomic_add_fetch(&g_next_me, 1, __ATOMIC_RELAXED); }
static void tls_check(long me) {
    if (g_own_tls && t_me != me) __atomic_add_fetch(&g_tls_lost, 1, __ATOMIC_RELAXED);
}

/* ---- one mutex, many threads ---- */
enum { kCounters = 8, kIncrements = 20000 };
static pthread_mutex_t g_count_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_count;

static void *count_up(void *arg) {
    long me = tls_mine();
    (void)arg;
    for (int i = 0; i < kIncrements; ++i) {
        pthread_mutex_lock(&g_count_mu);
        tls_check(me);
        long v = g_count;
        if ((i & 255) == 0) sched_yield(); /* hold it across a switch now and then */
        g_count = v + 1;
        pthread_mutex_unlock(&g_count_mu);
    }
    return NULL;
}

/* ---- a bounded queue ---- */
enum { kProducers = 4, kConsumers = 4, kItems = 10000, kQueueCap = 16 };
static pthread_mutex_t g_q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_q_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_q_not_full = PTHREAD_COND_INITIALIZER;
static long g_q[kQueueCap];
static int g_q_head, g_q_len, g_q_producers_left = kProducers;
static long g_q_sum_in, g_q_sum_out, g_q_taken;

static void *produce(void *arg) {
    long base = (long)arg * kItems;
    long me = tls_mine();
    for (long i = 1; i <= kItems; ++i) {
        long item = base + i;
        pthread_mutex_lock(&g_q_mu);
        while (g_q_len == kQueueCap) pthread_cond_wait(&g_q_not_full, &g_q_mu);
        tls_check(me);
        g_q[(g_q_head + g_q_len++) % kQueueCap] = item;
        g_q_sum_in += item;
        pthread_cond_signal(&g_q_not_empty);
        pthread_mutex_unlock(&g_q_mu);
    }
    pthread_mutex_lock(&g_q_mu);
    if (--g_q_producers_left == 0) pthread_cond_broadcast(&g_q_not_empty);
    pthread_mutex_unlock(&g_q_mu);
    return NULL;
}

static void *consume(void *arg) {
    long me = tls_mine();
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_q_mu);
        while (g_q_len == 0 && g_q_producers_left > 0) {
            /* (timed: a wait whose deadline timer stays with the hub it parked on) */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 30;
            pthread_cond_timedwait(&g_q_not_empty, &g_q_mu, &until);
        }
        tls_check(me);
        if (g_q_len == 0) {
            pthread_mutex_unlock(&g_q_mu);
            return NULL;
        }
        long item = g_q[g_q_head];
        g_q_head = (g_q_head + 1) % kQueueCap;
        --g_q_len;
        g_q_sum_out += item;
        ++g_q_taken;
        pthread_cond_signal(&g_q_not_full);
        pthread_mutex_unlock(&g_q_mu);
    }
}

/* ---- semaphore ping-pong ---- */
enum { kPairs = 4, kRounds = 2000 };
struct Pair {
    sem_t ping, pong;
    int hits;
};
static struct Pair g_pairs[kPairs];

static void *pinger(void *arg) {
    struct Pair *p = arg;
    for (int i = 0; i < kRounds; ++i) {
        sem_post(&p->ping);
        sem_wait(&p->pong);
    }
    return NULL;
}

static void *ponger(void *arg) {
    struct Pair *p = arg;
    for (int i = 0; i < kRounds; ++i) {
        sem_wait(&p->ping);
        ++p->hits;
        sem_post(&p->pong);
    }
    return NULL;
}

/* ---- streams: a writer, a reader and an echo thread per connection ---- */
enum { kTcp = 4, kPairsUnix = 4, kStreams = kTcp + kPairsUnix, kBytes = 1 << 20 };
struct Stream {
    int near, far;          /* near: written and read by two threads; far: echoed */
    unsigned long sum_sent, sum_back;
    long got_back;
};
static struct Stream g_streams[kStreams];

static unsigned char byte_at(long i, int salt) { return (unsigned char)((i * 131 + salt * 7 + (i >> 9)) & 0xff); }

static void *stream_writer(void *arg) {
    struct Stream *s = arg;
    int salt = (int)(s - g_streams);
    unsigned char buf[3000];
    for (long off = 0; off < kBytes;) {
        int n = (int)(sizeof buf < (size_t)(kBytes - off) ? sizeof buf : (size_t)(kBytes - off));
        n = 1 + (int)((off / 7) % (unsigned)n); /* varied sizes */
        for (int i = 0; i < n; ++i) {
            buf[i] = byte_at(off + i, salt);
            s->sum_sent = s->sum_sent * 33 + buf[i];
        }
        for (int done = 0; done < n;) {
            ssize_t w = write(s->near, buf + done, (size_t)(n - done));
            if (w < 0) {
                if (errno == EINTR) continue;
                perror("hub_stress: write");
                return NULL;
            }
            done += (int)w;
        }
        off += n;
    }
    shutdown(s->near, SHUT_WR);
    return NULL;
}

static void *stream_reader(void *arg) {
    struct Stream *s = arg;
    unsigned char buf[4096];
    for (;;) {
        ssize_t r = read(s->near, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; ++i) s->sum_back = s->sum_back * 33 + buf[i];
        s->got_back += r;
    }
    return NULL;
}

static void *stream_echo(void *arg) {
    struct Stream *s = arg;
    char buf[8192];
    for (;;) {
        ssize_t r = read(s->far, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        for (ssize_t done = 0; done < r;) {
            ssize_t w = write(s->far, buf + done, (size_t)(r - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) return NULL;
            done += w;
        }
    }
    shutdown(s->far, SHUT_WR);
    return NULL;
}

static int tcp_pair(int fds[2]) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        return -1;
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof a) != 0) return -1;
    fds[1] = accept(l, NULL, NULL);
    close(l);
    return fds[1] < 0 ? -1 : 0;
}

/* ---- pipes made, read to the end by a new thread, closed: numbers reused ---- */
enum { kPipes = 300, kPipeBytes = 20000 };
static pthread_barrier_t g_pipe_done;
static long g_pipe_bytes_read;
static int g_pipe_read_fd;

static void *pipe_reader(void *arg) {
    (void)arg;
    char buf[1024];
    long got = 0;
    for (;;) {
        ssize_t r = read(g_pipe_read_fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += r;
    }
    close(g_pipe_read_fd);
    __atomic_fetch_add(&g_pipe_bytes_read, got, __ATOMIC_SEQ_CST);
    pthread_barrier_wait(&g_pipe_done);
    return NULL;
}

static void *pipe_maker(void *arg) {
    (void)arg;
    char chunk[1000];
    memset(chunk, 'p', sizeof chunk);
    for (int i = 0; i < kPipes; ++i) {
        int p[2];
        if (pipe(p) != 0) return NULL;
        g_pipe_read_fd = p[0];
        pthread_t t = start(pipe_reader, NULL);
        for (int done = 0; done < kPipeBytes;) {
            ssize_t w = write(p[1], chunk, sizeof chunk);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) break;
            done += (int)w;
        }
        close(p[1]);
        pthread_barrier_wait(&g_pipe_done);
        pthread_join(t, NULL);
    }
    return NULL;
}

/* ---- short threads ---- */
enum { kShortRounds = 25, kShortBatch = 8 };
static long g_short_ran;

static void *short_one(void *arg) {
    __atomic_fetch_add(&g_short_ran, (long)arg, __ATOMIC_SEQ_CST);
    return arg;
}

static void *short_maker(void *arg) {
    (void)arg;
    long returned = 0;
    for (int r = 0; r < kShortRounds; ++r) {
        pthread_t t[kShortBatch];
        for (int i = 0; i < kShortBatch; ++i) t[i] = start(short_one, (void *)1L);
        for (int i = 0; i < kShortBatch; ++i) {
            void *v = NULL;
            pthread_join(t[i], &v);
            returned += (long)v;
        }
    }
    return (void *)returned;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    double t0 = now_ms();
    pthread_barrier_init(&g_pipe_done, NULL, 2);
    for (int i = 0; i < kPairs; ++i) {
        sem_init(&g_pairs[i].ping, 0, 0);
        sem_init(&g_pairs[i].pong, 0, 0);
    }
    int streams_ok = 1;
    for (int i = 0; i < kStreams; ++i) {
        int fds[2];
        if (i < kTcp ? tcp_pair(fds) != 0 : socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) streams_ok = 0;
        g_streams[i].near = fds[0];
        g_streams[i].far = fds[1];
    }
    say("hub_stress: the connections were made", streams_ok);
    if (!streams_ok) return 1;

    g_own_tls = own_thread_locals();

    pthread_t t[64];
    int n = 0;
    for (int i = 0; i < kCounters; ++i) t[n++] = start(count_up, NULL);
    for (long i = 0; i < kProducers; ++i) t[n++] = start(produce, (void *)i);
    for (int i = 0; i < kConsumers; ++i) t[n++] = start(consume, NULL);
    for (int i = 0; i < kPairs; ++i) {
        t[n++] = start(pinger, &g_pairs[i]);
        t[n++] = start(ponger, &g_pairs[i]);
    }
    for (int i = 0; i < kStreams; ++i) {
        t[n++] = start(stream_writer, &g_streams[i]);
        t[n++] = start(stream_reader, &g_streams[i]);
        t[n++] = start(stream_echo, &g_streams[i]);
    }
    t[n++] = start(pipe_maker, NULL);
    int first_short = n;
    t[n++] = start(short_maker, NULL);
    t[n++] = start(short_maker, NULL);
    long short_returned = 0;
    for (int i = 0; i < n; ++i) {
        void *v = NULL;
        pthread_join(t[i], &v);
        if (i >= first_short) short_returned += (long)v;
    }

    say("hub_stress: the counter counts every increment", g_count == (long)kCounters * kIncrements);
    long items = (long)kProducers * kItems;
    say("hub_stress: each lock and queue thread found its own thread-locals after every wait (where it has them)",
        __atomic_load_n(&g_tls_lost, __ATOMIC_RELAXED) == 0);
    say("hub_stress: every queued item was taken once, none lost",
        g_q_taken == items && g_q_sum_in == g_q_sum_out && g_q_sum_in == items * (items + 1) / 2);
    int pairs_ok = 1;
    for (int i = 0; i < kPairs; ++i) pairs_ok &= g_pairs[i].hits == kRounds;
    say("hub_stress: every semaphore ping was answered", pairs_ok);
    int bytes_ok = 1;
    for (int i = 0; i < kStreams; ++i)
        bytes_ok &= g_streams[i].got_back == kBytes && g_streams[i].sum_back == g_streams[i].sum_sent;
    say("hub_stress: each stream's 1 MiB came back whole and in order", bytes_ok);
    say("hub_stress: every pipe was read to its end", g_pipe_bytes_read == (long)kPipes * kPipeBytes);
    long shorts = 2L * kShortRounds * kShortBatch;
    say("hub_stress: every short thread ran and was joined", g_short_ran == shorts && short_returned == shorts);
    for (int i = 0; i < kStreams; ++i) {
        close(g_streams[i].near);
        close(g_streams[i].far);
    }
    fprintf(stderr, "hub_stress: %.1f ms, %d OS threads at the end, own thread-locals: %s\n", now_ms() - t0, os_threads(),
            g_own_tls ? "yes" : "no");
    return all_ok ? 0 : 1;
}
