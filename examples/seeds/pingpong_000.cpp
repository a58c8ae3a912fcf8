// Seeds 000 (1.2 Greenlet) and 003 (Greenlet): test1/test2 switching with
// gr1.switch() / gr2.switch(). Prints 12 56 34 78, one per line.
//
// test2 finishes (its parent is main, so control returns to main), while test1
// stays suspended in its second gr2.switch(); main then drops gr1, which must
// unwind its stack (checked with a guard object; exit status 1 otherwise).
#include <cstdio>
#include <memory>

#include <greenshim/greenshim.hpp>

using greenshim::Greenlet;

namespace {

std::shared_ptr<Greenlet> gr1, gr2;
bool test1_unwound = false;

struct UnwindGuard {
    bool& flag;
    ~UnwindGuard() { flag = true; }
};

void test1() {
    UnwindGuard guard{test1_unwound};
    std::printf("12\n");
    gr2->switch_to();  // 调用switch()函数切换到函数test2
    std::printf("34\n");
    gr2->switch_to();
}

void test2() {
    std::printf("56\n");
    gr1->switch_to();  // 调用switch()函数切换到函数test1
    std::printf("78\n");
}

}  // namespace

int main() {
    gr1 = Greenlet::create(test1);  // 创建greenlet对象
    gr2 = Greenlet::create(test2);
    gr1->switch_to();  // 将函数切换到test1

    bool ok = gr2->dead() && !gr1->dead();
    gr1.reset();
    gr2.reset();
    if (!ok || !test1_unwound) {
        std::fprintf(stderr, "pingpong_000: gr2 dead=%d, gr1 unwound=%d\n", ok, test1_unwound);
        return 1;
    }
    return 0;
}
