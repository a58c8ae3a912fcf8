/* A fork child's first wait is woken while its parent's helper threads are
 * busy. Under greenrun a getaddrinfo runs on a helper thread, whose "done"
 * reaches the waiting thread's hub through libev's wake-up flags and eventfd.
 * A child inherits those flags as the parent left them: with a helper job of
 * the parent's just done and not yet seen, every "done" in the child was
 * taken as already signalled, and the child's first poll slept libev's 59.7
 * s with the answer waiting (a PostgreSQL backend's first getnameinfo,
 * about one in ten pgbench runs).
 *
 * Two threads keep the parent's helper threads busy (below) while the main
 * thread forks kChildren children one after another; each child makes one
 * lookup ("localhost", from /etc/hosts: no DNS traffic) and exits 0 if it
 * was answered right. Before the fix a child hung within the first ~170. A child that
 * hangs is ended by its alarm (SIGALRM) and the run stops there. */
#include "common.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/wait.h>

enum { kChildren = 400, kBusy = 2 };
static int stop_busy;

/* A lookup that goes to the helper pool under greenrun (a name, not an
 * address literal: shim/dns.cpp) and is answered from /etc/hosts. */
static int lookup(const char *port) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int r = getaddrinfo("localhost", port, &hints, &res);
    int ok = r == 0 && res && res->ai_family == AF_INET &&
             ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port) == atoi(port);
    if (res) freeaddrinfo(res);
    return ok;
}

/* A wait glibc keeps (a process-shared barrier) runs on the helper pool
 * under greenrun too; with a count of one it returns at once. Unlike a
 * lookup it leaves no lock of glibc's held in a child forked meanwhile (a
 * lookup on another thread may: a child's own lookup would then deadlock,
 * unpatched as well). */
static void *busy(void *arg) {
    long *answered = arg;
    pthread_barrierattr_t attr;
    pthread_barrier_t barrier;
    pthread_barrierattr_init(&attr);
    pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&barrier, &attr, 1);
    while (!__atomic_load_n(&stop_busy, __ATOMIC_RELAXED))
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) ++*answered;
    pthread_barrier_destroy(&barrier);
    return NULL;
}

int main(void) {
    pthread_t t[kBusy];
    long answered[kBusy] = {0};
    for (int i = 0; i < kBusy; ++i) t[i] = start(busy, &answered[i]);
    int forked = 0, ok = 1;
    for (; forked < kChildren && ok; ++forked) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(5);
            _exit(lookup("5432") ? 0 : 3);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid) {
            perror("fork/waitpid");
            ok = 0;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child %d: %s %d\n", forked, WIFSIGNALED(st) ? "killed by signal" : "exit status",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            ok = 0;
        }
    }
    __atomic_store_n(&stop_busy, 1, __ATOMIC_RELAXED);
    long total = 0;
    for (int i = 0; i < kBusy; ++i) {
        pthread_join(t[i], NULL);
        total += answered[i];
    }
    fprintf(stderr, "%d children, %ld barrier waits in the parent meanwhile\n", forked, total);
    say("fork_wake: each fork child's lookup was answered while the parent's threads waited in barriers", ok);
    say("fork_wake: the parent's threads passed their barriers meanwhile", total > 0);
    return all_ok ? 0 : 1;
}
