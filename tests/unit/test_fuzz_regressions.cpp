// Replays the fuzz corpora and the inputs that once crashed a fuzzer (tests/fuzz/corpus/<target>/
// and tests/fuzz/regressions/<target>/) through the fuzz targets' bodies, compiled here with GCC and
// without libFuzzer (tests/fuzz/targets.hpp). A broken invariant throws; a crash crashes.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "targets.hpp"

namespace {

namespace fs = std::filesystem;

// Runs every file of corpus/<target> and regressions/<target> through `body`; returns how many.
std::size_t replay(const std::string& target, void (*body)(std::string_view))
{
    std::size_t count = 0;
    for (const char* kind : {"corpus", "regressions"})
    {
        fs::path dir = fs::path(TOKENBOUNCER_FUZZ_DIR) / kind / target;
        if (!fs::is_directory(dir))
            continue;
        for (const auto& entry : fs::directory_iterator(dir))
        {
            if (!entry.is_regular_file())
                continue;
            std::ifstream in(entry.path(), std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            std::string data = ss.str();
            INFO("input: " << entry.path().string());
            REQUIRE_NOTHROW(body(data));
            ++count;
        }
    }
    return count;
}

}  // namespace

TEST_CASE("fuzz corpora and regressions replay cleanly", "[fuzz]")
{
    namespace fz = tokenbouncer::fuzz;
    // Every target has a seed corpus: an empty count means the path is wrong.
    CHECK(replay("startup", fz::startup) > 0);
    CHECK(replay("frontend", fz::frontend) > 0);
    CHECK(replay("backend", fz::backend) > 0);
    CHECK(replay("scram", fz::scram) > 0);
    CHECK(replay("config", fz::config) > 0);
    CHECK(replay("token_reply", fz::token_reply) > 0);
    CHECK(replay("http_response", fz::http_response) > 0);
    CHECK(replay("auth_file", fz::auth_file) > 0);
}
