// Fuzz target: the JSON bodies of Microsoft's token services, as auth::azure's interpret() reads
// them: a 200 reply through parse_token_reply, any other through describe_error_reply, both
// ending up in log lines through excerpt().
//
// Input: the body.

#include "targets.hpp"

#include "token_checks.hpp"

namespace tokenbouncer::fuzz {

void token_reply(std::string_view input)
{
    check_token_body(input);
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::token_reply)
