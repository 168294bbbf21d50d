// Startup-family packets: framing (frame_startup_packet), parsing (parse_startup_packet) and the
// builders for the upstream side.

#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "test_helpers.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/startup.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::protocol;
using tb_test::be32;
using tb_test::cstrs;
using tb_test::startup_raw;

namespace {

const char* state_name(startup_frame::status s)
{
    switch (s)
    {
    case startup_frame::status::need_more: return "need_more";
    case startup_frame::status::complete: return "complete";
    case startup_frame::status::invalid: return "invalid";
    }
    return "?";
}

std::uint32_t version(std::uint16_t major, std::uint16_t minor) { return (std::uint32_t(major) << 16) | minor; }

using param_list = std::vector<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("frame_startup_packet: need_more, complete and invalid lengths", "[startup][framing]")
{
    struct
    {
        const char* name;
        std::string buffer;
        startup_frame::status state;
        std::uint32_t length;  // expected f.length (0 = not yet known)
    } cases[] = {
        {"empty buffer", "", startup_frame::status::need_more, 0},
        {"1 byte", std::string(1, '\0'), startup_frame::status::need_more, 0},
        {"3 bytes of the length", be32(8).substr(0, 3), startup_frame::status::need_more, 0},
        {"length only (8), nothing more", be32(8), startup_frame::status::need_more, 8},
        {"7 of 8 bytes", (be32(8) + be32(ssl_request_code)).substr(0, 7), startup_frame::status::need_more, 8},
        {"exactly 8 bytes (SSLRequest)", be32(8) + be32(ssl_request_code), startup_frame::status::complete, 8},
        {"8-byte packet followed by more data", be32(8) + be32(ssl_request_code) + "\x16\x03", startup_frame::status::complete, 8},
        {"maximum length 10000, header only", be32(10000), startup_frame::status::need_more, 10000},
        {"maximum length 10000, complete", be32(10000) + std::string(9996, 'a'), startup_frame::status::complete, 10000},
        {"length 0", be32(0), startup_frame::status::invalid, 0},
        {"length 4", be32(4), startup_frame::status::invalid, 4},
        {"length 7", be32(7) + "abcd", startup_frame::status::invalid, 7},
        {"length 10001", be32(10001), startup_frame::status::invalid, 10001},
        {"length 0x7fffffff", be32(0x7fffffff), startup_frame::status::invalid, 0x7fffffff},
        {"length 0xffffffff", be32(0xffffffff), startup_frame::status::invalid, 0xffffffff},
        // A TLS ClientHello sent without SSLRequest: 0x16 0x03 0x01 ... reads as a huge length.
        {"TLS ClientHello instead of a startup packet", std::string("\x16\x03\x01\x02\x00", 5), startup_frame::status::invalid,
         0x16030102},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            startup_frame f = frame_startup_packet(c.buffer);
            INFO("state " << state_name(f.state));
            CHECK(f.state == c.state);
            if (c.state != startup_frame::status::need_more || c.length != 0)
                CHECK(f.length == c.length);
            if (c.state == startup_frame::status::invalid)
            {
                CHECK(f.error.code == sqlstate::protocol_violation);
                CHECK(f.error.severity == "FATAL");
                CHECK_THAT(f.error.message, Catch::Contains(std::to_string(c.length)));
                CHECK_THAT(f.error.message, Catch::Contains("10000"));
            }
        }
    }
}

TEST_CASE("parse_startup_packet: SSLRequest, GSSENCRequest, CancelRequest", "[startup][parse]")
{
    SECTION("SSLRequest of 8 bytes")
    {
        auto r = parse_startup_packet(startup_raw(ssl_request_code, ""));
        REQUIRE(r.has_value());
        CHECK(r->type == startup_packet::kind::ssl_request);
    }
    SECTION("GSSENCRequest of 8 bytes")
    {
        auto r = parse_startup_packet(startup_raw(gssenc_request_code, ""));
        REQUIRE(r.has_value());
        CHECK(r->type == startup_packet::kind::gssenc_request);
    }
    SECTION("CancelRequest of 16 bytes")
    {
        auto r = parse_startup_packet(startup_raw(cancel_request_code, be32(0x01020304) + be32(0xdeadbeef)));
        REQUIRE(r.has_value());
        CHECK(r->type == startup_packet::kind::cancel_request);
        CHECK(r->cancel_pid == 0x01020304u);
        CHECK(r->cancel_key == 0xdeadbeefu);
    }

    struct
    {
        const char* name;
        std::string packet;
        const char* message_part;
    } bad[] = {
        {"SSLRequest with 4 extra bytes", startup_raw(ssl_request_code, "abcd"), "8 bytes"},
        {"SSLRequest with 1 extra byte", startup_raw(ssl_request_code, "a"), "8 bytes"},
        {"GSSENCRequest with 4 extra bytes", startup_raw(gssenc_request_code, "abcd"), "8 bytes"},
        {"CancelRequest of 12 bytes", startup_raw(cancel_request_code, be32(1)), "16 bytes"},
        {"CancelRequest of 15 bytes", startup_raw(cancel_request_code, be32(1) + "abc"), "16 bytes"},
        {"CancelRequest of 20 bytes (longer 3.2 key)", startup_raw(cancel_request_code, be32(1) + be32(2) + be32(3)),
         "16 bytes"},
        {"packet shorter than 8 bytes", be32(7) + "abc", "too short"},
        {"empty packet", "", "too short"},
    };
    for (const auto& c : bad)
    {
        SECTION(c.name)
        {
            auto r = parse_startup_packet(c.packet);
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::protocol_violation);
            CHECK(r.error().severity == "FATAL");
            CHECK_THAT(r.error().message, Catch::Contains(c.message_part));
        }
    }
}

TEST_CASE("parse_startup_packet: StartupMessage 3.0 with parameters", "[startup][parse]")
{
    std::string payload = cstrs({"user", "alice", "database", "kong", "application_name", "psql", "options",
                                 "-c search_path=x", ""});
    auto r = parse_startup_packet(startup_raw(protocol_3_0, payload));
    REQUIRE(r.has_value());
    CHECK(r->type == startup_packet::kind::startup);
    CHECK(r->major == 3);
    CHECK(r->minor == 0);
    param_list expected{{"user", "alice"},
                        {"database", "kong"},
                        {"application_name", "psql"},
                        {"options", "-c search_path=x"}};
    CHECK(r->params.items == expected);
    REQUIRE(r->params.find("user") != nullptr);
    CHECK(*r->params.find("user") == "alice");
    CHECK(*r->params.find("options") == "-c search_path=x");
    CHECK(r->params.find("User") == nullptr);  // names are case-sensitive on the wire
    CHECK(r->params.find("missing") == nullptr);
}

TEST_CASE("parse_startup_packet: parameter values may be empty", "[startup][parse]")
{
    auto r = parse_startup_packet(startup_raw(protocol_3_0, cstrs({"user", "bob", "application_name", "", ""})));
    REQUIRE(r.has_value());
    REQUIRE(r->params.find("application_name") != nullptr);
    CHECK(r->params.find("application_name")->empty());
}

TEST_CASE("parse_startup_packet: protocol 3.x minor versions are accepted", "[startup][parse]")
{
    auto r = parse_startup_packet(startup_raw(version(3, 2), cstrs({"user", "bob", ""})));
    REQUIRE(r.has_value());
    CHECK(r->major == 3);
    CHECK(r->minor == 2);
}

TEST_CASE("parse_startup_packet: other protocol versions are rejected with 0A000", "[startup][parse]")
{
    struct
    {
        const char* name;
        std::uint32_t code;
        const char* version_text;
    } cases[] = {
        {"protocol 2.0", version(2, 0), "2.0"},
        {"protocol 4.0", version(4, 0), "4.0"},
        {"protocol 1.0", version(1, 0), "1.0"},
        {"unknown request code 1234.5677", version(1234, 5677), "1234.5677"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto r = parse_startup_packet(startup_raw(c.code, cstrs({"user", "bob", ""})));
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == sqlstate::feature_not_supported);
            CHECK(r.error().code == std::string("0A000"));
            CHECK(r.error().severity == "FATAL");
            CHECK_THAT(r.error().message, Catch::Contains(c.version_text));
        }
    }
}

TEST_CASE("parse_startup_packet: malformed StartupMessage layouts", "[startup][parse]")
{
    struct
    {
        const char* name;
        std::string payload;
        const char* code;
        const char* message_part;
    } cases[] = {
        {"no parameters and no terminator", "", sqlstate::protocol_violation, "terminator"},
        {"missing final terminator", cstrs({"user", "bob"}), sqlstate::protocol_violation, "terminator"},
        {"name without NUL", cstrs({"user", "bob"}) + "database", sqlstate::protocol_violation, "terminator"},
        {"value without NUL", cstrs({"user", "bob", "database"}) + "kong", sqlstate::protocol_violation,
         "\"database\" has no value"},
        {"name without a value at the end", cstrs({"user", "bob", "database"}), sqlstate::protocol_violation,
         "\"database\" has no value"},
        {"duplicate parameter", cstrs({"user", "bob", "user", "eve", ""}), sqlstate::protocol_violation,
         "duplicate startup parameter \"user\""},
        {"duplicate non-user parameter", cstrs({"user", "bob", "database", "a", "database", "b", ""}),
         sqlstate::protocol_violation, "\"database\""},
        {"bytes after the terminator", cstrs({"user", "bob", ""}) + "x", sqlstate::protocol_violation,
         "after the terminator"},
        {"two terminators", cstrs({"user", "bob", "", ""}), sqlstate::protocol_violation, "after the terminator"},
        {"missing user", cstrs({"database", "kong", ""}), sqlstate::invalid_authorization, "user"},
        {"empty user", cstrs({"user", "", "database", "kong", ""}), sqlstate::invalid_authorization, "user"},
        {"terminator only", cstrs({""}), sqlstate::invalid_authorization, "user"},
        {"user in the wrong case", cstrs({"USER", "bob", ""}), sqlstate::invalid_authorization, "user"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            INFO("payload: " << tb_test::printable(c.payload));
            auto r = parse_startup_packet(startup_raw(protocol_3_0, c.payload));
            REQUIRE_FALSE(r.has_value());
            CHECK(r.error().code == c.code);
            CHECK(r.error().severity == "FATAL");
            CHECK_THAT(r.error().message, Catch::Contains(c.message_part));
        }
    }
    SECTION("missing user gives SQLSTATE 28000")
    {
        auto r = parse_startup_packet(startup_raw(protocol_3_0, cstrs({"database", "kong", ""})));
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code == std::string("28000"));
    }
}

TEST_CASE("build_startup_message: exact bytes and round trip", "[startup][build]")
{
    SECTION("exact bytes")
    {
        startup_parameters p;
        p.set("user", "bob");
        std::string expected = be32(4 + 4 + 9 + 1) + be32(0x00030000) + cstrs({"user", "bob", ""});
        CHECK(build_startup_message(p) == expected);
    }
    SECTION("no parameters")
    {
        startup_parameters p;
        CHECK(build_startup_message(p) == be32(9) + be32(0x00030000) + std::string(1, '\0'));
    }
    SECTION("round trip through frame_startup_packet and parse_startup_packet")
    {
        startup_parameters p;
        p.items = {{"user", "kong"},
                   {"database", "kong"},
                   {"application_name", "tokenbouncer"},
                   {"client_encoding", "UTF8"},
                   {"options", "-c statement_timeout=5s"},
                   {"empty", ""}};
        std::string msg = build_startup_message(p);
        startup_frame f = frame_startup_packet(msg);
        REQUIRE(f.state == startup_frame::status::complete);
        CHECK(f.length == msg.size());
        auto r = parse_startup_packet(msg.substr(0, f.length));
        REQUIRE(r.has_value());
        CHECK(r->type == startup_packet::kind::startup);
        CHECK(r->major == 3);
        CHECK(r->minor == 0);
        CHECK(r->params.items == p.items);
        // Framing one byte short of the end asks for more.
        CHECK(frame_startup_packet(std::string_view(msg).substr(0, msg.size() - 1)).state ==
              startup_frame::status::need_more);
    }
}

TEST_CASE("build_ssl_request and build_cancel_request", "[startup][build]")
{
    CHECK(build_ssl_request() == be32(8) + be32(80877103));
    auto ssl = parse_startup_packet(build_ssl_request());
    REQUIRE(ssl.has_value());
    CHECK(ssl->type == startup_packet::kind::ssl_request);

    std::string cancel = build_cancel_request(4242, 0x80000001u);
    CHECK(cancel == be32(16) + be32(80877102) + be32(4242) + be32(0x80000001u));
    auto c = parse_startup_packet(cancel);
    REQUIRE(c.has_value());
    CHECK(c->type == startup_packet::kind::cancel_request);
    CHECK(c->cancel_pid == 4242u);
    CHECK(c->cancel_key == 0x80000001u);
}

TEST_CASE("startup_parameters::set replaces in place or appends", "[startup]")
{
    startup_parameters p;
    p.set("user", "a");
    p.set("database", "d");
    p.set("user", "b");
    param_list expected{{"user", "b"}, {"database", "d"}};
    CHECK(p.items == expected);
    p.set("User", "c");  // case-sensitive: a new entry
    CHECK(p.items.size() == 3);
    CHECK(*p.find("User") == "c");
    CHECK(*p.find("user") == "b");
}
