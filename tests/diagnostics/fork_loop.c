/* Forks N children, each exiting at once, while greenshim's monitor thread
 * runs: a fork while the monitor holds the runtime's registry lock must not
 * leave the child's copy locked (the child's stats at exit would hang).
 *
 *     fork_loop [N]      (default 300) prints "forks done, bad K" */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void* short_thread(void* arg) {
    (void)arg;
    usleep(1000);
    return NULL;
}

int main(int argc, char** argv) {
    int n = argc > 1 ? atoi(argv[1]) : 300;
    pthread_t th;
    pthread_create(&th, NULL, short_thread, NULL); /* the hub exists before the forks */
    pthread_join(th, NULL);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) exit(0); /* exit: atexit handlers (the stats) run in the child */
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
        usleep(500);
    }
    printf("forks done, bad %d\n", bad);
    return 0;
}
