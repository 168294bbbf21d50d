#include "tokenbouncer/auth/token_reply.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <cmath>
#include <stdexcept>

namespace tokenbouncer::auth {

namespace json = boost::json;

void throw_exception_from_error(const reply_error& e, const boost::source_location&)
{
    throw std::runtime_error(e.message);
}

namespace {

// A number, or a string that holds one (IMDS sends every field as a string).
std::optional<long long> as_integer(const json::value* v)
{
    if (!v)
        return std::nullopt;
    if (v->is_int64())
        return v->as_int64();
    if (v->is_uint64() && v->as_uint64() <= static_cast<std::uint64_t>(LLONG_MAX))
        return static_cast<long long>(v->as_uint64());
    if (v->is_double())
    {
        double d = v->as_double();
        if (!std::isfinite(d) || d < -9e18 || d > 9e18)
            return std::nullopt;
        return static_cast<long long>(d);
    }
    if (v->is_string())
    {
        const auto& s = v->as_string();
        long long n = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
        if (ec != std::errc() || p != s.data() + s.size() || s.empty())
            return std::nullopt;
        return n;
    }
    return std::nullopt;
}

}  // namespace

boost::system::result<token, reply_error> parse_token_reply(std::string_view body, sys_clock::time_point now)
{
    boost::system::error_code ec;
    json::value doc = json::parse(body, ec);
    // The body is not quoted here: a broken reply may still hold a token.
    if (ec)
        return reply_error{"the reply (" + std::to_string(body.size()) + " bytes) is not JSON: " + ec.message()};
    if (!doc.is_object())
        return reply_error{"the reply is not a JSON object"};
    const auto& obj = doc.as_object();
    const json::value* at = obj.if_contains("access_token");
    if (!at || !at->is_string() || at->as_string().empty())
        return reply_error{"the reply has no access_token"};
    const json::value* type = obj.if_contains("token_type");
    if (type && type->is_string() && type->as_string() != "Bearer" && type->as_string() != "bearer")
        return reply_error{"unexpected token_type \"" + excerpt(std::string_view(type->as_string().data(), type->as_string().size()), 40) + "\""};

    token t;
    const json::value* expires_in = obj.if_contains("expires_in");
    const json::value* expires_on = obj.if_contains("expires_on");
    constexpr long long max_lifetime = 400LL * 86400;  // more than a year is not a real token
    if (expires_in)
    {
        auto s = as_integer(expires_in);
        if (!s || *s <= 0 || *s > max_lifetime)
            return reply_error{"expires_in is not a positive number of seconds"};
        t.expires_on = now + std::chrono::seconds(*s);
    }
    else if (expires_on)
    {
        auto e = as_integer(expires_on);
        auto now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
        if (!e || *e <= now_s - 300 || *e > now_s + max_lifetime)
            return reply_error{"expires_on is not a plausible epoch time"};
        t.expires_on = sys_clock::time_point(std::chrono::seconds(*e));
    }
    else
    {
        return reply_error{"the reply has neither expires_in nor expires_on"};
    }
    if (const json::value* refresh_in = obj.if_contains("refresh_in"))
    {
        auto r = as_integer(refresh_in);
        if (r && *r > 0 && *r < max_lifetime && now + std::chrono::seconds(*r) < t.expires_on)
            t.refresh_on = now + std::chrono::seconds(*r);
    }
    t.access_token = secret(std::string_view(at->as_string().data(), at->as_string().size()));
    return t;
}

std::string excerpt(std::string_view body, std::size_t max)
{
    std::string out;
    for (char c : body.substr(0, max))
        out.push_back(static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
    if (body.size() > max)
        out += "...";
    return out;
}

std::string describe_error_reply(std::string_view body)
{
    boost::system::error_code ec;
    json::value doc = json::parse(body, ec);
    if (ec || !doc.is_object())
        return excerpt(body);
    const auto& obj = doc.as_object();
    auto str = [&](const char* key) -> std::string {
        const json::value* v = obj.if_contains(key);
        return v && v->is_string() ? std::string(v->as_string().c_str()) : std::string();
    };
    std::string err = str("error");
    std::string desc = str("error_description");
    if (err.empty() && desc.empty())
        return excerpt(body);
    // Entra descriptions carry a trace id and timestamp on their second line; keep the first
    // (the ids are appended from their own members below).
    if (auto nl = desc.find_first_of("\r\n"); nl != std::string::npos)
        desc = desc.substr(0, nl);
    std::string line = excerpt(err.empty() ? desc : desc.empty() ? err : err + ": " + desc, 400);
    // Entra's trace and correlation ids are not secret, and Azure support asks for them.
    std::string ids;
    for (const char* key : {"trace_id", "correlation_id"})
        if (std::string id = str(key); !id.empty())
            ids += (ids.empty() ? "" : ", ") + std::string(key) + ": " + excerpt(id, 64);
    return ids.empty() ? line : line + " (" + ids + ")";
}

}  // namespace tokenbouncer::auth
