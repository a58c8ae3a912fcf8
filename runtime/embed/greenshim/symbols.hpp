// Finding a symbol in the process's global scope without dlsym's failure
// path. A dlsym that finds nothing formats its error message in malloc'ed
// memory: at load, in a C program, each such lookup for a C++ symbol
// (operator new, __cxa_get_globals) started malloc in a process that might
// never have called it (its heap, the tcache key's getrandom, page faults).
#pragma once

#include <cstdint>

struct dl_phdr_info;  // <link.h> (not included here: its <elf.h> defines EV_NONE, which ev.h declares)

namespace greenshim::detail {

// Whether one of a loaded object's segments holds addr (objects are found by
// address with dl_iterate_phdr, not with dladdr, whose nearest-symbol walk
// over libc's table cost more than the rest of the start's lookups, or
// dlopen, which mallocs).
bool module_holds(const struct dl_phdr_info* info, std::uintptr_t addr) noexcept;
// Whether the object's file name (after its last '/') is `name`.
bool module_named(const struct dl_phdr_info* info, const char* name) noexcept;

// dlsym(RTLD_DEFAULT, name), asked only when some loaded object's dynamic
// symbol table defines `name` (read from its DT_GNU_HASH, as the loader
// reads it, with neither versions nor scopes: a yes is only a reason to ask
// dlsym; an object without that table always says yes). nullptr otherwise.
// Cost: one dl_iterate_phdr walk (~1 us for ten objects), plus the dlsym.
void* find_global(const char* name) noexcept;

// The code of the first definition of `name` among the loaded objects, in
// load order (for the objects loaded at start, the global scope's order),
// read from their GNU hash tables. Unlike dlsym, never a non-PIE
// executable's PLT entry: for a function whose address such an executable
// takes in its code, the executable's dynamic symbol is undefined but has a
// value, that entry, which dlsym returns (Debian's python3.11 and malloc).
// nullptr if no object defines it, or if one before the definition has no
// GNU hash table (dlsym's answer is all there is then).
void* first_definition(const char* name) noexcept;

}  // namespace greenshim::detail
