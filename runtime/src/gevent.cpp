// The gevent-style API over the hub.
#include "greenshim/gevent.hpp"

#include <cerrno>
#include <cstdio>
#include <system_error>

#include "internal.hpp"

namespace greenshim {
namespace detail {

struct TaskState {
    std::shared_ptr<Greenlet> greenlet;
    WaitQueue joiners;
    std::exception_ptr error;
    bool finished = false;
    bool killed = false;  // ended by GreenletExit: successful, but has no value
};

bool finished(const TaskState& st) noexcept { return st.finished; }
std::exception_ptr error(const TaskState& st) noexcept { return st.error; }
Greenlet& greenlet_of(const TaskState& st) noexcept { return *st.greenlet; }

void rethrow_outcome(const TaskState& st) {
    if (st.error) std::rethrow_exception(st.error);
    if (st.killed) throw GreenletExit{};
}

bool join_state(TaskState& st, Deadline deadline) {
    while (!st.finished) {
        Wake w = st.joiners.wait(deadline);
        if (w == Wake::timeout) return st.finished;
        if (w == Wake::deadlock) throw LoopExit{};
    }
    return true;
}

std::shared_ptr<TaskState> start_task(std::function<void()> body, std::string name) {
    Hub& hub = detail::current_hub();
    auto st = std::make_shared<TaskState>();
    // The greenlet holds the state (not the other way round) so that a handle
    // can be dropped while the greenlet runs on.
    st->greenlet = hub.spawn(
        [st, body = std::move(body)](std::any) -> std::any {
            try {
                body();
            } catch (boost::context::detail::forced_unwind const&) {
                throw;
            } catch (GreenletExit const&) {
                st->killed = true;  // a success, as in gevent; value() raises GreenletExit
            } catch (std::exception const& e) {
                st->error = std::current_exception();
                std::fprintf(stderr, "greenshim: greenlet #%llu (%s) raised: %s\n",
                             (unsigned long long)Greenlet::current().id(), Greenlet::current().name().c_str(),
                             e.what());
            } catch (...) {
                st->error = std::current_exception();
                std::fprintf(stderr, "greenshim: greenlet #%llu (%s) raised a non-std exception\n",
                             (unsigned long long)Greenlet::current().id(), Greenlet::current().name().c_str());
            }
            st->finished = true;
            st->joiners.notify_all();
            return {};
        },
        std::move(name));
    return st;
}

}  // namespace detail

bool joinall(const std::vector<TaskBase>& tasks, double timeout) {
    Deadline d = deadline_after(timeout);
    for (const TaskBase& t : tasks)
        if (!t.join_until(d)) return false;
    return true;
}

void sleep(double seconds) {
    Hub& hub = detail::current_hub();
    if (seconds <= 0) {
        hub.yield();
        return;
    }
    Deadline d = deadline_after(seconds);
    while (monotonic_ns() < d) {  // (the hub looked up each time: the sleeper may come back on another)
        if (detail::current_hub().sleep_until(d) == Wake::deadlock) throw LoopExit{};
    }
}

namespace {
bool wait_fd_for(int fd, int events, double timeout) {
    Wake w = detail::current_hub().wait_fd(fd, events, deadline_after(timeout));
    switch (w) {
    case Wake::timeout: return false;
    case Wake::closed: throw std::system_error(EBADF, std::generic_category(), "greenshim: fd closed while waiting");
    case Wake::deadlock: throw LoopExit{};
    default: return true;
    }
}
}  // namespace

bool wait_readable(int fd, double timeout) { return wait_fd_for(fd, kReadable, timeout); }
bool wait_writable(int fd, double timeout) { return wait_fd_for(fd, kWritable, timeout); }

}  // namespace greenshim
