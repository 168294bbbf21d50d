#include "tokenbouncer/protocol/messages.hpp"

#include "tokenbouncer/protocol/bytes.hpp"

namespace tokenbouncer::protocol {

namespace {

pg_error violation(std::string msg) { return pg_error::fatal(sqlstate::protocol_violation, std::move(msg)); }

}  // namespace

frame frame_message(std::string_view buffer, std::uint32_t max_length)
{
    frame f;
    if (buffer.size() < 5)
        return f;
    f.type = buffer[0];
    std::uint32_t length = load_be32(buffer.data() + 1);
    if (length < 4 || length > max_length)
    {
        f.state = frame::status::invalid;
        f.error = violation("invalid message length " + std::to_string(length) + " for message type '" +
                            std::string(1, f.type) + "' (limit " + std::to_string(max_length) + ")");
        return f;
    }
    f.total = length + 1;
    f.state = buffer.size() >= f.total ? frame::status::complete : frame::status::need_more;
    return f;
}

pg_result<auth_request> parse_auth_request(std::string_view body)
{
    reader r(body);
    auto code = r.i32();
    if (!code)
        return violation("truncated authentication request");
    auth_request out;
    out.code = static_cast<auth_code>(*code);
    out.data = r.rest();
    if (out.code == auth_code::md5_password && out.data.size() != 4)
        return violation("MD5 authentication request without a 4-byte salt");
    return out;
}

pg_result<std::vector<std::string_view>> parse_sasl_mechanisms(std::string_view data)
{
    reader r(data);
    std::vector<std::string_view> out;
    for (;;)
    {
        auto m = r.cstring();
        if (!m)
            return violation("malformed SASL mechanism list");
        if (m->empty())
            break;
        out.push_back(*m);
    }
    if (!r.at_end())
        return violation("bytes after the SASL mechanism list");
    return out;
}

pg_result<parameter_status> parse_parameter_status(std::string_view body)
{
    reader r(body);
    auto name = r.cstring();
    auto value = r.cstring();
    if (!name || !value || !r.at_end())
        return violation("malformed ParameterStatus message");
    return parameter_status{*name, *value};
}

pg_result<backend_key_data> parse_backend_key_data(std::string_view body)
{
    // Protocol 3.0 has a 4-byte key; 3.2 allows longer keys, which we never request.
    if (body.size() != 8)
        return violation("malformed BackendKeyData message");
    return backend_key_data{load_be32(body.data()), load_be32(body.data() + 4)};
}

pg_result<char> parse_ready_for_query(std::string_view body)
{
    if (body.size() != 1 || (body[0] != 'I' && body[0] != 'T' && body[0] != 'E'))
        return violation("malformed ReadyForQuery message");
    return body[0];
}

pg_result<error_fields> parse_error_fields(std::string_view body)
{
    reader r(body);
    error_fields out;
    for (;;)
    {
        auto code = r.u8();
        if (!code)
            return violation("truncated ErrorResponse/NoticeResponse");
        if (*code == 0)
            break;
        auto value = r.cstring();
        if (!value)
            return violation("truncated ErrorResponse/NoticeResponse field");
        out[static_cast<char>(*code)] = std::string(*value);
    }
    if (!r.at_end())
        return violation("bytes after the end of ErrorResponse/NoticeResponse");
    return out;
}

pg_error to_pg_error(const error_fields& fields)
{
    // An empty field counts as missing: an error without severity or message would reach the
    // client as one (found by fuzzing).
    auto get = [&](char c, const char* fallback) {
        auto it = fields.find(c);
        return it != fields.end() && !it->second.empty() ? it->second : std::string(fallback);
    };
    pg_error e;
    // 'V' is the non-localized severity (9.6+); 'S' may be translated.
    e.severity = get('V', "");
    if (e.severity.empty())
        e.severity = get('S', "ERROR");
    // A server error without SQLSTATE is still an error (cf. PgBouncer CVE-2026-6666).
    e.code = get('C', sqlstate::internal_error);
    if (e.code.size() != 5)
        e.code = sqlstate::internal_error;
    e.message = get('M', "(no message)");
    e.detail = get('D', "");
    e.hint = get('H', "");
    return e;
}

std::string build_error_response(const pg_error& e)
{
    message_builder b(backend::error_response);
    b.u8('S').cstring(e.severity);
    b.u8('V').cstring(e.severity);
    b.u8('C').cstring(e.code);
    b.u8('M').cstring(e.message);
    if (!e.detail.empty())
        b.u8('D').cstring(e.detail);
    if (!e.hint.empty())
        b.u8('H').cstring(e.hint);
    b.u8(0);
    return b.finish();
}

std::string build_notice_response(std::string_view severity, std::string_view code, std::string_view message)
{
    message_builder b(backend::notice_response);
    b.u8('S').cstring(severity).u8('V').cstring(severity).u8('C').cstring(code).u8('M').cstring(message).u8(0);
    return b.finish();
}

std::string build_auth_ok() { return build_auth_request(auth_code::ok); }

std::string build_auth_request(auth_code code, std::string_view data)
{
    message_builder b(backend::authentication);
    b.i32(static_cast<std::int32_t>(code)).raw(data);
    return b.finish();
}

std::string build_parameter_status(std::string_view name, std::string_view value)
{
    std::string out;
    append_parameter_status(out, name, value);
    return out;
}

void append_parameter_status(std::string& out, std::string_view name, std::string_view value)
{
    auto length = static_cast<std::uint32_t>(4 + name.size() + 1 + value.size() + 1);
    out.push_back(backend::parameter_status);
    for (int shift = 24; shift >= 0; shift -= 8)
        out.push_back(static_cast<char>((length >> shift) & 0xff));
    out.append(name);
    out.push_back('\0');
    out.append(value);
    out.push_back('\0');
}

std::string build_backend_key_data(std::uint32_t pid, std::uint32_t key)
{
    message_builder b(backend::backend_key_data);
    b.u32(pid).u32(key);
    return b.finish();
}

std::string build_ready_for_query(char status)
{
    message_builder b(backend::ready_for_query);
    b.u8(static_cast<std::uint8_t>(status));
    return b.finish();
}

std::string build_negotiate_protocol_version(std::uint32_t newest_minor, const std::vector<std::string>& unsupported)
{
    message_builder b(backend::negotiate_protocol_version);
    b.u32(protocol_3_0 | newest_minor).u32(static_cast<std::uint32_t>(unsupported.size()));
    for (const auto& o : unsupported)
        b.cstring(o);
    return b.finish();
}

std::string build_password_message(std::string_view password)
{
    message_builder b(frontend::password);
    b.reserve(password.size() + 1).cstring(password);
    return b.finish();
}

std::string build_sasl_initial_response(std::string_view mechanism, std::string_view data)
{
    message_builder b(frontend::password);
    b.cstring(mechanism).i32(static_cast<std::int32_t>(data.size())).raw(data);
    return b.finish();
}

std::string build_sasl_response(std::string_view data)
{
    message_builder b(frontend::password);
    b.raw(data);
    return b.finish();
}

std::string build_query(std::string_view sql)
{
    message_builder b(frontend::query);
    b.cstring(sql);
    return b.finish();
}

std::string build_terminate() { return message_builder(frontend::terminate).finish(); }

std::string quote_literal(std::string_view value)
{
    std::string out;
    bool has_backslash = value.find('\\') != std::string_view::npos;
    if (has_backslash)
        out.push_back('E');
    out.push_back('\'');
    for (char c : value)
    {
        if (c == '\'' || c == '\\')
            out.push_back(c);
        out.push_back(c);
    }
    out.push_back('\'');
    return out;
}

std::string quote_identifier(std::string_view name)
{
    std::string out = "\"";
    for (char c : name)
    {
        if (c == '"')
            out.push_back('"');
        out.push_back(c);
    }
    out.push_back('"');
    return out;
}

}  // namespace tokenbouncer::protocol
