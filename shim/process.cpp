// fork and exec. Before exec, every fd the new program inherits is put back
// in the blocking mode this program set (exec_prepare); if exec fails the
// shim's own mode comes back. After fork the child's hub is re-initialised.
#include <stdarg.h>

#include <vector>

#include "shim.hpp"
#include "thread.hpp"

using namespace greenshim;
using namespace greenshim::shim;

extern char** environ;

namespace {

template <class Exec>
int around_exec(Exec&& exec) {
    exec_prepare();
    int r = exec();
    int err = errno;
    exec_failed();
    errno = err;
    return r;
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
    return around_exec([&] { return REAL(execve)(path, argv, envp); });
}
SHIM_EXPORT int execv(const char* path, char* const argv[]) {
    return around_exec([&] { return REAL(execv)(path, argv); });
}
SHIM_EXPORT int execvp(const char* file, char* const argv[]) {
    return around_exec([&] { return REAL(execvp)(file, argv); });
}
SHIM_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
    return around_exec([&] { return REAL(execvpe)(file, argv, envp); });
}
SHIM_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
    return around_exec([&] { return REAL(fexecve)(fd, argv, envp); });
}

SHIM_EXPORT int execl(const char* path, const char* arg, ...) {
    va_list ap;
    va_start(ap, arg);
    std::vector<char*> argv = collect(arg, ap, nullptr);
    va_end(ap);
    return execv(path, argv.data());
}
SHIM_EXPORT int execlp(const char* file, const char* arg, ...) {
    va_list ap;
    va_start(ap, arg);
    std::vector<char*> argv = collect(arg, ap, nullptr);
    va_end(ap);
    return execvp(file, argv.data());
}
SHIM_EXPORT int execle(const char* path, const char* arg, ...) {
    va_list ap;
    va_start(ap, arg);
    char** envp = nullptr;
    std::vector<char*> argv = collect(arg, ap, &envp);
    va_end(ap);
    return execve(path, argv.data(), envp);
}

// posix_spawn runs the child inside libc (its dup2 and exec never reach us),
// so the blocking modes are set around the whole call; the parent gets its
// own back as soon as it returns.
SHIM_EXPORT int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa,
                            const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    exec_prepare();
    int r = REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
    exec_failed();
    return r;
}
SHIM_EXPORT int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* fa,
                             const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    exec_prepare();
    int r = REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
    exec_failed();
    return r;
}

SHIM_EXPORT pid_t fork(void) {
    pid_t r = REAL(fork)();
    if (r == 0) {
        if (Hub* hub = Hub::existing()) hub->after_fork_child();
        threads_after_fork_child();
    }
    return r;
}

// vfork's child borrows the parent's memory, and our table with it: the
// child's dup2/exec bookkeeping would rewrite the parent's. A real fork is a
// correct vfork (POSIX allows it), so that is what the child gets.
SHIM_EXPORT pid_t vfork(void) { return fork(); }
