// greenshim-dump: what `greenrun --dump PID [--dump-to FILE]` runs. Asks a
// running process that has libgreenshim.so loaded to write every greenlet
// thread (state, wait, start function, backtrace), waits for the dump, and
// prints it on stdout with the frames named by addr2line where it can.
//
// The channel (report.cpp says the process's side): the request file
// /tmp/greenshim-dump.<PID>.<our pid> ("+PATH": to PATH and the process's
// stderr; "=PATH": to PATH only), then sigqueue(PID, SIGRTMAX-2, magic). The
// dump ends with the line "greenshim: end of dump".
//
// Exit status: 0 the dump was printed; 1 no complete dump came in time (what
// came is printed); 2 a usage error, no such process, one we may not signal,
// or one that is not running under greenshim.
#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::uintptr_t kDumpMagic = 0x67736864'00000000;  // report.cpp
constexpr const char* kEnd = "greenshim: end of dump\n";

[[noreturn]] void fail(int status, const std::string& msg) {
    std::fprintf(stderr, "greenrun: --dump: %s\n", msg.c_str());
    std::exit(status);
}

void usage(FILE* f) {
    std::fputs(
        "usage: greenrun --dump PID [--dump-to FILE] [--dump-timeout SECONDS] [--raw]\n"
        "Asks process PID (running under greenshim) to write every greenlet thread:\n"
        "its number and name, its state and the call it waits in, its start function\n"
        "and its backtrace. The process does so in a handler of signal SIGRTMAX-2 that\n"
        "carries greenshim's value (sigqueue), without stopping; a SIGRTMAX-2 without it\n"
        "goes to the program as unpatched. The dump goes to the process's stderr and\n"
        "is printed here; with --dump-to FILE it goes to FILE (not to the process's\n"
        "stderr) and is printed here too. Frames are named by addr2line where it can\n"
        "(--raw: as the process wrote them). Waits at most SECONDS (default 10).\n",
        f);
}

std::string read_file(const std::string& path, bool* ok = nullptr) {
    std::ifstream in(path, std::ios::binary);
    if (ok) *ok = bool(in);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The value of a "Name:\tvalue" line of /proc/PID/status.
std::string status_field(const std::string& status, const std::string& name) {
    std::istringstream in(status);
    for (std::string line; std::getline(in, line);)
        if (line.compare(0, name.size() + 1, name + ":") == 0) {
            std::size_t v = line.find_first_not_of(" \t", name.size() + 1);
            return v == std::string::npos ? "" : line.substr(v);
        }
    return "";
}

bool sig_in_mask(const std::string& hex, int sig) {
    if (hex.empty()) return false;
    unsigned long long m = std::strtoull(hex.c_str(), nullptr, 16);
    return (m >> (sig - 1)) & 1;
}

struct Mapping {
    std::uintptr_t start, end, offset;
    std::string path;
};

std::vector<Mapping> read_maps(pid_t pid) {
    std::vector<Mapping> maps;
    std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/maps"));
    for (std::string line; std::getline(in, line);) {
        Mapping m{};
        char perms[8], dev[16];
        unsigned long inode;
        int used = 0;
        unsigned long s, e, off;
        if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %15s %lu %n", &s, &e, perms, &off, dev, &inode, &used) < 6)
            continue;
        m.start = s, m.end = e, m.offset = off;
        if (used > 0 && std::size_t(used) < line.size()) m.path = line.substr(std::size_t(used));
        if (!m.path.empty() && m.path[0] == '/') maps.push_back(m);
    }
    return maps;
}

bool is_exec_elf(const std::string& path) {  // ET_EXEC: addresses are link-time ones
    Elf64_Ehdr h{};
    std::ifstream in(path, std::ios::binary);
    return in.read(reinterpret_cast<char*>(&h), sizeof h) && h.e_type == ET_EXEC;
}

std::string find_in_path(const char* name) {
    const char* path = std::getenv("PATH");
    std::istringstream in(path && *path ? path : "/usr/bin:/bin");
    for (std::string dir; std::getline(in, dir, ':');) {
        std::string c = (dir.empty() ? "." : dir) + "/" + name;
        if (access(c.c_str(), X_OK) == 0) return c;
    }
    return "";
}

// Runs argv, returns its stdout ("" if it cannot run).
std::string run_capture(const std::vector<std::string>& argv) {
    int p[2];
    if (pipe(p) != 0) return "";
    pid_t child = fork();
    if (child < 0) return "";
    if (child == 0) {
        dup2(p[1], 1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 2);
        close(p[0]);
        close(p[1]);
        std::vector<char*> a;
        for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        execv(a[0], a.data());
        _exit(127);
    }
    close(p[1]);
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = read(p[0], buf, sizeof buf)) != 0;) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        out.append(buf, std::size_t(n));
    }
    close(p[0]);
    int st;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    return out;
}

// Each frame line ("      #3  0x7f... name (module)") gets the function,
// file and line addr2line finds for it, inlined callers included.
std::string symbolize(const std::string& dump, const std::vector<Mapping>& maps) {
    std::string addr2line = find_in_path("addr2line");
    if (addr2line.empty() || maps.empty()) return dump;
    struct Frame {
        std::size_t line;
        std::string module;
        std::uintptr_t vaddr;
    };
    std::vector<std::string> lines;
    std::istringstream in(dump);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::map<std::string, std::vector<std::size_t>> by_module;  // module -> indices into frames
    std::vector<Frame> frames;
    std::map<std::string, bool> exec_cache;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        unsigned long addr;
        int n;
        if (std::sscanf(lines[i].c_str(), " #%d 0x%lx", &n, &addr) != 2 || addr == 0) continue;
        for (const Mapping& m : maps) {
            if (addr < m.start || addr >= m.end) continue;
            auto it = exec_cache.find(m.path);
            if (it == exec_cache.end()) it = exec_cache.emplace(m.path, is_exec_elf(m.path)).first;
            // A return address: the call is the byte before it.
            std::uintptr_t a = addr - 1;
            std::uintptr_t vaddr = it->second ? a : a - m.start + m.offset;
            by_module[m.path].push_back(frames.size());
            frames.push_back({i, m.path, vaddr});
            break;
        }
    }
    std::map<std::size_t, std::string> extra;  // line index -> what to add after it
    for (auto& [module, idx] : by_module) {
        std::vector<std::string> argv{addr2line, "-a", "-f", "-C", "-i", "-e", module};
        for (std::size_t k : idx) {
            char hex[32];
            std::snprintf(hex, sizeof hex, "0x%lx", (unsigned long)frames[k].vaddr);
            argv.push_back(hex);
        }
        std::istringstream out(run_capture(argv));
        std::vector<std::vector<std::string>> groups;
        for (std::string l; std::getline(out, l);) {
            if (l.rfind("0x", 0) == 0) groups.emplace_back();
            else if (!groups.empty()) groups.back().push_back(l);
        }
        if (groups.size() != idx.size()) continue;  // not what we asked: leave the frames alone
        for (std::size_t g = 0; g < groups.size(); ++g) {
            // function, file:line, for the innermost inlined function first:
            // the frame's own function is the last pair.
            const std::vector<std::string>& fl = groups[g];
            if (fl.size() < 2) continue;
            std::string fn = fl[fl.size() - 2], where = fl.back();
            if (std::size_t d = where.find(" (discriminator"); d != std::string::npos) where.erase(d);
            if (where.rfind("??", 0) == 0) where.clear();
            // The last two parts of the path: enough to find the file.
            if (std::size_t s1 = where.rfind('/'); s1 != std::string::npos && s1 > 0)
                if (std::size_t s2 = where.rfind('/', s1 - 1); s2 != std::string::npos) where = where.substr(s2 + 1);
            const std::string& line = lines[frames[idx[g]].line];
            std::string add;
            if (fn != "??" && line.find(" " + fn + "+") == std::string::npos && line.find(" " + fn + " ") == std::string::npos) {
                if (fn.size() > 100) fn = fn.substr(0, 97) + "...";
                add += ": " + fn;
            }
            if (!where.empty()) add += " at " + where;
            if (!add.empty()) extra[frames[idx[g]].line] = add;
        }
    }
    std::string result;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        result += lines[i];
        if (auto it = extra.find(i); it != extra.end()) result += it->second;
        result += '\n';
    }
    return result;
}

std::string seconds(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", s);
    return buf;
}

std::string absolute(const std::string& path) {
    if (!path.empty() && path[0] == '/') return path;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) fail(2, "cannot find the current directory");
    return std::string(cwd) + "/" + path;
}

}  // namespace

int main(int argc, char** argv) {
    std::string pid_arg, to;
    double timeout = 10;
    bool raw = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* opt) -> std::string {
            if (a.size() > std::strlen(opt) && a.compare(0, std::strlen(opt) + 1, std::string(opt) + "=") == 0)
                return a.substr(std::strlen(opt) + 1);
            if (i + 1 >= argc) fail(2, std::string(opt) + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else if (a == "--dump-to" || a.rfind("--dump-to=", 0) == 0) {
            to = value("--dump-to");
        } else if (a == "--dump-timeout" || a.rfind("--dump-timeout=", 0) == 0) {
            std::string v = value("--dump-timeout");
            char* end;
            timeout = std::strtod(v.c_str(), &end);
            if (*end || !(timeout > 0) || timeout > 3600) fail(2, "--dump-timeout: expected seconds, 0 < S <= 3600");
        } else if (a == "--raw") {
            raw = true;
        } else if (pid_arg.empty() && !a.empty() && a[0] != '-') {
            pid_arg = a;
        } else {
            fail(2, "unexpected argument " + a + " (greenrun --dump --help)");
        }
    }
    if (pid_arg.empty()) fail(2, "which process? (greenrun --dump PID)");
    char* end;
    long lpid = std::strtol(pid_arg.c_str(), &end, 10);
    if (*end || lpid <= 0 || lpid > 0x3fffffff) fail(2, "not a process id: " + pid_arg);
    auto pid = pid_t(lpid);
    std::string proc = "/proc/" + std::to_string(pid);
    if (kill(pid, 0) != 0 && errno == ESRCH) fail(2, "no process " + pid_arg);
    bool ok;
    std::string status = read_file(proc + "/status", &ok);
    if (!ok) fail(2, "no process " + pid_arg);
    std::string name = status_field(status, "Name");
    std::string who = "process " + pid_arg + " (" + name + ")";
    if (kill(pid, 0) != 0) fail(2, who + ": " + std::strerror(errno) + " (it is another user's: run as that user or root)");
    std::string maps_text = read_file(proc + "/maps", &ok);
    if (!ok || maps_text.empty()) fail(2, who + ": cannot read " + proc + "/maps (another user's process?)");
    if (maps_text.find("/libgreenshim.so") == std::string::npos)
        fail(2, who + " is not running under greenshim (no libgreenshim.so in " + proc + "/maps)");
    const int sig = SIGRTMAX - 2;
    if (!sig_in_mask(status_field(status, "SigCgt"), sig))
        fail(2, who + " has libgreenshim.so loaded but does not take SIGRTMAX-2: greenshim is inactive there "
                      "(GREENSHIM_DISABLE=1, or a setuid program) or older than --dump");
    std::string state = status_field(status, "State");
    if (!state.empty() && (state[0] == 'T' || state[0] == 't'))
        fail(1, who + " is stopped (" + state + "): it cannot answer until it is continued");
    if (state.empty() || state[0] == 'Z') fail(2, who + " has exited (a zombie)");
    // Who the files must belong to: the process's effective user.
    uid_t target_uid = geteuid();
    {
        std::istringstream uids(status_field(status, "Uid"));
        unsigned long real, effective;
        if (uids >> real >> effective) target_uid = uid_t(effective);
    }

    // The output file: FILE, or one of ours.
    bool temp = to.empty();
    std::string out_path;
    int out_fd;
    if (temp) {
        char tmpl[] = "/tmp/greenshim-dump-out.XXXXXX";
        out_fd = mkstemp(tmpl);
        if (out_fd < 0) fail(2, std::string("cannot make a file in /tmp: ") + std::strerror(errno));
        out_path = tmpl;
    } else {
        out_path = absolute(to);
        out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out_fd < 0) fail(2, "--dump-to " + to + ": " + std::strerror(errno));
    }
    if (out_path.size() > 1000) fail(2, "--dump-to: a path of at most 1000 bytes, please");
    if (target_uid != geteuid() && fchown(out_fd, target_uid, gid_t(-1)) != 0)
        fail(2, "cannot give " + out_path + " to user " + std::to_string(target_uid) + ": " + std::strerror(errno));
    close(out_fd);
    std::string request = "/tmp/greenshim-dump." + std::to_string(pid) + "." + std::to_string(getpid());
    auto cleanup = [&] {
        unlink(request.c_str());
        if (temp) unlink(out_path.c_str());
    };
    unlink(request.c_str());  // a stale one of an earlier greenshim-dump with our pid
    int rq = open(request.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (rq < 0) {
        if (temp) unlink(out_path.c_str());
        fail(2, "cannot make " + request + ": " + std::strerror(errno));
    }
    std::string body = (temp ? "+" : "=") + out_path + "\n";
    fchmod(rq, 0644);  // whatever our umask
    bool written = write(rq, body.data(), body.size()) == ssize_t(body.size());
    if (written && target_uid != geteuid() && fchown(rq, target_uid, gid_t(-1)) != 0) written = false;
    close(rq);
    if (!written) {
        cleanup();
        fail(2, "cannot write " + request);
    }

    sigval v;
    v.sival_ptr = reinterpret_cast<void*>(kDumpMagic);
    if (sigqueue(pid, sig, v) != 0) {
        int e = errno;
        cleanup();
        fail(2, who + ": " + std::strerror(e));
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    std::string dump;
    bool complete = false, gone = false;
    for (;;) {
        dump = read_file(out_path);
        std::size_t e = dump.find(kEnd);
        if (e != std::string::npos) {
            dump.resize(e + std::strlen(kEnd));
            complete = true;
            break;
        }
        if (kill(pid, 0) != 0 && errno == ESRCH) {
            gone = true;
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::vector<Mapping> maps = raw ? std::vector<Mapping>{} : read_maps(pid);
    cleanup();
    if (!dump.empty()) {
        std::string shown = raw ? dump : symbolize(dump, maps);
        std::fwrite(shown.data(), 1, shown.size(), stdout);
        std::fflush(stdout);
    }
    if (complete) return 0;
    if (gone) fail(1, who + " ended before its dump was complete");
    std::string why;
    bool all_block = true;
    std::string tasks = proc + "/task/";
    if (DIR* d = opendir(tasks.c_str())) {
        bool any = false;
        while (dirent* de = readdir(d)) {
            if (de->d_name[0] == '.') continue;
            any = true;
            if (!sig_in_mask(status_field(read_file(tasks + de->d_name + "/status"), "SigBlk"), sig)) all_block = false;
        }
        closedir(d);
        if (!any) all_block = false;
    } else {
        all_block = false;
    }
    if (all_block)
        why = "every thread of it blocks SIGRTMAX-2 (SigBlk in " + proc + "/task/*/status), so the request waits";
    else
        why = "it may be in another mount namespace (then the dump went to its stderr), or its hub thread "
              "blocks SIGRTMAX-2";
    fail(1, "no " + std::string(dump.empty() ? "" : "complete ") + "dump from " + who + " within " +
                seconds(timeout) + " s: " + why);
}
