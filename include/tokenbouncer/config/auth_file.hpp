#pragma once
// PgBouncer's auth_file format: one `"user" "secret"` line per user, where the secret is a SCRAM
// verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) or a clear-text
// password; a `"` inside a quoted string is written `""`; blank lines and lines starting with
// `;` or `#` are skipped. Parsed from text, with no file access (fuzzed: tests/fuzz).

#include <map>
#include <string>
#include <string_view>

#include <boost/system/result.hpp>

#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::config {

// user -> SCRAM verifier or clear-text password, wiped from memory when dropped.
using auth_file_users = std::map<std::string, secret, std::less<>>;

// The users, or what is wrong: "line 3: expected \"user\" \"password\"".
boost::system::result<auth_file_users, std::string> parse_auth_file(std::string_view text);

}  // namespace tokenbouncer::config
