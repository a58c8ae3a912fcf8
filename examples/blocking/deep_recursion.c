/* A thread that recurses DEPTH deep (default 4000), about 1 KiB of stack a
 * frame: ~4 MiB in all. An OS thread (8 MiB stack by default) completes and
 * prints the sum; a greenlet thread under greenrun (1 MiB stack by default)
 * overflows, and greenshim reports it ("greenlet N (started at run_recursion
 * ...) overflowed its 1024 KiB stack; ...") and aborts. With
 * GREENSHIM_STACK_SIZE=16M it completes as unpatched.
 *
 * usage: deep_recursion [DEPTH [OPTION...]]
 *   handler  install a SIGSEGV handler first: greenshim's report still wins
 *            (the handler says so on stderr if it ever runs)
 *   attr     the thread asks for a 256 KiB stack (pthread_attr_setstacksize)
 *   named    the thread names itself "recurser" (pthread_setname_np)
 *
 * Built with -rdynamic (export_dynamic) so that the report can name
 * run_recursion: keep these functions non-static. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int named;

long recurse(long depth) {
    volatile char frame[1000];  /* volatile: every frame really takes its KiB */
    frame[0] = (char)depth;
    frame[sizeof frame - 1] = (char)(depth >> 8);
    if (depth == 0) return 0;
    return depth + recurse(depth - 1) + (frame[0] - (char)depth) + (frame[sizeof frame - 1] - (char)(depth >> 8));
}

void* run_recursion(void* arg) {
    long depth = *(long*)arg;
    if (named) pthread_setname_np(pthread_self(), "recurser");
    printf("depth %ld: sum %ld\n", depth, recurse(depth));
    return NULL;
}

static void on_segv(int sig) {
    static const char msg[] = "deep_recursion: the program's SIGSEGV handler ran\n";
    (void)!write(2, msg, sizeof msg - 1);
    signal(sig, SIG_DFL);
}

int main(int argc, char** argv) {
    long depth = argc > 1 ? atol(argv[1]) : 4000;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    for (int i = 2; i < argc; ++i) {
        if (!strcmp(argv[i], "handler")) signal(SIGSEGV, on_segv);
        else if (!strcmp(argv[i], "attr")) pthread_attr_setstacksize(&attr, 256 << 10);
        else if (!strcmp(argv[i], "named")) named = 1;
        else {
            fprintf(stderr, "deep_recursion: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pthread_create(&t, &attr, run_recursion, &depth) != 0) return 2;
    pthread_join(t, NULL);
    return 0;
}
