#include "tokenbouncer/util/cpus.hpp"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace tokenbouncer {

namespace {

std::optional<long long> parse_number(std::string_view s)
{
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.remove_suffix(1);
    while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
    long long v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
        return std::nullopt;
    return v;
}

std::optional<int> quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return std::nullopt;
    long long n = (quota + period - 1) / period;
    return static_cast<int>(std::clamp<long long>(n, 1, 1 << 16));
}

std::optional<std::string> read_file(const char* path)
{
    std::ifstream f(path);
    if (!f)
        return std::nullopt;
    std::ostringstream out;
    out << f.rdbuf();
    return out.str();
}

}  // namespace

std::optional<int> cpus_from_cpu_max(std::string_view text)
{
    auto space = text.find(' ');
    if (space == std::string_view::npos)
        return std::nullopt;
    auto quota = parse_number(text.substr(0, space));  // "max" does not parse: unlimited
    auto period = parse_number(text.substr(space + 1));
    if (!quota || !period)
        return std::nullopt;
    return quota_cpus(*quota, *period);
}

std::optional<int> cpus_from_cfs(std::string_view quota_us, std::string_view period_us)
{
    auto quota = parse_number(quota_us);
    auto period = parse_number(period_us);
    if (!quota || !period)
        return std::nullopt;
    return quota_cpus(*quota, *period);
}

int usable_cpus()
{
    int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = std::min(n, CPU_COUNT(&set));
    std::optional<int> quota;
    if (auto v2 = read_file("/sys/fs/cgroup/cpu.max"))
        quota = cpus_from_cpu_max(*v2);
    else if (auto q = read_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        if (auto p = read_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
            quota = cpus_from_cfs(*q, *p);
    if (quota)
        n = std::min(n, *quota);
    return std::max(1, n);
}

}  // namespace tokenbouncer
