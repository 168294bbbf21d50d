#pragma once
// Parses the replies of Microsoft's token endpoints, with no I/O.
//
// The formats differ on purpose-less details, and all are accepted:
//   Entra v2:     {"token_type":"Bearer","expires_in":3599,"access_token":"..."}          (a number)
//   IMDS:         {"access_token":"...","expires_in":"3599","expires_on":"1506484173",...} (all strings)
//   App Service:  {"access_token":"...","expires_on":"1586984735",...}                     (no expires_in)
// https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
// https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <boost/system/result.hpp>

#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::auth {

using sys_clock = std::chrono::system_clock;

struct token
{
    secret access_token;
    sys_clock::time_point expires_on;
    std::optional<sys_clock::time_point> refresh_on;  // from refresh_in, when the service sends it
};

struct reply_error
{
    std::string message;  // what is wrong with the reply, never the token
};
[[noreturn]] void throw_exception_from_error(const reply_error& e, const boost::source_location& loc);

// A successful (200) reply body. `now` is when the request was sent (expires_in counts from then).
boost::system::result<token, reply_error> parse_token_reply(std::string_view body, sys_clock::time_point now);

// The interesting fields of an error reply, as one line: "invalid_client: AADSTS7000215: ...
// (trace_id: ..., correlation_id: ...)" (error, the first line of error_description, and Entra's
// trace_id and correlation_id when present). Falls back to a cleaned-up excerpt of the body when
// it is not JSON or has neither error nor error_description.
std::string describe_error_reply(std::string_view body);

// A body excerpt safe for a log line: at most `max` bytes, control characters replaced.
std::string excerpt(std::string_view body, std::size_t max = 300);

}  // namespace tokenbouncer::auth
