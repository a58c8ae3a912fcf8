/* pthread_cancel of the main thread by another thread: main ends at its
 * cancellation point (here a sleep) and the process stays until the last
 * thread ends, then exits with status 0, as with pthread_exit in main.
 * Under greenrun main is the hub's own greenlet: glibc's cancellation of its
 * OS thread aborted the process ("exception not rethrown"). Main's stack is
 * not unwound under greenrun (as for its pthread_exit): no cleanup handler
 * of main's is asked for here. */
#include "common.h"

static pthread_t main_thread;
static int main_waits;

static void *canceller(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&main_waits, __ATOMIC_SEQ_CST)) usleep(1000);
    usleep(20000);  /* (in its sleep by now; were it not, the sleep would act as it begins) */
    say("pthread_cancel of the main thread returns 0", pthread_cancel(main_thread) == 0);
    usleep(100000);
    say("this thread goes on after main was cancelled", 1);
    return NULL;
}

int main(void) {
    main_thread = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, canceller, NULL);
    pthread_detach(t);
    __atomic_store_n(&main_waits, 1, __ATOMIC_SEQ_CST);
    sleep(10);
    say("main went on past its sleep", 0);
    return 1;
}
