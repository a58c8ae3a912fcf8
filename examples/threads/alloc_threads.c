/* Threads that allocate a lot, through whatever malloc the process has.
 *
 *   alloc_threads LIB
 *
 * LIB names the library that must provide malloc ("libjemalloc",
 * "libtcmalloc", "libmimalloc", "libc."): the program is run with that
 * allocator preloaded (beside greenshim, in either order) or linked in.
 * Allocators take pthread mutexes, pthread_once and thread-specific keys
 * inside malloc itself, often before main and before anything else ran on the
 * thread; under greenshim those are the shim's, and none of them may allocate.
 *
 * What it does: 4 producer threads pass 8,000 malloc'd messages (1 byte to
 * 64 KiB, every 500th 1 MiB, each filled with a pattern) through a bounded
 * queue (a mutex and two condition variables) to 4 consumer threads, which
 * check the pattern, grow some with realloc, and free them; meanwhile 50
 * short-lived threads allocate, free and exit. Every thread keeps a malloc'd
 * value under a key whose destructor frees it; a pthread_once routine
 * allocates a table. Prints a fixed list of statements and exits 0 only if
 * each says "yes". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kProducers = 4, kConsumers = 4, kPerProducer = 2000, kQueue = 16, kShortLived = 50 };
#define kMessages (kProducers * kPerProducer)

struct msg {
    size_t size;
    unsigned seed;
    unsigned char* data;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_not_empty = PTHREAD_COND_INITIALIZER;
static struct msg* g_queue[kQueue];
static int g_head, g_count, g_producers_left = kProducers;

/* Under g_mu. */
static long g_consumed, g_bad, g_bytes;
static int g_destructors, g_short_ok;

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_once_runs;
static unsigned* g_table;

static void make_table(void) {
    g_table = calloc(256, sizeof *g_table);
    for (unsigned i = 0; i < 256; ++i) g_table[i] = i * 2654435761u;
    ++g_once_runs;
}

static void key_dtor(void* v) {
    free(v);
    pthread_mutex_lock(&g_mu);
    ++g_destructors;
    pthread_mutex_unlock(&g_mu);
}

/* Every thread: a malloc'd value under the key, and the table. */
static void thread_setup(void) {
    pthread_once(&g_once, make_table);
    pthread_setspecific(g_key, malloc(64));
}

static size_t size_of(unsigned i) { return i % 500 == 499 ? (size_t)1 << 20 : 1 + (size_t)(g_table[i % 256] % 65536); }
static unsigned char byte_at(unsigned seed, size_t k) { return (unsigned char)(seed * 31u + k * 7u); }

static void* producer(void* arg) {
    unsigned base = (unsigned)(uintptr_t)arg * kPerProducer;
    thread_setup();
    for (unsigned i = base; i < base + kPerProducer; ++i) {
        struct msg* m = malloc(sizeof *m);
        m->size = size_of(i);
        m->seed = i;
        m->data = malloc(m->size);
        for (size_t k = 0; k < m->size; ++k) m->data[k] = byte_at(i, k);
        pthread_mutex_lock(&g_mu);
        while (g_count == kQueue) pthread_cond_wait(&g_not_full, &g_mu);
        g_queue[(g_head + g_count++) % kQueue] = m;
        pthread_cond_signal(&g_not_empty);
        pthread_mutex_unlock(&g_mu);
    }
    pthread_mutex_lock(&g_mu);
    if (--g_producers_left == 0) pthread_cond_broadcast(&g_not_empty);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static void* consumer(void* arg) {
    (void)arg;
    thread_setup();
    for (;;) {
        pthread_mutex_lock(&g_mu);
        while (g_count == 0 && g_producers_left > 0) pthread_cond_wait(&g_not_empty, &g_mu);
        if (g_count == 0) {
            pthread_mutex_unlock(&g_mu);
            return NULL;
        }
        struct msg* m = g_queue[g_head];
        g_head = (g_head + 1) % kQueue;
        --g_count;
        pthread_cond_signal(&g_not_full);
        pthread_mutex_unlock(&g_mu);

        int bad = 0;
        for (size_t k = 0; k < m->size; ++k) bad |= m->data[k] != byte_at(m->seed, k);
        if (m->seed % 3 == 0) { /* grow it: the old bytes must move along */
            unsigned char* p = realloc(m->data, m->size * 2 + 1);
            if (!p) bad = 1;
            else {
                m->data = p;
                for (size_t k = 0; k < m->size; ++k) bad |= m->data[k] != byte_at(m->seed, k);
            }
        }
        pthread_mutex_lock(&g_mu);
        ++g_consumed;
        g_bad += bad;
        g_bytes += (long)m->size;
        pthread_mutex_unlock(&g_mu);
        free(m->data);
        free(m);
    }
}

static void* short_lived(void* arg) {
    unsigned n = (unsigned)(uintptr_t)arg;
    thread_setup();
    void* blocks[100];
    int ok = 1;
    for (unsigned i = 0; i < 100; ++i) {
        size_t size = 1 + (n * 100 + i) * 37 % 20000;
        blocks[i] = i % 2 ? calloc(1, size) : malloc(size);
        if (!blocks[i]) ok = 0;
        else if (i % 2 && ((unsigned char*)blocks[i])[size - 1] != 0) ok = 0;
        else memset(blocks[i], (int)i, size);
    }
    for (unsigned i = 0; i < 100; ++i) free(blocks[i]);
    pthread_mutex_lock(&g_mu);
    g_short_ok += ok;
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static void say(const char* what, int yes, int* all) {
    printf("%s: %s\n", what, yes ? "yes" : "NO");
    *all &= yes;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: alloc_threads LIB (the library that must provide malloc)\n");
        return 2;
    }
    int all = 1;
    Dl_info info;
    void* m = dlsym(RTLD_DEFAULT, "malloc");
    const char* from = m && dladdr(m, &info) && info.dli_fname ? info.dli_fname : "?";
    say("malloc comes from the library asked for", strstr(from, argv[1]) != NULL, &all);
    if (!strstr(from, argv[1])) fprintf(stderr, "alloc_threads: malloc is %s's, not %s's\n", from, argv[1]);

    pthread_key_create(&g_key, key_dtor);
    pthread_t producers[kProducers], consumers[kConsumers], shorts[kShortLived];
    int created = 0;
    for (int i = 0; i < kConsumers; ++i) created += pthread_create(&consumers[i], NULL, consumer, NULL) == 0;
    for (int i = 0; i < kProducers; ++i)
        created += pthread_create(&producers[i], NULL, producer, (void*)(uintptr_t)i) == 0;
    for (int i = 0; i < kShortLived; ++i)
        created += pthread_create(&shorts[i], NULL, short_lived, (void*)(uintptr_t)i) == 0;
    say("58 threads created", created == kProducers + kConsumers + kShortLived, &all);
    if (created != kProducers + kConsumers + kShortLived) return 1;
    for (int i = 0; i < kShortLived; ++i) pthread_join(shorts[i], NULL);
    for (int i = 0; i < kProducers; ++i) pthread_join(producers[i], NULL);
    for (int i = 0; i < kConsumers; ++i) pthread_join(consumers[i], NULL);

    long expected_bytes = 0;
    for (unsigned i = 0; i < kMessages; ++i) expected_bytes += (long)size_of(i);
    say("8000 messages consumed", g_consumed == kMessages, &all);
    say("every message arrived intact (and intact after realloc)", g_bad == 0, &all);
    say("the byte count adds up", g_bytes == expected_bytes, &all);
    say("50 short-lived threads allocated, zeroed and freed", g_short_ok == kShortLived, &all);
    say("each thread's key destructor ran", g_destructors == kProducers + kConsumers + kShortLived, &all);
    say("the pthread_once routine ran once", g_once_runs == 1, &all);
    free(g_table);
    return all ? 0 : 1;
}
