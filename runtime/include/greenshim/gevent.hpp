// greenshim runtime: the gevent-style API.
//
//   auto a = greenshim::spawn([] { greenshim::sleep(1); return 42; });
//   auto b = greenshim::spawn(fetch, "http://...");
//   greenshim::joinall({a, b});
//   int v = a.value();           // 42; rethrows what the greenlet raised
//
// spawn() creates a greenlet whose parent is the hub and queues it; it first
// runs when the current greenlet waits (join, sleep, I/O under the shim).
// An exception escaping a spawned function is caught, reported once on stderr
// ("greenshim: greenlet #N (name) raised: ...") and kept for value() and
// exception(): it is never lost and never reaches the hub.
//
// Costs: spawn = one allocation for the greenlet + its result, a stack from the
// pool when it first runs; join of a finished greenlet = no switch.
// May not: be used from the hub greenlet or across OS threads.
#pragma once

#include <exception>
#include <initializer_list>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "greenshim/clock.hpp"
#include "greenshim/greenlet.hpp"

namespace greenshim {

// Raised in the main greenlet when it waits and nothing left could ever wake it
// (gevent's LoopExit: "This operation would block forever").
struct GREENSHIM_API LoopExit : std::runtime_error {
    LoopExit() : std::runtime_error("greenshim: this operation would block forever (no greenlet, fd, timer or signal could wake it)") {}
};
// join()/value() on a task that has not finished by the deadline.
struct GREENSHIM_API Timeout : std::runtime_error {
    Timeout() : std::runtime_error("greenshim: timeout") {}
};

namespace detail {
struct TaskState;  // the greenlet, its joiners and its outcome (gevent.cpp)
// Parks until st finishes or the deadline passes; true if finished.
GREENSHIM_API bool join_state(TaskState& st, Deadline deadline);
// After st finished: rethrows what its greenlet raised, or GreenletExit if
// one ended it; returns if it returned.
GREENSHIM_API void rethrow_outcome(const TaskState& st);
GREENSHIM_API bool finished(const TaskState& st) noexcept;
GREENSHIM_API std::exception_ptr error(const TaskState& st) noexcept;
GREENSHIM_API Greenlet& greenlet_of(const TaskState& st) noexcept;
// Runs body in a new hub-parented greenlet, recording completion in st.
GREENSHIM_API std::shared_ptr<TaskState> start_task(std::function<void()> body, std::string name);
}  // namespace detail

// A handle on a spawned greenlet (copyable; the greenlet runs on whether or not
// a handle is kept).
class GREENSHIM_API TaskBase {
public:
    // Finished (returned or raised)?
    bool ready() const noexcept { return detail::finished(*st_); }
    bool successful() const noexcept { return ready() && !exception(); }
    // Waits for the greenlet to finish; false if timeout (seconds, < 0 = never)
    // passed first. Does not raise the greenlet's exception.
    bool join(double timeout = -1) const { return join_until(deadline_after(timeout)); }
    bool join_until(Deadline d) const { return detail::join_state(*st_, d); }
    std::exception_ptr exception() const noexcept { return detail::error(*st_); }
    Greenlet& greenlet() const noexcept { return detail::greenlet_of(*st_); }

protected:
    std::shared_ptr<detail::TaskState> st_;
};

template <class R>
class Task : public TaskBase {
public:
    // join(), then the return value, or rethrows the greenlet's exception
    // (GreenletExit if it was ended by one).
    // Throws Timeout if the timeout passes first.
    R value(double timeout = -1) const {
        if (!join(timeout)) throw Timeout{};
        detail::rethrow_outcome(*st_);
        if constexpr (!std::is_void_v<R>) return **result_;
    }

private:
    template <class F, class... A>
    friend auto spawn(F&& f, A&&... args);
    struct Empty {};
    std::shared_ptr<std::conditional_t<std::is_void_v<R>, Empty, std::optional<R>>> result_;
};

// Spawns f(args...) as a greenlet (gevent.spawn). Arguments are copied/moved
// into the greenlet, as std::thread does.
template <class F, class... A>
auto spawn(F&& f, A&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<A>...>;
    Task<R> t;
    t.result_ = std::make_shared<typename decltype(t.result_)::element_type>();
    auto result = t.result_;
    t.st_ = detail::start_task(
        [result, fn = std::decay_t<F>(std::forward<F>(f)),
         tup = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...)]() mutable {
            if constexpr (std::is_void_v<R>)
                std::apply(fn, std::move(tup));
            else
                result->emplace(std::apply(fn, std::move(tup)));
        },
        {});
    return t;
}

// Waits for every task (gevent.joinall); false if the timeout passed first.
GREENSHIM_API bool joinall(const std::vector<TaskBase>& tasks, double timeout = -1);
inline bool joinall(std::initializer_list<TaskBase> tasks, double timeout = -1) {
    return joinall(std::vector<TaskBase>(tasks), timeout);
}

// gevent.sleep: parks the current greenlet for `seconds`; sleep(0) yields to
// every other ready greenlet once.
GREENSHIM_API void sleep(double seconds);
// Parks until fd is readable / writable; false on timeout (seconds, < 0 never).
// Throws std::system_error(EBADF) if the fd is closed through the hub meanwhile.
GREENSHIM_API bool wait_readable(int fd, double timeout = -1);
GREENSHIM_API bool wait_writable(int fd, double timeout = -1);
// gevent.getcurrent().
inline Greenlet& getcurrent() { return Greenlet::current(); }

}  // namespace greenshim
