// The stderr that our private copy of libev writes its fatal messages to.
//
// meson.build links libev from Debian's archive into our libraries, hidden,
// and renames the archive's one reference to `stderr` to this variable: the
// archive's code reads `stderr` PC-relatively, as code built for an
// executable may, and a shared library cannot resolve that against libc's.
// libev reads it only on the way to abort() (an allocation it cannot make).
#include <cstdio>

#include "greenshim/cold.hpp"

#if GREENSHIM_PRIVATE_LIBEV
extern "C" {
// (Start-up data, cold.hpp: set by a constructor in every process.)
__attribute__((visibility("hidden"))) GREENSHIM_STARTUP_DATA std::FILE* greenshim_libev_stderr = stderr;
}
#endif
