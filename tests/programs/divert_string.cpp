// A C++ std::string for gdb to inspect by calling its members in a diversion
// (tests/gdb_divert.rs).
#include <cstdio>
#include <string>

__attribute__((noinline)) static int use(const std::string &s) { return (int)s.size(); }

int main() {
    std::string s = "hello";
    int n = use(s);
    std::printf("n=%d %s\n", n, s.c_str());
    return 0;
}
