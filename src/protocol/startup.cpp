#include "tokenbouncer/protocol/startup.hpp"

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"

namespace tokenbouncer::protocol {

startup_frame frame_startup_packet(std::string_view buffer)
{
    startup_frame f;
    if (buffer.size() < 4)
        return f;
    f.length = load_be32(buffer.data());
    if (f.length < 8 || f.length > max_startup_packet_length)
    {
        f.state = startup_frame::status::invalid;
        f.error = pg_error::fatal(sqlstate::protocol_violation,
                                  "invalid length of startup packet: " + std::to_string(f.length) +
                                      " bytes (must be between 8 and " +
                                      std::to_string(max_startup_packet_length) + ")");
        return f;
    }
    f.state = buffer.size() >= f.length ? startup_frame::status::complete : startup_frame::status::need_more;
    return f;
}

const std::string* startup_parameters::find(std::string_view name) const
{
    for (const auto& [k, v] : items)
        if (k == name)
            return &v;
    return nullptr;
}

void startup_parameters::set(std::string_view name, std::string_view value)
{
    for (auto& [k, v] : items)
    {
        if (k == name)
        {
            v = value;
            return;
        }
    }
    items.emplace_back(name, value);
}

pg_result<startup_packet> parse_startup_packet(std::string_view packet)
{
    auto violation = [](std::string msg) { return pg_error::fatal(sqlstate::protocol_violation, std::move(msg)); };
    if (packet.size() < 8)
        return violation("startup packet too short");
    reader r(packet);
    r.u32();  // length, already checked by the framer
    std::uint32_t code = *r.u32();

    startup_packet out;
    if (code == ssl_request_code || code == gssenc_request_code)
    {
        if (packet.size() != 8)
            return violation("SSLRequest/GSSENCRequest must be 8 bytes long");
        out.type = code == ssl_request_code ? startup_packet::kind::ssl_request : startup_packet::kind::gssenc_request;
        return out;
    }
    if (code == cancel_request_code)
    {
        // PostgreSQL 18 (protocol 3.2) allows cancel keys of up to 256 bytes; tokenbouncer hands
        // out 4-byte keys, so a longer key cannot be one of ours.
        if (packet.size() != 16)
            return violation("CancelRequest must be 16 bytes long");
        out.type = startup_packet::kind::cancel_request;
        out.cancel_pid = *r.u32();
        out.cancel_key = *r.u32();
        return out;
    }

    out.major = static_cast<std::uint16_t>(code >> 16);
    out.minor = static_cast<std::uint16_t>(code & 0xffff);
    if (out.major != 3)
    {
        return pg_error::fatal(sqlstate::feature_not_supported,
                               "unsupported frontend protocol " + std::to_string(out.major) + "." +
                                   std::to_string(out.minor) + ": tokenbouncer supports protocol 3.0",
                               "Use a client library that speaks protocol version 3 (PostgreSQL 7.4 and later).");
    }

    // Parameters: pairs of C strings, then one extra NUL (clients send about six).
    out.params.items.reserve(8);
    for (;;)
    {
        auto name = r.cstring();
        if (!name)
            return violation("invalid startup packet layout: expected terminator as last byte");
        if (name->empty())
            break;
        auto value = r.cstring();
        if (!value)
            return violation("invalid startup packet layout: parameter \"" + std::string(*name) + "\" has no value");
        if (out.params.find(*name))
            return violation("duplicate startup parameter \"" + std::string(*name) + "\"");
        out.params.items.emplace_back(*name, *value);
    }
    if (!r.at_end())
        return violation("invalid startup packet layout: bytes after the terminator");
    const std::string* user = out.params.find("user");
    if (!user || user->empty())
        return pg_error::fatal(sqlstate::invalid_authorization, "no PostgreSQL user name specified in startup packet");
    return out;
}

std::string build_startup_message(const startup_parameters& params)
{
    message_builder b(0);
    b.u32(protocol_3_0);
    for (const auto& [k, v] : params.items)
        b.cstring(k).cstring(v);
    b.u8(0);
    return b.finish();
}

std::string build_ssl_request()
{
    message_builder b(0);
    b.u32(ssl_request_code);
    return b.finish();
}

std::string build_cancel_request(std::uint32_t pid, std::uint32_t key)
{
    message_builder b(0);
    b.u32(cancel_request_code).u32(pid).u32(key);
    return b.finish();
}

}  // namespace tokenbouncer::protocol
