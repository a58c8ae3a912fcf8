// greenshim-config: the GREENSHIM_* table (config.cpp) for those outside the
// library, so that nothing but the table says what a setting is.
//
//   --check     checks the environment's GREENSHIM_* variables with the
//               library's own parsers; the first bad one is named in one line,
//               "greenrun: NAME=VALUE: expected ...", and the status is 2
//               (what greenrun does in its own process, config_text.cpp)
//   --help-env  the environment part of greenrun --help
//   --markdown  the README's table (### Configuration)
//   --names     the variables the library reads, one a line (tests/badinput)
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "config.hpp"

using namespace greenshim::shim;

namespace {

void markdown() {
    std::printf("| variable | meaning | default |\n| --- | --- | --- |\n");
    for (std::size_t i = 0; i < kSettingCount; ++i) {
        const Setting& s = kSettings[i];
        std::printf("| `%s` | %s%s%s%s | %s |\n", s.name, render(s.meaning, true).text, s.option ? " (`greenrun " : "",
                    s.option ? s.option : "", s.option ? "`)" : "", render(s.dflt, true).text);
    }
}

void names() {
    for (std::size_t i = 0; i < kSettingCount; ++i)
        if (kSettings[i].parse) std::printf("%s\n", kSettings[i].name);
}

}  // namespace

int main(int argc, char** argv) {
    const char* mode = argc == 2 ? argv[1] : "";
    if (!std::strcmp(mode, "--check")) return check_environment() ? 0 : 2;
    if (!std::strcmp(mode, "--help-env")) print_help_env(stdout);
    else if (!std::strcmp(mode, "--markdown")) markdown();
    else if (!std::strcmp(mode, "--names")) names();
    else {
        std::fprintf(stderr, "usage: greenshim-config --check | --help-env | --markdown | --names\n");
        return 2;
    }
    return std::fflush(stdout) == 0 && !std::ferror(stdout) ? 0 : 1;
}
