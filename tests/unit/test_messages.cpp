// Typed messages: bytes.hpp (reader, message_builder), frame_message, the parsers of backend
// messages, the builders, and SQL quoting.

#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

#include "test_helpers.hpp"
#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/messages.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::protocol;
using tb_test::be16;
using tb_test::be32;
using tb_test::cstrs;
using tb_test::typed_raw;

namespace {

const char* state_name(frame::status s)
{
    switch (s)
    {
    case frame::status::need_more: return "need_more";
    case frame::status::complete: return "complete";
    case frame::status::invalid: return "invalid";
    }
    return "?";
}

// Splits a built message into type and body, checking its framing.
message_view split(std::string_view msg)
{
    frame f = frame_message(msg, max_message_length);
    REQUIRE(f.state == frame::status::complete);
    REQUIRE(f.total == msg.size());
    return message_view{f.type, msg.substr(5)};
}

}  // namespace

// --- bytes.hpp ------------------------------------------------------------------------------------

TEST_CASE("load/store big-endian integers", "[bytes]")
{
    char buf[4];
    store_be32(buf, 0x01020304u);
    CHECK(std::string(buf, 4) == std::string("\x01\x02\x03\x04", 4));
    CHECK(load_be32(buf) == 0x01020304u);
    store_be32(buf, 0xfffefdfcu);
    CHECK(load_be32(buf) == 0xfffefdfcu);  // high bytes are not sign-extended
    std::string s = be16(0xfeff);
    CHECK(load_be16(s.data()) == 0xfeff);
}

TEST_CASE("reader: bounds-checked reads", "[bytes]")
{
    std::string data = std::string("\x7f", 1) + be16(0xfffe) + be32(0xfffffffe) + cstrs({"hello"}) + "tail";
    reader r(data);
    CHECK(r.remaining() == data.size());
    CHECK(r.u8() == std::uint8_t{0x7f});
    CHECK(r.i16() == std::int16_t{-2});
    CHECK(r.position() == 3);
    CHECK(r.i32() == std::int32_t{-2});
    auto s = r.cstring();
    REQUIRE(s.has_value());
    CHECK(*s == "hello");
    CHECK(r.remaining() == 4);
    auto tail = r.u32();  // exactly 4 bytes left: a u32 fits
    REQUIRE(tail.has_value());
    CHECK(*tail == load_be32("tail"));
    CHECK(r.at_end());
    CHECK_FALSE(r.u8().has_value());
    CHECK_FALSE(r.u16().has_value());
    CHECK_FALSE(r.cstring().has_value());
    CHECK(r.rest().empty());

    SECTION("reads past the end fail without moving")
    {
        reader r2(std::string_view("abc", 3));
        CHECK_FALSE(r2.u32().has_value());
        CHECK(r2.position() == 0);
        CHECK_FALSE(r2.take(4).has_value());
        CHECK(r2.take(2) == std::optional<std::string_view>("ab"));
        CHECK_FALSE(r2.cstring().has_value());  // no NUL
        CHECK(r2.rest() == "c");
        CHECK(r2.at_end());
    }
    SECTION("u16 and u32 are unsigned")
    {
        std::string d = be16(0x8001) + be32(0x80000001u);
        reader r3(d);
        CHECK(r3.u16() == std::uint16_t{0x8001});
        CHECK(r3.u32() == std::uint32_t{0x80000001u});
    }
    SECTION("empty C string")
    {
        std::string d(1, '\0');
        reader r4(d);
        auto e = r4.cstring();
        REQUIRE(e.has_value());
        CHECK(e->empty());
        CHECK(r4.at_end());
    }
}

TEST_CASE("message_builder: typed and untyped lengths", "[bytes]")
{
    SECTION("typed message: length excludes the type byte")
    {
        std::string m = message_builder('Q').cstring("SELECT 1").finish();
        CHECK(m == std::string("Q") + be32(4 + 9) + cstrs({"SELECT 1"}));
    }
    SECTION("untyped message: length counts itself")
    {
        std::string m = message_builder(0).u32(0x00030000).u8(0).finish();
        CHECK(m == be32(9) + be32(0x00030000) + std::string(1, '\0'));
    }
    SECTION("all field kinds")
    {
        std::string m = message_builder('x').u8(0xff).i16(-2).u16(0x1234).i32(-1).u32(0xdeadbeef).raw("ab").cstring("c").finish();
        std::string body = std::string("\xff", 1) + be16(0xfffe) + be16(0x1234) + be32(0xffffffff) + be32(0xdeadbeef) + "ab" +
                           cstrs({"c"});
        CHECK(m == typed_raw('x', body));
    }
    SECTION("finish_into appends")
    {
        std::string out = "prefix";
        message_builder('Z').u8('I').finish_into(out);
        CHECK(out == "prefix" + typed_raw('Z', "I"));
    }
}

// --- frame_message -------------------------------------------------------------------------------

TEST_CASE("frame_message: need_more, complete, invalid", "[messages][framing]")
{
    struct
    {
        const char* name;
        std::string buffer;
        std::uint32_t max_length;
        frame::status state;
        char type;             // checked when != 0
        std::uint32_t total;   // checked when != 0
        const char* message_part;  // for invalid
    } cases[] = {
        {"empty buffer", "", 1000, frame::status::need_more, 0, 0, nullptr},
        {"type byte only", "Q", 1000, frame::status::need_more, 0, 0, nullptr},
        {"partial length (4 of 5 header bytes)", std::string("Q") + be32(13).substr(0, 3), 1000,
         frame::status::need_more, 0, 0, nullptr},
        {"header only, body missing", std::string("Q") + be32(13), 1000, frame::status::need_more, 'Q', 14, nullptr},
        {"partial body", std::string("Q") + be32(13) + "SELECT", 1000, frame::status::need_more, 'Q', 14, nullptr},
        {"one byte short", typed_raw('Q', cstrs({"SELECT 1"})).substr(0, 13), 1000, frame::status::need_more, 'Q', 14,
         nullptr},
        {"complete", typed_raw('Q', cstrs({"SELECT 1"})), 1000, frame::status::complete, 'Q', 14, nullptr},
        {"complete with the next message behind it", typed_raw('S', "") + typed_raw('Q', "x"), 1000,
         frame::status::complete, 'S', 5, nullptr},
        {"empty body (length 4)", typed_raw('S', ""), 1000, frame::status::complete, 'S', 5, nullptr},
        {"length exactly max_length", std::string("D") + be32(1000), 1000, frame::status::need_more, 'D', 1001, nullptr},
        {"length 0", std::string("D") + be32(0), 1000, frame::status::invalid, 'D', 0, "invalid message length 0"},
        {"length 3", std::string("X") + be32(3), 1000, frame::status::invalid, 'X', 0, "invalid message length 3"},
        {"length max_length + 1", std::string("D") + be32(1001), 1000, frame::status::invalid, 'D', 0,
         "invalid message length 1001"},
        {"length 0xffffffff", std::string("D") + be32(0xffffffffu), max_message_length, frame::status::invalid, 'D', 0,
         "4294967295"},
        {"length 0x80000000 over the absolute limit", std::string("D") + be32(0x80000000u), max_message_length,
         frame::status::invalid, 'D', 0, "2147483648"},
        {"largest legal length", std::string("D") + be32(max_message_length), max_message_length,
         frame::status::need_more, 'D', 0x80000000u, nullptr},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            frame f = frame_message(c.buffer, c.max_length);
            INFO("state " << state_name(f.state));
            CHECK(f.state == c.state);
            if (c.type)
                CHECK(f.type == c.type);
            if (c.total)
                CHECK(f.total == c.total);
            if (c.state == frame::status::invalid)
            {
                CHECK(f.error.code == sqlstate::protocol_violation);
                CHECK_THAT(f.error.message, Catch::Contains(c.message_part));
                CHECK_THAT(f.error.message, Catch::Contains(std::string("'") + c.type + "'"));
                CHECK_THAT(f.error.message, Catch::Contains("limit " + std::to_string(c.max_length)));
            }
        }
    }
}

// --- Backend message parsers ---------------------------------------------------------------------

TEST_CASE("parse_auth_request", "[messages][auth]")
{
    SECTION("AuthenticationOk")
    {
        std::string body = be32(0);
        auto r = parse_auth_request(body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::ok);
        CHECK(r->data.empty());
    }
    SECTION("cleartext password")
    {
        std::string body = be32(3);
        auto r = parse_auth_request(body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::cleartext_password);
    }
    SECTION("MD5 with a 4-byte salt")
    {
        // The parsers return views into their input: keep it alive.
        std::string body = be32(5) + std::string("\x00\xff\x10\x20", 4);
        auto r = parse_auth_request(body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::md5_password);
        CHECK(r->data == std::string("\x00\xff\x10\x20", 4));
    }
    SECTION("SASL with its mechanism list")
    {
        std::string mechs = cstrs({"SCRAM-SHA-256", ""});
        std::string body = be32(10) + mechs;
        auto r = parse_auth_request(body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::sasl);
        CHECK(r->data == mechs);
    }
    SECTION("SASLContinue and SASLFinal carry their data")
    {
        std::string cbody = be32(11) + "r=abc,s=xyz,i=4096";
        auto c = parse_auth_request(cbody);
        REQUIRE(c.has_value());
        CHECK(c->code == auth_code::sasl_continue);
        CHECK(c->data == "r=abc,s=xyz,i=4096");
        std::string fbody = be32(12) + "v=abc";
        auto f = parse_auth_request(fbody);
        REQUIRE(f.has_value());
        CHECK(f->code == auth_code::sasl_final);
        CHECK(f->data == "v=abc");
    }
    struct
    {
        const char* name;
        std::string body;
    } bad[] = {
        {"empty body", ""},
        {"truncated code", std::string("\0\0\0", 3)},
        {"MD5 without salt", be32(5)},
        {"MD5 with a 3-byte salt", be32(5) + "abc"},
        {"MD5 with a 5-byte salt", be32(5) + "abcde"},
    };
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_auth_request(c.body);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
            CHECK_FALSE(r.error().message.empty());
        }
    }
}

TEST_CASE("parse_sasl_mechanisms", "[messages][auth]")
{
    SECTION("one mechanism")
    {
        std::string data = cstrs({"SCRAM-SHA-256", ""});
        auto r = parse_sasl_mechanisms(data);
        REQUIRE(r.has_value());
        REQUIRE(r->size() == 1);
        CHECK((*r)[0] == "SCRAM-SHA-256");
    }
    SECTION("two mechanisms, in order")
    {
        std::string data = cstrs({"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", ""});
        auto r = parse_sasl_mechanisms(data);
        REQUIRE(r.has_value());
        REQUIRE(r->size() == 2);
        CHECK((*r)[0] == "SCRAM-SHA-256-PLUS");
        CHECK((*r)[1] == "SCRAM-SHA-256");
    }
    SECTION("empty list")
    {
        std::string data = cstrs({""});
        auto r = parse_sasl_mechanisms(data);
        REQUIRE(r.has_value());
        CHECK(r->empty());
    }
    struct
    {
        const char* name;
        std::string data;
    } bad[] = {
        {"no data", ""},
        {"missing list terminator", cstrs({"SCRAM-SHA-256"})},
        {"unterminated name", "SCRAM-SHA-256"},
        {"bytes after the list", cstrs({"SCRAM-SHA-256", ""}) + "x"},
    };
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_sasl_mechanisms(c.data);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
        }
    }
}

TEST_CASE("parse_parameter_status", "[messages]")
{
    std::string body1 = cstrs({"TimeZone", "Europe/Berlin"});
    auto ok = parse_parameter_status(body1);
    REQUIRE(ok.has_value());
    CHECK(ok->name == "TimeZone");
    CHECK(ok->value == "Europe/Berlin");

    std::string body2 = cstrs({"application_name", ""});
    auto empty_value = parse_parameter_status(body2);
    REQUIRE(empty_value.has_value());
    CHECK(empty_value->name == "application_name");
    CHECK(empty_value->value.empty());

    struct
    {
        const char* name;
        std::string body;
    } bad[] = {
        {"empty", ""},
        {"name only", cstrs({"TimeZone"})},
        {"value without NUL", cstrs({"TimeZone"}) + "UTC"},
        {"trailing bytes", cstrs({"TimeZone", "UTC"}) + "x"},
        {"three strings", cstrs({"a", "b", "c"})},
    };
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_parameter_status(c.body);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
        }
    }
}

TEST_CASE("parse_backend_key_data: exactly 8 bytes", "[messages]")
{
    auto ok = parse_backend_key_data(be32(0x00abcdef) + be32(0xfedcba98u));
    REQUIRE(ok.has_value());
    CHECK(ok->pid == 0x00abcdefu);
    CHECK(ok->key == 0xfedcba98u);

    struct
    {
        const char* name;
        std::size_t size;
    } bad[] = {{"0 bytes", 0}, {"4 bytes", 4}, {"7 bytes", 7}, {"9 bytes", 9}, {"36 bytes (protocol 3.2 key)", 36}};
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_backend_key_data(std::string(c.size, '\x01'));
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
        }
    }
}

TEST_CASE("parse_ready_for_query: I, T, E only", "[messages]")
{
    for (char c : {'I', 'T', 'E'})
    {
        auto r = parse_ready_for_query(std::string(1, c));
        REQUIRE(r.has_value());
        CHECK(*r == c);
    }
    struct
    {
        const char* name;
        std::string body;
    } bad[] = {{"empty", ""}, {"lower-case i", "i"}, {"X", "X"}, {"NUL", std::string(1, '\0')}, {"two bytes", "II"}};
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_ready_for_query(c.body);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
        }
    }
}

TEST_CASE("parse_error_fields", "[messages][error]")
{
    SECTION("a typical ErrorResponse")
    {
        std::string body = cstrs({"SFEHLER", "VERROR", "C42P01", "MRelation \xc2\xbb" "x\xc2\xab existiert nicht", "P15",
                                  "Fparse_relation.c", "L1392", "RparserOpenTable", ""});
        auto r = parse_error_fields(body);
        REQUIRE(r.has_value());
        CHECK(r->size() == 8);
        CHECK(r->at('S') == "FEHLER");
        CHECK(r->at('V') == "ERROR");
        CHECK(r->at('C') == "42P01");
        CHECK(r->at('P') == "15");
        CHECK(r->at('R') == "parserOpenTable");
    }
    SECTION("no fields")
    {
        auto r = parse_error_fields(std::string(1, '\0'));
        REQUIRE(r.has_value());
        CHECK(r->empty());
    }
    SECTION("a repeated field: the last wins")
    {
        auto r = parse_error_fields(cstrs({"Mfirst", "Msecond", ""}));
        REQUIRE(r.has_value());
        CHECK(r->at('M') == "second");
    }
    struct
    {
        const char* name;
        std::string body;
    } bad[] = {
        {"empty body", ""},
        {"missing final NUL", cstrs({"SERROR"})},
        {"unterminated field value", "SERROR"},
        {"field code without value", "S"},
        {"bytes after the final NUL", cstrs({"SERROR", ""}) + "x"},
    };
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_error_fields(c.body);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
        }
    }
}

TEST_CASE("to_pg_error", "[messages][error]")
{
    struct
    {
        const char* name;
        error_fields fields;
        const char* severity;
        const char* code;
        const char* message;
    } cases[] = {
        {"V preferred over a translated S", {{'S', "FEHLER"}, {'V', "ERROR"}, {'C', "42P01"}, {'M', "m"}}, "ERROR",
         "42P01", "m"},
        {"V preferred over S (FATAL)", {{'S', "SCHWERWIEGEND"}, {'V', "FATAL"}, {'C', "28P01"}, {'M', "m"}}, "FATAL",
         "28P01", "m"},
        {"S used when V is missing (pre-9.6 server)", {{'S', "FATAL"}, {'C', "57P01"}, {'M', "bye"}}, "FATAL", "57P01",
         "bye"},
        {"S used when V is empty", {{'S', "PANIC"}, {'V', ""}, {'C', "XX000"}, {'M', "m"}}, "PANIC", "XX000", "m"},
        {"ERROR when S and V are missing", {{'C', "22012"}, {'M', "division by zero"}}, "ERROR", "22012",
         "division by zero"},
        {"missing C gives XX000", {{'S', "ERROR"}, {'V', "ERROR"}, {'M', "no code"}}, "ERROR", "XX000", "no code"},
        {"missing M gives a placeholder", {{'V', "ERROR"}, {'C', "42601"}}, "ERROR", "42601", "(no message)"},
        {"no fields at all", {}, "ERROR", "XX000", "(no message)"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            pg_error e = to_pg_error(c.fields);
            CHECK(e.severity == c.severity);
            CHECK(e.code == c.code);
            CHECK(e.message == c.message);
            CHECK_FALSE(e.message.empty());
            CHECK(e.detail.empty());
            CHECK(e.hint.empty());
        }
    }
    SECTION("detail and hint are copied")
    {
        pg_error e = to_pg_error({{'V', "ERROR"}, {'C', "23505"}, {'M', "dup"}, {'D', "Key (id)=(1) already exists."},
                                  {'H', "try again"}});
        CHECK(e.detail == "Key (id)=(1) already exists.");
        CHECK(e.hint == "try again");
    }
}

TEST_CASE("build_error_response round trip through parse_error_fields", "[messages][error]")
{
    SECTION("with detail and hint")
    {
        pg_error in{"FATAL", "28P01", "password authentication failed for user \"bob\"", "the detail", "the hint"};
        std::string msg = build_error_response(in);
        message_view v = split(msg);
        CHECK(v.type == 'E');
        auto fields = parse_error_fields(v.body);
        REQUIRE(fields.has_value());
        CHECK(fields->at('S') == "FATAL");
        CHECK(fields->at('V') == "FATAL");
        CHECK(fields->at('C') == "28P01");
        CHECK(fields->at('M') == in.message);
        CHECK(fields->at('D') == "the detail");
        CHECK(fields->at('H') == "the hint");
        pg_error out = to_pg_error(*fields);
        CHECK(out.severity == in.severity);
        CHECK(out.code == in.code);
        CHECK(out.message == in.message);
        CHECK(out.detail == in.detail);
        CHECK(out.hint == in.hint);
    }
    SECTION("without detail and hint: no D or H fields")
    {
        std::string msg = build_error_response(pg_error::error(sqlstate::query_canceled, "canceling statement"));
        message_view v = split(msg);
        CHECK(v.type == 'E');
        auto fields = parse_error_fields(v.body);
        REQUIRE(fields.has_value());
        CHECK(fields->count('D') == 0);
        CHECK(fields->count('H') == 0);
        CHECK(fields->at('S') == "ERROR");
        CHECK(fields->at('C') == "57014");
        CHECK(fields->at('M') == "canceling statement");
    }
    SECTION("pg_error::fatal with hint")
    {
        pg_error in = pg_error::fatal(sqlstate::too_many_connections, "too many", "wait");
        std::string msg = build_error_response(in);
        auto fields = parse_error_fields(split(msg).body);
        REQUIRE(fields.has_value());
        pg_error out = to_pg_error(*fields);
        CHECK(out.severity == "FATAL");
        CHECK(out.code == "53300");
        CHECK(out.hint == "wait");
    }
}

TEST_CASE("build_notice_response", "[messages][build]")
{
    std::string msg = build_notice_response("WARNING", "01000", "careful");
    message_view v = split(msg);
    CHECK(v.type == 'N');
    auto fields = parse_error_fields(v.body);
    REQUIRE(fields.has_value());
    CHECK(fields->at('S') == "WARNING");
    CHECK(fields->at('V') == "WARNING");
    CHECK(fields->at('C') == "01000");
    CHECK(fields->at('M') == "careful");
}

TEST_CASE("backend message builders round trip through the parsers", "[messages][build]")
{
    SECTION("AuthenticationOk: exact bytes")
    {
        CHECK(build_auth_ok() == typed_raw('R', be32(0)));
    }
    SECTION("AuthenticationMD5Password")
    {
        std::string msg = build_auth_request(auth_code::md5_password, "salt");
        message_view v = split(msg);
        CHECK(v.type == 'R');
        auto r = parse_auth_request(v.body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::md5_password);
        CHECK(r->data == "salt");
    }
    SECTION("AuthenticationSASL")
    {
        std::string msg = build_auth_request(auth_code::sasl, cstrs({"SCRAM-SHA-256", ""}));
        message_view v = split(msg);
        auto r = parse_auth_request(v.body);
        REQUIRE(r.has_value());
        CHECK(r->code == auth_code::sasl);
        auto m = parse_sasl_mechanisms(r->data);
        REQUIRE(m.has_value());
        REQUIRE(m->size() == 1);
        CHECK((*m)[0] == "SCRAM-SHA-256");
    }
    SECTION("ParameterStatus")
    {
        std::string msg = build_parameter_status("server_version", "15.4");
        CHECK(msg == typed_raw('S', cstrs({"server_version", "15.4"})));
        auto r = parse_parameter_status(split(msg).body);
        REQUIRE(r.has_value());
        CHECK(r->name == "server_version");
        CHECK(r->value == "15.4");
        // Appending many builds the same bytes as building each.
        std::string out = "prefix";
        append_parameter_status(out, "server_version", "15.4");
        append_parameter_status(out, "application_name", "");
        CHECK(out == "prefix" + msg + build_parameter_status("application_name", ""));
    }
    SECTION("BackendKeyData")
    {
        std::string msg = build_backend_key_data(0x7fffffffu, 0x80000000u);
        CHECK(msg == typed_raw('K', be32(0x7fffffffu) + be32(0x80000000u)));
        auto r = parse_backend_key_data(split(msg).body);
        REQUIRE(r.has_value());
        CHECK(r->pid == 0x7fffffffu);
        CHECK(r->key == 0x80000000u);
    }
    SECTION("ReadyForQuery")
    {
        for (char s : {'I', 'T', 'E'})
        {
            std::string msg = build_ready_for_query(s);
            CHECK(msg == typed_raw('Z', std::string(1, s)));
            auto r = parse_ready_for_query(split(msg).body);
            REQUIRE(r.has_value());
            CHECK(*r == s);
        }
    }
    SECTION("NegotiateProtocolVersion")
    {
        std::string msg = build_negotiate_protocol_version(0, {"_pq_.foo", "_pq_.bar"});
        CHECK(msg == typed_raw('v', be32(0x00030000) + be32(2) + cstrs({"_pq_.foo", "_pq_.bar"})));
        CHECK(build_negotiate_protocol_version(2, {}) == typed_raw('v', be32(0x00030002) + be32(0)));
    }
}

TEST_CASE("frontend message builders: exact bytes", "[messages][build]")
{
    CHECK(build_password_message("md5abc") == typed_raw('p', cstrs({"md5abc"})));
    CHECK(build_sasl_initial_response("SCRAM-SHA-256", "n,,n=,r=abc") ==
          typed_raw('p', cstrs({"SCRAM-SHA-256"}) + be32(11) + "n,,n=,r=abc"));
    CHECK(build_sasl_initial_response("SCRAM-SHA-256", "") == typed_raw('p', cstrs({"SCRAM-SHA-256"}) + be32(0)));
    CHECK(build_sasl_response("c=biws,r=x,p=y") == typed_raw('p', "c=biws,r=x,p=y"));
    CHECK(build_query("SELECT 1") == typed_raw('Q', cstrs({"SELECT 1"})));
    CHECK(build_terminate() == std::string("X\0\0\0\x04", 5));
}

// --- Quoting --------------------------------------------------------------------------------------

TEST_CASE("quote_literal", "[messages][quote]")
{
    struct
    {
        const char* name;
        std::string in;
        std::string out;
    } cases[] = {
        {"plain", "UTC", "'UTC'"},
        {"empty", "", "''"},
        {"single quote doubled", "O'Reilly", "'O''Reilly'"},
        {"only quotes", "''", "''''''"},
        {"backslash gives E'' with the backslash doubled", "a\\b", "E'a\\\\b'"},
        {"quote and backslash", "it's a\\b", "E'it''s a\\\\b'"},
        {"trailing backslash cannot escape the closing quote", "x\\", "E'x\\\\'"},
        {"double quotes untouched", "say \"hi\"", "'say \"hi\"'"},
        {"spaces and commas", "ISO, MDY", "'ISO, MDY'"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(quote_literal(c.in) == c.out);
        }
    }
}

TEST_CASE("quote_identifier", "[messages][quote]")
{
    struct
    {
        const char* name;
        std::string in;
        std::string out;
    } cases[] = {
        {"mixed case kept", "DateStyle", "\"DateStyle\""},
        {"empty", "", "\"\""},
        {"double quote doubled", "a\"b", "\"a\"\"b\""},
        {"single quote untouched", "it's", "\"it's\""},
        {"backslash untouched", "a\\b", "\"a\\b\""},
        {"injection attempt", "x\"; DROP TABLE t; --", "\"x\"\"; DROP TABLE t; --\""},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(quote_identifier(c.in) == c.out);
        }
    }
}
