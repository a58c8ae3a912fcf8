// Seed 003 (yield实现协程操作): the baozi producer/consumer, with the ANSI
// colour codes around "[producer]" left out.
//
// As in producer_consumer.cpp, each Python generator is a greenlet whose
// `yield` switches back to its parent (main) and whose send()/__next__() are
// switch_to() calls carrying the value as a std::any.
#include <cstdio>
#include <memory>
#include <string>

#include <greenshim/greenshim.hpp>

using greenshim::Greenlet;

namespace {

std::any yield_() { return Greenlet::current().parent()->switch_to(); }

std::shared_ptr<Greenlet> consumer(std::string name) {
    return Greenlet::create([name](std::any) -> std::any {
        std::printf("--->starting eating baozi...\n");
        while (true) {
            int new_baozi = std::any_cast<int>(yield_());
            std::printf("[%s] is eating baozi %d\n", name.c_str(), new_baozi);
        }
    });
}

std::shared_ptr<Greenlet> con, con2;

void producer() {
    con->switch_to();   // r = con.__next__()
    con2->switch_to();  // r = con2.__next__()
    int n = 0;
    while (n < 5) {
        n += 1;
        con->switch_to(n);   // con.send(n)
        con2->switch_to(n);  // con2.send(n)
        std::printf("[producer] is making baozi %d\n", n);
    }
}

}  // namespace

int main() {
    con = consumer("c1");
    con2 = consumer("c2");
    producer();
    // The consumers are suspended at their `yield` forever: unwind them here,
    // before static destruction.
    con.reset();
    con2.reset();
    return 0;
}
