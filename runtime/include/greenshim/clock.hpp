// greenshim runtime: deadlines on CLOCK_MONOTONIC, as every wait takes them.
// Cost: monotonic_ns() is one clock_gettime (vDSO, ~20 ns, no syscall).
#pragma once

#include <cstdint>
#include <limits>

#include "greenshim/greenlet.hpp"

namespace greenshim {

// An absolute point on CLOCK_MONOTONIC, in nanoseconds.
using Deadline = std::int64_t;
inline constexpr Deadline kForever = std::numeric_limits<Deadline>::max();
GREENSHIM_API std::int64_t monotonic_ns() noexcept;
// seconds < 0 means never; 0 means now.
GREENSHIM_API Deadline deadline_after(double seconds) noexcept;
GREENSHIM_API Deadline deadline_after_ns(std::int64_t ns) noexcept;

}  // namespace greenshim
