// Seed 000 (1.3 Gevent): run1/run2 with gevent.sleep(2) and gevent.sleep(1)
// under gevent.joinall. Output: run1 start, run2 start, run2 end, run1 end;
// the whole run takes about 2 s (the seed reports "[Finished in 2.3s]").
#include <cstdio>

#include <greenshim/greenshim.hpp>

namespace gs = greenshim;

namespace {

void run1() {
    std::printf("run1 start\n");
    gs::sleep(2);
    std::printf("run1 end\n");
}

void run2() {
    std::printf("run2 start\n");
    gs::sleep(1);
    std::printf("run2 end\n");
}

}  // namespace

int main() {
    // 遇到IO阻塞时会自动切换任务
    gs::joinall({
        gs::spawn(run1),
        gs::spawn(run2),
    });
    return 0;
}
