// Waits that only a signal can end, with no handler installed: the process
// must sleep in the kernel (CPU 0), patched as unpatched.
//
//   idle_wait MODE    MODE: pause, sigsuspend, nanosleep (2^62 s), poll
//                     (no fds, no timeout), select (no fds, no timeout)
// Prints "waiting" when it starts to wait; ends only when killed.
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
    const char* mode = argc > 1 ? argv[1] : "pause";
    printf("waiting\n");
    fflush(stdout);
    for (;;) {
        if (!strcmp(mode, "pause")) {
            pause();
        } else if (!strcmp(mode, "sigsuspend")) {
            sigset_t none;
            sigemptyset(&none);
            sigsuspend(&none);
        } else if (!strcmp(mode, "nanosleep")) {
            struct timespec huge = {(time_t)1 << 62, 0};
            nanosleep(&huge, NULL);
        } else if (!strcmp(mode, "poll")) {
            poll(NULL, 0, -1);
        } else if (!strcmp(mode, "select")) {
            select(0, NULL, NULL, NULL, NULL);
        } else {
            fprintf(stderr, "idle_wait: unknown mode %s\n", mode);
            return 2;
        }
    }
}
