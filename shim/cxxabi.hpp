// The layout cxxabi.cpp relies on when it allocates exceptions for the shim's
// private libstdc++ (it says why it does). Shared with tests/shim, which checks
// it against libstdc++.so's own (the same GCC).
#pragma once

#include <cstddef>

namespace greenshim::shim {

// Bytes libstdc++ keeps before each exception object: its
// __cxa_refcounted_exception header (128 on x86-64 GCC). What is allocated
// must be at least that, and a multiple of 16 so that the object stays aligned
// as malloc's memory is; cxxabi.cpp's also covers a dependent exception
// (__cxa_dependent_exception, the same tail without the count: smaller).
inline constexpr std::size_t kExceptionHeader = 128;

}  // namespace greenshim::shim
