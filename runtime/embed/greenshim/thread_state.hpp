// greenshim runtime: the head of its per-OS-thread state, for inline fast
// paths in code linked into the same library as the runtime's own objects
// (the runtime itself, and the shim: libgreenshim.so carries them). The
// running greenlet, the thread's hub and "is this the runtime's own work"
// are then a thread-local load and a field, not a call each: an interposed
// call asks them several times (the condvar hand-off, ~270 ns, spent about
// a fifth of its time in such calls).
//
// Not installed, and not for a program that links libgreenshim-runtime.so:
// the thread-locals it reads are not exported from there (such a program
// calls Greenlet::current() and Hub::existing()).
#pragma once

#include "greenshim/greenlet.hpp"
#include "greenshim/hub.hpp"

namespace greenshim {
namespace detail {

// The first (and only) base of ThreadState (internal.hpp).
struct ThreadStateHead {
    Greenlet* current = nullptr;  // the greenlet running on this OS thread
    Hub* hub = nullptr;           // this thread's hub, once made
    // The main greenlet's owner id: an address in the OS thread's own
    // thread-locals (the same whichever block is current when it is asked).
    const void* main_token = nullptr;
    // current's owner id (current_owner_id), kept with current at each
    // switch: a lock asks for it two or three times a hand-off, one load
    // instead of two dependent ones.
    const void* current_owner = nullptr;
};
struct ThreadState;

extern thread_local ThreadState* t_state __attribute__((tls_model("initial-exec")));
extern thread_local int t_internal __attribute__((tls_model("initial-exec")));
extern thread_local char t_main_token __attribute__((tls_model("initial-exec")));
extern thread_local int t_loop_fds __attribute__((tls_model("initial-exec")));

inline ThreadStateHead* state_head() noexcept { return reinterpret_cast<ThreadStateHead*>(t_state); }

// Greenlet::current(), made on first use like it.
inline Greenlet& current_greenlet() {
    ThreadStateHead* h = state_head();
    return h ? *h->current : Greenlet::current();
}
// Greenlet::current_owner_id().
inline const void* current_owner_id() noexcept {
    ThreadStateHead* h = state_head();
    if (!h) return &t_main_token;  // only main has run here
    return h->current_owner;
}
// Hub::existing().
inline Hub* existing_hub() noexcept {
    ThreadStateHead* h = state_head();
    return h ? h->hub : nullptr;
}
// Hub::current(), made on first use like it.
inline Hub& current_hub() {
    ThreadStateHead* h = state_head();
    return h && h->hub ? *h->hub : Hub::current();
}
// runtime_internal().
inline bool internal() noexcept { return t_internal != 0; }
// True while the runtime makes or closes its event loop's own fds (a hub's
// epoll fd and eventfd: libev's epoll_create1, eventfd and close). An
// interposer may then place them away from the program's numbers and keep
// the program from closing them (the shim: fd.cpp, "the hubs' own fds").
inline bool making_loop_fds() noexcept { return t_loop_fds != 0; }

}  // namespace detail
}  // namespace greenshim
