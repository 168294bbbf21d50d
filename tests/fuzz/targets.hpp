#pragma once
// The bodies of the fuzz targets, shared by the libFuzzer entry points (tests/fuzz/fuzz_<name>.cpp,
// built with TOKENBOUNCER_BUILD_FUZZERS=ON and clang) and the corpus replay in the unit tests
// (tests/unit/test_fuzz_regressions.cpp, which compiles the same files with TOKENBOUNCER_FUZZ_REPLAY).
//
// Each body takes one input and must neither crash nor let an exception escape; broken invariants
// are reported with TB_FUZZ_CHECK.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tokenbouncer::fuzz {

void startup(std::string_view input);
void frontend(std::string_view input);
void backend(std::string_view input);
void scram(std::string_view input);
void config(std::string_view input);
void token_reply(std::string_view input);
void http_response(std::string_view input);
void auth_file(std::string_view input);

// A broken invariant. Under libFuzzer: abort, so the input is saved as a crash. In the unit tests:
// an exception, so Catch2 names the file.
[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line)
{
#ifdef TOKENBOUNCER_FUZZ_REPLAY
    throw std::logic_error(std::string(file) + ":" + std::to_string(line) + ": invariant failed: " + what);
#else
    std::fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, what);
    std::abort();
#endif
}

#define TB_FUZZ_CHECK(cond)                                                          \
    do                                                                               \
    {                                                                                \
        if (!(cond))                                                                 \
            ::tokenbouncer::fuzz::invariant_failed(#cond, __FILE__, __LINE__);       \
    } while (0)

// Cuts a stream into the pieces a socket might deliver. The first byte of a fuzz input is the
// control byte: it seeds the piece sizes (and whatever else a target wants to vary), the rest
// is the stream. Control byte 0 delivers the stream in one piece.
class chunker
{
public:
    chunker(std::string_view stream, std::uint8_t control) : rest_(stream), state_(control * 2654435761u + 1)
    {
        static constexpr std::size_t max_sizes[] = {0, 1, 2, 3, 7, 16, 64, 512};
        max_ = max_sizes[control & 7];
    }

    bool done() const { return rest_.empty(); }

    // The next piece, at most `limit` bytes (a read into a buffer with that much space).
    std::string_view next(std::size_t limit = SIZE_MAX)
    {
        std::size_t n = rest_.size();
        if (max_ > 0)
            n = 1 + next_random() % max_;
        if (n > limit)
            n = limit;
        if (n > rest_.size())
            n = rest_.size();
        std::string_view piece = rest_.substr(0, n);
        rest_.remove_prefix(n);
        return piece;
    }

    // xorshift32: cheap and deterministic.
    std::uint32_t next_random()
    {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        return state_;
    }

private:
    std::string_view rest_;
    std::uint32_t state_;
    std::size_t max_ = 0;
};

// Splits an input into its control byte and the rest.
inline std::uint8_t control_byte(std::string_view& input)
{
    if (input.empty())
        return 0;
    auto c = static_cast<std::uint8_t>(input.front());
    input.remove_prefix(1);
    return c;
}

}  // namespace tokenbouncer::fuzz

// The libFuzzer entry point of one target (left out of the unit-test replay).
#ifdef TOKENBOUNCER_FUZZ_REPLAY
#define TB_FUZZ_ENTRY_POINT(body)
#else
#define TB_FUZZ_ENTRY_POINT(body)                                                                 \
    extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)              \
    {                                                                                              \
        body(std::string_view(reinterpret_cast<const char*>(data), size));                         \
        return 0;                                                                                  \
    }
#endif
