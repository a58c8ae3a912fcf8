// Seed 004 (2.gevent): fun1/fun2 interleaved by gevent.sleep(0).
// Documented output: www.baidu.com, www.zhihu.com, end the baidu.com,
// end th zhihu.com (sic).
#include <cstdio>

#include <greenshim/greenshim.hpp>

namespace gs = greenshim;

namespace {

void fun1() {
    std::printf("www.baidu.com\n");  // 第一步
    gs::sleep(0);
    std::printf("end the baidu.com\n");  // 第三步
}

void fun2() {
    std::printf("www.zhihu.com\n");  // 第二步
    gs::sleep(0);
    std::printf("end th zhihu.com\n");  // 第四步
}

}  // namespace

int main() {
    gs::joinall({
        gs::spawn(fun1),
        gs::spawn(fun2),
    });
    return 0;
}
