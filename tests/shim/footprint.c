// What the preload writes at start-up: the anonymous memory (heap, .bss,
// anonymous mappings, stack) a program has dirtied by its first open,
// measured with LD_PRELOAD as the test runs it and again without, the
// difference held to a budget. Every page written costs its first-write
// fault (~20 us where faults are dear, a PVM guest) in every process started
// under greenshim, and stays resident.
//
//   footprint            runs both measurements (children) and compares
//   footprint measure    opens /dev/null, prints its anonymous Private_Dirty KiB
//
// File-backed pages are not counted: a library just built is dirty in the
// page cache and shows as Private_Dirty until written back.
//
// Also: the libraries mapped besides the preload itself must be the same
// both ways. The preload needs libc and nothing else until the program makes
// a thread (libev and libstdc++ are linked in, libgcc_s's unwinder is loaded
// at the first thread: shim/unwind.cpp); each library more is a file to open,
// map and relocate in every process.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// The budget, in KiB. When this test was written the preload added 52 KiB; it
// was 176 KiB when the fd table's 128 KiB chunk was written whole at the
// first fd.
enum { kBudgetKiB = 96 };

// The anonymous Private_Dirty KiB; *libs: the shared libraries mapped (their
// mappings with offset 0), the preload not counted.
static long anon_private_dirty_kib(int* libs) {
    FILE* f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int anon = 0;
    long total = 0;
    *libs = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %*s %lx %*s %*s %n", &lo, &hi, &off, &name_at) == 3 && name_at > 0) {
            const char* name = line + name_at;
            anon = *name == '\n' || *name == '\0' || !strncmp(name, "[heap]", 6) || !strncmp(name, "[stack]", 7);
            if (off == 0 && strstr(name, ".so") && !strstr(name, "libgreenshim")) ++*libs;
            continue;
        }
        long kib;
        if (anon && sscanf(line, "Private_Dirty: %ld kB", &kib) == 1) total += kib;
    }
    fclose(f);
    return total;
}

// Runs this program's "measure" with the environment as it is, or without
// LD_PRELOAD; its figure, or -1, and the libraries it had mapped.
static long measure(const char* self, int preloaded, int* libs) {
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        if (!preloaded) unsetenv("LD_PRELOAD");
        unsetenv("MALLOC_PERTURB_");  // (meson's: malloc would write what it hands out)
        execl(self, self, "measure", (char*)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[64] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || n <= 0) return -1;
    long kib = -1;
    if (sscanf(buf, "%ld %d", &kib, libs) != 2) return -1;
    return kib;
}

int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "measure")) {
        int fd = open("/dev/null", O_RDONLY);  // (the shim's fd table is made here)
        if (fd < 0) return 1;
        close(fd);
        int libs = 0;
        long kib = anon_private_dirty_kib(&libs);
        printf("%ld %d\n", kib, libs);
        return 0;
    }
    const char* preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) {
        // (meson test --setup=valgrind: valgrind's own memory is in the figure)
        printf("under valgrind: not measured\n");
        return 77;  // meson's "skipped"
    }
    if (!preload || !strstr(preload, "libgreenshim")) {
        fprintf(stderr, "footprint: LD_PRELOAD does not name libgreenshim.so\n");
        return 1;
    }
    // Several runs each, the smallest kept (a page or two varies with the
    // stack's and heap's alignment).
    long with = -1, without = -1;
    int libs_with = 0, libs_without = 0;
    for (int i = 0; i < 5; ++i) {
        long a = measure("/proc/self/exe", 1, &libs_with), b = measure("/proc/self/exe", 0, &libs_without);
        if (a < 0 || b < 0) {
            fprintf(stderr, "footprint: a measurement failed\n");
            return 1;
        }
        if (with < 0 || a < with) with = a;
        if (without < 0 || b < without) without = b;
    }
    printf("anonymous memory written by the first open: %ld KiB preloaded, %ld KiB not: +%ld KiB (budget %d)\n",
           with, without, with - without, kBudgetKiB);
    printf("libraries mapped besides the preload: %d preloaded, %d not\n", libs_with, libs_without);
    if (libs_with != libs_without) printf("FAIL: the preload brought libraries of its own\n");
    return with - without <= kBudgetKiB && libs_with == libs_without ? 0 : 1;
}
