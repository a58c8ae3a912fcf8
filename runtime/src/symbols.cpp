// find_global (symbols.hpp): a GNU-hash probe of each loaded object, then
// dlsym only when one of them defines the name. Start-up code (cold.hpp):
// every process's constructors call it.
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
    bool found;
};

// The lookup the loader makes in one object's DT_GNU_HASH table: the bloom
// filter, then the bucket's chain of hashes, then the name.
GREENSHIM_STARTUP_CODE bool gnu_hash_defines(const ElfW(Dyn)* dyn, ElfW(Addr) base, const Probe& p) noexcept {
    ElfW(Addr) gnu = 0, symtab = 0, strtab = 0;
    for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL; ++d) {
        if (d->d_tag == DT_GNU_HASH) gnu = d->d_un.d_ptr;
        else if (d->d_tag == DT_SYMTAB) symtab = d->d_un.d_ptr;
        else if (d->d_tag == DT_STRTAB) strtab = d->d_un.d_ptr;
    }
    if (!gnu || !symtab || !strtab) return true;  // cannot tell
    // glibc relocates these in place where .dynamic is writable; not the vdso's.
    if (gnu < base) gnu += base, symtab += base, strtab += base;
    auto* h = reinterpret_cast<const std::uint32_t*>(gnu);
    std::uint32_t nbuckets = h[0], symoffset = h[1], bloom_words = h[2], shift = h[3];
    if (nbuckets == 0 || bloom_words == 0) return false;
    auto* bloom = reinterpret_cast<const ElfW(Addr)*>(h + 4);
    constexpr unsigned bits = sizeof(ElfW(Addr)) * 8;
    ElfW(Addr) word = bloom[(p.hash / bits) % bloom_words];
    ElfW(Addr) mask = (ElfW(Addr)(1) << (p.hash % bits)) | (ElfW(Addr)(1) << ((p.hash >> shift) % bits));
    if ((word & mask) != mask) return false;
    auto* buckets = reinterpret_cast<const std::uint32_t*>(bloom + bloom_words);
    const std::uint32_t* chain = buckets + nbuckets;
    auto* syms = reinterpret_cast<const ElfW(Sym)*>(symtab);
    for (std::uint32_t i = buckets[p.hash % nbuckets]; i >= symoffset; ++i) {
        std::uint32_t c = chain[i - symoffset];
        if ((c | 1) == (p.hash | 1) && syms[i].st_shndx != SHN_UNDEF &&
            strcmp(reinterpret_cast<const char*>(strtab) + syms[i].st_name, p.name) == 0)
            return true;
        if (c & 1) return false;  // the chain's last entry
    }
    return false;
}

GREENSHIM_STARTUP_CODE int probe_object(struct dl_phdr_info* info, std::size_t, void* arg) noexcept {
    auto* p = static_cast<Probe*>(arg);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
        auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        if (gnu_hash_defines(dyn, info->dlpi_addr, *p)) p->found = true;
    }
    return p->found;  // nonzero ends the walk
}

}  // namespace

GREENSHIM_STARTUP_CODE void* find_global(const char* name) noexcept {
    Probe p{name, 5381, false};
    for (const char* c = name; *c; ++c) p.hash = p.hash * 33 + static_cast<unsigned char>(*c);
    dl_iterate_phdr(probe_object, &p);
    return p.found ? dlsym(RTLD_DEFAULT, name) : nullptr;
}

}  // namespace greenshim::detail
