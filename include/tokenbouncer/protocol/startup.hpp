#pragma once
// The startup family of packets a client sends first: SSLRequest, GSSENCRequest, CancelRequest and
// StartupMessage. They have no type byte: an int32 length, then an int32 code or protocol version.
//
//     int32 length (including itself)   int32 code/version   ...payload
//
// https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::protocol {

// How much of a startup packet is in a buffer.
struct startup_frame
{
    enum class status
    {
        need_more,  // fewer than `length` bytes (or fewer than 4) are here
        complete,   // the first `length` bytes are one packet
        invalid,    // the length is impossible; `error` says why
    };
    status state = status::need_more;
    std::uint32_t length = 0;
    pg_error error;
};

startup_frame frame_startup_packet(std::string_view buffer);

struct startup_parameters
{
    std::vector<std::pair<std::string, std::string>> items;

    // nullptr when absent.
    const std::string* find(std::string_view name) const;
    void set(std::string_view name, std::string_view value);
};

struct startup_packet
{
    enum class kind
    {
        ssl_request,
        gssenc_request,
        cancel_request,
        startup,
    };
    kind type = kind::startup;
    std::uint16_t major = 3;
    std::uint16_t minor = 0;
    // CancelRequest
    std::uint32_t cancel_pid = 0;
    std::uint32_t cancel_key = 0;
    // StartupMessage
    startup_parameters params;
};

// Parses one whole packet (as framed by frame_startup_packet). Rejects, with the error a client
// should see: an unknown code, protocol versions other than 3.x, missing terminators, a missing
// "user", duplicate or empty parameter names.
pg_result<startup_packet> parse_startup_packet(std::string_view packet);

// Builders for the upstream side.
std::string build_startup_message(const startup_parameters& params);
std::string build_ssl_request();
std::string build_cancel_request(std::uint32_t pid, std::uint32_t key);

}  // namespace tokenbouncer::protocol
