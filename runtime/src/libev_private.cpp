// The stderr that our private copy of libev writes its fatal messages to.
//
// meson.build links libev from Debian's archive into our libraries, hidden,
// and renames the archive's one reference to `stderr` to this variable: the
// archive's code reads `stderr` PC-relatively, as code built for an
// executable may, and a shared library cannot resolve that against libc's.
// libev reads it only on the way to abort() (an allocation it cannot make).
#include <cstdio>

#if GREENSHIM_PRIVATE_LIBEV
extern "C" {
__attribute__((visibility("hidden"))) std::FILE* greenshim_libev_stderr = stderr;
}
#endif
