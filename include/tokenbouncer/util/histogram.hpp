#pragma once
// A latency histogram with fixed buckets, updated with relaxed atomics from any thread
// (transactions, queries and pool waits for /metrics).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace tokenbouncer {

class histogram
{
public:
    // Upper bounds in seconds, as Prometheus' "le" labels; a last bucket (+Inf) follows.
    static constexpr std::array<double, 14> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

    void observe(std::chrono::microseconds d) noexcept
    {
        double sec = static_cast<double>(d.count()) / 1e6;
        std::size_t i = 0;
        while (i < bounds.size() && sec > bounds[i])
            ++i;
        counts_[i].fetch_add(1, std::memory_order_relaxed);
        sum_us_.fetch_add(static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count()), std::memory_order_relaxed);
    }

    // Observations in bucket i (not cumulative); i == bounds.size() is +Inf.
    std::uint64_t count(std::size_t i) const noexcept { return counts_[i].load(std::memory_order_relaxed); }
    std::uint64_t sum_us() const noexcept { return sum_us_.load(std::memory_order_relaxed); }

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_us_{0};
};

}  // namespace tokenbouncer
