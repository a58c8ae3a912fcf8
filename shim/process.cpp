// fork and exec. Every fd a child inherits is put back in the blocking mode
// this program set, for good (fd_release_inheritable: both processes then
// treat it as borrowed). After fork the child's hub is re-initialised.
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>

#include <cstring>
#include <string>
#include <vector>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <fcntl.h>

#include <atomic>
#include <mutex>

#include "greenshim/cold.hpp"
#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

extern char** environ;

namespace {

// For a wait on any child: pidfds of the children this process started
// through the shim (fork, posix_spawn), so their exit wakes us at once; the
// timer still covers children started behind our back (popen, raw clone).
constexpr std::size_t kMaxTracked = 64;
// Under g_children_lock: greenlets of another hub (an OS thread's of its
// own) may start and wait for children too.
pid_t g_children[kMaxTracked];
std::size_t g_nchildren = 0;
SpinLock g_children_lock;
using ChildrenLock = std::lock_guard<SpinLock>;

void track_child(pid_t pid) {
    ChildrenLock held(g_children_lock);
    if (g_nchildren < kMaxTracked) g_children[g_nchildren++] = pid;
}


template <class Exec>
int around_exec(Exec&& exec) {
    if (in_vfork_child()) {  // (its signal mask is its own already: greenshim_vfork_begin)
        vfork_child_release_for_exec();
        return exec();
    }
    if (config().enabled) fd_release_for_exec();  // includes fds dup2'd since fork
    OsMaskOfThread mask;  // the new image keeps the calling thread's mask
    return exec();
}

// GREENSHIM_INHERIT=0: the new program's environment loses libgreenshim.so
// from LD_PRELOAD (the rest of LD_PRELOAD stays).
struct Env {
    std::vector<char*> vars;
    std::string preload;
};
char* const* env_for_exec(char* const* envp, Env& out) {
    if (config().inherit || !envp) return envp;
    for (char* const* e = envp; *e; ++e) {
        if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) {
            out.vars.push_back(*e);
            continue;
        }
        std::string kept;
        const char* p = *e + 11;
        while (*p) {
            const char* end = p + std::strcspn(p, ": ");
            std::string item(p, end);
            if (!item.empty() && item.find("libgreenshim.so") == std::string::npos) {
                if (!kept.empty()) kept += ':';
                kept += item;
            }
            p = *end ? end + 1 : end;
        }
        if (!kept.empty()) {
            out.preload = "LD_PRELOAD=" + kept;
            out.vars.push_back(out.preload.data());
        }
    }
    out.vars.push_back(nullptr);
    return out.vars.data();
}

// The sources of posix_spawn's dup2 actions become the child's fds too.
// glibc's file-actions layout (spawn_int.h), stable since 2.x.
// The union holds pointers (open's path), so it sits at offset 8 and each
// action takes 32 bytes: a layout without the pointer read the wrong fds,
// and a spawned child could inherit a pipe still O_NONBLOCK underneath.
struct SpawnAction {
    int tag;  // 1: dup2
    union {
        struct { int fd, newfd; } dup2;
        struct { int fd; char* path; int oflag; mode_t mode; } open;
    } a;
};
static_assert(sizeof(SpawnAction) == 32 && offsetof(SpawnAction, a) == 8, "glibc's struct __spawn_action");
struct SpawnFileActions {
    int allocated, used;
    SpawnAction* actions;
};

void release_for_spawn(const posix_spawn_file_actions_t* fa) {
    if (!config().enabled) return;
    fd_release_inheritable();
    if (!fa) return;
    auto* f = reinterpret_cast<const SpawnFileActions*>(fa);
    for (int i = 0; i < f->used && i < f->allocated; ++i)
        if (f->actions[i].tag == 1) fd_release(f->actions[i].a.dup2.fd);
}

// execl-style argument lists, collected into an argv.
std::vector<char*> collect(const char* arg0, va_list ap, char*** envp) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(arg0));
    while (argv.back()) argv.push_back(va_arg(ap, char*));
    if (envp) *envp = va_arg(ap, char**);
    return argv;
}

}  // namespace

SHIM_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
    SHIM_ENTER;
    Env env;
    return around_exec([&] { return REAL(execve)(path, argv, env_for_exec(envp, env)); });
}
SHIM_EXPORT int execv(const char* path, char* const argv[]) { SHIM_ENTER; return execve(path, argv, environ); }
SHIM_EXPORT int execvp(const char* file, char* const argv[]) { SHIM_ENTER; return execvpe(file, argv, environ); }
SHIM_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
    SHIM_ENTER;
    Env env;
    return around_exec([&] { return REAL(execvpe)(file, argv, env_for_exec(envp, env)); });
}
SHIM_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
    SHIM_ENTER;
    Env env;
    return around_exec([&] { return REAL(fexecve)(fd, argv, env_for_exec(envp, env)); });
}

SHIM_EXPORT int execl(const char* path, const char* arg, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, arg);
    std::vector<char*> argv = collect(arg, ap, nullptr);
    va_end(ap);
    return execv(path, argv.data());
}
SHIM_EXPORT int execlp(const char* file, const char* arg, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, arg);
    std::vector<char*> argv = collect(arg, ap, nullptr);
    va_end(ap);
    return execvp(file, argv.data());
}
SHIM_EXPORT int execle(const char* path, const char* arg, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, arg);
    char** envp = nullptr;
    std::vector<char*> argv = collect(arg, ap, &envp);
    va_end(ap);
    return execve(path, argv.data(), envp);
}

// posix_spawn runs the child inside libc (its dup2 and exec never reach us):
// what it will inherit is released before the call.
SHIM_EXPORT int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa,
                            const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    SHIM_ENTER;
    release_for_spawn(fa);
    Env env;
    OsMaskOfThread mask;  // the child's, unless attr sets one
    int r = REAL(posix_spawn)(pid, path, fa, attr, argv, env_for_exec(envp, env));
    if (r == 0 && pid) track_child(*pid);
    return r;
}
SHIM_EXPORT int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* fa,
                             const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    SHIM_ENTER;
    release_for_spawn(fa);
    Env env;
    OsMaskOfThread mask;  // the child's, unless attr sets one
    int r = REAL(posix_spawnp)(pid, file, fa, attr, argv, env_for_exec(envp, env));
    if (r == 0 && pid) track_child(*pid);
    return r;
}

namespace greenshim::shim {
void vfork_records_after_fork_child() noexcept;  // (below)
}

SHIM_EXPORT pid_t fork(void) {
    SHIM_ENTER;
    if (in_vfork_child()) return REAL(fork)();  // (the parent's state is not the child's to change)
    if (config().enabled) fd_release_inheritable();
    // glibc forks as the OS thread (its TCB gets the child's tid, its lists
    // stay right); a greenlet thread with thread-locals of its own gets them
    // back after, with the child's tid.
    OsThreadLocalsScope as_os_thread;
    pid_t r = REAL(fork)();
    if (r == 0) {
        as_os_thread.after_fork_child();
        fork_child_takes_os_mask();
        own_fds_after_fork_child();
        if (Hub* hub = greenshim::detail::existing_hub()) hub->after_fork_child();
        threads_after_fork_child();
        sync_after_fork_child();
        stall_after_fork_child();
        vfork_records_after_fork_child();
        g_nchildren = 0;  // the parent's children are not ours
        g_children_lock.reset();  // (another OS thread may have held it at the fork)
    } else if (r > 0) {
        track_child(r);
    }
    return r;
}

// The setxid family: glibc makes every thread of the process change its ids
// by signalling each thread on its list, which a greenlet thread's own
// thread-locals are not on (it would signal the OS thread as another thread,
// forever): called as the OS thread.
#define GREENSHIM_AS_OS_THREAD(ret, fn, params, args) \
    SHIM_EXPORT ret fn params { SHIM_ENTER;                       \
        if (in_vfork_child()) return REAL(fn) args;   \
        OsThreadLocalsScope as_os_thread;             \
        return REAL(fn) args;                         \
    }
GREENSHIM_AS_OS_THREAD(int, setuid, (uid_t u), (u))
GREENSHIM_AS_OS_THREAD(int, setgid, (gid_t g), (g))
GREENSHIM_AS_OS_THREAD(int, seteuid, (uid_t u), (u))
GREENSHIM_AS_OS_THREAD(int, setegid, (gid_t g), (g))
GREENSHIM_AS_OS_THREAD(int, setreuid, (uid_t r, uid_t e), (r, e))
GREENSHIM_AS_OS_THREAD(int, setregid, (gid_t r, gid_t e), (r, e))
GREENSHIM_AS_OS_THREAD(int, setresuid, (uid_t r, uid_t e, uid_t s), (r, e, s))
GREENSHIM_AS_OS_THREAD(int, setresgid, (gid_t r, gid_t e, gid_t s), (r, e, s))
GREENSHIM_AS_OS_THREAD(int, setgroups, (size_t n, const gid_t* list), (n, list))
#undef GREENSHIM_AS_OS_THREAD

// popen's child is spawned inside libc: release what it inherits first.
SHIM_EXPORT FILE* popen(const char* command, const char* mode) {
    SHIM_ENTER;
    if (config().enabled) fd_release_inheritable();
    OsMaskOfThread mask;  // the shell's
    return REAL(popen)(command, mode);
}

// pclose closes the pipe inside libc: tell the hub first. Then it waits for
// the command inside libc, where the stall tick may hand a thread other than
// main to a carrier (call_libc).
SHIM_EXPORT int pclose(FILE* f) {
    SHIM_ENTER;
    int fd = f ? fileno(f) : -1;
    if (fd >= 0) {
        fd_closing(fd);
    }
    return call_libc(REAL(pclose), f);
}

// ---- vfork ----
//
// A real vfork (the child borrows the parent's memory until it execs or
// exits), not a fork: a fork copies the page tables and leaves the parent to
// take a copy-on-write fault for each page it writes while the child lives,
// and CPython's subprocess spawns with vfork. On the Firecracker VM of
// 2026-12, subprocess.run(["/bin/true"]) took 11.5 ms of the parent's CPU
// under the shim, fork and all, against 0.5 ms unpatched.
//
// vfork_x86_64.S is the exported vfork: like glibc's, it keeps its return
// address in a register across the system call, since the child returns
// first and reuses the stack; around the call it runs greenshim_vfork_begin
// and, in the parent, greenshim_vfork_end. From begin to end t_vfork is set:
// in the child the shim changes nothing of the parent's (shim.hpp,
// in_vfork_child) and records its fd copies here for its exec; the parent,
// waiting in the kernel meanwhile, reads that record when it is back.
// Other greenlet threads of the same OS thread wait too, as the child runs
// on that thread's memory: a child must exec or _exit without waiting for
// another thread of its parent (POSIX allows it nothing else either).
namespace greenshim::shim {
struct VforkRecord {
    static constexpr int kMaxCopies = 128;  // (beyond: not looked at by the exec)
    struct Copy {
        int from, to;
    };
    int depth = 0;            // the calling thread's t_shim_depth and t_hand_back, for the parent:
    bool hand_back = false;   // the child's exec never returns from its interposer
    OsMaskOfThread mask;      // the child starts with the calling thread's signal mask
    int ncopies = 0;
    Copy copies[kMaxCopies];  // the child's fd `to` is a copy of the parent's fd `from`
    int nreleased = 0;
    int released[kMaxCopies];  // the parent's fds whose description the child's exec made blocking
};
thread_local VforkRecord* t_vfork = nullptr;

// The records: one per OS thread in a vfork at a time, taken without malloc
// (a vfork may come where malloc may not, in a fork's child say). Pages of
// the array no vfork used stay untouched.
constexpr int kVforkRecords = 32;
GREENSHIM_COLD_BSS alignas(VforkRecord) unsigned char g_vfork_space[kVforkRecords][sizeof(VforkRecord)];
std::atomic<bool> g_vfork_taken[kVforkRecords];

// Another OS thread's vfork at the fork is not the child's.
void vfork_records_after_fork_child() noexcept {
    for (auto& taken : g_vfork_taken) taken.store(false, std::memory_order_relaxed);
}

void vfork_child_copied(int from, int to) noexcept {
    VforkRecord& v = *t_vfork;
    for (int i = 0; i < v.ncopies && from != to; ++i)
        if (v.copies[i].to == from) {  // a copy of a copy: of the parent's fd
            from = v.copies[i].from;
            break;
        }
    for (int i = 0; i < v.ncopies; ++i)
        if (v.copies[i].to == to) {
            v.copies[i].from = from;
            return;
        }
    if (v.ncopies < VforkRecord::kMaxCopies) v.copies[v.ncopies++] = {from, to};
}

// As fd_release_for_exec in a fork's child, for the fds the child copied or
// made inheritable (the parent released those it had inheritable before the
// vfork): an fd the new program inherits whose description the shim made
// non-blocking for the parent gets its blocking mode back, a pipe end as a
// description of its own. Nothing of the parent's is written but this
// record: its table is only read (fd_peek).
void vfork_child_release_for_exec() noexcept {
    VforkRecord& v = *t_vfork;
    for (int i = 0; i < v.ncopies; ++i) {
        auto [from, to] = v.copies[i];
        int fdfl = REAL(fcntl)(to, F_GETFD);
        int fl = REAL(fcntl)(to, F_GETFL);
        const FdState* s = fd_peek(from);
        if (fdfl < 0 || (fdfl & FD_CLOEXEC) || fl < 0 || !(fl & O_NONBLOCK) || !s || s->kind != FdKind::owned ||
            s->user_nonblock)
            continue;
        if (!s->socket && reopen_pipe_blocking(to)) continue;  // (the parent's description stays as it was)
        if (REAL(fcntl)(to, F_SETFL, fl & ~O_NONBLOCK) != 0) continue;
        bool noted = false;
        for (int k = 0; k < v.nreleased; ++k) noted |= v.released[k] == from;
        if (!noted) v.released[v.nreleased++] = from;
    }
}
}  // namespace greenshim::shim

// Before the system call, in the caller: 1 to go on with it, 0 to fork
// instead (32 OS threads in a vfork at once; or a vfork child's own vfork).
extern "C" __attribute__((visibility("hidden"))) int greenshim_vfork_begin() noexcept {
    if (t_carried) come_back_from_carrier();  // (the hub's OS thread's memory is the one to lend)
    if (in_vfork_child()) return 0;
    int slot = 0;
    while (slot < kVforkRecords && g_vfork_taken[slot].exchange(true, std::memory_order_acquire)) ++slot;
    if (slot == kVforkRecords) return 0;
    if (config().enabled) fd_release_inheritable();  // as fork does
    auto* v = new (g_vfork_space[slot]) VforkRecord();
    v->depth = t_shim_depth;
    v->hand_back = t_hand_back;
    // In the shim until end: the stall tick, which may come as the system
    // call returns in the parent, must not take the thread back before end
    // has cleared t_vfork (with shared thread-locals, every greenlet thread
    // of this OS thread would read it).
    t_shim_depth = v->depth + 1;
    t_hand_back = false;
    t_vfork = v;
    return 1;
}

// In the parent, once the child has exec'd or exited: the system call's
// result (the child's pid, or -errno) as vfork returns it.
extern "C" __attribute__((visibility("hidden"))) long greenshim_vfork_end(long r) noexcept {
    int child_errno = errno;  // (the child's last, in the thread-locals it shared: as unpatched)
    VforkRecord* v = t_vfork;
    t_vfork = nullptr;
    t_shim_depth = v->depth;
    t_hand_back = v->hand_back;
    for (int k = 0; k < v->nreleased; ++k) fd_release(v->released[k]);  // borrowed from now on
    v->~VforkRecord();  // (the signal mask back)
    g_vfork_taken[(reinterpret_cast<unsigned char*>(v) - g_vfork_space[0]) / sizeof(VforkRecord)].store(
        false, std::memory_order_release);
    if (r < 0) {
        errno = int(-r);
        return -1;
    }
    track_child(pid_t(r));
    errno = child_errno;
    return r;
}

// The fork in place of a vfork (greenshim_vfork_begin's 0), or the whole
// vfork where the assembly is not built (another architecture, a sanitizer
// build: ASan and TSan have their own vfork).
extern "C" __attribute__((visibility("hidden"))) pid_t greenshim_vfork_as_fork() { return fork(); }
#if !GREENSHIM_VFORK_ASM
SHIM_EXPORT pid_t vfork(void) { SHIM_ENTER; return fork(); }
#endif

// ---- waiting for children ----
//
// waitpid & co. ask the kernel with WNOHANG; while nothing has changed they
// park: on a pidfd (readable when that child exits) when waiting for one
// child's exit, else on a short timer that backs off from 1 ms to 20 ms (no
// SIGCHLD handler of ours is needed, so the program's own is untouched).
//
// A tracer is also told of its tracees' stops, without WUNTRACED
// (ptrace(2)), and no fd says so. strace hung so in its first wait. Once the
// process has traced (any ptrace request but PTRACE_TRACEME, which makes the
// caller a tracee), its waits re-ask on the short timer; and with nothing
// else on its hub to run meanwhile (strace, gdb, ltrace are single-threaded)
// they are the real blocking call, which sees each stop at once. Beside the
// pidfds the timer runs too, backing off to 1 s: a parent whose child made
// itself a tracee has not called ptrace yet at its first wait.
namespace {

std::atomic<bool> g_traces{false};

bool is_exit_only(int options) {
    return !(options & (WUNTRACED | WCONTINUED | WSTOPPED)) && !g_traces.load(std::memory_order_relaxed);
}

// The real blocking call is the tracer's wait: no other greenlet of its hub
// could run meanwhile. Cost: a load, when the process has never traced.
bool tracer_alone() noexcept {
    if (!g_traces.load(std::memory_order_relaxed)) return false;
    Hub* hub = greenshim::detail::existing_hub();
    return !hub || hub->alone();
}

// A pidfd of child pid for a wait, among the shim's own fds (own_fd_made):
// not at the lowest free number, which is the program's next open's (and a
// fork child of another thread would inherit it). -1 if pid is not a child.
int child_pidfd(pid_t pid) noexcept {
    int fd = int(::syscall(SYS_pidfd_open, pid, 0));
    return fd < 0 ? -1 : own_fd_made(fd, OwnFd::child_wait);
}

// 0 to ask again, -1 with errno EINTR.
int park_for_child(pid_t pid, int options, std::int64_t& backoff_ns, Interruptible mode) {
    std::vector<FdWait> waits;
    if (is_exit_only(options)) {
        if (pid > 0) {
            waits.push_back({child_pidfd(pid), kReadable, 0});
        } else {
            ChildrenLock held(g_children_lock);
            std::size_t kept = 0;
            for (std::size_t i = 0; i < g_nchildren; ++i) {
                int fd = child_pidfd(g_children[i]);
                if (fd < 0) continue;  // reaped (or never ours): forget it
                g_children[kept++] = g_children[i];
                waits.push_back({fd, kReadable, 0});
            }
            g_nchildren = kept;
        }
        if (!waits.empty() && waits[0].fd < 0) waits.clear();
    }
    // Re-ask on a timer backing off from 1 ms to 20 ms; beside pidfds (see
    // above for why there is a timer then) from 100 ms to 1 s, so that a
    // wait for a child's exit costs no more than a few rounds.
    if (!waits.empty() && backoff_ns < 100000000) backoff_ns = 100000000;
    Deadline d = deadline_after_ns(backoff_ns);
    std::int64_t cap = waits.empty() ? 20000000 : 1000000000;
    backoff_ns = backoff_ns * 2 > cap ? cap : backoff_ns * 2;
    static WaitSite waiting{"waitpid", "process", WaitSite::Arg::pid};
    int r = park_as(waiting, pid, mode, EndsBy::other_thread,
                    [&](Hub& hub) { return hub.wait_fds(waits.data(), waits.size(), d); });
    for (FdWait& fw : waits) {
        fd_closing(fw.fd);  // (its watcher goes)
        own_fd_closing(fw.fd);
        REAL(close)(fw.fd);
    }
    if (r == -EINTR || r == -ENOMEM) {
        errno = -r;
        return -1;
    }
    return 0;  // a child may have changed state (or the backoff timer ran out): ask again
}

// cancellation_point: waitpid, wait and waitid are; wait3 and wait4 are not.
template <class Try>
auto wait_child(pid_t pid, int options, Try&& try_now, bool cancellation_point = true) -> decltype(try_now()) {
    Interruptible mode = cancellation_point ? cancellable(Interruptible::unless_restart) : Interruptible::unless_restart;
    std::int64_t backoff = 1000000;
    for (;;) {
        auto r = try_now();
        if (r != 0) return r;  // a child changed state, or an error (ECHILD, EINVAL)
        if (park_for_child(pid, options, backoff, mode) < 0) return -1;
    }
}

}  // namespace

SHIM_EXPORT pid_t waitpid(pid_t pid, int* status, int options) {
    SHIM_CANCEL_POINT;
    if (!may_park() || (options & WNOHANG) || tracer_alone()) return REAL(waitpid)(pid, status, options);
    return wait_child(pid, options, [&] { return REAL(waitpid)(pid, status, options | WNOHANG); });
}

SHIM_EXPORT pid_t wait(int* status) { SHIM_CANCEL_POINT; return waitpid(-1, status, 0); }

SHIM_EXPORT pid_t wait4(pid_t pid, int* status, int options, struct rusage* ru) {
    SHIM_ENTER;
    if (!may_park() || (options & WNOHANG) || tracer_alone()) return REAL(wait4)(pid, status, options, ru);
    return wait_child(pid, options, [&] { return REAL(wait4)(pid, status, options | WNOHANG, ru); }, false);
}

SHIM_EXPORT pid_t wait3(int* status, int options, struct rusage* ru) { SHIM_ENTER; return wait4(-1, status, options, ru); }

SHIM_EXPORT int waitid(idtype_t type, id_t id, siginfo_t* info, int options) {
    SHIM_CANCEL_POINT;
    if (!may_park() || (options & WNOHANG) || tracer_alone()) return REAL(waitid)(type, id, info, options);
    pid_t pid = type == P_PID ? pid_t(id) : -1;
    int opts = (options & WEXITED) && !(options & (WSTOPPED | WCONTINUED)) ? 0 : WUNTRACED;
    // Ask into our own siginfo, leaving the child waitable (WNOWAIT); then
    // the real call fills the caller's, which may be NULL (allowed) or bad
    // (EFAULT: the kernel's to say, not ours to crash on).
    int r = wait_child(pid, opts, [&]() -> int {
        siginfo_t probe;
        probe.si_pid = 0;
        if (REAL(waitid)(type, id, &probe, options | WNOHANG | WNOWAIT) < 0) return -1;
        return probe.si_pid != 0 ? 1 : 0;
    });
    return r < 0 ? -1 : REAL(waitid)(type, id, info, options | WNOHANG);
}

// Only watched (see "waiting for children"): the call is libc's.
SHIM_EXPORT long ptrace(enum __ptrace_request request, ...) {
    SHIM_ENTER;
    va_list ap;
    va_start(ap, request);  // (glibc's reads all three, whatever the request)
    pid_t pid = va_arg(ap, pid_t);
    void* addr = va_arg(ap, void*);
    void* data = va_arg(ap, void*);
    va_end(ap);
    if (request != PTRACE_TRACEME) g_traces.store(true, std::memory_order_relaxed);
    return REAL(ptrace)(request, pid, addr, data);
}

// system(): glibc's runs and waits for the shell inside libc, blocking the
// thread; this one spawns it with posix_spawn and waits like waitpid.
// (The parent does not ignore SIGINT/SIGQUIT meanwhile: other greenlets run.)
SHIM_EXPORT int system(const char* command) {
    SHIM_CANCEL_POINT;
    if (!may_park()) return REAL(system)(command);
    if (!command) return 1;  // a shell is there
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t dfl;
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGQUIT);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    const char* argv[] = {"sh", "-c", "--", command, nullptr};
    pid_t pid;
    int err = posix_spawn(&pid, "/bin/sh", nullptr, &attr, const_cast<char* const*>(argv), environ);
    posix_spawnattr_destroy(&attr);
    if (err) return 127 << 8;  // as if the shell exited with 127
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR || cancel_woke()) return -1;  // (a cancellation: system acts as it returns)
    }
    return status;
}
