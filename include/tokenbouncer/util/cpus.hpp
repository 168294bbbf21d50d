#pragma once
// How many CPUs this process may use: what `workers = 0` means. std::thread::hardware_concurrency
// counts the machine's CPUs; a sidecar in a pod with a CPU limit of 1 on a 32-core node, or a
// service pinned with taskset or CPUAffinity=, may use far fewer.

#include <optional>
#include <string_view>

namespace tokenbouncer {

// The CPUs the affinity mask allows, capped by the cgroup's CPU quota (rounded up), at least 1.
int usable_cpus();

// A cgroup v2 `cpu.max` file ("max 100000", "150000 100000"): the quota in CPUs, rounded up;
// nullopt when unlimited or unreadable.
std::optional<int> cpus_from_cpu_max(std::string_view text);

// cgroup v1: cpu.cfs_quota_us and cpu.cfs_period_us (quota -1: unlimited).
std::optional<int> cpus_from_cfs(std::string_view quota_us, std::string_view period_us);

}  // namespace tokenbouncer
