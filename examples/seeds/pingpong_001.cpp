// Seed 001 (Greenlet模块): test1 switches to gr2 only once, so the output is
// 12 56 34 and never 78 ("没有打印test2的最后一行输出 78 ... 这个可能造成泄漏").
//
// test1 returns to main; gr2 stays suspended in gr1.switch(). In greenshim it
// does not leak: dropping the last reference unwinds its stack (checked with a
// guard object; exit status 1 otherwise).
#include <cstdio>
#include <memory>

#include <greenshim/greenshim.hpp>

using greenshim::Greenlet;

namespace {

std::shared_ptr<Greenlet> gr1, gr2;
bool test2_unwound = false;

struct UnwindGuard {
    bool& flag;
    ~UnwindGuard() { flag = true; }
};

void test1() {
    std::printf("12\n");
    gr2->switch_to();
    std::printf("34\n");
}

void test2() {
    UnwindGuard guard{test2_unwound};
    std::printf("56\n");
    gr1->switch_to();
    std::printf("78\n");
}

}  // namespace

int main() {
    gr1 = Greenlet::create(test1);
    gr2 = Greenlet::create(test2);
    gr1->switch_to();

    bool ok = gr1->dead() && !gr2->dead();
    gr1.reset();
    gr2.reset();  // the un-finished greenlet: its stack unwinds here
    if (!ok || !test2_unwound) {
        std::fprintf(stderr, "pingpong_001: gr1 dead and gr2 alive=%d, gr2 unwound=%d\n", ok,
                     test2_unwound);
        return 1;
    }
    return 0;
}
