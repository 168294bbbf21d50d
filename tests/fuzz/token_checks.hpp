#pragma once
// What the token_reply and http_response targets check of a token service's reply body.

#include <chrono>
#include <string>
#include <string_view>

#include "targets.hpp"
#include "tokenbouncer/auth/token_reply.hpp"

namespace tokenbouncer::fuzz {

inline bool loggable(std::string_view line)
{
    for (char c : line)
        if (static_cast<unsigned char>(c) < 0x20)
            return false;
    return true;
}

// As auth::azure's interpret() reads a body: a 200 reply through parse_token_reply, any other
// through describe_error_reply, both ending up in log lines through excerpt().
inline void check_token_body(std::string_view body)
{
    namespace auth = tokenbouncer::auth;
    // A fixed "now" keeps the replay deterministic: 2023-11-14T22:13:20Z.
    const auth::sys_clock::time_point now{std::chrono::seconds(1'700'000'000)};
    auto t = auth::parse_token_reply(body, now);
    if (t)
    {
        TB_FUZZ_CHECK(!t->access_token.empty());
        TB_FUZZ_CHECK(t->expires_on > now - std::chrono::minutes(5));
        TB_FUZZ_CHECK(t->expires_on <= now + std::chrono::hours(24 * 400));
        if (t->refresh_on)
            TB_FUZZ_CHECK(*t->refresh_on > now && *t->refresh_on < t->expires_on);
    }
    else
    {
        TB_FUZZ_CHECK(!t.error().message.empty());
    }
    std::string line = auth::describe_error_reply(body);
    TB_FUZZ_CHECK(line.size() <= 403 && loggable(line));
    std::string ex = auth::excerpt(body);
    TB_FUZZ_CHECK(ex.size() <= 303 && loggable(ex));
}

}  // namespace tokenbouncer::fuzz
