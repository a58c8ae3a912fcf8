// A server whose threads all wait, for tests/diagnostics/check_dump.py: two
// read a pipe (pipe_reader), one a socket (socket_reader), one holds a mutex
// and sleeps (lock_holder), two wait for that mutex (lock_waiter); main joins
// the first reader. Prints "ready" once every thread waits, then waits until
// killed. Built with -rdynamic so that the dump names its functions.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t started_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t started_cv = PTHREAD_COND_INITIALIZER;
static int started;

static void mark_started(void) {
    pthread_mutex_lock(&started_mu);
    ++started;
    pthread_cond_signal(&started_cv);
    pthread_mutex_unlock(&started_mu);
}

void* pipe_reader(void* arg) {
    int fd = *(int*)arg;
    char c;
    mark_started();
    return (void*)(long)read(fd, &c, 1);
}

void* socket_reader(void* arg) {
    int fd = *(int*)arg;
    char c;
    mark_started();
    return (void*)(long)recv(fd, &c, 1, 0);
}

void* lock_holder(void* arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    mark_started();
    sleep(3600);
    pthread_mutex_unlock(&lock);
    return NULL;
}

void* lock_waiter(void* arg) {
    (void)arg;
    mark_started();
    pthread_mutex_lock(&lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    int p1[2], p2[2], sv[2];
    if (pipe(p1) || pipe(p2) || socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 1;
    pthread_t t[6];
    pthread_create(&t[0], NULL, pipe_reader, &p1[0]);
    pthread_create(&t[1], NULL, pipe_reader, &p2[0]);
    pthread_create(&t[2], NULL, socket_reader, &sv[0]);
    pthread_setname_np(t[2], "sock-reader");
    pthread_create(&t[3], NULL, lock_holder, NULL);
    // The waiters come after the holder has the lock.
    pthread_mutex_lock(&started_mu);
    while (started < 4) pthread_cond_wait(&started_cv, &started_mu);
    pthread_mutex_unlock(&started_mu);
    pthread_create(&t[4], NULL, lock_waiter, NULL);
    pthread_create(&t[5], NULL, lock_waiter, NULL);
    pthread_mutex_lock(&started_mu);
    while (started < 6) pthread_cond_wait(&started_cv, &started_mu);
    pthread_mutex_unlock(&started_mu);
    // Let the waiters reach the lock.
    struct timespec ms = {0, 20 * 1000 * 1000};
    nanosleep(&ms, NULL);
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    pthread_join(t[0], NULL);
    return 0;
}
