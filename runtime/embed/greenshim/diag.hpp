// greenshim runtime, for an embedder (not installed): diagnostics — what greenlets wait for, counters, traces,
// reports, and a watchdog for a hub that stops running.
//
// Everything here is off or nearly free unless asked for:
//  * WaitScope: two stores into the current greenlet (a thread-local load and
//    a call). Tells park() what the greenlet waits on, for the trace, the
//    per-family park counters and the deadlock report.
//  * Counters (spawned, peak alive, switches, parks per WaitSite) are plain
//    per-thread increments, always on; reading them from another thread gives
//    a recent value, never a torn one.
//  * Hub wait/run time and the monitor need a clock read around each poll of
//    the loop: enabled by enable_timing() (GREENSHIM_STATS / MONITOR do).
//  * The trace (set_trace) costs one predictable branch per park when off.
//
// May not: be used from a signal handler, except greenlet_for_guard_page(),
// write_greenlet_table() and write_greenlet_dump(), which are
// async-signal-safe for the calling thread's own greenlets (no allocation, no
// locks; output by write(2)).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "greenshim/greenlet.hpp"

namespace greenshim {

// What a parked greenlet waits on, shown as "<call> <arg>". One static object
// per kind of wait (a call site of the shim, say); counts its parks.
struct WaitSite {
    enum class Arg : std::uint8_t { none, fd, address, pid, signal };
    const char* call;    // "pthread_mutex_lock", "read", ...
    const char* family;  // "io", "socket", "sleep", "poll", "sync", "join", "process", "signal", "pool", "api"
    Arg arg_kind = Arg::none;
    // Filled in by the runtime.
    std::atomic<std::uint64_t> parks{0};
    std::atomic<int> traced{-1};  // -1 unknown, 0 no, 1 yes (against set_trace's list)
    WaitSite* next = nullptr;     // registry, linked on first park
    std::atomic<bool> registered{false};
};

// Sets the current greenlet's wait site (and its argument: an fd, an address,
// a pid...) for the life of the object; restores the previous one after.
class GREENSHIM_API WaitScope {
public:
    WaitScope(WaitSite& site, std::intptr_t arg = -1) noexcept;
    ~WaitScope();
    WaitScope(const WaitScope&) = delete;
    WaitScope& operator=(const WaitScope&) = delete;

private:
    void* impl_;  // the greenlet's (its Impl): the destructor runs on the same greenlet
    WaitSite* saved_site_;
    std::intptr_t saved_arg_;
};

// The code address a greenlet was started with (a pthread start routine, say):
// reports name it with dladdr. Set by whoever creates the greenlet.
GREENSHIM_API void set_greenlet_entry(Greenlet& g, void* code) noexcept;
GREENSHIM_API void* greenlet_entry(const Greenlet& g) noexcept;

struct RuntimeStats {
    std::uint64_t spawned = 0;       // greenlets started (process-wide)
    std::uint64_t alive = 0;         // started, not yet dead (hubs excluded)
    std::uint64_t peak_alive = 0;
    std::uint64_t switches = 0;      // hub switches: to and from greenlets
    std::uint64_t parks = 0;         // Hub::park calls that waited
    std::uint64_t preemptions = 0;   // greenlets the OS thread was taken back from (Hub::preempt_running)
    std::uint64_t hand_offs = 0;     // greenlets handed to a carrier OS thread (Hub::hand_off_running)
    std::uint64_t steals = 0;        // new threads a hub took from the spawn queue that another made
    std::uint64_t carriers = 0;      // carrier OS threads started (they stay)
    std::int64_t hub_wait_ns = 0;    // time hubs spent blocked in the poll (enable_timing)
    std::int64_t hub_run_ns = 0;     // each timed hub's time since its timing began, minus its waits (summed)
    std::uint64_t hubs_timed = 0;    // the hubs those two are summed over (several: more than the wall time)
    std::uint64_t helper_threads = 0;       // the helper pool's OS threads now (Hub::run_blocking)
    std::uint64_t peak_helper_threads = 0;
    std::uint64_t helper_jobs = 0;          // calls they ran
};
// A snapshot summed over every hub of the process.
GREENSHIM_API RuntimeStats runtime_stats() noexcept;
// Starts measuring hub wait/run time (a clock read around each loop poll).
// Call before the first hub exists to measure from the start.
GREENSHIM_API void enable_timing() noexcept;
// Writes the stats as text ("greenshim stats: ..." lines) to fd, including
// parks per WaitSite family.
GREENSHIM_API void write_stats(int fd, const char* prefix) noexcept;
// Writes all len bytes of buf to fd with write(2), past short writes and
// EINTR; stops at any other error. Never parks (the calling thread is in the
// runtime's own work meanwhile: interposers go straight to libc), never
// allocates, keeps errno: the one way reports reach a terminal or a file,
// async-signal-safe.
GREENSHIM_API void write_fully(int fd, const char* buf, std::size_t len) noexcept;
// Names a code address for a user to read, the one format of every report:
// "name (module)" at a function's start, "name+0x12 (module)" inside one,
// "module+0x1a2b" where the module exports no name for it, else the address;
// "-" for nullptr. Names come from dladdr: a program built without -rdynamic
// shows its own functions as module+offset (addr2line takes it). dladdr is not
// on POSIX's async-signal-safe list, but it only takes the loader's recursive
// lock and reads its tables: safe in a handler unless the signal came from
// inside the loader.
GREENSHIM_API void describe_code(const void* code, char* buf, std::size_t size) noexcept;

// Writes one line per live greenlet of the calling OS thread: id, name,
// state, what it waits on and its entry function. Async-signal-safe.
GREENSHIM_API void write_greenlet_table(int fd) noexcept;
// The same, then the lines of every other hub that is idle (blocked in its
// poll, so its greenlets do not change meanwhile: the deadlock report, made
// when every hub is), each hub under a line naming its OS thread. Not from a
// signal handler (it takes the hubs' registry lock).
GREENSHIM_API void write_idle_hubs_table(int fd) noexcept;

// The dump (greenrun --dump): write_greenlet_table's lines for the calling OS
// thread, each followed by that greenlet's backtrace, then "greenshim: end of
// dump". Written to fd, and to also_fd too unless it is -1 (a copy for the
// process's stderr: each write there waits at most 200 ms for the fd to take
// it, so a full pipe nobody reads drops the copy instead of hanging the
// process). uctx: the ucontext of the signal handler that calls it (the
// running greenlet's backtrace starts at the instruction the signal
// interrupted), or nullptr to start at the caller. Async-signal-safe as
// describe_code is (dladdr; libgcc's unwinder finds unwind tables with glibc's
// lock-free _dl_find_object), and it reads the suspended greenlets' stacks
// without switching to any of them: no program code runs.
//
// How a suspended greenlet's backtrace is found. Its fiber (Impl::ctx) holds
// Boost.Context's fcontext_t: the stack pointer at which jump_fcontext
// (x86-64 SysV ELF, Boost 1.74 and on) saved it, 0x40 bytes laid out as
// mxcsr and the x87 control word (8), r12, r13, r14, r15, rbx, rbp and the
// return address. A small assembly function (diag.cpp,
// greenshim_unwind_fcontext) calls libgcc's _Unwind_Backtrace with CFI saying
// that its caller's frame is that saved context: CFA = fctx + 0x40, the
// return address at CFA-8 and the six callee-saved registers at their slots.
// libgcc's own unwinder then walks on through the greenlet's frames with
// their real unwind tables (DWARF CFI, -O2 code without frame pointers
// included), exactly as for a stack it is running on; nothing is switched or
// resumed. The running greenlet's backtrace is the same unwinder's walk from
// the handler through the kernel's signal frame.
// Limits: a frame without unwind tables (hand-written assembly, code built
// with -fno-asynchronous-unwind-tables) ends its backtrace; a walk stops when
// a frame's CFA leaves the greenlet's stack (the main greenlet's stack is the
// OS thread's, not known: its walk stops at 64 frames or where unwind tables
// end); frames are named by dladdr (describe_code), so functions a module
// does not export show as module+offset (greenrun --dump adds file:line with
// addr2line where it can). A greenlet interrupted in the middle of a switch
// (inside jump_fcontext) shows no frames. Boost's fcontext on x86-64 only; a
// build on another architecture or on ucontext fibers prints the table
// without backtraces.
GREENSHIM_API void write_greenlet_dump(int fd, int also_fd, const void* uctx, bool end_line = true) noexcept;
// With several hubs, the dump the process hub writes (end_line false) is
// followed by each worker's part, written on the worker's OS thread in a
// handler of the same signal: a line naming that hub's OS thread, then its
// threads' rows and backtraces, as above. Then the end line. Both
// async-signal-safe.
GREENSHIM_API void write_worker_dump_part(int fd, int also_fd, const void* uctx) noexcept;
GREENSHIM_API void write_dump_end(int fd, int also_fd) noexcept;
// The OS thread a hub runs on (where its greenlets' dump must be written).
GREENSHIM_API pthread_t hub_thread(Hub& hub) noexcept;

// Trace of parks and wakes to fd 2: spec is a comma-separated list of
// WaitSite families, or "all" / "1". nullptr or "" turns it off.
// Returns false (and changes nothing) for a spec naming an unknown family.
GREENSHIM_API bool set_trace(const char* spec) noexcept;
GREENSHIM_API const char* const* trace_families() noexcept;  // the known ones, nullptr-terminated

// The greenlet of this OS thread whose stack guard page holds addr, if any.
// Async-signal-safe (a walk over this thread's live greenlets).
GREENSHIM_API Greenlet* greenlet_for_guard_page(const void* addr) noexcept;

// The blocking monitor: a watchdog OS thread that checks every hub each
// period/2 and, when one has been running greenlets (not waiting for events)
// for more than period_ms without getting control back, calls report(hub
// thread, running greenlet) once for that stall. The callback runs on the
// monitor thread: it may only read the greenlet's id, name and entry, and
// signal the hub's thread. Cost on the hub: a relaxed store per pass.
using StallReport = void (*)(pthread_t hub_thread, Greenlet* running, std::int64_t stalled_ns);
GREENSHIM_API bool start_monitor(unsigned period_ms, StallReport report) noexcept;

}  // namespace greenshim
