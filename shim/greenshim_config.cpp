// greenshim-config: the GREENSHIM_* table (config.cpp) for those outside the
// library, so that nothing but the table says what a setting is.
//
//   --check     checks the environment's GREENSHIM_* variables with the
//               library's own parsers; the first bad one is named in one line,
//               "greenrun: NAME=VALUE: expected ...", and the status is 2
//               (greenrun runs this before anything else)
//   --help-env  the environment part of greenrun --help
//   --markdown  the README's table (### Configuration)
//   --names     the variables the library reads, one a line (tests/badinput)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.hpp"

using namespace greenshim::shim;

namespace {

int check() {
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        const char* v = s.parse ? std::getenv(s.name) : nullptr;
        Config scratch;
        Expected why;
        if (v && *v && !s.parse(v, scratch, why)) {
            std::fprintf(stderr, "greenrun: %s=%s: expected %s\n", s.name, shown(v).text, why.text);
            return 2;
        }
    }
    return 0;
}

// A table text as shown: {families} filled in; for plain text (code false),
// markdown's backticks dropped.
std::string render(const char* text, bool code) {
    const Families families = families_text();
    std::string out;
    for (const char* p = text; *p; ++p) {
        if (!std::strncmp(p, "{families}", 10)) out += families.text, p += 9;
        else if (*p != '`' || code) out += *p;
    }
    return out;
}

// Words after indent, lines kept within 80 columns.
void wrap(const std::string& text, std::size_t indent) {
    std::size_t col = indent, start = 0;
    std::printf("%*s", int(indent), "");
    while (start < text.size()) {
        std::size_t end = text.find(' ', start);
        if (end == std::string::npos) end = text.size();
        std::string word = text.substr(start, end - start);
        if (col > indent && col + 1 + word.size() > 80) std::printf("\n%*s", int(col = indent), "");
        else if (col > indent) std::printf(" "), ++col;
        std::printf("%s", word.c_str());
        col += word.size();
        start = end + 1;
    }
    std::printf("\n");
}

void help_env() {
    std::printf(
        "environment (an empty value means the default; greenrun rejects a bad value,\n"
        "the library warns once and uses the default); an option of greenrun sets the\n"
        "variable it is shown with:\n");
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        std::printf("  %s%s%s\n", s.name, s.option ? ", " : "", s.option ? s.option : "");
        wrap(render(s.help, false) + "; default " + render(s.dflt, false), 6);
    }
}

void markdown() {
    std::printf("| variable | meaning | default |\n| --- | --- | --- |\n");
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        std::string meaning = render(s.meaning, true);
        if (s.option) meaning += std::string(" (`greenrun ") + s.option + "`)";
        std::printf("| `%s` | %s | %s |\n", s.name, meaning.c_str(), render(s.dflt, true).c_str());
    }
}

void names() {
    for (std::size_t i = 0; i < kSettingCount; ++i)
        if (kSettings[i].parse) std::printf("%s\n", kSettings[i].name);
}

}  // namespace

int main(int argc, char** argv) {
    const char* mode = argc == 2 ? argv[1] : "";
    if (!std::strcmp(mode, "--check")) return check();
    if (!std::strcmp(mode, "--help-env")) help_env();
    else if (!std::strcmp(mode, "--markdown")) markdown();
    else if (!std::strcmp(mode, "--names")) names();
    else {
        std::fprintf(stderr, "usage: greenshim-config --check | --help-env | --markdown | --names\n");
        return 2;
    }
    return std::fflush(stdout) == 0 && !std::ferror(stdout) ? 0 : 1;
}
