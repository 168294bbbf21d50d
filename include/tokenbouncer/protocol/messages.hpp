#pragma once
// Typed messages (type byte, int32 length, body): framing, the few messages tokenbouncer reads,
// and the messages it writes itself.
//
//     byte1 type   int32 length (including itself, not the type)   body (length - 4 bytes)

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::protocol {

// One whole message: its type and its body (without type and length).
struct message_view
{
    char type = 0;
    std::string_view body;
};

struct frame
{
    enum class status
    {
        need_more,
        complete,
        invalid,
    };
    status state = status::need_more;
    char type = 0;
    std::uint32_t total = 0;  // type byte + length field + body
    pg_error error;
};

// Looks at the front of buffer: is there a whole message, and how long is it?
// `max_length` bounds the length field (limits what a peer can make us buffer).
frame frame_message(std::string_view buffer, std::uint32_t max_length);

// --- Backend messages tokenbouncer reads -----------------------------------------------------

struct auth_request
{
    auth_code code = auth_code::ok;
    std::string_view data;  // MD5 salt (4 bytes), SASL mechanism list or SASL data
};
pg_result<auth_request> parse_auth_request(std::string_view body);
// The mechanisms of an AuthenticationSASL message.
pg_result<std::vector<std::string_view>> parse_sasl_mechanisms(std::string_view data);

struct parameter_status
{
    std::string_view name;
    std::string_view value;
};
pg_result<parameter_status> parse_parameter_status(std::string_view body);

struct backend_key_data
{
    std::uint32_t pid = 0;
    std::uint32_t key = 0;
};
pg_result<backend_key_data> parse_backend_key_data(std::string_view body);

// 'I' idle, 'T' in a transaction block, 'E' in a failed transaction block.
pg_result<char> parse_ready_for_query(std::string_view body);

// ErrorResponse and NoticeResponse: fields keyed by their one-letter code
// (S severity, V non-localized severity, C SQLSTATE, M message, D detail, H hint, ...).
using error_fields = std::map<char, std::string>;
pg_result<error_fields> parse_error_fields(std::string_view body);
pg_error to_pg_error(const error_fields& fields);

// --- Messages tokenbouncer writes ---------------------------------------------------------------

std::string build_error_response(const pg_error& e);
std::string build_notice_response(std::string_view severity, std::string_view code, std::string_view message);
std::string build_auth_ok();
std::string build_auth_request(auth_code code, std::string_view data = {});
std::string build_parameter_status(std::string_view name, std::string_view value);
// The same, appended to out (a login sends a dozen of them in one write).
void append_parameter_status(std::string& out, std::string_view name, std::string_view value);
std::string build_backend_key_data(std::uint32_t pid, std::uint32_t key);
std::string build_ready_for_query(char status);
std::string build_negotiate_protocol_version(std::uint32_t newest_minor, const std::vector<std::string>& unsupported);
std::string build_password_message(std::string_view password);
std::string build_sasl_initial_response(std::string_view mechanism, std::string_view data);
std::string build_sasl_response(std::string_view data);
std::string build_query(std::string_view sql);
std::string build_terminate();

// SQL quoting for the SET statements tokenbouncer sends: 'value' with quotes doubled, and
// "name" for identifiers.
std::string quote_literal(std::string_view value);
std::string quote_identifier(std::string_view name);

}  // namespace tokenbouncer::protocol
