// Small helpers shared by the runtime unit tests.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include <doctest/doctest.h>

#include "greenshim/greenshim.hpp"
// The runtime's own tests reach past the public API, as the shim does.
#include "greenshim/diag.hpp"
#include "greenshim/hub.hpp"

namespace testutil {

// Everything readable from fd until EOF (or an error), as a string.
inline std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, std::size_t(n));
    }
    return out;
}

// A non-blocking pipe (or socketpair) closed on destruction, telling the hub
// first as its contract requires.
struct FdPair {
    int r = -1;  // read end (or first socket)
    int w = -1;  // write end (or second socket)

    static FdPair pipe() {
        FdPair p;
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        p.r = fds[0];
        p.w = fds[1];
        return p;
    }
    static FdPair socketpair() {
        FdPair p;
        int fds[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
            throw std::runtime_error("socketpair failed");
        p.r = fds[0];
        p.w = fds[1];
        return p;
    }
    static void close_fd(int& fd) {
        if (fd < 0) return;
        greenshim::Hub::current().fd_closed(fd);
        ::close(fd);
        fd = -1;
    }
    void close() {
        close_fd(r);
        close_fd(w);
    }
    FdPair() = default;
    FdPair(FdPair&& o) noexcept : r(o.r), w(o.w) { o.r = o.w = -1; }
    FdPair& operator=(FdPair&& o) noexcept {
        if (this != &o) {
            close();
            r = o.r;
            w = o.w;
            o.r = o.w = -1;
        }
        return *this;
    }
    ~FdPair() { close(); }
};

inline double elapsed_s(std::int64_t since_ns) {
    return double(greenshim::monotonic_ns() - since_ns) / 1e9;
}

// Redirects stderr (fd 2) to a temporary file for the lifetime of the object;
// text() returns what was written so far.
class StderrCapture {
public:
    StderrCapture() {
        std::fflush(stderr);
        file_ = std::tmpfile();
        if (!file_) throw std::runtime_error("tmpfile failed");
        saved_ = ::dup(2);
        ::dup2(::fileno(file_), 2);
    }
    ~StderrCapture() { restore(); if (file_) std::fclose(file_); }
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stderr);
        ::dup2(saved_, 2);
        ::close(saved_);
        saved_ = -1;
    }
    std::string text() {
        std::fflush(stderr);
        std::string out;
        char buf[4096];
        std::rewind(file_);
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) out.append(buf, n);
        return out;
    }

private:
    std::FILE* file_ = nullptr;
    int saved_ = -1;
};

// Every test leaves the hub idle: nothing queued to run behind its back.
inline void check_hub_idle() {
    if (greenshim::Hub* h = greenshim::Hub::existing()) CHECK(h->ready_count() == 0);
    CHECK(greenshim::Greenlet::current().is_main());
}

}  // namespace testutil
