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
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>

#include "greenshim/cold.hpp"
#include "shim.hpp"

namespace greenshim::shim {


namespace {
constexpr int kChunkBits = 12;
constexpr int kChunkSize = 1 << kChunkBits;
constexpr int kChunks = 1 << 11;  // fds up to 8M
GREENSHIM_COLD_BSS FdState* g_chunks[kChunks];
std::uint32_t g_next_group = 0;

std::uint32_t new_group() noexcept { return __atomic_add_fetch(&g_next_group, 1, __ATOMIC_RELAXED); }

// Calls fn(fd, state) for every entry of every chunk made so far.
template <class Fn>
void for_each_fd(Fn&& fn) noexcept {
    for (int c = 0; c < kChunks; ++c) {
        FdState* chunk = __atomic_load_n(&g_chunks[c], __ATOMIC_ACQUIRE);
        if (!chunk) continue;
        for (int i = 0; i < kChunkSize; ++i) fn((c << kChunkBits) | i, chunk[i]);
    }
}

FdState* chunk_for(int fd, bool create) noexcept {
    int c = fd >> kChunkBits;
    if (c >= kChunks) return nullptr;
    FdState* chunk = __atomic_load_n(&g_chunks[c], __ATOMIC_ACQUIRE);
    if (chunk || !create) return chunk;
    void* p = ::mmap(nullptr, sizeof(FdState) * kChunkSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // Not constructed: the zero pages the kernel gives are already 4,096
    // FdState{} (shim.hpp: every member's default is zero), and writing them
    // would dirty all 32 pages at the first fd any program uses: +0.6 ms on
    // every process's start where a first write to a page is dear (~20 us
    // on a PVM guest). Pages stay untouched until their fds are used.
    auto* fresh = static_cast<FdState*>(p);
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
    d.group = new_group();
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

int fd_table_size() noexcept {
    for (int c = kChunks - 1; c >= 0; --c)
        if (__atomic_load_n(&g_chunks[c], __ATOMIC_ACQUIRE)) return (c + 1) << kChunkBits;
    return 0;
}

FdState* fd_slot(int fd) noexcept {
    if (fd < 0) return nullptr;
    FdState* chunk = chunk_for(fd, true);
    return chunk ? &chunk[fd & (kChunkSize - 1)] : nullptr;
}

const FdState* fd_peek(int fd) noexcept {
    FdState* chunk = fd < 0 ? nullptr : chunk_for(fd, false);
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

// In vfork's child each event below changes nothing (the table and the hubs
// are the parent's: shim.hpp, in_vfork_child); a copy is recorded for its exec.
void fd_replacing(int newfd) noexcept {
    if (in_vfork_child()) return;
    // Telling other hubs takes locks and allocates: not from a signal handler.
    bool tell = !in_signal_handler();
    if (Hub* hub = greenshim::detail::existing_hub()) hub->fd_closed(newfd, tell);
    else Hub::fd_closed_off_hub(newfd, tell);  // (a helper's or a foreign thread's close: the hubs that watch it hear)
}

void fd_forget(int fd) noexcept {
    if (fd < 0 || in_vfork_child()) return;
    fd_replacing(fd);
    FdState* chunk = chunk_for(fd, false);
    if (chunk) chunk[fd & (kChunkSize - 1)] = FdState{};
}

void fd_closing(int fd) noexcept { fd_forget(fd); }

void fd_created(int fd, FdMade what, bool user_nonblock, MadeNonBlocking) noexcept {
    if (in_vfork_child()) return;
    fd_replacing(fd);  // a number reused after a close we never saw (inside libc): no stale watcher
    if (FdState* s = fd_slot(fd)) {
        FdState d;
        d.kind = FdKind::owned;
        d.group = new_group();
        d.socket = what.socket;
        d.stream = what.stream;
        d.user_nonblock = user_nonblock;
        *s = d;
    }
}

void fd_copy(int oldfd, int newfd) noexcept {
    if (in_vfork_child()) return vfork_child_copied(oldfd, newfd);
    fd_replacing(newfd);
    FdState* from = fd_slot(oldfd);
    FdState* to = fd_slot(newfd);
    if (!from || !to) return;
    if (from->kind != FdKind::unknown) from->shared = true;
    *to = *from;
}

void fd_set_user_nonblock(int fd, bool on) noexcept {
    if (in_vfork_child()) return;
    FdState* s = fd_slot(fd);
    if (!s) return;
    s->user_nonblock = on;
    if (!s->shared) return;
    std::uint32_t group = s->group;
    for_each_fd([&](int, FdState& e) {
        if (e.group == group && e.kind != FdKind::unknown) e.user_nonblock = on;
    });
}

IoFd io_fd(int fd) noexcept {
    Hub* hub;
    if (!may_park(hub)) return {fd, IoMode::pass, nullptr};
    coop_tick(hub);  // first: the fd may be another one after a yield
    FdState* s = fd_known(fd);
    if (!s || s->kind == FdKind::plain || s->user_nonblock) return {fd, IoMode::pass, s};
    if (s->socket) return {fd, IoMode::socket, s};
    return {fd, s->kind == FdKind::owned ? IoMode::nbfd : IoMode::probe, s};
}

namespace {
// 0: none; negative: the socket does not wait at all (a negative timeout set).
Deadline timeout_deadline(std::int64_t ns) noexcept {
    if (ns == 0) return kForever;
    return ns < 0 ? monotonic_ns() : deadline_after_ns(ns);
}
}  // namespace

Deadline recv_deadline(const IoFd& f) noexcept { return f.st ? timeout_deadline(f.st->rcvtimeo_ns) : kForever; }
Deadline send_deadline(const IoFd& f) noexcept { return f.st ? timeout_deadline(f.st->sndtimeo_ns) : kForever; }

// A description that leaves the process (inherited over fork, exec or
// posix_spawn, or sent with SCM_RIGHTS) is shared with a program that knows
// nothing of our O_NONBLOCK. It gets back the blocking mode this program set,
// and from then on the shim stops relying on O_NONBLOCK for it here too: it
// becomes borrowed (sockets use MSG_DONTWAIT, other fds are polled before
// each call), so neither side is ever surprised.
void fd_release(int fd) noexcept {
    if (in_vfork_child()) return;
    FdState* s = fd_slot(fd);
    if (!s || s->kind != FdKind::owned || s->user_nonblock) return;
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) REAL(fcntl)(fd, F_SETFL, fl & ~O_NONBLOCK);
    std::uint32_t group = s->group;
    s->kind = FdKind::borrowed;
    if (!s->shared) return;
    for_each_fd([&](int, FdState& e) {  // its dups share the description: borrowed too
        if (e.group == group && e.kind == FdKind::owned) e.kind = FdKind::borrowed;
    });
}

void fd_release_inheritable() noexcept {
    if (in_vfork_child()) return;
    for_each_fd([](int fd, FdState& s) {
        if (s.kind != FdKind::owned || s.user_nonblock) return;
        int fdfl = REAL(fcntl)(fd, F_GETFD);
        if (fdfl >= 0 && !(fdfl & FD_CLOEXEC)) fd_release(fd);
    });
}

// A pipe end gets a description of its own, blocking, in place: the pipe
// reopened through /proc (O_NONBLOCK only for the open, which must never
// wait for a partner), then moved onto fd. False if that cannot be done.
bool reopen_pipe_blocking(int fd) noexcept {
    struct stat st;
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0 || fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
    char path[32];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int fresh = REAL(open)(path, (fl & O_ACCMODE) | O_NONBLOCK | O_CLOEXEC);
    if (fresh < 0) return false;
    bool ok = REAL(fcntl)(fresh, F_SETFL, fl & ~O_NONBLOCK) == 0 && REAL(dup2)(fresh, fd) == fd;
    REAL(close)(fresh);
    return ok;
}

// Before exec: what the new program inherits must block as it expects. A
// description made inheritable since the last fork may still be shared with
// the process that forked us, which relies on its O_NONBLOCK (CPython's
// multiprocessing "spawn" hands a child dups of the parent's own pipe ends):
// a pipe end gets a blocking description of its own instead, and only other
// kinds of fd get their shared description's mode back (fd_release).
void fd_release_for_exec() noexcept {
    for_each_fd([](int fd, FdState& s) {
        if (s.kind != FdKind::owned || s.user_nonblock) return;
        int fdfl = REAL(fcntl)(fd, F_GETFD);
        if (fdfl < 0 || (fdfl & FD_CLOEXEC)) return;
        if (!s.socket && reopen_pipe_blocking(fd)) s.kind = FdKind::borrowed;  // (if the exec fails)
        else fd_release(fd);
    });
}

}  // namespace greenshim::shim

// ---- the hubs' own fds (shim.hpp) ----
namespace greenshim::shim {
namespace {
constexpr int kMaxOwnFds = 256;  // two a hub, one a waitpid's child
struct OwnFdSlot {
    std::atomic<int> fd_plus1{0};       // 0: a free slot
    std::atomic<const void*> thread{};  // a hub's: its OS thread (t_own_fd_thread's address); a pidfd's: none
};
GREENSHIM_COLD_BSS OwnFdSlot g_own_fds[kMaxOwnFds];
std::atomic<int> g_own_fd_slots{0};      // slots ever used: the scans stop there
std::atomic<int> g_own_fd_min{INT_MAX};  // none below: the program's low numbers are a quick no
thread_local char t_own_fd_thread;        // its address names this OS thread (a fork's child keeps it)

int own_fd_base() noexcept {
    struct rlimit rl;
    long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? long(rl.rlim_cur) : 4096;
    if (top > 4096) top = 4096;
    return top - 64 > 3 ? int(top - 64) : 3;
}
}  // namespace

int own_fd_made(int fd, OwnFd what) noexcept {
    if (fd < 0) return fd;
    int high = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, own_fd_base());
    if (high >= 0) {
        REAL(close)(fd);
        fd = high;
    }  // (else: where it is, guarded all the same)
    fd_forget(fd);
    for (int i = 0; i < kMaxOwnFds; ++i) {
        int free_slot = 0;
        if (!g_own_fds[i].fd_plus1.compare_exchange_strong(free_slot, fd + 1)) continue;
        g_own_fds[i].thread.store(what == OwnFd::loop ? &t_own_fd_thread : nullptr);
        int used = g_own_fd_slots.load();
        while (used < i + 1 && !g_own_fd_slots.compare_exchange_weak(used, i + 1)) {
        }
        int low = g_own_fd_min.load();
        while (fd < low && !g_own_fd_min.compare_exchange_weak(low, fd)) {
        }
        break;
    }
    return fd;
}

bool is_own_fd(int fd) noexcept {
    if (fd < g_own_fd_min.load(std::memory_order_relaxed)) return false;
    int n = g_own_fd_slots.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
        if (g_own_fds[i].fd_plus1.load(std::memory_order_relaxed) == fd + 1) return true;
    return false;
}

void own_fd_closing(int fd) noexcept {
    int n = g_own_fd_slots.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
        int want = fd + 1;
        if (g_own_fds[i].fd_plus1.compare_exchange_strong(want, 0)) return;
    }
}

void own_fds_after_fork_child() noexcept {
    int n = g_own_fd_slots.load();
    for (int i = 0; i < n; ++i) {
        int fd = g_own_fds[i].fd_plus1.load() - 1;
        if (fd < 0 || g_own_fds[i].thread.load() == &t_own_fd_thread) continue;  // (its hub remakes its own: Hub::run_loop)
        // (another hub's, or a waitpid's: the forking thread waits in none)
        g_own_fds[i].fd_plus1.store(0);
        REAL(close)(fd);
    }
}

int close_range_sparing_own_fds(unsigned first, unsigned last, int flags) noexcept {
    // The shim's fds in [first, last], in order (a few: two a hub, one a waited-for child).
    int spared[kMaxOwnFds];
    int k = 0;
    int n = g_own_fd_slots.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
        int fd = g_own_fds[i].fd_plus1.load() - 1;
        if (fd >= 0 && unsigned(fd) >= first && unsigned(fd) <= last) spared[k++] = fd;
    }
    std::sort(spared, spared + k);
    unsigned from = first;
    for (int j = 0; j < k; ++j) {
        if (unsigned(spared[j]) > from)
            if (int r = REAL(close_range)(from, unsigned(spared[j]) - 1, flags); r != 0) return r;
        from = unsigned(spared[j]) + 1;
        if (from == 0) return 0;  // (wrapped past the top)
    }
    return from <= last ? REAL(close_range)(from, last, flags) : 0;
}
}  // namespace greenshim::shim
