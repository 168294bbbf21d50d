// pool/params.hpp: tracked startup parameters, the signature of the others, and the SET
// statements that sync a server connection to a client.

#include <catch2/catch.hpp>

#include <string>

#include "test_helpers.hpp"
#include "tokenbouncer/pool/params.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::pool;
using tb_test::cstrs;

namespace {

protocol::startup_parameters make_params(std::initializer_list<std::pair<const char*, const char*>> items)
{
    protocol::startup_parameters p;
    for (const auto& [k, v] : items)
        p.items.emplace_back(k, v);
    return p;
}

}  // namespace

TEST_CASE("tracked_name: case-insensitive, canonical spelling", "[params]")
{
    struct
    {
        const char* in;
        const char* out;  // nullptr: not tracked
    } cases[] = {
        {"application_name", "application_name"},
        {"APPLICATION_NAME", "application_name"},
        {"client_encoding", "client_encoding"},
        {"datestyle", "DateStyle"},
        {"DATESTYLE", "DateStyle"},
        {"DateStyle", "DateStyle"},
        {"intervalstyle", "IntervalStyle"},
        {"timezone", "TimeZone"},
        {"TimeZone", "TimeZone"},
        {"Standard_Conforming_Strings", "standard_conforming_strings"},
        {"search_path", nullptr},
        {"options", nullptr},
        {"user", nullptr},
        {"", nullptr},
        {"DateStyle ", nullptr},
        {"time_zone", nullptr},
        {"timezon", nullptr},
    };
    for (const auto& c : cases)
    {
        INFO("\"" << c.in << "\"");
        auto t = tracked_name(c.in);
        if (c.out)
        {
            REQUIRE(t.has_value());
            CHECK(*t == c.out);
        }
        else
        {
            CHECK_FALSE(t.has_value());
        }
    }
}

TEST_CASE("split_startup_parameters", "[params]")
{
    SECTION("user, database and _pq_.* are neither tracked nor in the signature")
    {
        auto out = split_startup_parameters(
            make_params({{"user", "alice"}, {"database", "kong"}, {"_pq_.protocol_managed_portals", "on"}}));
        CHECK(out.tracked.empty());
        CHECK(out.signature.empty());
        CHECK(out.untracked.items.empty());
    }
    SECTION("tracked parameters under their canonical names, others in the signature")
    {
        auto out = split_startup_parameters(make_params({{"user", "alice"},
                                                         {"database", "kong"},
                                                         {"application_name", "psql"},
                                                         {"datestyle", "ISO, MDY"},
                                                         {"TIMEZONE", "UTC"},
                                                         {"search_path", "app,public"},
                                                         {"_pq_.foo", "bar"},
                                                         {"options", "-c statement_timeout=5s"},
                                                         {"extra_float_digits", "3"}}));
        param_map expected_tracked{{"application_name", "psql"}, {"DateStyle", "ISO, MDY"}, {"TimeZone", "UTC"}};
        CHECK(out.tracked == expected_tracked);
        // Sorted by name, NUL-separated.
        CHECK(out.signature ==
              cstrs({"extra_float_digits", "3", "options", "-c statement_timeout=5s", "search_path", "app,public"}));
        std::vector<std::pair<std::string, std::string>> expected_untracked{
            {"extra_float_digits", "3"}, {"options", "-c statement_timeout=5s"}, {"search_path", "app,public"}};
        CHECK(out.untracked.items == expected_untracked);
    }
    SECTION("the signature does not depend on the order of the parameters")
    {
        auto a = split_startup_parameters(make_params({{"user", "u"}, {"search_path", "s"}, {"options", "o"}}));
        auto b = split_startup_parameters(make_params({{"options", "o"}, {"search_path", "s"}, {"user", "u"}}));
        CHECK(a.signature == b.signature);
        CHECK_FALSE(a.signature.empty());
    }
    SECTION("the signature tells different values and names apart")
    {
        auto a = split_startup_parameters(make_params({{"search_path", "a"}}));
        auto b = split_startup_parameters(make_params({{"search_path", "b"}}));
        auto c = split_startup_parameters(make_params({{"search_pat", "ha"}}));  // same concatenation without NULs
        CHECK(a.signature != b.signature);
        CHECK(a.signature != c.signature);
    }
    SECTION("the signature ignores tracked parameters")
    {
        auto a = split_startup_parameters(make_params({{"user", "u"}, {"application_name", "one"}}));
        auto b = split_startup_parameters(make_params({{"user", "v"}, {"application_name", "two"}}));
        CHECK(a.signature.empty());
        CHECK(a.signature == b.signature);
        CHECK(a.tracked.at("application_name") == "one");
    }
    SECTION("names are case-sensitive for user and database")
    {
        // Only exactly "user" / "database" are protocol fields; "User" is a run-time parameter.
        auto out = split_startup_parameters(make_params({{"user", "u"}, {"User", "x"}}));
        CHECK(out.signature == cstrs({"User", "x"}));
    }
}

TEST_CASE("build_sync_query: only differing parameters, quoted", "[params]")
{
    struct
    {
        const char* name;
        param_map wanted;
        param_map current;
        std::string sql;
    } cases[] = {
        {"nothing wanted", {}, {{"TimeZone", "UTC"}}, ""},
        {"all equal", {{"TimeZone", "UTC"}, {"DateStyle", "ISO, MDY"}}, {{"TimeZone", "UTC"}, {"DateStyle", "ISO, MDY"}},
         ""},
        {"one differs", {{"TimeZone", "UTC"}, {"DateStyle", "ISO, MDY"}},
         {{"TimeZone", "Europe/Berlin"}, {"DateStyle", "ISO, MDY"}}, "SET \"TimeZone\" = 'UTC';"},
        {"missing on the server", {{"application_name", "app"}}, {}, "SET \"application_name\" = 'app';"},
        {"several, in name order",
         {{"application_name", "a"}, {"TimeZone", "UTC"}, {"DateStyle", "German"}},
         {},
         "SET \"DateStyle\" = 'German';SET \"TimeZone\" = 'UTC';SET \"application_name\" = 'a';"},
        {"values differing only in case are different", {{"client_encoding", "utf8"}}, {{"client_encoding", "UTF8"}},
         "SET \"client_encoding\" = 'utf8';"},
        {"empty value", {{"application_name", ""}}, {{"application_name", "psql"}}, "SET \"application_name\" = '';"},
        {"quote in the value", {{"application_name", "it's"}}, {}, "SET \"application_name\" = 'it''s';"},
        {"backslash in the value", {{"application_name", "a\\b"}}, {}, "SET \"application_name\" = E'a\\\\b';"},
        {"injection attempt", {{"application_name", "x'; DROP TABLE t; --"}}, {},
         "SET \"application_name\" = 'x''; DROP TABLE t; --';"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(build_sync_query(c.wanted, c.current) == c.sql);
        }
    }
}

TEST_CASE("split then sync: a server set up for one client synced to another", "[params]")
{
    auto first = split_startup_parameters(
        make_params({{"user", "u"}, {"application_name", "one"}, {"timezone", "UTC"}, {"search_path", "s"}}));
    auto second = split_startup_parameters(
        make_params({{"user", "u"}, {"application_name", "two"}, {"TimeZone", "UTC"}, {"search_path", "s"}}));
    CHECK(first.signature == second.signature);  // the same server connection can serve both
    CHECK(build_sync_query(second.tracked, first.tracked) == "SET \"application_name\" = 'two';");
    CHECK(build_sync_query(first.tracked, first.tracked).empty());
}
