// stdio reads. glibc's FILE functions read through libc's internal read,
// which no interposer sees: a blocking fgets on an empty pipe would stop the
// one OS thread, and with it the greenlet that was about to write the line.
// So before a read that must go to the kernel (the FILE's buffer is empty),
// the greenlet parks until the fd is readable; the real function then finds
// data. (A line that arrives in pieces can still block the thread between
// pieces; writes to a full pipe are not covered: README.)
#include <stdio.h>

#include "shim.hpp"

using namespace greenshim;
using namespace greenshim::shim;

namespace {
void wait_readable(FILE* f) {
    if (!f || !may_park()) return;
    if (f->_IO_read_ptr < f->_IO_read_end) return;  // buffered: no kernel read
    int fd = fileno(f);
    if (fd < 0) return;
    IoFd io = io_fd(fd);
    if (io.mode == IoMode::pass || ready_now(fd, kReadable)) return;
    park_until_ready(fd, kReadable, kForever);  // EINTR & co.: the real call reports what it meets
}

template <class F>
F real_stdio(F& slot, const char* name) {
    return real_fn(slot, name);
}
#define STDIO_REAL(fn)                        \
    static decltype(&::fn) real_##fn = nullptr; \
    auto real = real_stdio(real_##fn, #fn)
}  // namespace

SHIM_EXPORT char* fgets(char* s, int n, FILE* f) {
    STDIO_REAL(fgets);
    wait_readable(f);
    return real(s, n, f);
}
SHIM_EXPORT int fgetc(FILE* f) {
    STDIO_REAL(fgetc);
    wait_readable(f);
    return real(f);
}
SHIM_EXPORT int getc(FILE* f) {
    STDIO_REAL(getc);
    wait_readable(f);
    return real(f);
}
SHIM_EXPORT int getchar(void) {
    STDIO_REAL(getchar);
    wait_readable(stdin);
    return real();
}
SHIM_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
    STDIO_REAL(fread);
    wait_readable(f);
    return real(p, size, n, f);
}
SHIM_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
    STDIO_REAL(getdelim);
    wait_readable(f);
    return real(line, n, delim, f);
}
SHIM_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) {
    STDIO_REAL(getline);
    wait_readable(f);
    return real(line, n, f);
}
extern "C" char* __fgets_chk(char* s, size_t size, int n, FILE* f);
SHIM_EXPORT char* __fgets_chk(char* s, size_t size, int n, FILE* f) {
    STDIO_REAL(__fgets_chk);
    wait_readable(f);
    return real(s, size, n, f);
}
