// Fault injection (GREENSHIM_FAULTS=SEED:RATE): the shim pretends, with
// probability RATE, that the kernel answered a call the way it may but seldom
// does, so that the shim's own retry and transfer loops are exercised:
//
//   eagain  a call the program made blocking meets EAGAIN though its fd is
//           ready (as when the data went to another reader first): the
//           greenlet parks until the fd is ready and tries again (retry_io;
//           invisible). Never when the fd is not ready: the real call says
//           EAGAIN itself then, or fails in a way no wait would cure (a read
//           of a pipe's write end), and a spurious EAGAIN would wait forever;
//   eintr   the same call meets EINTR though no signal came: retried at once
//           (retry_io; invisible);
//   short   a transfer moves fewer bytes than asked: reads of a stream socket
//           return it (POSIX allows it, programs see it), writes are completed
//           by write_all/writev_all (a blocking send transfers everything);
//   wake    a wait for readiness returns though the fd is not ready
//           (park_until_ready; readiness is a hint, every caller asks again).
//
// Only calls that reach retry_io are touched, i.e. calls on fds the program
// believes blocking. Regular files, a program's own O_NONBLOCK fds and
// MSG_DONTWAIT calls go straight to libc (IoMode::pass) and meet only the
// kernel's real answers. POSIX would allow a spurious EAGAIN there too, but an
// edge-triggered epoll loop that reads until EAGAIN would then wait for an
// edge that never comes: it would find a "bug" no kernel produces.
//
// Deterministic: each OS thread draws from its own splitmix64 sequence seeded
// from SEED and the thread's order of first use. At most one spurious failure
// per call and never two spurious wakes running for one wait, so even RATE=1
// makes progress. When off, each site costs one predictable branch on a flag.
#pragma once

#include <cstddef>
#include <cstdint>

namespace greenshim::shim::faults {

// Set once at start-up (init.cpp) when GREENSHIM_FAULTS is valid.
inline bool g_active = false;
inline bool active() noexcept { return __builtin_expect(g_active, 0); }

// Turns injection on; with report, the counts are printed on stderr at exit
// ("greenshim: faults injected: eagain=N eintr=N short=N wake=N").
void configure(std::uint64_t seed, double rate, bool report) noexcept;

enum class Failure : std::uint8_t { none, eagain, eintr };
// With probability RATE, a spurious EAGAIN or EINTR (one or the other,
// evenly) to consider; counted once injected (injected()).
Failure failure() noexcept;
void injected(Failure f) noexcept;
// With probability RATE, a spurious wake of a wait for fd; never twice
// running for the same wait (the caller checks and waits again at once).
bool spurious_wake(int fd, int events) noexcept;
// With probability RATE, a count from 1 to n-1 instead of n (n when n < 2).
std::size_t shorter(std::size_t n) noexcept;

struct Counts {
    std::uint64_t eagain, eintr, short_transfers, wakes;
};
Counts counts() noexcept;

}  // namespace greenshim::shim::faults
