#pragma once
// Constants of the PostgreSQL frontend/backend protocol, version 3.
// https://www.postgresql.org/docs/current/protocol-message-formats.html

#include <cstdint>

namespace tokenbouncer::protocol {

// Codes in place of a protocol version in the startup family of packets (src/include/libpq/pqcomm.h).
inline constexpr std::uint32_t cancel_request_code = 80877102;  // 1234 << 16 | 5678
inline constexpr std::uint32_t ssl_request_code = 80877103;     // 1234 << 16 | 5679
inline constexpr std::uint32_t gssenc_request_code = 80877104;  // 1234 << 16 | 5680
inline constexpr std::uint32_t protocol_3_0 = 3u << 16;

// PostgreSQL's own MAX_STARTUP_PACKET_LENGTH.
inline constexpr std::uint32_t max_startup_packet_length = 10000;
// Longest message tokenbouncer reads whole during login (passwords and tokens up to 64 KiB).
inline constexpr std::uint32_t max_login_message_length = 1 << 20;
// No message may claim to be longer than this (PostgreSQL's own limit is 1 GB for a field).
inline constexpr std::uint32_t max_message_length = 0x7fffffff;

// Authentication request codes (AuthenticationXXX messages, type 'R').
enum class auth_code : std::int32_t
{
    ok = 0,
    kerberos_v5 = 2,
    cleartext_password = 3,
    md5_password = 5,
    gss = 7,
    gss_continue = 8,
    sspi = 9,
    sasl = 10,
    sasl_continue = 11,
    sasl_final = 12,
};

// Backend message types.
namespace backend {
inline constexpr char authentication = 'R';
inline constexpr char backend_key_data = 'K';
inline constexpr char bind_complete = '2';
inline constexpr char close_complete = '3';
inline constexpr char command_complete = 'C';
inline constexpr char copy_in_response = 'G';
inline constexpr char copy_out_response = 'H';
inline constexpr char copy_both_response = 'W';
inline constexpr char data_row = 'D';
inline constexpr char empty_query_response = 'I';
inline constexpr char error_response = 'E';
inline constexpr char negotiate_protocol_version = 'v';
inline constexpr char no_data = 'n';
inline constexpr char notice_response = 'N';
inline constexpr char notification_response = 'A';
inline constexpr char parameter_description = 't';
inline constexpr char parameter_status = 'S';
inline constexpr char parse_complete = '1';
inline constexpr char portal_suspended = 's';
inline constexpr char ready_for_query = 'Z';
inline constexpr char row_description = 'T';
}  // namespace backend

// Frontend message types.
namespace frontend {
inline constexpr char bind = 'B';
inline constexpr char close = 'C';
inline constexpr char copy_data = 'd';
inline constexpr char copy_done = 'c';
inline constexpr char copy_fail = 'f';
inline constexpr char describe = 'D';
inline constexpr char execute = 'E';
inline constexpr char flush = 'H';
inline constexpr char function_call = 'F';
inline constexpr char parse = 'P';
inline constexpr char password = 'p';  // also SASLInitialResponse, SASLResponse, GSSResponse
inline constexpr char query = 'Q';
inline constexpr char sync = 'S';
inline constexpr char terminate = 'X';
}  // namespace frontend

}  // namespace tokenbouncer::protocol
