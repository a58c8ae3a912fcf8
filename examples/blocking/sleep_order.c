/* Seed 000 (run1/run2 with sleeps) as a plain blocking program: two pthreads
 * and usleep() instead of greenlets and gevent.sleep().
 *
 * Output: run1 start, run2 start, run2 end, run1 end. run2 is created only
 * after run1 has printed its start (run1 tells main so through a pipe), and
 * run2 sleeps 100 ms against run1's 200 ms, so the order is fixed. Whole run:
 * about 0.2 s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int started[2]; /* run1 -> main: "I have printed my start" */

static void say(const char *s) {
    printf("%s\n", s);
    fflush(stdout);
}

static void *run1(void *arg) {
    (void)arg;
    say("run1 start");
    if (write(started[1], "x", 1) != 1) { perror("write"); exit(1); }
    usleep(200 * 1000);
    say("run1 end");
    return NULL;
}

static void *run2(void *arg) {
    (void)arg;
    say("run2 start");
    usleep(100 * 1000);
    say("run2 end");
    return NULL;
}

int main(void) {
    pthread_t t1, t2;
    char c;
    if (pipe(started) != 0) { perror("pipe"); return 1; }
    if (pthread_create(&t1, NULL, run1, NULL) != 0) return 1;
    if (read(started[0], &c, 1) != 1) { perror("read"); return 1; }
    if (pthread_create(&t2, NULL, run2, NULL) != 0) return 1;
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    return 0;
}
