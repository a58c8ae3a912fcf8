// C++ thread_local objects: constructed in each thread on first use,
// destroyed in reverse order when the thread exits, before pthread_join (or
// std::thread::join) returns; the main thread's live on until exit. The
// output is the same with OS threads and under greenrun.
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {
std::mutex g_mu;
std::vector<std::string> g_log;

void say(std::string s) {
    std::lock_guard<std::mutex> lk(g_mu);
    g_log.push_back(std::move(s));
}

struct Tracked {
    std::string name;
    explicit Tracked(std::string n) : name(std::move(n)) { say("  construct " + name); }
    ~Tracked() { say("  destroy " + name); }
};

Tracked& first(const std::string& who) {
    thread_local Tracked t(who + ".first");
    return t;
}
Tracked& second(const std::string& who) {
    thread_local Tracked t(who + ".second");
    return t;
}

void body(std::string who) {
    first(who);
    second(who);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // others run meanwhile
    say("  " + who + " sees " + first(who).name + " and " + second(who).name);
}
}  // namespace

int main() {
    first("main");
    // One thread at a time, so the log has one order; main keeps its own.
    for (int round = 0; round < 2; ++round) {
        std::string a = "t" + std::to_string(2 * round), b = "t" + std::to_string(2 * round + 1);
        std::thread ta(body, a);
        ta.join();
        say(a + " joined");
        std::thread tb(body, b);
        tb.join();
        say(b + " joined");
    }
    say("main still has " + first("main").name);
    for (auto& line : g_log) std::printf("%s\n", line.c_str());
}
