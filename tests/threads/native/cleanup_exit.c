/* pthread_exit and C cleanup handlers (pthread_cleanup_push/pop, built
 * without -fexceptions: glibc's jmp_buf version, registered with
 * __pthread_register_cancel), unpatched and under greenrun:
 *   - pthread_exit from a nested function runs the handlers of every frame
 *     it leaves, innermost first, and nothing after the call;
 *   - a handler that calls a blocking function (here: a pipe read another
 *     thread answers) still runs to its end;
 *   - pthread_cleanup_pop(1) runs the handler, pop(0) does not, and a popped
 *     handler does not run again at exit;
 *   - then the thread's keys' destructors, and join sees the exit value;
 *   - threads exiting at the same time keep their own handlers apart. */
#include "common.h"

#include <semaphore.h>
#include <stdint.h>

#define N 4

static char logs[N][256];
static int answer_fd[2];
static pthread_key_t key;

static void note(int id, const char *what) {
    strncat(logs[id], what, sizeof logs[id] - strlen(logs[id]) - 1);
    strncat(logs[id], " ", sizeof logs[id] - strlen(logs[id]) - 1);
}

static void handler(void *arg) {
    intptr_t v = (intptr_t)arg;
    int id = (int)(v / 100);
    char buf[16];
    snprintf(buf, sizeof buf, "h%d", (int)(v % 100));
    note(id, buf);
}

/* A handler that waits: it reads one byte main writes once every thread has
 * started exiting. */
static void blocking_handler(void *arg) {
    int id = (int)(intptr_t)arg;
    char c;
    ssize_t r = read(answer_fd[0], &c, 1);
    note(id, r == 1 ? "hblock" : "hblock-failed");
}

static void key_destructor(void *v) { note((int)(intptr_t)v - 1, "key"); }

static sem_t exiting;  /* posted by each thread just before its pthread_exit */

static void deepest(int id) {
    pthread_cleanup_push(handler, (void *)(intptr_t)(id * 100 + 3));
    sem_post(&exiting);
    pthread_exit((void *)(intptr_t)(1000 + id));
    note(id, "after-exit");
    pthread_cleanup_pop(0);
}

static void middle(int id) {
    pthread_cleanup_push(handler, (void *)(intptr_t)(id * 100 + 2));
    pthread_cleanup_push(blocking_handler, (void *)(intptr_t)id);
    deepest(id);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
}

static void *thread_main(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_setspecific(key, (void *)(intptr_t)(id + 1));
    pthread_cleanup_push(handler, (void *)(intptr_t)(id * 100 + 1));
    /* popped before the exit: pop(1) runs it once, pop(0) not at all */
    pthread_cleanup_push(handler, (void *)(intptr_t)(id * 100 + 8));
    pthread_cleanup_pop(1);
    pthread_cleanup_push(handler, (void *)(intptr_t)(id * 100 + 9));
    pthread_cleanup_pop(0);
    middle(id);
    pthread_cleanup_pop(0);
    return NULL;
}

int main(void) {
    pthread_t t[N];
    if (pipe(answer_fd) != 0 || pthread_key_create(&key, key_destructor) != 0 || sem_init(&exiting, 0, 0) != 0) return 2;
    for (int i = 0; i < N; ++i)
        if (pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i) != 0) return 2;
    /* Answer the blocking handlers once all have begun exiting. */
    for (int i = 0; i < N; ++i)
        while (sem_wait(&exiting) != 0) {}
    char bytes[N];
    memset(bytes, 'x', sizeof bytes);
    if (write(answer_fd[1], bytes, sizeof bytes) != N) return 2;
    int values_ok = 1, order_ok = 1;
    for (int i = 0; i < N; ++i) {
        void *r = NULL;
        if (pthread_join(t[i], &r) != 0 || (intptr_t)r != 1000 + i) values_ok = 0;
        const char *want = "h8 h3 hblock h2 h1 key ";
        if (strcmp(logs[i], want) != 0) {
            order_ok = 0;
            fprintf(stderr, "thread %d ran: %s(wanted: %s)\n", i, logs[i], want);
        }
    }
    say("pthread_exit ran the cleanup handlers innermost first, a blocking one to its end, then the key's destructor", order_ok);
    say("join gave each thread's pthread_exit value", values_ok);
    return all_ok ? 0 : 1;
}
