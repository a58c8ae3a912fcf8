// The WaitSite families GREENSHIM_TRACE names (set_trace, trace_families():
// diag.hpp), in a header of its own so that the settings' table (shim/
// config.cpp) can check a value without linking the runtime: greenrun, a
// program of libc alone, checks GREENSHIM_TRACE in its own process. The
// order is set_trace's bitmask.
#pragma once

namespace greenshim {

inline constexpr const char* kTraceFamilies[] = {"io",   "socket", "sleep",   "poll", "sync", "join",
                                                 "process", "signal", "pool", "api", nullptr};

}  // namespace greenshim
