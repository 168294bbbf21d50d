// Fuzz target: the auth_file (PgBouncer's format), as config::parse_auth_file reads it, and the
// SCRAM verifiers in it as client authentication parses them.
//
// Input: the text of an auth_file.

#include "targets.hpp"

#include "tokenbouncer/config/auth_file.hpp"
#include "tokenbouncer/protocol/scram.hpp"

namespace tokenbouncer::fuzz {

void auth_file(std::string_view input)
{
    auto users = config::parse_auth_file(input);
    if (!users)
    {
        // The error names the line, and never quotes it (it may hold a password).
        TB_FUZZ_CHECK(users.error().rfind("line ", 0) == 0);
        TB_FUZZ_CHECK(users.error().size() < 64);
        return;
    }
    for (const auto& [user, value] : *users)
    {
        const std::string& secret_text = value.reveal();
        TB_FUZZ_CHECK(user.size() <= input.size() && secret_text.size() <= input.size());
        TB_FUZZ_CHECK(user.find('\n') == std::string::npos && secret_text.find('\n') == std::string::npos);
        if (auto v = protocol::scram_verifier::parse(secret_text))
            TB_FUZZ_CHECK(protocol::scram_verifier::parse(v->to_string()).has_value());
    }
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::auth_file)
