// Seed 000 (协程 1.1): the yield-based producer/consumer ("使用yield模仿协程操作").
//
// Python generators are emulated with greenlets: consumer() is a greenlet
// created by main; `item = yield` is a switch back to its parent (main, which
// runs producer()); gen.__next__() / gen.send(item) are switch_to() calls that
// hand the value over as a std::any. The consumers loop forever, as in the seed;
// they are unwound when main drops them at exit.
#include <cstdio>
#include <memory>
#include <string>

#include <greenshim/greenshim.hpp>

using greenshim::Greenlet;

namespace {

// A generator-like wrapper around a greenlet.
class Generator {
public:
    explicit Generator(Greenlet::Fn body) : g_(Greenlet::create(std::move(body))) {}
    // gen.__next__(): run to the next `yield`.
    std::any next() { return g_->switch_to(); }
    // gen.send(v): resume the pending `yield` with v, run to the next one.
    std::any send(std::any v) { return g_->switch_to(std::move(v)); }

    // `x = yield`: hand control back to whoever resumed us (our parent, main).
    static std::any yield_() { return Greenlet::current().parent()->switch_to(); }

private:
    std::shared_ptr<Greenlet> g_;
};

Generator consumer(std::string n) {
    return Generator([n](std::any) -> std::any {
        std::printf("starting consumer\n");
        while (true) {
            int item = std::any_cast<int>(Generator::yield_());
            std::printf("%s %d\n", n.c_str(), item);
        }
    });
}

void producer(Generator& a, Generator& b) {
    int item = 0;
    while (item < 5) {
        item += 1;
        for (Generator* i : {&a, &b}) i->send(item);
        std::printf("producer %d\n", item);
    }
}

}  // namespace

int main() {
    Generator con1 = consumer("con1");
    con1.next();
    Generator con2 = consumer("con2");
    con2.next();
    producer(con1, con2);
    return 0;
}
