// find_global and first_definition (symbols.hpp): a GNU-hash probe of each
// loaded object, in load order. Start-up code (cold.hpp): every process's
// constructors call find_global.
#include <greenshim/symbols.hpp>

#include <greenshim/cold.hpp>

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

#include <cstddef>
#include <cstdint>

namespace greenshim::detail {
namespace {

struct Probe {
    const char* name;
    std::uint32_t hash;  // the GNU hash of name
    bool found;          // (or cannot tell)
    const void* code;    // where the definition found is (nullptr: cannot tell)
};

// The lookup the loader makes in one object's DT_GNU_HASH table: the bloom
// filter, then the bucket's chain of hashes, then the name. Sets p.found and
// p.code where the object defines it; p.found alone where it cannot tell.
GREENSHIM_STARTUP_CODE void gnu_hash_lookup(const struct dl_phdr_info* info, const ElfW(Dyn)* dyn, Probe& p) noexcept {
    const ElfW(Addr) base = info->dlpi_addr;
    ElfW(Addr) gnu = 0, symtab = 0, strtab = 0;
    for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL; ++d) {
        if (d->d_tag == DT_GNU_HASH) gnu = d->d_un.d_ptr;
        else if (d->d_tag == DT_SYMTAB) symtab = d->d_un.d_ptr;
        else if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    }
    if (!gnu || !symtab || !strtab) {
        p.found = true;  // cannot tell
        return;
    }
    // glibc relocates these in place where .dynamic is writable; not the vdso's.
    if (gnu < base) gnu += base, symtab += base, strtab += base;
    if (!module_holds(info, gnu) || !module_holds(info, symtab) || !module_holds(info, strtab)) {
        p.found = true;  // not where they should be: cannot tell
        return;
    }
    auto* h = reinterpret_cast<const std::uint32_t*>(gnu);
    std::uint32_t nbuckets = h[0], symoffset = h[1], bloom_words = h[2], shift = h[3];
    if (nbuckets == 0 || bloom_words == 0) return;
    auto* bloom = reinterpret_cast<const ElfW(Addr)*>(h + 4);
    constexpr unsigned bits = sizeof(ElfW(Addr)) * 8;
    ElfW(Addr) word = bloom[(p.hash / bits) % bloom_words];
    ElfW(Addr) mask = (ElfW(Addr)(1) << (p.hash % bits)) | (ElfW(Addr)(1) << ((p.hash >> shift) % bits));
    if ((word & mask) != mask) return;
    auto* buckets = reinterpret_cast<const std::uint32_t*>(bloom + bloom_words);
    const std::uint32_t* chain = buckets + nbuckets;
    auto* syms = reinterpret_cast<const ElfW(Sym)*>(symtab);
    for (std::uint32_t i = buckets[p.hash % nbuckets]; i >= symoffset; ++i) {
        std::uint32_t c = chain[i - symoffset];
        if ((c | 1) == (p.hash | 1) && syms[i].st_shndx != SHN_UNDEF &&
            strcmp(reinterpret_cast<const char*>(strtab) + syms[i].st_name, p.name) == 0) {
            p.found = true;
            p.code = reinterpret_cast<const void*>(base + syms[i].st_value);
            return;
        }
        if (c & 1) return;  // the chain's last entry
    }
}

GREENSHIM_STARTUP_CODE int probe_object(struct dl_phdr_info* info, std::size_t, void* arg) noexcept {
    auto* p = static_cast<Probe*>(arg);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
        gnu_hash_lookup(info, reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr), *p);
    }
    return p->found;  // nonzero ends the walk
}

GREENSHIM_STARTUP_CODE Probe probe(const char* name) noexcept {
    Probe p{name, 5381, false, nullptr};
    for (const char* c = name; *c; ++c) p.hash = p.hash * 33 + static_cast<unsigned char>(*c);
    dl_iterate_phdr(probe_object, &p);
    return p;
}

}  // namespace

GREENSHIM_STARTUP_CODE bool module_holds(const struct dl_phdr_info* info, std::uintptr_t addr) noexcept {
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && addr >= lo && addr - lo < ph.p_memsz) return true;
    }
    return false;
}

// (Compared here: libc's strcmp is a page that nothing else faults in at
// start-up, where the shim asks whether recvfrom is libc.so.6's.)
GREENSHIM_STARTUP_CODE bool module_named(const struct dl_phdr_info* info, const char* name) noexcept {
    const char* file = info->dlpi_name;
    if (!file) return false;
    for (const char* c = file; *c; ++c)
        if (*c == '/') file = c + 1;
    while (*file && *file == *name) ++file, ++name;
    return !*file && !*name;
}

GREENSHIM_STARTUP_CODE void* find_global(const char* name) noexcept {
    return probe(name).found ? dlsym(RTLD_DEFAULT, name) : nullptr;
}

GREENSHIM_STARTUP_CODE void* first_definition(const char* name) noexcept { return const_cast<void*>(probe(name).code); }

}  // namespace greenshim::detail
