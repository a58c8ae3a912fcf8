// Seed 001 (Gevent, 遇到IO阻塞时会自动切换任务): eat/play for 'egon' with
// gevent.sleep(2) and gevent.sleep(1), joined one by one, then print('主').
#include <cstdio>
#include <string>

#include <greenshim/greenshim.hpp>

namespace gs = greenshim;

namespace {

void eat(const std::string& name) {
    std::printf("%s eat 1\n", name.c_str());
    gs::sleep(2);
    std::printf("%s eat 2\n", name.c_str());
}

void play(const std::string& name) {
    std::printf("%s play 1\n", name.c_str());
    gs::sleep(1);
    std::printf("%s play 2\n", name.c_str());
}

}  // namespace

int main() {
    auto g1 = gs::spawn(eat, std::string("egon"));
    auto g2 = gs::spawn(play, std::string("egon"));  // play(name='egon')
    g1.join();
    g2.join();
    // 或者gevent.joinall([g1,g2])
    std::printf("主\n");
    return 0;
}
