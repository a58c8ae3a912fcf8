// Blocking-write semantics over non-blocking calls: a blocking write to a
// stream socket or a pipe returns only when everything is sent, or an error or
// timeout stops it — then it reports what was sent so far, as the kernel does.
#pragma once

#include <sys/uio.h>

#include <climits>
#include <cstring>

#include "shim.hpp"

namespace greenshim::shim {

// Linux's MAX_RW_COUNT (INT_MAX rounded down to a page): one read or write
// moves at most this much. read/write check the whole buffer against the
// address space before clamping to it, recv/send clamp first: past this size
// a socket must be read and written with read/write to fail as they do.
inline constexpr size_t kMaxRwCount = 0x7ffff000;

// Everything must go (stream sockets, pipes, ttys); datagrams go in one call.
inline bool sends_everything(const IoFd& f) noexcept { return !f.st || !f.st->socket || f.st->stream; }

// Fault injection (faults.hpp): the count to pass to the real call instead of
// n, where the kernel may transfer less than asked and nobody may notice
// more than POSIX allows. Reads: stream sockets only (a pipe read returns all
// that is there, up to n: POSIX allows a short one only when less is there).
// Writes: stream sockets, and pipes above PIPE_BUF (a pipe write of at most
// PIPE_BUF bytes is atomic); write_all sends the rest, so no caller sees it.
inline size_t read_count(const IoFd& f, size_t n) noexcept {
    if (!faults::active() || !f.st || !f.st->socket || !f.st->stream) return n;
    return faults::shorter(n);
}
inline size_t write_count(const IoFd& f, size_t n) noexcept {
    if (!faults::active() || !f.st || !f.st->stream || (!f.st->socket && n <= PIPE_BUF)) return n;
    return faults::shorter(n);
}

// op(k) reads at most k bytes without blocking; a blocking read of n bytes
// returns as soon as some came.
template <class Op>
ssize_t read_some(const IoFd& f, size_t n, Deadline deadline, Op&& op) {
    return retry_io(f, kReadable, deadline, [&] { return op(read_count(f, n)); });
}

// op(p, n) writes without blocking.
template <class Op>
ssize_t write_all(const IoFd& f, const void* buf, size_t n, Deadline deadline, Op&& op) {
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    bool all = sends_everything(f);
    do {
        ssize_t r = retry_io(f, kWritable, deadline, [&] { return op(p + done, write_count(f, n - done)); });
        if (r < 0) return done ? ssize_t(done) : -1;
        if (r == 0 && n > done) break;  // nothing more will come (sendfile at EOF)
        done += size_t(r);
    } while (all && done < n);
    return ssize_t(done);
}

// A position in the caller's iovec array, advanced past what was
// transferred, leaving the caller's array untouched. Each try works on a
// window of at most kWindow entries copied from it (1 KiB), not on a copy
// of the whole array (up to IOV_MAX = 1024 entries, 16 KiB): the shim's frames
// must fit the smallest greenlet stack (see "Stack budget" in shim.hpp).
struct IovCursor {
    static constexpr int kWindow = 64;
    const struct iovec* iov;
    int k;              // entries left, from iov
    size_t offset = 0;  // bytes of iov[0] already transferred
    size_t total = 0;
    size_t done = 0;

    IovCursor(const struct iovec* v, int cnt) : iov(v), k(cnt) {
        for (int i = 0; i < cnt; ++i) total += v[i].iov_len;
    }
    void advance(size_t n) {
        done += n;
        n += offset;
        while (k > 0 && n >= iov->iov_len) {
            n -= iov->iov_len;
            ++iov;
            --k;
        }
        offset = k > 0 ? n : 0;
    }
    // op(v, cnt) on the next window of what is left, no more than `limit` bytes.
    template <class Op>
    auto with_limit(size_t limit, Op&& op) {
        struct iovec w[kWindow];
        int j = 0;
        for (int i = 0; i < k && j < kWindow && limit > 0; ++i) {
            size_t skip = i == 0 ? offset : 0;
            size_t len = iov[i].iov_len - skip;
            if (len == 0) continue;  // empty entries take no room: every window moves data
            w[j].iov_base = static_cast<char*>(iov[i].iov_base) + skip;
            w[j].iov_len = len < limit ? len : limit;
            limit -= w[j++].iov_len;
        }
        return op(w, j);
    }
};

// op(iov, cnt) writes a vector without blocking. The first try passes the
// caller's vector as it is, so that the kernel checks it (a bad pointer is
// EFAULT, not a crash of ours); only after a partial write is it copied, so
// the caller's stays untouched while we advance past what was sent.
template <class Op>
ssize_t writev_all(const IoFd& f, const struct iovec* iov, int cnt, Deadline deadline, Op&& op) {
    ssize_t first = retry_io(f, kWritable, deadline, [&] { return op(const_cast<struct iovec*>(iov), cnt); });
    if (first < 0 || !sends_everything(f)) return first;
    IovCursor c(iov, cnt);
    c.advance(size_t(first));
    while (c.done < c.total) {
        ssize_t r = retry_io(f, kWritable, deadline, [&] { return c.with_limit(write_count(f, c.total - c.done), op); });
        if (r < 0) break;  // an error after a partial write reports what was written
        c.advance(size_t(r));
    }
    return ssize_t(c.done);
}

}  // namespace greenshim::shim
