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
    if (io.mode == IoMode::pass) return;
    // Until really readable: a wake is only a hint (another greenlet woken
    // with us may have read the data first).
    while (!ready_now(fd, kReadable)) {
        if (park_until_ready(fd, kReadable, kForever) < 0) return;  // EINTR & co.: the real call reports what it meets
    }
}
}  // namespace

SHIM_EXPORT char* fgets(char* s, int n, FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(fgets)(s, n, f);
}
SHIM_EXPORT int fgetc(FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(fgetc)(f);
}
SHIM_EXPORT int getc(FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(getc)(f);
}
SHIM_EXPORT int getchar(void) {
    SHIM_CANCEL_POINT;
    wait_readable(stdin);
    return REAL(getchar)();
}
SHIM_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(fread)(p, size, n, f);
}
SHIM_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(getdelim)(line, n, delim, f);
}
SHIM_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) {
    SHIM_CANCEL_POINT;
    wait_readable(f);
    return REAL(getline)(line, n, f);
}
extern "C" char* __fgets_chk(char* s, size_t size, int n, FILE* f);
SHIM_EXPORT char* __fgets_chk(char* s, size_t size, int n, FILE* f) {
    SHIM_CANCEL_POINT;
    static decltype(&::__fgets_chk) real_fgets_chk = nullptr;
    auto real = real_fn(real_fgets_chk, "__fgets_chk");
    wait_readable(f);
    return real(s, size, n, f);
}
