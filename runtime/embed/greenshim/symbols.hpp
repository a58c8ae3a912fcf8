// Finding a symbol in the process's global scope without dlsym's failure
// path. A dlsym that finds nothing formats its error message in malloc'ed
// memory: at load, in a C program, each such lookup for a C++ symbol
// (operator new, __cxa_get_globals) started malloc in a process that might
// never have called it (its heap, the tcache key's getrandom, page faults).
#pragma once

namespace greenshim::detail {

// dlsym(RTLD_DEFAULT, name), asked only when some loaded object's dynamic
// symbol table defines `name` (read from its DT_GNU_HASH, as the loader
// reads it, with neither versions nor scopes: a yes is only a reason to ask
// dlsym; an object without that table always says yes). nullptr otherwise.
// Cost: one dl_iterate_phdr walk (~1 us for ten objects), plus the dlsym.
void* find_global(const char* name) noexcept;

}  // namespace greenshim::detail
