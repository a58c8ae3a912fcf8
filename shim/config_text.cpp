// The settings' table (config.cpp) as the programs outside the library use
// it: the environment's check and the environment part of greenrun --help
// (greenrun, in its own process; greenshim-config --check, --help-env), and
// the texts rendered for greenshim-config --markdown. libc only, no
// libstdc++: greenrun links this and starts in well under a millisecond.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "config.hpp"

namespace greenshim::shim {

bool check_environment() noexcept {
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        const char* v = s.parse ? std::getenv(s.name) : nullptr;
        Config scratch;
        Expected why;
        if (v && *v && !s.parse(v, scratch, why)) {
            std::fprintf(stderr, "greenrun: %s=%s: expected %s\n", s.name, shown(v).text, why.text);
            return false;
        }
    }
    return true;
}

Rendered render(const char* text, bool code) noexcept {
    const Families families = families_text();
    Rendered out;
    std::size_t len = 0;
    auto add = [&](const char* p, std::size_t n) {
        n = len + n < sizeof out.text ? n : sizeof out.text - 1 - len;
        std::memcpy(out.text + len, p, n);
        len += n;
    };
    for (const char* p = text; *p; ++p) {
        if (!std::strncmp(p, "{families}", 10)) add(families.text, std::strlen(families.text)), p += 9;
        else if (*p != '`' || code) add(p, 1);
    }
    out.text[len] = 0;
    return out;
}

namespace {

// Words after indent, lines kept within 80 columns.
void wrap(std::FILE* out, const char* text, std::size_t indent) {
    std::size_t col = indent;
    std::fprintf(out, "%*s", int(indent), "");
    for (const char* p = text; *p;) {
        std::size_t n = std::strcspn(p, " ");
        if (col > indent && col + 1 + n > 80) std::fprintf(out, "\n%*s", int(col = indent), "");
        else if (col > indent) std::fputc(' ', out), ++col;
        std::fwrite(p, 1, n, out);
        col += n;
        p += n;
        if (*p) ++p;
    }
    std::fputc('\n', out);
}

}  // namespace

void print_help_env(std::FILE* out) noexcept {
    std::fprintf(out,
                 "environment (an empty value means the default; greenrun rejects a bad value,\n"
                 "the library warns once and uses the default); an option of greenrun sets the\n"
                 "variable it is shown with:\n");
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        std::fprintf(out, "  %s%s%s\n", s.name, s.option ? ", " : "", s.option ? s.option : "");
        char line[sizeof(Rendered::text) * 2 + 16];
        std::snprintf(line, sizeof line, "%s; default %s", render(s.help, false).text, render(s.dflt, false).text);
        wrap(out, line, 6);
    }
}

}  // namespace greenshim::shim
