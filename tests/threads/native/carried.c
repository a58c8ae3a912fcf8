/* Threads that move between OS threads (issue 14): under greenrun a thread
 * that computes GREENSHIM_HANDOFF ms without waiting is handed to a spare OS
 * thread (a carrier) and comes back to its hub at its next interposed call,
 * again and again here. What a thread owns must follow it, and the heap must
 * stay whole while threads on two OS threads allocate at once:
 *
 *   4 workers, each for 24 rounds: a CPU stretch (~15 ms) of malloc/fill/check/free
 *   of varied sizes (glibc's tcache is per OS thread: a carried thread is
 *   lent the carrier's), its own __thread counter and errno checked across
 *   the stretch, pthread_self() compared with its first value; then a
 *   mutex-guarded shared total and a write of its progress to a pipe (calls
 *   into the shim: the way back). Main reads the pipe until every worker
 *   wrote its last round, and checks the totals.
 *
 * Then, once they are joined, the process must go back to one OS thread
 * (an idle carrier ends after 2 s). The same statements unpatched and under
 * greenrun; figures on stderr (how often each worker changed OS thread). */
#include "common.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

enum { kWorkers = 4, kRounds = 24, kAllocs = 400000 };

static __thread long tl_counter;
static pthread_mutex_t total_mu = PTHREAD_MUTEX_INITIALIZER;
static long total;
static int progress[2];
static atomic_int bad_heap, bad_tls, bad_errno, bad_self;
static long os_threads_seen[kWorkers];

static long raw_gettid(void) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_gettid) : "rcx", "r11", "memory");
    return r;
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    return x ^ (x >> 27);
}

static void *worker(void *arg) {
    long me = (long)arg;
    pthread_t self = pthread_self();
    uint64_t seed = (uint64_t)me * 0x9e3779b97f4a7c15ULL + 1;
    long last_tid = 0, tids = 0;
    for (int round = 0; round < kRounds; ++round) {
        errno = 1000 + (int)me;
        long before = tl_counter;
        for (int i = 0; i < kAllocs; ++i) {
            seed = mix(seed + (uint64_t)i);
            size_t n = 16 + seed % 3000;  /* tcache sizes and beyond */
            unsigned char *p = malloc(n);
            if (!p) {
                atomic_store(&bad_heap, 1);
                break;
            }
            unsigned char v = (unsigned char)(seed >> 8);
            memset(p, v, n);
            for (size_t k = 0; k < n; k += 97)
                if (p[k] != v) atomic_store(&bad_heap, 1);
            free(p);
            ++tl_counter;
        }
        long tid = raw_gettid();
        if (tid != last_tid) {
            ++tids;
            last_tid = tid;
        }
        if (tl_counter != before + kAllocs) atomic_store(&bad_tls, 1);
        if (errno != 1000 + (int)me) atomic_store(&bad_errno, 1);
        if (!pthread_equal(self, pthread_self())) atomic_store(&bad_self, 1);
        pthread_mutex_lock(&total_mu);
        total += kAllocs;
        pthread_mutex_unlock(&total_mu);
        long note[2] = {me, round};
        if (write(progress[1], note, sizeof note) != (long)sizeof note) perror("write");
    }
    os_threads_seen[me] = tids;
    return NULL;
}

int main(void) {
    if (pipe(progress) != 0) return 1;
    pthread_t t[kWorkers];
    double t0 = now_ms();
    for (long i = 0; i < kWorkers; ++i) pthread_create(&t[i], NULL, worker, (void *)i);
    int last_round[kWorkers];
    for (int i = 0; i < kWorkers; ++i) last_round[i] = -1;
    int in_order = 1;
    for (int got = 0; got < kWorkers * kRounds; ++got) {
        long note[2];
        if (read(progress[0], note, sizeof note) != (long)sizeof note) return 1;
        if (note[0] < 0 || note[0] >= kWorkers || note[1] != last_round[note[0]] + 1) in_order = 0;
        else last_round[note[0]] = (int)note[1];
    }
    for (int i = 0; i < kWorkers; ++i) pthread_join(t[i], NULL);
    fprintf(stderr, "carried: %.1f ms; changes of OS thread seen per worker:", now_ms() - t0);
    for (int i = 0; i < kWorkers; ++i) fprintf(stderr, " %ld", os_threads_seen[i]);
    fprintf(stderr, "\n");
    say("carried: every worker's progress came through the pipe in order", in_order);
    say("carried: the shared total counts every allocation", total == (long)kWorkers * kRounds * kAllocs);
    say("carried: every block malloc gave held what was written to it", !atomic_load(&bad_heap));
    say("carried: each worker's __thread counter stayed its own", !atomic_load(&bad_tls));
    say("carried: each worker's errno stayed its own", !atomic_load(&bad_errno));
    say("carried: pthread_self() stayed the same in each worker", !atomic_load(&bad_self));
    /* Carriers end once idle (2 s): the process goes back to its one thread. */
    int want = under_shim() ? shim_hubs() : 1;
    int threads = os_threads();
    for (int i = 0; i < 1000 && threads != want; ++i) {
        usleep(10000);
        threads = os_threads();
    }
    fprintf(stderr, "carried: %.1f ms in all, then %d OS thread(s)\n", now_ms() - t0, threads);
    say("carried: once the workers were joined, the process went back to one OS thread per hub", threads == want);
    return all_ok ? 0 : 1;
}
