// Blocking-write semantics over non-blocking calls: a blocking write to a
// stream socket or a pipe returns only when everything is sent, or an error or
// timeout stops it — then it reports what was sent so far, as the kernel does.
#pragma once

#include <sys/uio.h>

#include <climits>
#include <cstring>

#include "shim.hpp"

namespace greenshim::shim {

// Everything must go (stream sockets, pipes, ttys); datagrams go in one call.
inline bool sends_everything(const IoFd& f) noexcept { return !f.st || !f.st->socket || f.st->stream; }

// op(p, n) writes without blocking.
template <class Op>
ssize_t write_all(const IoFd& f, const void* buf, size_t n, Deadline deadline, Op&& op) {
    const char* p = static_cast<const char*>(buf);
    size_t done = 0;
    bool all = sends_everything(f);
    do {
        ssize_t r = retry_io(f, kWritable, deadline, [&] { return op(p + done, n - done); });
        if (r < 0) return done ? ssize_t(done) : -1;
        done += size_t(r);
    } while (all && done < n);
    return ssize_t(done);
}

// op(iov, cnt) writes a vector without blocking; the vector is copied so the
// caller's stays untouched while we advance past what was sent.
template <class Op>
ssize_t writev_all(const IoFd& f, const struct iovec* iov, int cnt, Deadline deadline, Op&& op) {
    struct iovec local[IOV_MAX > 1024 ? 1024 : IOV_MAX];
    std::memcpy(local, iov, sizeof(struct iovec) * size_t(cnt));
    size_t total = 0;
    for (int i = 0; i < cnt; ++i) total += local[i].iov_len;
    struct iovec* v = local;
    int k = cnt;
    size_t done = 0;
    bool all = sends_everything(f);
    do {
        ssize_t r = retry_io(f, kWritable, deadline, [&] { return op(v, k); });
        if (r < 0) return done ? ssize_t(done) : -1;
        done += size_t(r);
        size_t adv = size_t(r);
        while (k > 0 && adv >= v->iov_len) {
            adv -= v->iov_len;
            ++v;
            --k;
        }
        if (k > 0) {
            v->iov_base = static_cast<char*>(v->iov_base) + adv;
            v->iov_len -= adv;
        }
    } while (all && done < total);
    return ssize_t(done);
}

}  // namespace greenshim::shim
