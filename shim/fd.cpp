// The per-fd table: what the shim knows of each fd, indexed by fd number.
//
// Two levels of lazily mmap'd chunks, so the lookup on the fast path is two
// loads and no lock. An fd the shim did not see created (inherited, opened
// before the library initialised, made by a raw syscall or inside libc) is
// discovered on first use with fstat + F_GETFL, never assumed.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.hpp"

namespace greenshim::shim {


namespace {
constexpr int kChunkBits = 12;
constexpr int kChunkSize = 1 << kChunkBits;
constexpr int kChunks = 1 << 11;  // fds up to 8M
FdState* g_chunks[kChunks];

FdState* chunk_for(int fd, bool create) noexcept {
    int c = fd >> kChunkBits;
    if (c >= kChunks) return nullptr;
    FdState* chunk = __atomic_load_n(&g_chunks[c], __ATOMIC_ACQUIRE);
    if (chunk || !create) return chunk;
    void* p = ::mmap(nullptr, sizeof(FdState) * kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p == MAP_FAILED) return nullptr;
    auto* fresh = new (p) FdState[kChunkSize];
    FdState* expected = nullptr;
    if (!__atomic_compare_exchange_n(&g_chunks[c], &expected, fresh, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        ::munmap(p, sizeof(FdState) * kChunkSize);
        return expected;
    }
    return fresh;
}

void discover(int fd, FdState& s) noexcept {
    struct stat st;
    if (::fstat(fd, &st) != 0) return;  // EBADF: the real call will say so
    FdState d;
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFBLK:
        d.kind = FdKind::plain;
        s = d;
        return;
    default:
        break;
    }
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0) return;
    d.kind = FdKind::borrowed;
    d.user_nonblock = (fl & O_NONBLOCK) != 0;
    if (S_ISSOCK(st.st_mode)) {
        d.socket = true;
        int type = 0;
        socklen_t len = sizeof type;
        if (REAL(getsockopt)(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) d.stream = type == SOCK_STREAM;
    }
    s = d;
}
}  // namespace

FdState* fd_slot(int fd) noexcept {
    if (fd < 0) return nullptr;
    FdState* chunk = chunk_for(fd, true);
    return chunk ? &chunk[fd & (kChunkSize - 1)] : nullptr;
}

FdState* fd_known(int fd) noexcept {
    FdState* s = fd_slot(fd);
    if (s && s->kind == FdKind::unknown) {
        discover(fd, *s);
        if (s->kind == FdKind::unknown) return nullptr;
    }
    return s;
}

void fd_created(int fd, bool socket, bool stream, bool user_nonblock) noexcept {
    if (FdState* s = fd_slot(fd)) {
        FdState d;
        d.kind = FdKind::owned;
        d.socket = socket;
        d.stream = stream;
        d.user_nonblock = user_nonblock;
        *s = d;
    }
}

void fd_forget(int fd) noexcept {
    if (fd < 0) return;
    FdState* chunk = chunk_for(fd, false);
    if (chunk) chunk[fd & (kChunkSize - 1)] = FdState{};
}

void fd_copy(int oldfd, int newfd) noexcept {
    FdState* from = fd_slot(oldfd);
    FdState* to = fd_slot(newfd);
    if (from && to) *to = *from;
}

IoFd io_fd(int fd) noexcept {
    if (!may_park()) return {fd, IoMode::pass, nullptr};
    FdState* s = fd_known(fd);
    if (!s || s->kind == FdKind::plain || s->user_nonblock) return {fd, IoMode::pass, s};
    if (s->socket) return {fd, IoMode::socket, s};
    return {fd, s->kind == FdKind::owned ? IoMode::nbfd : IoMode::probe, s};
}

Deadline recv_deadline(const IoFd& f) noexcept {
    return f.st && f.st->rcvtimeo_ns > 0 ? deadline_after_ns(f.st->rcvtimeo_ns) : kForever;
}
Deadline send_deadline(const IoFd& f) noexcept {
    return f.st && f.st->sndtimeo_ns > 0 ? deadline_after_ns(f.st->sndtimeo_ns) : kForever;
}

// exec: an owned fd that survives exec goes to a program that knows nothing of
// the shim; it must get the blocking mode this program set. (The description
// may be shared with our parent process after fork; sockets keep working there
// because the shim uses MSG_DONTWAIT on them rather than relying on O_NONBLOCK.)
namespace {
int g_exec_restored[1024];
int g_exec_restored_n = 0;
}  // namespace

void exec_prepare() noexcept {
    g_exec_restored_n = 0;
    for (int c = 0; c < kChunks; ++c) {
        FdState* chunk = __atomic_load_n(&g_chunks[c], __ATOMIC_ACQUIRE);
        if (!chunk) continue;
        for (int i = 0; i < kChunkSize; ++i) {
            FdState& s = chunk[i];
            if (s.kind != FdKind::owned || s.user_nonblock) continue;
            int fd = (c << kChunkBits) | i;
            int fdfl = REAL(fcntl)(fd, F_GETFD);
            if (fdfl < 0 || (fdfl & FD_CLOEXEC)) continue;
            int fl = REAL(fcntl)(fd, F_GETFL);
            if (fl < 0 || !(fl & O_NONBLOCK)) continue;
            REAL(fcntl)(fd, F_SETFL, fl & ~O_NONBLOCK);
            if (g_exec_restored_n < 1024) g_exec_restored[g_exec_restored_n++] = fd;
        }
    }
}

void exec_failed() noexcept {
    for (int i = 0; i < g_exec_restored_n; ++i) {
        int fd = g_exec_restored[i];
        int fl = REAL(fcntl)(fd, F_GETFL);
        if (fl >= 0) REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK);
    }
    g_exec_restored_n = 0;
}

}  // namespace greenshim::shim
