// greenrun's fast start: `greenrun [--] CMD ARGS...` with no GREENSHIM_*
// variable set, before the C library starts.
//
// greenrun is linked statically (shim/meson.build), and a static glibc's own
// start-up costs more than the rest of greenrun: it asks the CPU what it has
// (cpuid, ~7 us each where a hypervisor answers, tens of them for the cache
// sizes) to pick its string functions. Measured on the 2-core PVM VM of
// bench/analysis.md: an exec through a static glibc program added 1.15 ms
// more than through one without libc. The common case needs none of it: find
// the library beside this program, add it to LD_PRELOAD, exec the command.
// This is the program's entry point (-e greenrun_entry); it makes system
// calls only (no libc: nothing of it is set up yet, not even the thread
// pointer, so no stack protector either), and for anything it does not do
// exactly as greenrun.cpp's main would (an option, a GREENSHIM_* variable, a
// library elsewhere, a failed exec) it goes back to glibc's _start, which
// runs greenrun.cpp's main as if nothing had happened: that main reports
// errors, so the fast path reports none.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef GREENRUN_LIB_FROM_BIN
#error "GREENRUN_LIB_FROM_BIN: the library's directory relative to greenrun's (shim/meson.build)"
#endif

enum { kPathMax = 4096 };

static long sys4(long n, long a, long b, long c, long d) {
    register long r10 __asm__("r10") = d;
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return r;
}

static size_t len_of(const char* s) {
    size_t n = 0;
    while (s[n]) ++n;
    return n;
}

static int starts_with(const char* s, const char* prefix) {
    while (*prefix)
        if (*s++ != *prefix++) return 0;
    return 1;
}

// Appends s to out[*n]; false when it does not fit (with its NUL).
static int append(char* out, size_t* n, size_t cap, const char* s, size_t len) {
    if (*n + len + 1 > cap) return 0;
    for (size_t i = 0; i < len; ++i) out[*n + i] = s[i];
    *n += len;
    out[*n] = 0;
    return 1;
}

// The mode of path (lstat when nofollow), or 0 when it has none.
static unsigned mode_of(const char* path, int nofollow) {
    struct stat st;
    long r = sys4(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, nofollow ? AT_SYMLINK_NOFOLLOW : 0);
    return r == 0 ? st.st_mode : 0;
}

// path (absolute) with "." and ".." taken out, into out; then whether it is
// its own real path: every directory on the way a directory and not a
// symbolic link, and the last a regular file (what realpath() would give,
// and greenrun.cpp's find_lib gives realpath()'s).
static int real_file(const char* path, char* out) {
    size_t n = 0;
    out[0] = 0;
    for (const char* p = path; *p;) {
        while (*p == '/') ++p;
        const char* end = p;
        while (*end && *end != '/') ++end;
        size_t len = (size_t)(end - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && out[n - 1] != '/') --n;
            if (n > 0) --n;  // (the slash)
            out[n] = 0;
        } else if (!append(out, &n, kPathMax, "/", 1) || !append(out, &n, kPathMax, p, len)) {
            return 0;
        }
        p = end;
    }
    if (n == 0) return 0;
    // Each prefix, then the whole.
    for (size_t i = 1; i <= n; ++i) {
        if (i < n && out[i] != '/') continue;
        char saved = out[i];
        out[i] = 0;
        unsigned mode = mode_of(out, 1);
        out[i] = saved;
        if (i < n ? !S_ISDIR(mode) : !S_ISREG(mode)) return 0;
    }
    return 1;
}

// The library greenrun.cpp's find_lib() would choose, when it is one of the
// first two places it looks (beside this program: a build tree; the libdir
// of an install), as its real path; false otherwise.
static int find_lib(char* lib) {
    char self[kPathMax], c[kPathMax];
    long got = sys4(SYS_readlink, (long)"/proc/self/exe", (long)self, kPathMax - 1, 0);
    if (got <= 0) return 0;
    self[got] = 0;
    size_t dir = (size_t)got;
    while (dir > 0 && self[dir - 1] != '/') --dir;
    if (dir <= 1) return 0;
    self[dir - 1] = 0;  // this program's directory
    size_t n = 0;
    if (!append(c, &n, sizeof c, self, dir - 1) || !append(c, &n, sizeof c, "/libgreenshim.so", 16)) return 0;
    if (!S_ISREG(mode_of(c, 0))) {
        static const char from_bin[] = GREENRUN_LIB_FROM_BIN;
        n = 0;
        if (!append(c, &n, sizeof c, self, dir - 1) || !append(c, &n, sizeof c, "/", 1) ||
            !append(c, &n, sizeof c, from_bin, sizeof from_bin - 1) ||
            !append(c, &n, sizeof c, "/libgreenshim.so", 16) || !S_ISREG(mode_of(c, 0)))
            return 0;
    }
    return real_file(c, lib);
}

// Runs the command as execvp(3) would, with envp; returns if it did not
// (then greenrun.cpp's main does it again, and says why). A file that is
// not an executable (ENOEXEC: execvp gives it to /bin/sh) is left to it too.
static void exec_command(char** args, char** envp, const char* path) {
    const char* cmd = args[0];
    size_t cmd_len = len_of(cmd);
    for (const char* s = cmd; *s; ++s) {
        if (*s != '/') continue;
        sys4(SYS_execve, (long)cmd, (long)args, (long)envp, 0);
        return;
    }
    if (!path) path = "/bin:/usr/bin";  // (glibc's execvp without PATH)
    for (const char* p = path;;) {
        const char* end = p;
        while (*end && *end != ':') ++end;
        char file[kPathMax];
        size_t n = 0;
        // (an empty element: the current directory)
        if ((end > p && (!append(file, &n, sizeof file, p, (size_t)(end - p)) || !append(file, &n, sizeof file, "/", 1))) ||
            !append(file, &n, sizeof file, cmd, cmd_len))
            return;
        long r = sys4(SYS_execve, (long)file, (long)args, (long)envp, 0);
        if (r != -ENOENT && r != -ENOTDIR && r != -ESTALE && r != -ENODEV && r != -ETIMEDOUT && r != -EHOSTUNREACH)
            return;  // (EACCES among them: execvp looks further, and reports it at the end)
        if (!*end) return;
        p = end + 1;
    }
}

// Called by greenrun_entry with the kernel's stack: argc, argv, envp.
// Returns only to give the start to glibc.
__attribute__((used)) void greenrun_fast(long* sp) {
    long argc = sp[0];
    char** argv = (char**)(sp + 1);
    char** envp = argv + argc + 1;
    if (argc < 2) return;
    char** args = argv + 1;
    if (args[0][0] == '-') {
        if (!(args[0][1] == '-' && args[0][2] == 0)) return;  // an option: main reads it
        ++args;
        if (!args[0]) return;
    }
    size_t envc = 0, preload = (size_t)-1;
    const char* path = 0;
    for (; envp[envc]; ++envc) {
        if (starts_with(envp[envc], "GREENSHIM_")) return;  // main checks them, and GREENSHIM_LIB chooses
        if (preload == (size_t)-1 && starts_with(envp[envc], "LD_PRELOAD=")) preload = envc;
        if (!path && starts_with(envp[envc], "PATH=")) path = envp[envc] + 5;
    }
    char lib[kPathMax];
    if (!find_lib(lib)) return;
    // LD_PRELOAD=old:lib, or LD_PRELOAD=lib (main's setenv: the entry
    // replaced where it is, or added at the end).
    const char* old = preload != (size_t)-1 ? envp[preload] + 11 : "";
    size_t old_len = len_of(old), lib_len = len_of(lib);
    char value[11 + old_len + 1 + lib_len + 1];
    size_t n = 0;
    append(value, &n, sizeof value, "LD_PRELOAD=", 11);
    if (old_len) append(value, &n, sizeof value, old, old_len), append(value, &n, sizeof value, ":", 1);
    append(value, &n, sizeof value, lib, lib_len);
    char* env[envc + 2];
    for (size_t i = 0; i < envc; ++i) env[i] = envp[i];
    if (preload != (size_t)-1) env[preload] = value;
    else env[envc++] = value;
    env[envc] = 0;
    exec_command(args, env, path);
}

// The entry point: the kernel's stack pointer at argc, %rdx the function to
// run at exit (0 here: static) that _start hands on. Both are as they were
// when glibc's _start is reached.
__asm__(
    ".text\n"
    ".globl greenrun_entry\n"
    ".type greenrun_entry, @function\n"
    "greenrun_entry:\n"
    "    mov %rsp, %rbx\n"
    "    mov %rdx, %r12\n"
    "    mov %rsp, %rdi\n"
    "    and $-16, %rsp\n"
    "    call greenrun_fast\n"
    "    mov %rbx, %rsp\n"
    "    mov %r12, %rdx\n"
    "    xor %ebp, %ebp\n"
    "    jmp _start\n"
    ".size greenrun_entry, .-greenrun_entry\n");
