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
// False if a cancellation ended the wait: the call then returns at once
// (its CancelPoint ends the thread) instead of reading in the kernel.
bool wait_readable(FILE* f) {
    if (!f || !may_park()) return true;
    if (f->_IO_read_ptr < f->_IO_read_end) return true;  // buffered: no kernel read
    int fd = fileno(f);
    if (fd < 0) return true;
    IoFd io = io_fd(fd);
    if (io.mode == IoMode::pass) return true;
    // Until really readable: a wake is only a hint (another greenlet woken
    // with us may have read the data first).
    while (!ready_now(fd, kReadable)) {
        if (park_until_ready(fd, kReadable, kForever) < 0)
            return !cancel_woke();  // EINTR & co.: the real call reports what it meets
    }
    return true;
}
}  // namespace

SHIM_EXPORT char* fgets(char* s, int n, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return nullptr;
    return REAL(fgets)(s, n, f);
}
SHIM_EXPORT int fgetc(FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return EOF;
    return REAL(fgetc)(f);
}
SHIM_EXPORT int getc(FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return EOF;
    return REAL(getc)(f);
}
SHIM_EXPORT int getchar(void) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(stdin)) return EOF;
    return REAL(getchar)();
}
SHIM_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return 0;
    return REAL(fread)(p, size, n, f);
}
SHIM_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return -1;
    return REAL(getdelim)(line, n, delim, f);
}
SHIM_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return -1;
    return REAL(getline)(line, n, f);
}
extern "C" char* __fgets_chk(char* s, size_t size, int n, FILE* f);
SHIM_EXPORT char* __fgets_chk(char* s, size_t size, int n, FILE* f) {
    SHIM_CANCEL_POINT;
    static decltype(&::__fgets_chk) real_fgets_chk = nullptr;
    auto real = real_fn(real_fgets_chk, "__fgets_chk");
    if (!wait_readable(f)) return nullptr;
    return real(s, size, n, f);
}
