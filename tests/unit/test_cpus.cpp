// util/cpus.hpp: what workers = 0 means under a CPU quota (a pod's CPU limit) or an affinity mask.

#include <catch2/catch.hpp>

#include <thread>

#include "tokenbouncer/util/cpus.hpp"

using namespace tokenbouncer;

TEST_CASE("cpus_from_cpu_max: cgroup v2 quota in CPUs, rounded up", "[cpus]")
{
    CHECK_FALSE(cpus_from_cpu_max("max 100000\n").has_value());
    CHECK(cpus_from_cpu_max("100000 100000\n") == 1);
    CHECK(cpus_from_cpu_max("50000 100000\n") == 1);   // 500m
    CHECK(cpus_from_cpu_max("150000 100000\n") == 2);  // 1500m
    CHECK(cpus_from_cpu_max("400000 100000") == 4);
    CHECK_FALSE(cpus_from_cpu_max("").has_value());
    CHECK_FALSE(cpus_from_cpu_max("garbage").has_value());
    CHECK_FALSE(cpus_from_cpu_max("100000 0").has_value());
}

TEST_CASE("cpus_from_cfs: cgroup v1 quota and period", "[cpus]")
{
    CHECK_FALSE(cpus_from_cfs("-1\n", "100000\n").has_value());
    CHECK(cpus_from_cfs("200000\n", "100000\n") == 2);
    CHECK(cpus_from_cfs("10000\n", "100000\n") == 1);
    CHECK_FALSE(cpus_from_cfs("x", "100000").has_value());
}

TEST_CASE("usable_cpus: at least 1, at most the machine's", "[cpus]")
{
    int n = usable_cpus();
    CHECK(n >= 1);
    CHECK(n <= static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}
