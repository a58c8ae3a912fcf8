/* A program with its own SIGSEGV handling: the same output, exit status and
 * core dump with and without greenshim, whose overflow handler must pass
 * every fault that is not a greenlet's stack overflow on to the program.
 *
 * usage: fault_handler MODE
 *   longjmp    handler (SA_SIGINFO) siglongjmps out of a fault on a PROT_NONE page
 *   mprotect   handler makes the page writable and returns: the store completes
 *   mask       the handler's signal mask (sa_mask, SIGSEGV unless SA_NODEFER), restored by siglongjmp
 *   query      sigaction() reports the program's own handler, SIG_IGN, SIG_DFL
 *   thread     a thread recovers from a fault with siglongjmp, then blocks in
 *              read() until another thread writes: the thread is not stuck "in a handler"
 *   raise      raise(SIGSEGV) with a handler: it runs (si_code SI_TKILL) and returns
 *   raise_ignored  raise(SIGSEGV) under SIG_IGN: discarded
 *   raise_default  raise(SIGSEGV) with no handler: death by SIGSEGV
 *   resethand  SA_RESETHAND: the first fault is handled, the second kills
 *   null       no handler: a NULL dereference kills with SIGSEGV
 *   dfl        a handler, then signal(SIGSEGV, SIG_DFL): a NULL dereference kills
 *   ignored    SIG_IGN: a fault still kills (the kernel forces the default)
 *   bus        SIGBUS handler: a read past the end of a mapped, truncated file */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char* volatile page;  /* volatile: stored before the access that faults */
static long page_size;
static sigjmp_buf jump;
static volatile sig_atomic_t faults, fault_code, right_address, mask_ok;

static void die(const char* what) {
    perror(what);
    exit(3);
}

static char* guarded_page(void) {
    char* p = mmap(NULL, page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

static void install(int sig, void (*fn)(int, siginfo_t*, void*), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    if (sigaction(sig, &sa, NULL) != 0) die("sigaction");
}

static void note(siginfo_t* info) {
    ++faults;
    fault_code = info->si_code;
    right_address = info->si_addr == (void*)page;
}

static void on_segv_jump(int sig, siginfo_t* info, void* uctx) {
    (void)sig, (void)uctx;
    note(info);
    siglongjmp(jump, 1);
}

static void on_segv_fix(int sig, siginfo_t* info, void* uctx) {
    (void)sig, (void)uctx;
    note(info);
    if (mprotect(page, page_size, PROT_READ | PROT_WRITE) != 0) _exit(4);
}

static const char* code_name(int code) {
    switch (code) {
    case SEGV_MAPERR: return "SEGV_MAPERR";
    case SEGV_ACCERR: return "SEGV_ACCERR";
    case SI_TKILL: return "SI_TKILL";
    case SI_USER: return "SI_USER";
    default: return "other";
    }
}

static void fault_and_jump(const char* label) {
    page = guarded_page();
    if (sigsetjmp(jump, 1) == 0) {
        (void)*(volatile char*)page;
        printf("%s: the read did not fault\n", label);
        exit(1);
    }
    printf("%s: recovered by siglongjmp from %d fault at %s (%s)\n", label, (int)faults,
           right_address ? "the page" : "another address", code_name(fault_code));
}

static void mode_longjmp(void) {
    install(SIGSEGV, on_segv_jump, 0);
    fault_and_jump("longjmp");
}

static void mode_mprotect(void) {
    install(SIGSEGV, on_segv_fix, 0);
    page = guarded_page();
    *(volatile int*)page = 42;
    printf("mprotect: value %d after %d fault at %s (%s)\n", *(volatile int*)page, (int)faults,
           right_address ? "the page" : "another address", code_name(fault_code));
}

static void on_segv_mask(int sig, siginfo_t* info, void* uctx) {
    (void)uctx;
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    note(info);
    mask_ok = sigismember(&now, SIGUSR1) && !sigismember(&now, SIGUSR2) &&
              sigismember(&now, sig) == !(fault_code == SEGV_ACCERR && faults == 2);
    siglongjmp(jump, 1);
}

static void mode_mask(void) {
    sigset_t before, after;
    sigprocmask(SIG_SETMASK, NULL, &before);
    for (int round = 1; round <= 2; ++round) {
        install(SIGSEGV, on_segv_mask, round == 2 ? SA_NODEFER : 0);
        page = guarded_page();
        if (sigsetjmp(jump, 1) == 0) (void)*(volatile char*)page;
        sigprocmask(SIG_SETMASK, NULL, &after);
        printf("mask: %s: handler mask %s, mask after siglongjmp %s\n", round == 2 ? "SA_NODEFER" : "default",
               mask_ok ? "as the kernel gives" : "WRONG",
               sigismember(&after, SIGSEGV) == sigismember(&before, SIGSEGV) &&
                       sigismember(&after, SIGUSR1) == sigismember(&before, SIGUSR1)
                   ? "restored" : "NOT restored");
    }
}

static void mode_query(void) {
    struct sigaction old;
    install(SIGSEGV, on_segv_fix, SA_NODEFER | SA_RESTART);
    if (sigaction(SIGSEGV, NULL, &old) != 0) die("sigaction query");
    printf("query: handler %s, SA_SIGINFO %d, SA_NODEFER %d, SA_RESETHAND %d, SIGUSR1 in sa_mask %d\n",
           old.sa_sigaction == on_segv_fix ? "ours" : "NOT ours", !!(old.sa_flags & SA_SIGINFO),
           !!(old.sa_flags & SA_NODEFER), !!(old.sa_flags & SA_RESETHAND), sigismember(&old.sa_mask, SIGUSR1));
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    if (sigaction(SIGSEGV, &ign, &old) != 0) die("sigaction ign");
    printf("query: replaced handler reported as %s\n", old.sa_sigaction == on_segv_fix ? "ours" : "NOT ours");
    if (sigaction(SIGSEGV, NULL, &old) != 0) die("sigaction query");
    printf("query: then %s\n", old.sa_handler == SIG_IGN ? "SIG_IGN" : "NOT SIG_IGN");
    if (signal(SIGSEGV, SIG_DFL) != SIG_IGN) printf("query: signal() did not return SIG_IGN\n");
    if (sigaction(SIGSEGV, NULL, &old) != 0) die("sigaction query");
    printf("query: then %s\n", old.sa_handler == SIG_DFL ? "SIG_DFL" : "NOT SIG_DFL");
    if (sigaction(SIGBUS, NULL, &old) != 0) die("sigaction query");
    printf("query: SIGBUS %s\n", old.sa_handler == SIG_DFL ? "SIG_DFL" : "NOT SIG_DFL");
}

static int pipefd[2];
static sem_t reader_ready;

static void* faulting_reader(void* arg) {
    (void)arg;
    fault_and_jump("thread");
    sem_post(&reader_ready);
    char buf[32] = {0};
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);  /* parks until the writer runs */
    printf("thread: read %zd bytes after the fault: %s\n", n, buf);
    return NULL;
}

static void* writer(void* arg) {
    (void)arg;
    while (sem_wait(&reader_ready) != 0 && errno == EINTR) {
    }
    /* Under greenshim the reader went on from sem_post into read() before
     * this greenlet ran: a reader that blocked its OS thread for real (a
     * thread still believed to be in a signal handler) would hang here. */
    if (write(pipefd[1], "hello", 5) != 5) die("write");
    return NULL;
}

static void mode_thread(void) {
    install(SIGSEGV, on_segv_jump, 0);
    if (pipe(pipefd) != 0) die("pipe");
    sem_init(&reader_ready, 0, 0);
    pthread_t a, b;
    pthread_create(&a, NULL, faulting_reader, NULL);
    pthread_create(&b, NULL, writer, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
}

static void on_segv_count(int sig, siginfo_t* info, void* uctx) {
    (void)sig, (void)uctx;
    note(info);
}

static void mode_raise(void) {
    install(SIGSEGV, on_segv_count, 0);
    raise(SIGSEGV);
    printf("raise: handler ran %d time(s), si_code %s\n", (int)faults, code_name(fault_code));
}

static void mode_raise_ignored(void) {
    signal(SIGSEGV, SIG_IGN);
    raise(SIGSEGV);
    printf("raise_ignored: still running\n");
}

static void mode_raise_default(void) {
    printf("raise_default: raising\n");
    raise(SIGSEGV);
    printf("raise_default: still running\n");
}

static void mode_resethand(void) {
    install(SIGSEGV, on_segv_fix, SA_RESETHAND);
    page = guarded_page();
    *(volatile int*)page = 1;
    struct sigaction old;
    sigaction(SIGSEGV, NULL, &old);
    printf("resethand: first fault handled (%d), now %s\n", (int)faults,
           old.sa_handler == SIG_DFL ? "SIG_DFL" : "NOT SIG_DFL");
    page = guarded_page();
    *(volatile int*)page = 2;
    printf("resethand: second fault survived\n");
}

static int* volatile null_pointer;  /* volatile: the compiler cannot see the NULL (and make it a trap) */

static void null_dereference(const char* label) {
    printf("%s: dereferencing NULL\n", label);
    *null_pointer = 1;
    printf("%s: still running\n", label);
}

static void on_bus_jump(int sig, siginfo_t* info, void* uctx) {
    (void)sig, (void)uctx;
    ++faults;
    fault_code = info->si_code;
    siglongjmp(jump, 1);
}

static void mode_bus(void) {
    install(SIGBUS, on_bus_jump, 0);
    char path[] = "/tmp/fault_handler_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp");
    unlink(path);
    if (ftruncate(fd, page_size) != 0) die("ftruncate");
    char* map = mmap(NULL, 2 * page_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) die("mmap file");
    if (sigsetjmp(jump, 1) == 0) {
        (void)*(volatile char*)(map + page_size);  /* beyond the end of the file */
        printf("bus: the read did not fault\n");
        exit(1);
    }
    printf("bus: recovered from %d SIGBUS (%s)\n", (int)faults, fault_code == BUS_ADRERR ? "BUS_ADRERR" : "other");
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = sysconf(_SC_PAGESIZE);
    const char* mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "longjmp")) mode_longjmp();
    else if (!strcmp(mode, "mprotect")) mode_mprotect();
    else if (!strcmp(mode, "mask")) mode_mask();
    else if (!strcmp(mode, "query")) mode_query();
    else if (!strcmp(mode, "thread")) mode_thread();
    else if (!strcmp(mode, "raise")) mode_raise();
    else if (!strcmp(mode, "raise_ignored")) mode_raise_ignored();
    else if (!strcmp(mode, "raise_default")) mode_raise_default();
    else if (!strcmp(mode, "resethand")) mode_resethand();
    else if (!strcmp(mode, "null")) null_dereference("null");
    else if (!strcmp(mode, "dfl")) {
        install(SIGSEGV, on_segv_fix, 0);
        signal(SIGSEGV, SIG_DFL);
        null_dereference("dfl");
    } else if (!strcmp(mode, "ignored")) {
        signal(SIGSEGV, SIG_IGN);
        null_dereference("ignored");
    } else if (!strcmp(mode, "bus")) mode_bus();
    else {
        fprintf(stderr, "usage: fault_handler MODE (see the source)\n");
        return 2;
    }
    return 0;
}
