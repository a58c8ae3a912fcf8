// Seed 002 (gevent): three greenlets running test(3) without ever yielding, so
// they run one after another ("3个greenlet是依次运行而不是交替运行").
//
// The seed prints gevent.getcurrent() (a repr with an address); to keep the
// output deterministic each greenlet names itself g1/g2/g3 and test() prints
// getcurrent().name().
#include <cstdio>
#include <string>

#include <greenshim/greenshim.hpp>

namespace gs = greenshim;

namespace {

void test(std::string label, int n) {
    gs::getcurrent().set_name(std::move(label));
    for (int i = 0; i < n; ++i) {
        std::printf("%s %d\n", gs::getcurrent().name().c_str(), i);
        // gevent.sleep(1)
    }
}

}  // namespace

int main() {
    auto g1 = gs::spawn(test, "g1", 3);
    auto g2 = gs::spawn(test, "g2", 3);
    auto g3 = gs::spawn(test, "g3", 3);

    g1.join();
    g2.join();
    g3.join();
    return 0;
}
