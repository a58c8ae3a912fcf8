// stdio reads. glibc's FILE functions read through libc's internal read,
// which no interposer sees: a blocking fgets on an empty pipe would stop the
// one OS thread, and with it the greenlet that was about to write the line.
// So before a read that must go to the kernel (the FILE's buffer is empty),
// the greenlet parks until the fd is readable; the real function then finds
// data. A line that arrives in pieces still blocks in libc between pieces,
// and so does a write to a full pipe (fwrite, printf: not interposed): the
// stall tick hands such a thread to a carrier (stall.cpp, libc_syscall), so
// the real read runs as the program's own code (call_libc). The main thread
// too: it takes its OS thread's block along (Hub::let_main_be_handed_off).
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
    return call_libc(REAL(fgets), s, n, f);
}
SHIM_EXPORT int fgetc(FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return EOF;
    return call_libc(REAL(fgetc), f);
}
SHIM_EXPORT int getc(FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return EOF;
    return call_libc(REAL(getc), f);
}
SHIM_EXPORT int getchar(void) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(stdin)) return EOF;
    return call_libc(REAL(getchar));
}
SHIM_EXPORT size_t fread(void* p, size_t size, size_t n, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return 0;
    return call_libc(REAL(fread), p, size, n, f);
}
SHIM_EXPORT ssize_t getdelim(char** line, size_t* n, int delim, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return -1;
    return call_libc(REAL(getdelim), line, n, delim, f);
}
SHIM_EXPORT ssize_t getline(char** line, size_t* n, FILE* f) {
    SHIM_CANCEL_POINT;
    if (!wait_readable(f)) return -1;
    return call_libc(REAL(getline), line, n, f);
}
extern "C" char* __fgets_chk(char* s, size_t size, int n, FILE* f);
SHIM_EXPORT char* __fgets_chk(char* s, size_t size, int n, FILE* f) {
    SHIM_CANCEL_POINT;
    static decltype(&::__fgets_chk) real_fgets_chk = nullptr;
    auto real = real_fn(real_fgets_chk, "__fgets_chk");
    if (!wait_readable(f)) return nullptr;
    return call_libc(real, s, size, n, f);
}
