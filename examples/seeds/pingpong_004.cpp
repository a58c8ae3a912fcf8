// Seed 004 (1.greenlet): fun1/fun2, documented output 12 34 56 78.
//
// fun2 finishes and returns to main; fun1 stays suspended in its second
// gr2.switch() and is unwound when main drops it (exit status 1 otherwise).
#include <cstdio>
#include <memory>

#include <greenshim/greenshim.hpp>

using greenshim::Greenlet;

namespace {

std::shared_ptr<Greenlet> gr1, gr2;
bool fun1_unwound = false;

struct UnwindGuard {
    bool& flag;
    ~UnwindGuard() { flag = true; }
};

void fun1() {
    UnwindGuard guard{fun1_unwound};
    std::printf("12\n");
    gr2->switch_to();
    std::printf("56\n");
    gr2->switch_to();
}

void fun2() {
    std::printf("34\n");
    gr1->switch_to();
    std::printf("78\n");
}

}  // namespace

int main() {
    gr1 = Greenlet::create(fun1);
    gr2 = Greenlet::create(fun2);
    gr1->switch_to();

    bool ok = gr2->dead() && !gr1->dead();
    gr1.reset();
    gr2.reset();
    if (!ok || !fun1_unwound) {
        std::fprintf(stderr, "pingpong_004: gr2 dead=%d, gr1 unwound=%d\n", ok, fun1_unwound);
        return 1;
    }
    return 0;
}
