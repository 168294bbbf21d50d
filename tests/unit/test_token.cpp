// auth/token_reply.hpp (the replies of Microsoft's token endpoints) and the pure refresh_policy of
// auth/token_cache.hpp (when to refresh a token, whether it may still be used).

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "tokenbouncer/auth/token_cache.hpp"
#include "tokenbouncer/auth/token_reply.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::auth;
using namespace std::chrono_literals;

namespace {

// A request sent at 2023-11-14T22:13:20Z.
constexpr long long now_s = 1700000000;
const sys_clock::time_point now{std::chrono::seconds(now_s)};

// A token value that cannot occur by chance in an error message.
const std::string tok = "eyJ0eXAiOiJKV1QiTOPSECRET.tokenbouncer-unit-test-Zq9xW3.sig";

std::string num(long long n) { return std::to_string(n); }
std::string str(long long n) { return "\"" + std::to_string(n) + "\""; }

// A reply with access_token = tok and `rest` as its other members.
std::string reply(const std::string& rest) { return R"({"access_token":")" + tok + "\"" + (rest.empty() ? "" : "," + rest) + "}"; }

}  // namespace

// --- parse_token_reply: accepted formats ----------------------------------------------------------

TEST_CASE("parse_token_reply: the formats of Entra v2, IMDS and App Service", "[token][reply]")
{
    struct
    {
        const char* name;
        std::string body;
        sys_clock::time_point expires_on;
    } cases[] = {
        {"Entra v2: expires_in is a number",
         R"({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":")" + tok + "\"}",
         now + 3599s},
        {"IMDS: every field a string, expires_in counts from the request",
         R"({"access_token":")" + tok +
             R"(","client_id":"00000000-0000-0000-0000-000000000001","expires_in":"3599","expires_on":")" +
             num(now_s + 3599) + R"(","ext_expires_in":"3599","not_before":")" + num(now_s - 300) +
             R"(","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"})",
         now + 3599s},
        {"IMDS: expires_in wins over an expires_on that disagrees",
         reply(R"("expires_in":"600","expires_on":)" + str(now_s + 86400) + R"(,"token_type":"Bearer")"), now + 600s},
        {"App Service: expires_on only, as an epoch string",
         reply(R"("expires_on":")" + num(now_s + 86399) +
               R"(","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer","client_id":"abc")"),
         now + 86399s},
        {"expires_on as a JSON number", reply(R"("expires_on":)" + num(now_s + 3600)), now + 3600s},
        {"expires_in as a JSON double", reply(R"("expires_in":3599.0)"), now + 3599s},
        {"a one-minute token", reply(R"("expires_in":60)"), now + 60s},
        {"lower-case bearer", reply(R"("token_type":"bearer","expires_in":3599)"), now + 3599s},
        {"no token_type at all", reply(R"("expires_in":3599)"), now + 3599s},
        {"the longest lifetime accepted: 400 days", reply(R"("expires_in":)" + num(400LL * 86400)), now + 400 * 24h},
        {"expires_on 400 days ahead", reply(R"("expires_on":)" + str(now_s + 400LL * 86400)), now + 400 * 24h},
        {"expires_on a little in the past (clock skew) is tolerated", reply(R"("expires_on":)" + str(now_s - 299)),
         now - 299s},
        {"members in any order, unknown members ignored",
         R"({"foo":[1,2,{"x":null}],"expires_in":1,"access_token":")" + tok + R"(","token_type":"Bearer"})", now + 1s},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto r = parse_token_reply(c.body, now);
            INFO(c.body);
            REQUIRE(r.has_value());
            CHECK(r->access_token.reveal() == tok);
            CHECK(r->expires_on == c.expires_on);
            CHECK_FALSE(r->refresh_on.has_value());
        }
    }
}

TEST_CASE("parse_token_reply: refresh_in is honoured only when it falls before the expiry", "[token][reply]")
{
    struct
    {
        const char* name;
        std::string members;
        std::optional<sys_clock::time_point> refresh_on;
    } cases[] = {
        {"a number, half the life", R"("expires_in":86399,"refresh_in":43199)", now + 43199s},
        {"a string (IMDS style)", R"("expires_in":"3599","refresh_in":"1800")", now + 1800s},
        {"with expires_on only", R"("expires_on":)" + str(now_s + 7200) + R"(,"refresh_in":3600)", now + 3600s},
        {"one second before expiry", R"("expires_in":3599,"refresh_in":3598)", now + 3598s},
        {"equal to expires_in: ignored", R"("expires_in":3599,"refresh_in":3599)", std::nullopt},
        {"after expiry: ignored", R"("expires_in":3599,"refresh_in":7200)", std::nullopt},
        {"zero: ignored", R"("expires_in":3599,"refresh_in":0)", std::nullopt},
        {"negative: ignored", R"("expires_in":3599,"refresh_in":-10)", std::nullopt},
        {"not a number: ignored", R"("expires_in":3599,"refresh_in":"soon")", std::nullopt},
        {"null: ignored", R"("expires_in":3599,"refresh_in":null)", std::nullopt},
        // Found by fuzzing: seconds -> nanoseconds overflowed (undefined behaviour) before the check.
        {"too large for a clock: ignored", R"("expires_in":89,"refresh_in":"9175840330915700")", std::nullopt},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto r = parse_token_reply(reply(c.members), now);
            INFO(c.members);
            REQUIRE(r.has_value());
            CHECK(r->refresh_on == c.refresh_on);
        }
    }
}

// --- parse_token_reply: rejections -----------------------------------------------------------------

TEST_CASE("parse_token_reply: rejected replies say why and never quote the token", "[token][reply]")
{
    const std::string no_json = "is not JSON";
    const std::string no_object = "the reply is not a JSON object";
    const std::string no_token = "the reply has no access_token";
    const std::string bad_in = "expires_in is not a positive number of seconds";
    const std::string bad_on = "expires_on is not a plausible epoch time";
    const std::string neither = "the reply has neither expires_in nor expires_on";
    struct
    {
        const char* name;
        std::string body;
        std::string message;  // a substring of the error
    } cases[] = {
        // Not JSON at all, or a reply cut short: the body (which may hold the token) is not quoted.
        {"empty body", "", no_json},
        {"HTML", "<html><body>502 Bad Gateway</body></html>", no_json},
        {"truncated after the token", R"({"access_token":")" + tok + R"(","expires_in":35)", no_json},
        {"truncated inside the token", R"({"token_type":"Bearer","access_token":")" + tok, no_json},
        {"missing comma after the token", R"({"access_token":")" + tok + R"(" "expires_in":3599})", no_json},
        {"trailing garbage", reply(R"("expires_in":3599)") + "garbage " + tok, no_json},
        {"form-encoded instead of JSON", "access_token=" + tok + "&expires_in=3599", no_json},
        // JSON, but not an object.
        {"an array", "[1,2,3]", no_object},
        {"an array holding the token", R"([")" + tok + R"("])", no_object},
        {"a string", "\"" + tok + "\"", no_object},
        {"a number", "3599", no_object},
        {"null", "null", no_object},
        // No usable access_token.
        {"empty object", "{}", no_token},
        {"access_token missing", R"({"token_type":"Bearer","expires_in":3599})", no_token},
        {"access_token empty", R"({"access_token":"","expires_in":3599})", no_token},
        {"access_token a number", R"({"access_token":12345,"expires_in":3599})", no_token},
        {"access_token null", R"({"access_token":null,"expires_in":3599})", no_token},
        {"access_token an object", R"({"access_token":{"value":")" + tok + R"("},"expires_in":3599})", no_token},
        {"Access_Token (keys are case-sensitive)", R"({"Access_Token":")" + tok + R"(","expires_in":3599})", no_token},
        // token_type other than Bearer.
        {"token_type pop", reply(R"("token_type":"pop","expires_in":3599)"), "unexpected token_type \"pop\""},
        {"token_type MAC", reply(R"("token_type":"MAC","expires_in":3599)"), "unexpected token_type \"MAC\""},
        {"token_type empty", reply(R"("token_type":"","expires_in":3599)"), "unexpected token_type \"\""},
        {"token_type BEARER", reply(R"("token_type":"BEARER","expires_in":3599)"), "unexpected token_type \"BEARER\""},
        // expires_in not a positive, plausible number.
        {"expires_in a word", reply(R"("expires_in":"soon")"), bad_in},
        {"expires_in empty string", reply(R"("expires_in":"")"), bad_in},
        {"expires_in number with a unit", reply(R"("expires_in":"3599s")"), bad_in},
        {"expires_in with spaces", reply(R"("expires_in":" 3599")"), bad_in},
        {"expires_in true", reply(R"("expires_in":true)"), bad_in},
        {"expires_in null", reply(R"("expires_in":null)"), bad_in},
        {"expires_in an array", reply(R"("expires_in":[3599])"), bad_in},
        {"expires_in zero", reply(R"("expires_in":0)"), bad_in},
        {"expires_in zero string", reply(R"("expires_in":"0")"), bad_in},
        {"expires_in negative", reply(R"("expires_in":-1)"), bad_in},
        {"expires_in negative string", reply(R"("expires_in":"-3599")"), bad_in},
        {"expires_in negative double", reply(R"("expires_in":-3599.0)"), bad_in},
        {"expires_in one second over 400 days", reply(R"("expires_in":)" + num(400LL * 86400 + 1)), bad_in},
        {"expires_in a century", reply(R"("expires_in":)" + num(100LL * 365 * 86400)), bad_in},
        {"expires_in above int64 (uint64)", reply(R"("expires_in":18446744073709551615)"), bad_in},
        {"expires_in overflowing string", reply(R"("expires_in":"99999999999999999999999")"), bad_in},
        {"expires_in huge double", reply(R"("expires_in":1e300)"), bad_in},
        // The first present field decides: a bad expires_in is not rescued by a good expires_on.
        {"bad expires_in with a good expires_on", reply(R"("expires_in":"x","expires_on":)" + str(now_s + 3600)),
         bad_in},
        // expires_on not a plausible epoch time.
        {"expires_on a word", reply(R"("expires_on":"tomorrow")"), bad_on},
        {"expires_on a date string", reply(R"("expires_on":"2023-11-14T23:13:20Z")"), bad_on},
        {"expires_on zero", reply(R"("expires_on":"0")"), bad_on},
        {"expires_on 300 s in the past", reply(R"("expires_on":)" + str(now_s - 300)), bad_on},
        {"expires_on a day in the past", reply(R"("expires_on":)" + num(now_s - 86400)), bad_on},
        {"expires_on a relative number of seconds", reply(R"("expires_on":"3599")"), bad_on},
        {"expires_on in milliseconds", reply(R"("expires_on":)" + str((now_s + 3600) * 1000)), bad_on},
        {"expires_on 400 days and 1 s ahead", reply(R"("expires_on":)" + str(now_s + 400LL * 86400 + 1)), bad_on},
        {"expires_on null", reply(R"("expires_on":null)"), bad_on},
        // Neither.
        {"no lifetime at all", reply(R"("token_type":"Bearer")"), neither},
        {"only ext_expires_in", reply(R"("ext_expires_in":3599)"), neither},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto r = parse_token_reply(c.body, now);
            INFO("body: " << c.body);
            REQUIRE_FALSE(r.has_value());
            const std::string& m = r.error().message;
            INFO("message: " << m);
            CHECK(m.find(c.message) != std::string::npos);
            CHECK(m.find(tok) == std::string::npos);
            CHECK(m.find("TOPSECRET") == std::string::npos);
        }
    }
}

TEST_CASE("parse_token_reply: the not-JSON message gives the body size", "[token][reply]")
{
    std::string body = R"({"access_token":")" + tok + R"(","expires_in":)";
    auto r = parse_token_reply(body, now);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.rfind("the reply (" + std::to_string(body.size()) + " bytes) is not JSON: ", 0) == 0);
    CHECK(r.error().message.find("TOPSECRET") == std::string::npos);
}

TEST_CASE("parse_token_reply: result<> throws the message and not the token", "[token][reply]")
{
    auto r = parse_token_reply("[]", now);
    REQUIRE_FALSE(r.has_value());
    CHECK_THROWS_WITH(r.value(), "the reply is not a JSON object");
}

// Regression test (was a bug): the unexpected token_type is quoted raw into the error (and so into a log
// line and the client's error message): a reply's string can hold control characters (JSON "\n" escapes)
// and be of any length.
TEST_CASE("parse_token_reply: an unexpected token_type is quoted safely (one line and bounded)",
          "[token][reply]")
{
    std::string long_type(5000, 'A');
    struct
    {
        const char* name;
        std::string body;
    } cases[] = {
        {"line breaks", reply(R"("token_type":"pop\nERROR forged log line\r\n","expires_in":3599)")},
        {"5000 bytes", reply(R"("token_type":")" + long_type + R"(","expires_in":3599)")},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto r = parse_token_reply(c.body, now);
            REQUIRE_FALSE(r.has_value());
            const std::string& m = r.error().message;
            CHECK(m.rfind("unexpected token_type \"", 0) == 0);
            CHECK(m.find_first_of("\r\n") == std::string::npos);
            CHECK(m.size() < 500);
        }
    }
}

// --- describe_error_reply and excerpt --------------------------------------------------------------

TEST_CASE("describe_error_reply: error bodies of Entra and IMDS and others", "[token][reply]")
{
    std::string long_desc(1000, 'd');
    struct
    {
        const char* name;
        std::string body;
        std::string expected;
    } cases[] = {
        {"Entra: multi-line error_description keeps its first line",
         R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '00000000-0000-0000-0000-000000000001'.\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2023-11-14 22:13:20Z","error_codes":[7000215],"timestamp":"2023-11-14 22:13:20Z","trace_id":"0000aaaa-11bb-cccc-dd22-eeeeee333333","correlation_id":"aaaa0000-bb11-2222-33cc-444444dddddd","error_uri":"https://login.microsoftonline.com/error?code=7000215"})",
         "invalid_client: AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
         "the client secret value, not the client secret ID, for a secret added to app "
         "'00000000-0000-0000-0000-000000000001'. (trace_id: 0000aaaa-11bb-cccc-dd22-eeeeee333333, "
         "correlation_id: aaaa0000-bb11-2222-33cc-444444dddddd)"},
        {"Entra: trace_id alone", R"({"error":"invalid_client","error_description":"AADSTS1","trace_id":"t-1"})",
         "invalid_client: AADSTS1 (trace_id: t-1)"},
        {"Entra: correlation_id alone", R"({"error":"invalid_client","correlation_id":"c-1"})",
         "invalid_client (correlation_id: c-1)"},
        {"empty or non-string ids are left out",
         R"({"error":"invalid_client","trace_id":"","correlation_id":42})", "invalid_client"},
        {"ids are bounded and kept on one line",
         R"({"error":"e","trace_id":"a\r\nb)" + std::string(100, 'x') + "\"}",
         "e (trace_id: a  b" + std::string(60, 'x') + "...)"},
        {"Entra: description with \\n only",
         R"({"error":"invalid_scope","error_description":"AADSTS70011: The provided value for scope is not valid.\nTrace ID: x"})",
         "invalid_scope: AADSTS70011: The provided value for scope is not valid."},
        {"IMDS: identity not found", R"({"error":"invalid_request","error_description":"Identity not found"})",
         "invalid_request: Identity not found"},
        {"error only", R"({"error":"unauthorized_client"})", "unauthorized_client"},
        {"error with an empty description", R"({"error":"temporarily_unavailable","error_description":""})",
         "temporarily_unavailable"},
        {"description starting with a line break", R"({"error":"server_error","error_description":"\r\nTrace ID: x"})",
         "server_error"},
        {"tab inside the description is replaced", R"({"error":"e","error_description":"a\tb"})", "e: a b"},
        {"non-string members are ignored", R"({"error":400,"error_description":["x"],"message":"m"})",
         R"({"error":400,"error_description":["x"],"message":"m"})"},
        {"App Service style body (no error member): the body itself", R"({"statusCode":400,"message":"Unable to load the proper Managed Identity."})",
         R"({"statusCode":400,"message":"Unable to load the proper Managed Identity."})"},
        {"a very long description is cut at 400 bytes",
         R"({"error":"e","error_description":")" + long_desc + "\"}", ("e: " + long_desc).substr(0, 400) + "..."},
        {"a very long description is cut at 400 bytes, the ids still follow",
         R"({"error":"e","error_description":")" + long_desc + R"(","trace_id":"t","correlation_id":"c"})",
         ("e: " + long_desc).substr(0, 400) + "... (trace_id: t, correlation_id: c)"},
        // Not JSON, or not an object: a cleaned-up excerpt of the body.
        {"HTML", "<html><body><h1>502 Bad Gateway</h1></body></html>",
         "<html><body><h1>502 Bad Gateway</h1></body></html>"},
        {"plain text with line breaks", "upstream connect error\r\nreset reason: overflow\n",
         "upstream connect error  reset reason: overflow "},
        {"control characters", std::string("a\0b\x1b[31mc\x7f", 10), std::string("a b [31mc\x7f", 10)},
        {"a JSON array", R"(["error","x"])", R"(["error","x"])"},
        {"empty", "", ""},
        {"a long body is cut with ...", std::string(1000, 'x'), std::string(300, 'x') + "..."},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(describe_error_reply(c.body) == c.expected);
        }
    }
}

// Regression test (was a bug): a body with an error_description but no error (or an empty one) comes out as
// ": Identity not found", with a leading ": ".
TEST_CASE("describe_error_reply: a description without an error has no leading colon", "[token][reply]")
{
    CHECK(describe_error_reply(R"({"error_description":"Identity not found"})") == "Identity not found");
    CHECK(describe_error_reply(R"({"error":"","error_description":"Identity not found"})") == "Identity not found");
}

TEST_CASE("excerpt: bounded with control characters replaced", "[token][reply]")
{
    struct
    {
        const char* name;
        std::string body;
        std::size_t max;
        std::string expected;
    } cases[] = {
        {"empty", "", 300, ""},
        {"short", "abc", 300, "abc"},
        {"exactly max", "abcd", 4, "abcd"},
        {"one over max", "abcde", 4, "abcd..."},
        {"max 0", "abc", 0, "..."},
        {"max 0, empty", "", 0, ""},
        {"newlines, tabs, CR, NUL, ESC", std::string("a\nb\tc\rd\0e\x1f", 10), 300, "a b c d e "},
        {"space and printable ASCII kept", " ~!", 300, " ~!"},
        {"UTF-8 kept", "caf\xc3\xa9", 300, "caf\xc3\xa9"},
        {"default max is 300", std::string(301, 'y'), 300, std::string(300, 'y') + "..."},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(excerpt(c.body, c.max) == c.expected);
        }
    }
    SECTION("the default argument")
    {
        CHECK(excerpt(std::string(300, 'z')) == std::string(300, 'z'));
        CHECK(excerpt(std::string(301, 'z')) == std::string(300, 'z') + "...");
    }
}

// --- refresh_policy ---------------------------------------------------------------------------------

namespace {

token make_token(sys_clock::time_point expires, std::optional<sys_clock::time_point> refresh_on = std::nullopt)
{
    return token{secret(std::string("t")), expires, refresh_on};
}

}  // namespace

TEST_CASE("refresh_policy::refresh_at: half-life for long tokens and a margin before expiry for short ones",
          "[token][policy]")
{
    const sys_clock::time_point fetched = now;
    using ms = std::chrono::milliseconds;
    struct
    {
        const char* name;
        sys_clock::duration life;
        ms margin;
        sys_clock::time_point expected;
    } cases[] = {
        {"24 h token: at half-life", 24h, 5min, fetched + 12h},
        {"exactly 2 h: at half-life", 2h, 5min, fetched + 1h},
        {"90 days: at half-life", 90 * 24h, 5min, fetched + 45 * 24h},
        {"1 h token: 5 min before expiry (default margin)", 1h, 5min, fetched + 55min},
        {"1 h 59 min 59 s: still the margin", 2h - 1s, 5min, fetched + 2h - 1s - 5min},
        {"Entra's 3599 s: 5 min before expiry", 3599s, 5min, fetched + 3599s - 5min},
        {"20 s token: at half its life", 20s, 5min, fetched + 10s},
        {"10 min token, margin 5 min: at 5 min", 10min, 5min, fetched + 5min},
        {"10 min token, margin 1 min: at 9 min", 10min, 1min, fetched + 9min},
        {"1 h token, margin 1 min", 1h, 1min, fetched + 59min},
        {"1 h token, margin 0: at expiry", 1h, 0min, fetched + 1h},
        {"1 h token, margin 2 h: at half-life", 1h, 120min, fetched + 30min},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            refresh_policy p{c.margin};
            auto at = p.refresh_at(fetched, make_token(fetched + c.life));
            CHECK((at - fetched) / 1ms == (c.expected - fetched) / 1ms);
        }
    }
    SECTION("a token that expired before it was fetched: refresh at once")
    {
        CHECK(refresh_policy{}.refresh_at(fetched, make_token(fetched - 10s)) <= fetched);
    }
    SECTION("the default margin is 5 minutes")
    {
        CHECK(refresh_policy{}.margin == 5min);
        CHECK(refresh_policy{}.refresh_at(fetched, make_token(fetched + 1h)) == fetched + 55min);
    }
}

TEST_CASE("refresh_policy::refresh_at: the service's refresh_in wins", "[token][policy]")
{
    refresh_policy p;
    CHECK(p.refresh_at(now, make_token(now + 24h, now + 100s)) == now + 100s);
    CHECK(p.refresh_at(now, make_token(now + 1h, now + 59min)) == now + 59min);
    CHECK(p.refresh_at(now, make_token(now + 20s, now + 1s)) == now + 1s);
    // The same reply parsed: a 24 h token with refresh_in 12 h - 1 s.
    auto t = parse_token_reply(R"({"access_token":"x","expires_in":86400,"refresh_in":43199})", now);
    REQUIRE(t.has_value());
    CHECK(p.refresh_at(now, *t) == now + 43199s);
}

TEST_CASE("refresh_policy::usable: not within min(30 s, a quarter of the life) of expiry", "[token][policy]")
{
    refresh_policy p;
    struct
    {
        const char* name;
        sys_clock::duration life;
        sys_clock::duration at;  // since the fetch
        bool usable;
    } cases[] = {
        {"20 s token, at once", 20s, 0s, true},
        {"20 s token, at 14.999 s", 20s, 14999ms, true},
        {"20 s token, at 15 s", 20s, 15s, false},
        {"20 s token, at 19 s", 20s, 19s, false},
        {"20 s token, expired", 20s, 21s, false},
        {"1 h token, at once", 1h, 0s, true},
        {"1 h token, 30.001 s before expiry", 1h, 1h - 30001ms, true},
        {"1 h token, 30 s before expiry", 1h, 1h - 30s, false},
        {"1 h token, 1 s before expiry", 1h, 1h - 1s, false},
        {"1 h token, at expiry", 1h, 1h, false},
        {"1 h token, an hour after expiry", 1h, 2h, false},
        {"2 min token: a quarter is 30 s", 2min, 89s, true},
        {"2 min token: at 90 s", 2min, 90s, false},
        {"4 s token: usable for 3 s", 4s, 2999ms, true},
        {"4 s token: not at 3 s", 4s, 3s, false},
        {"a token that expired before it was fetched", -1s, 0s, false},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(p.usable(now, make_token(now + c.life), now + c.at) == c.usable);
        }
    }
    SECTION("the margin does not change usability")
    {
        refresh_policy wide{std::chrono::milliseconds(3600 * 1000)};
        CHECK(wide.usable(now, make_token(now + 1h), now + 1h - 31s));
        CHECK_FALSE(wide.usable(now, make_token(now + 1h), now + 1h - 30s));
    }
    SECTION("refresh_on does not change usability")
    {
        CHECK(p.usable(now, make_token(now + 1h, now + 1s), now + 50min));
    }
}

TEST_CASE("format_time: UTC in ISO 8601", "[token][policy]")
{
    CHECK(format_time(now) == "2023-11-14T22:13:20Z");
    CHECK(format_time(sys_clock::time_point{}) == "1970-01-01T00:00:00Z");
    CHECK(format_time(now + 999ms) == "2023-11-14T22:13:20Z");
}
