// config/auth_file.hpp: PgBouncer's auth_file format.
#include <catch2/catch.hpp>

#include "tokenbouncer/config/auth_file.hpp"

using tokenbouncer::config::parse_auth_file;

TEST_CASE("auth_file: users, verifiers, quotes, comments and CRLF", "[config][auth_file]")
{
    auto r = parse_auth_file("; PgBouncer style comment\n"
                             "# another\n"
                             "\n"
                             "\"kong\" \"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy\"\n"
                             "  \"ops\"\t\"clear text\"\r\n"
                             "\"we\"\"ird\" \"pa\"\"ss\"   trailing words are ignored, as PgBouncer does\n"
                             "\"ops\" \"second wins\"");
    REQUIRE(r.has_value());
    CHECK(r->size() == 3);
    CHECK(r->at("kong").reveal() == "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy");
    CHECK(r->at("ops").reveal() == "second wins");
    CHECK(r->at("we\"ird").reveal() == "pa\"ss");
}

TEST_CASE("auth_file: a bad line is named by its number, never quoted", "[config][auth_file]")
{
    struct
    {
        const char* text;
        const char* error;
    } cases[] = {
        {"\"kong\" \"ok\"\nkong hunter2\n", "line 2: expected \"user\" \"password\""},
        {"\"kong\"\n", "line 1: expected \"user\" \"password\""},
        {"\"kong\" \"hunter2\n", "line 1: expected \"user\" \"password\""},
        {"\n\n\"unterminated user", "line 3: expected \"user\" \"password\""},
    };
    for (const auto& c : cases)
    {
        INFO(c.text);
        auto r = parse_auth_file(c.text);
        REQUIRE(r.has_error());
        CHECK(r.error() == c.error);
        CHECK(r.error().find("hunter2") == std::string::npos);
    }
}

TEST_CASE("auth_file: empty text, no users", "[config][auth_file]")
{
    auto r = parse_auth_file("");
    REQUIRE(r.has_value());
    CHECK(r->empty());
}
