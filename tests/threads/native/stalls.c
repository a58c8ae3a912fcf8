/* Threads that never wait where the shim can see (issue 14): each case has
 * one thread that would hold its OS thread forever on a single hub, and
 * another whose progress it needs. Unpatched, the kernel time-slices OS
 * threads; under greenrun the stall tick (shim/stall.cpp) must take the OS
 * thread back. The same statements both ways; figures on stderr.
 *
 *   spin-flag   a thread spins on an atomic flag that another thread sets
 *               after usleep(20000)
 *   cpu-share   4 threads count in CPU loops until main, after usleep(300000),
 *               tells them to stop: every one of them counted, and main woke
 *   main-computes  main and 2 threads count in CPU loops for 300 ms (on
 *               main's clock) with no call between: each counted, and main's
 *               __thread value is the same after (under greenrun the three
 *               take turns on the hub's OS thread and the spares, main
 *               among them)
 *   setxid-computing  a thread calls setgid(getgid()) while main and
 *               another thread compute: it returns 0 and the process lives
 *               (glibc's broadcast of new ids to every OS thread needs its
 *               handler installed, and the caller must not be moved)
 *   raw-read    a thread reads a pipe with a raw `syscall` instruction (no
 *               libc, no interposer: a blocking call the shim cannot see);
 *               another writes the byte after usleep(20000)
 *   spin-lock   a thread holds a pthread spinlock while it computes for 50 ms;
 *               3 others take it in turn, 200 times each
 *   fork-spin-flag  spin-flag again, in a child made by fork() (the tick's
 *               signals go to the child's own threads)
 *   stdio-pipe  a thread writes 1 MiB to a pipe through a FILE (fwrite: the
 *               write is libc's own, which no interposer sees, and it blocks
 *               once the pipe is full); another thread reads it all
 *   main-stdio-pipe  stdio-pipe with main as the writer, and its own
 *               __thread value, pthread_self() and errno the same after
 *               (under greenrun main is handed to a carrier OS thread with
 *               its thread-locals while the reader runs on main's hub)
 *   main-pclose  pclose-wait with main as the thread that waits, and another
 *               thread napping
 *   blocked-writers  4 threads each fwrite 1 MiB to a pipe of its own,
 *               whose reader thread starts 100 ms later: each write blocks
 *               inside libc (under greenrun each writer needs an OS thread
 *               of its own, more than the spares: run with one spare,
 *               meson.build's stalls-blocked-writers)
 *   stdio-lock  main holds a FILE's lock (flockfile) while it computes for
 *               50 ms; another thread writes to that FILE meanwhile, waiting
 *               for the lock inside libc (a futex wait no interposer sees).
 *               (Under greenrun main, computing in its own code, goes to
 *               a carrier or is preempted; the writer, blocked inside libc,
 *               goes to a carrier too.)
 *   stdio-pieces  a thread reads 5 lines with fgets from a pipe while main
 *               writes each line in two pieces 30 ms apart (usleep): between
 *               the pieces fgets waits inside libc
 *   pclose-wait  a thread runs a command with popen that prints a line and
 *               exits 300 ms later; its pclose waits inside libc, while main
 *               counts usleep(10000)s until the thread is done
 *   handshake   two threads pass a token back and forth 2,000 times through
 *               an atomic, spinning, with no call at all: each notes the OS
 *               thread it spins on (a raw gettid), and they must have been
 *               two at once (under greenrun: one handed to a carrier OS
 *               thread; preemption alone would take 10 ms a pass, on one)
 *
 * And, not run by "all" (scripts/bench's CPU-bound row):
 *   cpu-pair N  two threads each compute N million steps of a hash, then
 *               write their result to a pipe main reads; the wall time on
 *               stdout in ms */
#include "common.h"

#include <stdatomic.h>
#include <sys/syscall.h>
#include <errno.h>
#include <sys/wait.h>

static atomic_int flag;
static atomic_long spins;

static void *spinner(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&flag, memory_order_acquire))
        atomic_fetch_add_explicit(&spins, 1, memory_order_relaxed);
    return NULL;
}

static void *setter(void *arg) {
    (void)arg;
    usleep(20000);
    /* On a loaded machine a new OS thread may not have run yet: give the
     * spinner up to 5 s to start (under greenshim it runs while we sleep). */
    for (int i = 0; i < 5000 && atomic_load(&spins) == 0; ++i) usleep(1000);
    atomic_store(&flag, 1);
    return NULL;
}

/* A spinner and its setter, from a cleared flag; returns the spins. */
static long run_spin_flag(void) {
    atomic_store(&flag, 0);
    atomic_store(&spins, 0);
    pthread_t a, b;
    pthread_create(&a, NULL, spinner, NULL);
    pthread_create(&b, NULL, setter, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return atomic_load(&spins);
}

static void spin_flag(void) {
    double t0 = now_ms();
    run_spin_flag();
    fprintf(stderr, "spin-flag: %.1f ms, %ld spins\n", now_ms() - t0, atomic_load(&spins));
    say("spin-flag: the spinner saw the flag another thread set after usleep(20000)", atomic_load(&spins) > 0);
}

enum { kCounters = 4 };
static atomic_int stop;
static void *counter(void *arg) {
    volatile long *n = arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) ++*n;
    return NULL;
}

static void cpu_share(void) {
    pthread_t t[kCounters];
    long n[kCounters] = {0};
    for (int i = 0; i < kCounters; ++i) pthread_create(&t[i], NULL, counter, &n[i]);
    double t0 = now_ms();
    usleep(300000);
    double slept = now_ms() - t0;
    atomic_store(&stop, 1);
    int all = 1;
    for (int i = 0; i < kCounters; ++i) {
        pthread_join(t[i], NULL);
        fprintf(stderr, "cpu-share: thread %d counted %ld\n", i, n[i]);
        all &= n[i] > 0;
    }
    fprintf(stderr, "cpu-share: main's usleep(300000) took %.1f ms\n", slept);
    say("cpu-share: main woke from usleep while 4 threads computed", slept >= 300);
    say("cpu-share: each of the 4 computing threads ran", all);
}

static __thread int main_mark;
static double main_deadline;
static void *deadline_counter(void *arg) {
    volatile long *n = arg;
    while (now_ms() < main_deadline) ++*n;
    return NULL;
}

static void main_computes(void) {
    pthread_t t[2];
    long n[3] = {0};
    main_mark = 1;
    main_deadline = now_ms() + 300;
    for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, deadline_counter, &n[i]);
    deadline_counter(&n[2]);
    int all = n[2] > 0;
    for (int i = 0; i < 2; ++i) {
        pthread_join(t[i], NULL);
        all &= n[i] > 0;
    }
    fprintf(stderr, "main-computes: counted %ld, %ld and %ld (main)\n", n[0], n[1], n[2]);
    say("main-computes: main and 2 threads each counted in CPU loops for 300 ms", all);
    say("main-computes: main's __thread value the same after", main_mark == 1);
}

static void *setgid_caller(void *arg) {
    usleep(50000);
    *(long *)arg = setgid(getgid()) == 0;
    return NULL;
}

static void setxid_computing(void) {
    pthread_t t[2];
    long n = 0, ok = 0;
    main_deadline = now_ms() + 300;
    pthread_create(&t[0], NULL, deadline_counter, &n);
    pthread_create(&t[1], NULL, setgid_caller, &ok);
    long mine = 0;
    deadline_counter(&mine);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    say("setxid-computing: setgid(getgid()) returned 0 while main and another thread computed", ok);
}

static long raw_gettid(void) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_gettid) : "rcx", "r11", "memory");
    return r;
}

static int pipe_fds[2];
static long raw_read(int fd, void *buf, unsigned long n) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_read), "D"((long)fd), "S"(buf), "d"(n)
                     : "rcx", "r11", "memory");
    return r;
}

static void *raw_reader(void *arg) {
    char c = 0;
    long r;
    do r = raw_read(pipe_fds[0], &c, 1);
    while (r == -4 /* EINTR: a handler without SA_RESTART */);
    *(long *)arg = r == 1 && c == 'x';
    return NULL;
}

static void *pipe_writer(void *arg) {
    (void)arg;
    usleep(20000);
    if (write(pipe_fds[1], "x", 1) != 1) perror("write");
    return NULL;
}

static void raw_read_case(void) {
    pthread_t a, b;
    long got = 0;
    /* Made without libc too, so the read end is the kernel's blocking one
     * (a pipe made through the shim is non-blocking underneath). */
    if (syscall(SYS_pipe2, pipe_fds, 0) != 0) {
        perror("pipe");
        exit(1);
    }
    double t0 = now_ms();
    pthread_create(&a, NULL, raw_reader, &got);
    pthread_create(&b, NULL, pipe_writer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    fprintf(stderr, "raw-read: %.1f ms\n", now_ms() - t0);
    say("raw-read: a read made with a raw syscall got the byte another thread wrote after usleep(20000)", got);
}

enum { kStdioBytes = 1 << 20 };
static int stdio_pipe[2];
static void *stdio_writer(void *arg) {
    FILE *f = fdopen(stdio_pipe[1], "w");
    static char buf[kStdioBytes];
    memset(buf, 'x', sizeof buf);
    size_t n = f ? fwrite(buf, 1, sizeof buf, f) : 0;
    if (f && fclose(f) != 0) n = 0;
    *(long *)arg = (long)n;
    return NULL;
}

static void *stdio_reader(void *arg) {
    char b[4096];
    long total = 0, r;
    while ((r = read(stdio_pipe[0], b, sizeof b)) > 0)
        for (long i = 0; i < r; ++i) total += b[i] == 'x';
    *(long *)arg = total;
    return NULL;
}

static void stdio_pipe_case(void) {
    if (pipe(stdio_pipe) != 0) {
        perror("pipe");
        exit(1);
    }
    pthread_t w, r;
    long wrote = 0, got = 0;
    double t0 = now_ms();
    pthread_create(&w, NULL, stdio_writer, &wrote);
    pthread_create(&r, NULL, stdio_reader, &got);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    close(stdio_pipe[0]);
    fprintf(stderr, "stdio-pipe: wrote %ld, read %ld, in %.1f ms\n", wrote, got, now_ms() - t0);
    say("stdio-pipe: 1 MiB written through fwrite to a pipe, all of it read by another thread",
        wrote == kStdioBytes && got == kStdioBytes);
}

static void *stdio_reader_marked(void *arg) {
    main_mark = 2;  // (its own: main's stays 1)
    return stdio_reader(arg);
}

static void main_stdio_pipe_case(void) {
    if (pipe(stdio_pipe) != 0) {
        perror("pipe");
        exit(1);
    }
    pthread_t r, self = pthread_self();
    long got = 0;
    main_mark = 1;
    double t0 = now_ms();
    pthread_create(&r, NULL, stdio_reader_marked, &got);
    FILE *f = fdopen(stdio_pipe[1], "w");
    static char buf[kStdioBytes];
    memset(buf, 'x', sizeof buf);
    errno = 0;
    size_t wrote = f ? fwrite(buf, 1, sizeof buf, f) : 0;
    int same = errno == 0 && main_mark == 1 && pthread_equal(pthread_self(), self);
    if (!f || fclose(f) != 0) wrote = 0;
    pthread_join(r, NULL);
    close(stdio_pipe[0]);
    fprintf(stderr, "main-stdio-pipe: wrote %zu, read %ld, in %.1f ms\n", wrote, got, now_ms() - t0);
    say("main-stdio-pipe: main wrote 1 MiB through fwrite to a pipe, all of it read by another thread",
        wrote == kStdioBytes && got == kStdioBytes);
    say("main-stdio-pipe: main's __thread value, pthread_self() and errno the same after the fwrite", same);
}

enum { kBlockedWriters = 4 };
static int writer_pipes[kBlockedWriters][2];
static long writer_wrote[kBlockedWriters], reader_got[kBlockedWriters];
static void *blocked_writer(void *arg) {
    long i = (long)arg;
    FILE *f = fdopen(writer_pipes[i][1], "w");
    static char buf[kStdioBytes];
    memset(buf, 'x', sizeof buf);
    writer_wrote[i] = f ? (long)fwrite(buf, 1, sizeof buf, f) : 0;
    if (!f || fclose(f) != 0) writer_wrote[i] = 0;
    return NULL;
}

static void *late_reader(void *arg) {
    long i = (long)arg;
    char b[4096];
    long r;
    while ((r = read(writer_pipes[i][0], b, sizeof b)) > 0) reader_got[i] += r;
    return NULL;
}

static void blocked_writers_case(void) {
    pthread_t w[kBlockedWriters], r[kBlockedWriters];
    double t0 = now_ms();
    for (long i = 0; i < kBlockedWriters; ++i)
        if (pipe(writer_pipes[i]) != 0) {
            perror("pipe");
            exit(1);
        }
    for (long i = 0; i < kBlockedWriters; ++i) pthread_create(&w[i], NULL, blocked_writer, (void *)i);
    usleep(100000);
    for (long i = 0; i < kBlockedWriters; ++i) pthread_create(&r[i], NULL, late_reader, (void *)i);
    int all = 1;
    for (long i = 0; i < kBlockedWriters; ++i) {
        pthread_join(w[i], NULL);
        pthread_join(r[i], NULL);
        close(writer_pipes[i][0]);
        all = all && writer_wrote[i] == kStdioBytes && reader_got[i] == kStdioBytes;
    }
    fprintf(stderr, "blocked-writers: %.1f ms\n", now_ms() - t0);
    say("blocked-writers: 4 threads blocked in fwrite to full pipes, each pipe read to the end by a thread started later",
        all);
}

static atomic_int napper_stop;
static void *napper(void *arg) {
    long n = 0;
    while (!atomic_load(&napper_stop)) {
        usleep(10000);
        ++n;
    }
    *(long *)arg = n;
    return NULL;
}

static void main_pclose_case(void) {
    pthread_t t;
    long naps = 0;
    double t0 = now_ms();
    pthread_create(&t, NULL, napper, &naps);
    FILE *p = popen("echo hi; exec sleep 0.3", "r");
    char line[16] = "";
    int ok = p && fgets(line, sizeof line, p) && strcmp(line, "hi\n") == 0;
    int status = p ? pclose(p) : -1;
    atomic_store(&napper_stop, 1);
    pthread_join(t, NULL);
    fprintf(stderr, "main-pclose: the thread napped %ld times in %.1f ms\n", naps, now_ms() - t0);
    say("main-pclose: the command's line read and its exit status 0", ok && status == 0);
    say("main-pclose: another thread napped at least 10 times of 10 ms while main's pclose waited 300 ms", naps >= 10);
}

enum { kPiecesLines = 5 };
static FILE *pieces_in;
static void *line_reader(void *arg) {
    char line[64];
    long n = 0;
    while (fgets(line, sizeof line, pieces_in)) n += strcmp(line, "hello\n") == 0;
    *(long *)arg = n;
    return NULL;
}

static void stdio_pieces_case(void) {
    int fds[2];
    if (pipe(fds) != 0 || !(pieces_in = fdopen(fds[0], "r"))) {
        perror("pipe");
        exit(1);
    }
    pthread_t r;
    long lines = 0;
    double t0 = now_ms();
    pthread_create(&r, NULL, line_reader, &lines);
    for (int i = 0; i < kPiecesLines; ++i) {
        if (write(fds[1], "hel", 3) != 3) perror("write");
        usleep(30000);
        if (write(fds[1], "lo\n", 3) != 3) perror("write");
    }
    close(fds[1]);
    pthread_join(r, NULL);
    fclose(pieces_in);
    fprintf(stderr, "stdio-pieces: %ld lines in %.1f ms\n", lines, now_ms() - t0);
    say("stdio-pieces: 5 lines read with fgets, each written in two pieces 30 ms apart", lines == kPiecesLines);
}

static atomic_int pclosed;
static void *popen_runner(void *arg) {
    FILE *p = popen("echo hi; exec sleep 0.3", "r");
    char line[16] = "";
    int ok = p && fgets(line, sizeof line, p) && strcmp(line, "hi\n") == 0;
    int status = p ? pclose(p) : -1;
    *(long *)arg = ok && status == 0;
    atomic_store(&pclosed, 1);
    return NULL;
}

static void pclose_wait_case(void) {
    pthread_t t;
    long ok = 0;
    int naps = 0;
    double t0 = now_ms();
    pthread_create(&t, NULL, popen_runner, &ok);
    while (!atomic_load(&pclosed)) {
        usleep(10000);
        ++naps;
    }
    pthread_join(t, NULL);
    fprintf(stderr, "pclose-wait: main napped %d times in %.1f ms\n", naps, now_ms() - t0);
    say("pclose-wait: the command's line read and its exit status 0", ok);
    say("pclose-wait: main napped at least 10 times of 10 ms while pclose waited 300 ms", naps >= 10);
}

static FILE *locked_file;
static atomic_int file_locked, file_unlocked;
static void hold_file(void) {
    flockfile(locked_file);
    atomic_store(&file_locked, 1);
    double until = now_ms() + 50;
    while (now_ms() < until) {
    }
    atomic_store(&file_unlocked, 1);
    funlockfile(locked_file);
}

static void *file_writer(void *arg) {
    while (!atomic_load(&file_locked)) usleep(1000);
    int put = fputs("after the holder\n", locked_file) >= 0;
    *(long *)arg = put && atomic_load(&file_unlocked);
    return NULL;
}

static void stdio_lock_case(void) {
    locked_file = fopen("/dev/null", "w");
    if (!locked_file) {
        perror("/dev/null");
        exit(1);
    }
    pthread_t w;
    long ok = 0;
    double t0 = now_ms();
    pthread_create(&w, NULL, file_writer, &ok);
    hold_file();
    pthread_join(w, NULL);
    fclose(locked_file);
    fprintf(stderr, "stdio-lock: %.1f ms\n", now_ms() - t0);
    say("stdio-lock: a write waited inside libc for a FILE main held while it computed", ok);
}

static pthread_spinlock_t spin;
static long in_lock, max_in_lock;
static void *locker(void *arg) {
    long holder = (long)arg;
    for (int i = 0; i < (holder ? 1 : 200); ++i) {
        pthread_spin_lock(&spin);
        long inside = ++in_lock;
        if (inside > max_in_lock) max_in_lock = inside;
        if (holder) {
            double until = now_ms() + 50;
            while (now_ms() < until) {
            }
        }
        --in_lock;
        pthread_spin_unlock(&spin);
    }
    return NULL;
}

static void spin_lock_case(void) {
    pthread_t t[4];
    pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE);
    pthread_create(&t[0], NULL, locker, (void *)1L);
    for (long i = 1; i < 4; ++i) pthread_create(&t[i], NULL, locker, (void *)0L);
    for (int i = 0; i < 4; ++i) pthread_join(t[i], NULL);
    say("spin-lock: 4 threads took a spinlock (one holding it 50 ms in a CPU loop), one at a time",
        max_in_lock == 1);
}

enum { kHandshakes = 2000 };
static atomic_int token;
static atomic_long spinner_tid[2];
static void *handshaker(void *arg) {
    int me = (int)(long)arg;
    for (int i = 0; i < kHandshakes; ++i) {
        while (atomic_load_explicit(&token, memory_order_acquire) != me) __builtin_ia32_pause();
        /* Where it spins now (it may have moved: record the last). */
        atomic_store(&spinner_tid[me], raw_gettid());
        atomic_store_explicit(&token, 1 - me, memory_order_release);
    }
    return NULL;
}

static void handshake_case(void) {
    pthread_t t[2];
    double t0 = now_ms();
    for (long i = 0; i < 2; ++i) pthread_create(&t[i], NULL, handshaker, (void *)i);
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    fprintf(stderr, "handshake: %d round trips in %.1f ms, last on OS threads %ld and %ld\n", kHandshakes,
            now_ms() - t0, atomic_load(&spinner_tid[0]), atomic_load(&spinner_tid[1]));
    say("handshake: two spinning threads passed a token 2000 times, on two OS threads at once",
        atomic_load(&spinner_tid[0]) != atomic_load(&spinner_tid[1]));
}

static int pair_pipe[2];
static long pair_steps;
static void *pair_worker(void *arg) {
    unsigned long h = (unsigned long)(long)arg * 0x9e3779b97f4a7c15UL;
    for (long i = 0; i < pair_steps; ++i) h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9UL + (unsigned long)i;
    if (write(pair_pipe[1], &h, sizeof h) != (long)sizeof h) perror("write");
    return NULL;
}

static int cpu_pair(long millions) {
    pthread_t t[2];
    pair_steps = millions * 1000000;
    if (pipe(pair_pipe) != 0) return 1;
    double t0 = now_ms();
    for (long i = 0; i < 2; ++i) pthread_create(&t[i], NULL, pair_worker, (void *)(i + 1));
    unsigned long got[2];
    for (int i = 0; i < 2; ++i)
        if (read(pair_pipe[0], &got[i], sizeof got[i]) != (long)sizeof got[i]) return 1;
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    printf("%.1f\n", now_ms() - t0);
    fprintf(stderr, "cpu-pair: results %lx %lx\n", got[0], got[1]);
    return 0;
}

/* The child's spin-flag: exit status 0 if the spinner saw the flag. */
static void fork_spin_flag(void) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) _exit(run_spin_flag() > 0 ? 0 : 1);
    int status = -1, done = 0;
    double t0 = now_ms();
    if (pid > 0) {
        /* At most 10 s: a child whose spinner is never taken back would spin
         * for ever (then ended here, by pid). */
        while (!(done = waitpid(pid, &status, WNOHANG) == pid) && now_ms() - t0 < 10000) usleep(2000);
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    fprintf(stderr, "fork-spin-flag: %.1f ms, child status %d%s\n", now_ms() - t0, status, done ? "" : " (killed)");
    say("fork-spin-flag: in a child made by fork, the spinner saw the flag another thread set after usleep(20000)",
        done && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "cpu-pair") == 0) return cpu_pair(atol(argv[2]));
    const char *which = argc > 1 ? argv[1] : "all";
    int all = strcmp(which, "all") == 0;
    if (all || strcmp(which, "spin-flag") == 0) spin_flag();
    if (all || strcmp(which, "fork-spin-flag") == 0) fork_spin_flag();
    if (all || strcmp(which, "cpu-share") == 0) cpu_share();
    if (all || strcmp(which, "main-computes") == 0) main_computes();
    if (all || strcmp(which, "setxid-computing") == 0) setxid_computing();
    if (all || strcmp(which, "raw-read") == 0) raw_read_case();
    if (all || strcmp(which, "spin-lock") == 0) spin_lock_case();
    if (all || strcmp(which, "stdio-pipe") == 0) stdio_pipe_case();
    if (all || strcmp(which, "main-stdio-pipe") == 0) main_stdio_pipe_case();
    if (all || strcmp(which, "main-pclose") == 0) main_pclose_case();
    if (all || strcmp(which, "blocked-writers") == 0) blocked_writers_case();
    if (all || strcmp(which, "stdio-lock") == 0) stdio_lock_case();
    if (all || strcmp(which, "stdio-pieces") == 0) stdio_pieces_case();
    if (all || strcmp(which, "pclose-wait") == 0) pclose_wait_case();
    if (all || strcmp(which, "handshake") == 0) handshake_case();
    return all_ok ? 0 : 1;
}
