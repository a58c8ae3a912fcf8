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

// A private copy of an iovec array that can be advanced past what was
// transferred, leaving the caller's untouched.
struct IovCursor {
    struct iovec local[1024];
    struct iovec* v = local;
    int k;
    size_t total = 0;
    size_t done = 0;

    IovCursor(const struct iovec* iov, int cnt) : k(cnt) {
        std::memcpy(local, iov, sizeof(struct iovec) * size_t(cnt));
        for (int i = 0; i < cnt; ++i) total += local[i].iov_len;
    }
    void advance(size_t n) {
        done += n;
        while (k > 0 && n >= v->iov_len) {
            n -= v->iov_len;
            ++v;
            --k;
        }
        if (k > 0) {
            v->iov_base = static_cast<char*>(v->iov_base) + n;
            v->iov_len -= n;
        }
    }
    // op(v, k) on no more than the first `limit` bytes of what is left.
    template <class Op>
    auto with_limit(size_t limit, Op&& op) {
        if (limit >= total - done) return op(v, k);
        int j = 0;
        while (v[j].iov_len < limit) limit -= v[j++].iov_len;  // [j] holds the limit
        size_t saved = v[j].iov_len;
        v[j].iov_len = limit;
        auto r = op(v, j + 1);
        v[j].iov_len = saved;
        return r;
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
