// config/loader.hpp and config/settings.hpp: the file format, environment variables, the checks
// of each value and of the rules between keys, inheritance of the pg_ro_* keys, defaults.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tokenbouncer/config/loader.hpp"
#include "tokenbouncer/config/settings.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::config;
using namespace std::chrono_literals;

namespace {

load_result build(std::string_view text, const std::vector<std::string>& env = {})
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text(text, raw, problems);
    apply_environment(env, raw, problems);
    return build_settings(std::move(raw), std::move(problems));
}

std::string all_problems(const std::vector<problem>& ps)
{
    std::string s;
    for (const auto& p : ps)
        s += "  " + p.to_string() + "\n";
    return s;
}

std::string all_problems(const load_result& r) { return all_problems(r.problems); }

const problem* find_problem(const std::vector<problem>& ps, std::string_view key, bool warning)
{
    for (const auto& p : ps)
        if (p.key == key && p.warning == warning)
            return &p;
    return nullptr;
}

const key_info& key(std::string_view name)
{
    const key_info* k = find_key(name);
    REQUIRE(k != nullptr);
    return *k;
}

// The minimal valid configuration.
constexpr const char* base = "pg_host = db.example.com\n";

}  // namespace

// --- parse_config_text ----------------------------------------------------------------------------

TEST_CASE("parse_config_text: comments, blank lines, inline comments, escapes", "[config][parse]")
{
    std::string text = "# a comment line\n"                                                                  // 1
                       "\n"                                                                                  // 2
                       "   pg_host = db.example.com   \n"                                                    // 3
                       "PG_USER = my-managed-identity # needs to be the name of the managed identity\n"      // 4
                       "pg_password = abc\\#def # a real comment\n"                                          // 5
                       "pg_database=kong\n"                                                                  // 6
                       "\t# an indented comment\n"                                                           // 7
                       "pg_sslrootcert = /etc/ssl/ca.pem\r\n"                                                // 8
                       "pg_azure_scope = https://x/.default?a=b\n"                                           // 9
                       "pg_azure_client_id = # only a comment\n"                                             // 10
                       "pg_azure_tenant_id = Tenant\\Name\n"                                                 // 11
                       "pg_azure_client_secret = tail\\#";                                                   // 12, no newline
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text(text, raw, problems);
    INFO(all_problems(problems));
    CHECK(problems.empty());
    struct
    {
        const char* key;
        const char* value;
        const char* where;
    } expected[] = {
        {"pg_host", "db.example.com", "line 3"},
        {"pg_user", "my-managed-identity", "line 4"},
        {"pg_password", "abc#def", "line 5"},
        {"pg_database", "kong", "line 6"},
        {"pg_sslrootcert", "/etc/ssl/ca.pem", "line 8"},
        {"pg_azure_scope", "https://x/.default?a=b", "line 9"},
        {"pg_azure_client_id", "", "line 10"},
        {"pg_azure_tenant_id", "Tenant\\Name", "line 11"},
        {"pg_azure_client_secret", "tail#", "line 12"},
    };
    CHECK(raw.size() == std::size(expected));
    for (const auto& e : expected)
    {
        INFO("key " << e.key);
        auto it = raw.find(e.key);
        REQUIRE(it != raw.end());
        CHECK(it->second.value == e.value);
        CHECK(it->second.where == e.where);
    }
}

TEST_CASE("parse_config_text: an unescaped '#' starts a comment even without a space", "[config][parse]")
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text("pg_password = abc#def\n", raw, problems);
    CHECK(problems.empty());
    CHECK(raw.at("pg_password").value == "abc");
}

TEST_CASE("parse_config_text: values keep their case, keys do not", "[config][parse]")
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text("Pg_User = MyIdentity\n", raw, problems);
    CHECK(problems.empty());
    REQUIRE(raw.count("pg_user") == 1);
    CHECK(raw.at("pg_user").value == "MyIdentity");
}

TEST_CASE("parse_config_text: malformed lines", "[config][parse]")
{
    SECTION("missing '='")
    {
        raw_config raw;
        std::vector<problem> problems;
        parse_config_text("pg_host = a\npg_port 5432\n", raw, problems);
        REQUIRE(problems.size() == 1);
        CHECK_FALSE(problems[0].warning);
        CHECK(problems[0].where == "line 2");
        CHECK_THAT(problems[0].message, Catch::Contains("key = value"));
        CHECK_THAT(problems[0].to_string(), Catch::Contains("pg_port 5432"));
        CHECK(raw.size() == 1);
    }
    SECTION("a value without a key")
    {
        raw_config raw;
        std::vector<problem> problems;
        parse_config_text("\n  = value\n", raw, problems);
        REQUIRE(problems.size() == 1);
        CHECK_FALSE(problems[0].warning);
        CHECK(problems[0].where == "line 2");
        CHECK_THAT(problems[0].message, Catch::Contains("without a key"));
        CHECK(raw.empty());
    }
    SECTION("a '=' hidden in a comment does not count")
    {
        raw_config raw;
        std::vector<problem> problems;
        parse_config_text("pg_host # = x\n", raw, problems);
        REQUIRE(problems.size() == 1);
        CHECK(problems[0].where == "line 1");
    }
}

TEST_CASE("parse_config_text: duplicate keys warn, naming the first line; the last value wins", "[config][parse]")
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text("pg_host = first\n"
                      "pg_port = 5432\n"
                      "# comment\n"
                      "PG_HOST = second\n",
                      raw, problems);
    REQUIRE(problems.size() == 1);
    const problem& p = problems[0];
    CHECK(p.warning);
    CHECK(p.key == "pg_host");
    CHECK(p.where == "line 4");
    CHECK_THAT(p.message, Catch::Contains("line 1"));
    CHECK(raw.at("pg_host").value == "second");
    CHECK(raw.at("pg_host").where == "line 4");
    CHECK_THAT(p.to_string(), Catch::StartsWith("warning: line 4: pg_host: "));
}

// --- apply_environment ----------------------------------------------------------------------------

TEST_CASE("apply_environment: TOKENBOUNCER_<KEY> overrides the file", "[config][env]")
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text("pg_host = db\npg_port = 5433\n", raw, problems);
    apply_environment({"PATH=/usr/bin", "PG_PORT=1", "TOKENBOUNCER_PG_PORT=6543", "TOKENBOUNCER_PG_PASSWORD=a=b#c",
                       "TOKENBOUNCER_PG_SSLROOTCERT=", "TOKENBOUNCER_NO_EQUALS_SIGN"},
                      raw, problems);
    INFO(all_problems(problems));
    CHECK(problems.empty());
    CHECK(raw.at("pg_port").value == "6543");
    CHECK(raw.at("pg_port").where == "TOKENBOUNCER_PG_PORT");
    CHECK(raw.at("pg_password").value == "a=b#c");  // no comment stripping in the environment
    CHECK(raw.at("pg_sslrootcert").value == "");
    CHECK(raw.at("pg_host").where == "line 1");

    load_result r = build_settings(raw, problems);
    CHECK(r.ok());
    CHECK(r.values.rw.port == 6543);
    CHECK(r.values.rw.password.reveal() == "a=b#c");
}

TEST_CASE("apply_environment: an unknown TOKENBOUNCER_ variable is an error naming it", "[config][env]")
{
    raw_config raw;
    std::vector<problem> problems;
    apply_environment({"TOKENBOUNCER_FOO=1"}, raw, problems);
    REQUIRE(problems.size() == 1);
    CHECK_FALSE(problems[0].warning);
    CHECK(problems[0].where == "TOKENBOUNCER_FOO");
    CHECK_THAT(problems[0].message, Catch::Contains("\"foo\""));
    CHECK_THAT(problems[0].to_string(), Catch::Contains("TOKENBOUNCER_FOO"));
    CHECK(raw.empty());

    load_result r = build("pg_host = db\n", {"TOKENBOUNCER_FOO=1"});
    CHECK_FALSE(r.ok());
}

TEST_CASE("apply_environment: configuration from the environment only", "[config][env]")
{
    load_result r = build("", {"TOKENBOUNCER_PG_HOST=env-host", "TOKENBOUNCER_PG_RO_HOST=env-replica",
                               "TOKENBOUNCER_LISTEN_PORT=7000"});
    INFO(all_problems(r));
    CHECK(r.ok());
    CHECK(r.values.rw.host == "env-host");
    CHECK(r.values.ro.host == "env-replica");
    CHECK(r.values.ro_enabled);
    CHECK(r.values.rw.listen_port == 7000);
    CHECK(r.raw.at("pg_host").where == "TOKENBOUNCER_PG_HOST");
}

// --- build_settings: errors -----------------------------------------------------------------------

TEST_CASE("build_settings: every error names the key and where its value came from", "[config][errors]")
{
    struct
    {
        const char* name;
        std::string text;
        std::vector<std::string> env;
        const char* key;
        const char* where;
        std::vector<std::string> message_parts;
    } cases[] = {
        {"unknown key", std::string(base) + "pg_hots = db\n", {}, "pg_hots", "line 2", {"unknown key"}},
        {"port 70000", std::string(base) + "pg_port = 70000\n", {}, "pg_port", "line 2", {"\"70000\"", "65535"}},
        {"port 0", std::string(base) + "pg_port = 0\n", {}, "pg_port", "line 2", {"port number"}},
        {"port not a number", std::string(base) + "pg_port = postgres\n", {}, "pg_port", "line 2", {"\"postgres\""}},
        {"port with junk", std::string(base) + "pg_port = 5432x\n", {}, "pg_port", "line 2", {"port number"}},
        {"pg_ro_port 70000", std::string(base) + "pg_ro_port = 70000\n", {}, "pg_ro_port", "line 2", {"65535"}},
        {"listen_port 70000", std::string(base) + "listen_port = 70000\n", {}, "listen_port", "line 2", {"65535"}},
        {"http_port -1", std::string(base) + "http_port = -1\n", {}, "http_port", "line 2", {"port number"}},
        {"port 70000 from the environment", base, {"TOKENBOUNCER_PG_PORT=70000"}, "pg_port", "TOKENBOUNCER_PG_PORT",
         {"70000"}},
        {"pg_sslmode = maybe", std::string(base) + "pg_sslmode = maybe\n", {}, "pg_sslmode", "line 2",
         {"\"maybe\"", "disable,require,verify-ca,verify-full"}},
        {"pg_sslmode = prefer (not offered upstream)", std::string(base) + "pg_sslmode = prefer\n", {}, "pg_sslmode",
         "line 2", {"must be one of"}},
        {"pg_ro_sslmode = maybe", std::string(base) + "pg_ro_sslmode = maybe\n", {}, "pg_ro_sslmode", "line 2",
         {"maybe"}},
        {"pool_mode = statement", std::string(base) + "pool_mode = statement\n", {}, "pool_mode", "line 2",
         {"session,transaction"}},
        {"auth_type = md5", std::string(base) + "auth_type = md5\n", {}, "auth_type", "line 2", {"trust"}},
        {"bad boolean maybe", std::string(base) + "pg_azure_auth = maybe\n", {}, "pg_azure_auth", "line 2",
         {"\"maybe\"", "on or off"}},
        {"bad boolean 2", std::string(base) + "pg_azure_auth = 2\n", {}, "pg_azure_auth", "line 2", {"on or off"}},
        {"bad boolean (empty)", std::string(base) + "pg_azure_auth =\n", {}, "pg_azure_auth", "line 2", {"on or off"}},
        {"bad duration abc", std::string(base) + "server_idle_timeout = abc\n", {}, "server_idle_timeout", "line 2",
         {"\"abc\"", "duration"}},
        {"negative duration", std::string(base) + "query_wait_timeout = -1\n", {}, "query_wait_timeout", "line 2",
         {"duration"}},
        {"duration with unknown unit", std::string(base) + "client_login_timeout = 1y\n", {}, "client_login_timeout",
         "line 2", {"duration"}},
        {"duration below the minimum", std::string(base) + "server_connect_timeout = 50ms\n", {},
         "server_connect_timeout", "line 2", {"between 100 ms and 86400 s"}},
        {"duration above the maximum", std::string(base) + "azure_request_timeout = 11min\n", {},
         "azure_request_timeout", "line 2", {"600 s"}},
        {"integer out of range", std::string(base) + "workers = 257\n", {}, "workers", "line 2", {"between 0 and 256"}},
        {"pool size 0", std::string(base) + "pg_pool_size = 0\n", {}, "pg_pool_size", "line 2", {"between 1 and"}},
        {"max_packet_size below 1024", std::string(base) + "max_packet_size = 100\n", {}, "max_packet_size", "line 2",
         {"1024"}},
        {"octal mode with a 9", std::string(base) + "unix_socket_mode = 0999\n", {}, "unix_socket_mode", "line 2",
         {"octal"}},
        {"octal mode too large", std::string(base) + "unix_socket_mode = 1777\n", {}, "unix_socket_mode", "line 2",
         {"octal"}},
        {"non-numeric peer uid", std::string(base) + "allowed_peer_uids = 1000, abc\n", {}, "allowed_peer_uids",
         "line 2", {"\"abc\""}},
        {"missing pg_host", "", {}, "pg_host", "", {"is not set"}},
        {"empty pg_host", "pg_host =\n", {}, "pg_host", "", {"is not set"}},
        {"empty pg_database", std::string(base) + "pg_database =\n", {}, "pg_database", "line 2", {"must not be empty"}},
        {"empty pg_user", std::string(base) + "pg_user =\n", {}, "pg_user", "line 2", {"must not be empty"}},
        {"pg_min_pool_size > pg_pool_size", std::string(base) + "pg_pool_size = 10\npg_min_pool_size = 30\n", {},
         "pg_min_pool_size", "line 3", {"(30)", "pg_pool_size = 10"}},
        {"pg_ro_min_pool_size > pg_ro_pool_size",
         std::string(base) + "pg_ro_host = replica\npg_ro_pool_size = 5\npg_ro_min_pool_size = 6\n", {},
         "pg_ro_min_pool_size", "line 4", {"(6)", "pg_ro_pool_size = 5"}},
        {"ro_listen_port == listen_port", std::string(base) + "pg_ro_host = replica\nro_listen_port = 6432\n", {},
         "ro_listen_port", "line 3", {"6432"}},
        {"http_port == listen_port", std::string(base) + "http_port = 6432\n", {}, "http_port", "line 2",
         {"listen port"}},
        // 71968 = 65536 + 6432: kept as a number it would wrap around to listen_port.
        {"http_port 71968", std::string(base) + "http_port = 71968\n", {}, "http_port", "line 2", {"71968", "65535"}},
        {"non-loopback listen_addr with trust", std::string(base) + "listen_addr = 0.0.0.0\n", {}, "listen_addr",
         "line 2", {"\"0.0.0.0\"", "loopback", "trust"}},
        {"listen_addr * (all addresses) with trust", std::string(base) + "listen_addr = *\n", {}, "listen_addr",
         "line 2", {"\"*\"", "loopback"}},
        {"listen_addr :: with trust", std::string(base) + "listen_addr = ::\n", {}, "listen_addr", "line 2",
         {"\"::\""}},
        {"one non-loopback listen_addr among several", std::string(base) + "listen_addr = 127.0.0.1, 10.1.2.3\n", {},
         "listen_addr", "line 2", {"\"10.1.2.3\""}},
        {"non-loopback listen_addr with explicit trust",
         std::string(base) + "auth_type = trust\nlisten_addr = 192.168.0.1\n", {}, "listen_addr", "line 3",
         {"192.168.0.1"}},
        {"nothing to listen on", std::string(base) + "listen_addr =\n", {}, "listen_addr", "line 2",
         {"nothing to listen on"}},
        {"scram-sha-256 without auth_file", std::string(base) + "auth_type = scram-sha-256\n", {}, "auth_file", "",
         {"scram-sha-256"}},
        {"client TLS without cert and key", std::string(base) + "client_tls_sslmode = require\n", {},
         "client_tls_sslmode", "line 2", {"client_tls_cert_file", "client_tls_key_file"}},
        {"client TLS with cert but no key",
         std::string(base) + "client_tls_sslmode = allow\nclient_tls_cert_file = /c.pem\n", {}, "client_tls_sslmode",
         "line 2", {"client_tls_key_file"}},
        {"client TLS verify-full without CA",
         std::string(base) + "client_tls_sslmode = verify-full\nclient_tls_cert_file = /c.pem\nclient_tls_key_file = "
                             "/k.pem\n",
         {}, "client_tls_ca_file", "", {"verify-ca/verify-full"}},
        {"Entra login without TLS", std::string(base) + "pg_azure_auth = on\npg_sslmode = disable\n", {}, "pg_sslmode",
         "line 3", {"requires TLS"}},
        {"Kong database = cassandra", std::string(base) + "database = cassandra\n", {}, "database", "line 2",
         {"postgres"}},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            load_result r = build(c.text, c.env);
            INFO("problems:\n" << all_problems(r));
            CHECK_FALSE(r.ok());
            auto errors = r.errors();
            // One mistake, one error: a bad value falls back to its default, so no second error.
            CHECK(errors.size() == 1);
            const problem* p = find_problem(errors, c.key, false);
            REQUIRE(p != nullptr);
            CHECK(p->where == c.where);
            for (const auto& part : c.message_parts)
                CHECK_THAT(p->message, Catch::Contains(part));
            std::string line = p->to_string();
            CHECK_THAT(line, Catch::StartsWith("error: "));
            CHECK_THAT(line, Catch::Contains(c.key));
            if (*c.where)
                CHECK_THAT(line, Catch::Contains(std::string(c.where) + ": "));
        }
    }
}

TEST_CASE("build_settings: a bad value falls back to the default and is not kept", "[config][errors]")
{
    load_result r = build(std::string(base) + "pg_port = 70000\nserver_idle_timeout = soon\n");
    CHECK(r.errors().size() == 2);
    CHECK(r.raw.count("pg_port") == 0);
    CHECK(r.raw.count("server_idle_timeout") == 0);
    CHECK(r.raw.count("pg_host") == 1);
    CHECK(r.values.rw.port == 5432);
    CHECK(r.values.server_idle_timeout == std::chrono::seconds(600));
}

TEST_CASE("build_settings: secrets are masked in error messages", "[config][errors]")
{
    // No secret key has a checked type today; make sure the generic path masks anyway.
    CHECK(display_value(key("pg_password"), "hunter2") == "***");
    // pg_azure_auth = on makes pg_password the subject of a warning.
    load_result r = build(std::string(base) + "pg_azure_auth = on\npg_password = hunter2\npg_azure_client_secret = s3cr3t\n");
    INFO(all_problems(r));
    REQUIRE(find_problem(r.problems, "pg_password", true) != nullptr);
    for (const auto& p : r.problems)
    {
        CHECK_THAT(p.to_string(), !Catch::Contains("hunter2"));
        CHECK_THAT(p.to_string(), !Catch::Contains("s3cr3t"));
    }
}

TEST_CASE("build_settings: a global min_pool_size larger than the pool names where it was set",
          "[config][errors]")
{
    // Regression: the rule once named pg_min_pool_size with no location when the value came from
    // the global min_pool_size, and reported it twice when pg_ro_host was set.
    load_result r = build(std::string(base) + "min_pool_size = 30\n");  // default_pool_size is 20
    INFO("problems:\n" << all_problems(r));
    auto errors = r.errors();
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].where == "line 2");
    CHECK_THAT(errors[0].to_string(), Catch::Contains("min_pool_size"));
}

TEST_CASE("build_settings: rules that are not errors", "[config][rules]")
{
    struct
    {
        const char* name;
        std::string text;
    } cases[] = {
        {"loopback 127.0.0.1", std::string(base) + "listen_addr = 127.0.0.1\n"},
        {"loopback 127.0.0.2", std::string(base) + "listen_addr = 127.0.0.2\n"},
        {"loopback ::1", std::string(base) + "listen_addr = ::1\n"},
        {"localhost", std::string(base) + "listen_addr = localhost\n"},
        {"several loopback addresses", std::string(base) + "listen_addr = 127.0.0.1, ::1\n"},
        {"unix socket only", std::string(base) + "listen_addr =\nunix_socket_dir = /run/tokenbouncer\n"},
        {"non-loopback with scram-sha-256 and auth_file",
         std::string(base) + "listen_addr = 0.0.0.0\nauth_type = scram-sha-256\nauth_file = /etc/tb/users.txt\n"},
        {"ro_listen_port differs", std::string(base) + "pg_ro_host = replica\nro_listen_port = 6500\n"},
        {"ro_listen_port == listen_port without pg_ro_host", std::string(base) + "ro_listen_port = 6432\n"},
        {"http_port 0 (off)", std::string(base) + "http_port = 0\n"},
        {"client TLS allow with cert and key",
         std::string(base) + "client_tls_sslmode = allow\nclient_tls_cert_file = /c\nclient_tls_key_file = /k\n"},
        {"client TLS verify-ca with a CA", std::string(base) +
                                               "client_tls_sslmode = verify-ca\nclient_tls_cert_file = /c\n"
                                               "client_tls_key_file = /k\nclient_tls_ca_file = /ca\n"},
        {"min_pool_size equal to the pool size", std::string(base) + "pg_pool_size = 5\npg_min_pool_size = 5\n"},
        {"Entra login with TLS", std::string(base) + "pg_azure_auth = on\n"},
        {"port 1 and 65535", std::string(base) + "pg_port = 1\nlisten_port = 65535\n"},
        {"durations at the limits",
         std::string(base) + "server_connect_timeout = 100ms\nclient_login_timeout = 24h\nserver_lifetime = 0\n"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            load_result r = build(c.text);
            INFO("problems:\n" << all_problems(r));
            CHECK(r.ok());
            CHECK(r.errors().empty());
        }
    }
}

TEST_CASE("build_settings: a static password with Entra login is a warning", "[config][rules]")
{
    load_result r = build(std::string(base) + "pg_azure_auth = on\npg_password = x\n");
    INFO(all_problems(r));
    CHECK(r.ok());
    const problem* p = find_problem(r.problems, "pg_password", true);
    REQUIRE(p != nullptr);
    CHECK(p->where == "line 3");
    CHECK_THAT(p->message, Catch::Contains("ignored"));
}

// --- Values, defaults, inheritance ---------------------------------------------------------------

TEST_CASE("build_settings: defaults", "[config][defaults]")
{
    load_result r = build(base);
    INFO(all_problems(r));
    REQUIRE(r.ok());
    CHECK(r.problems.empty());
    const settings& s = r.values;
    CHECK(s.rw.name == "rw");
    CHECK(s.rw.host == "db.example.com");
    CHECK(s.rw.port == 5432);
    CHECK(s.rw.database == "kong");
    CHECK(s.rw.user == "kong");
    CHECK(s.rw.password.empty());
    CHECK(s.rw.sslmode == sslmode::verify_full);
    CHECK(s.rw.sslrootcert.empty());
    CHECK_FALSE(s.rw.azure_auth);
    CHECK(s.rw.pool_mode == pool_mode::session);
    CHECK(s.rw.pool_size == 20);
    CHECK(s.rw.min_pool_size == 0);
    CHECK(s.rw.reserve_pool_size == 0);
    CHECK(s.rw.max_db_connections == 0);
    CHECK(s.rw.allowed_users.empty());
    CHECK(s.rw.listen_port == 6432);
    CHECK_FALSE(s.ro_enabled);
    CHECK(s.ro.name == "ro");
    CHECK(s.ro.listen_port == 6433);
    CHECK(s.listen_addr == std::vector<std::string>{"127.0.0.1"});
    CHECK(s.unix_socket_dir.empty());
    CHECK(s.unix_socket_mode == 0700);
    CHECK(s.workers == 1);
    CHECK(s.auth_type == auth_type::trust);
    CHECK(s.client_tls_sslmode == client_tls_mode::disable);
    CHECK(s.max_client_conn == 1000);
    CHECK(s.reserve_pool_timeout == 5s);
    CHECK(s.server_lifetime == 3600s);
    CHECK(s.server_idle_timeout == 600s);
    CHECK(s.server_connect_timeout == 15s);
    CHECK(s.server_login_retry == 15s);
    CHECK(s.query_wait_timeout == 120s);
    CHECK(s.client_idle_timeout == 0s);
    CHECK(s.idle_transaction_timeout == 0s);
    CHECK(s.client_login_timeout == 60s);
    CHECK(s.shutdown_timeout == 30s);
    CHECK(s.server_reset_query == "DISCARD ALL");
    CHECK(s.server_check_query.empty());
    CHECK(s.server_check_delay == 30s);
    CHECK(s.max_prepared_statements == 200);
    CHECK(s.max_packet_size == 0x3ffffffeu);
    // PgBouncer's default value is accepted, and means PostgreSQL's own limit.
    CHECK(build(std::string(base) + "max_packet_size = 2147483647\n").values.max_packet_size == 0x3ffffffeu);
    CHECK(build(std::string(base) + "max_packet_size = 65536\n").values.max_packet_size == 65536u);
    CHECK(s.azure_cloud == "AzurePublicCloud");
    CHECK(s.azure_imds_endpoint == "http://169.254.169.254/metadata/identity/oauth2/token");
    CHECK(s.azure_request_timeout == 10s);
    CHECK(s.azure_refresh_margin == 300s);
    CHECK(s.log_level == "info");
    CHECK(s.log_format == "text");
    CHECK(s.http_addr == "127.0.0.1");
    CHECK(s.http_port == 9127);
}

TEST_CASE("build_settings: the key table's defaults match the settings struct's", "[config][defaults]")
{
    settings d;
    settings s = build(base).values;
    CHECK(s.rw.port == d.rw.port);
    CHECK(s.rw.database == d.rw.database);
    CHECK(s.rw.user == d.rw.user);
    CHECK(s.rw.sslmode == d.rw.sslmode);
    CHECK(s.rw.pool_size == d.rw.pool_size);
    CHECK(s.rw.listen_port == d.rw.listen_port);
    CHECK(s.listen_addr == d.listen_addr);
    CHECK(s.unix_socket_mode == d.unix_socket_mode);
    CHECK(s.max_client_conn == d.max_client_conn);
    CHECK(s.reserve_pool_timeout == d.reserve_pool_timeout);
    CHECK(s.server_lifetime == d.server_lifetime);
    CHECK(s.server_idle_timeout == d.server_idle_timeout);
    CHECK(s.server_connect_timeout == d.server_connect_timeout);
    CHECK(s.server_login_retry == d.server_login_retry);
    CHECK(s.query_wait_timeout == d.query_wait_timeout);
    CHECK(s.client_login_timeout == d.client_login_timeout);
    CHECK(s.shutdown_timeout == d.shutdown_timeout);
    CHECK(s.server_check_delay == d.server_check_delay);
    CHECK(s.server_reset_query == d.server_reset_query);
    CHECK(s.max_prepared_statements == d.max_prepared_statements);
    CHECK(s.max_packet_size == d.max_packet_size);
    CHECK(s.azure_cloud == d.azure_cloud);
    CHECK(s.azure_imds_endpoint == d.azure_imds_endpoint);
    CHECK(s.azure_request_timeout == d.azure_request_timeout);
    CHECK(s.azure_refresh_margin == d.azure_refresh_margin);
    CHECK(s.log_level == d.log_level);
    CHECK(s.log_format == d.log_format);
    CHECK(s.http_addr == d.http_addr);
    CHECK(s.http_port == d.http_port);
}

TEST_CASE("build_settings: typed values", "[config][values]")
{
    load_result r = build(std::string(base) +
                          "pg_port = 6543\n"
                          "pg_sslmode = verify-ca\n"
                          "pg_azure_auth = yes\n"
                          "pool_mode = transaction\n"
                          "default_pool_size = 7\n"
                          "listen_addr = 127.0.0.1 , ::1,,\n"
                          "unix_socket_mode = 0660\n"
                          "allowed_peer_uids = 0, 1000\n"
                          "allowed_users = alice, bob\n"
                          "auth_type = scram-sha-256\n"
                          "auth_file = /etc/users\n"
                          "client_tls_sslmode = prefer\n"
                          "client_tls_cert_file = /c\n"
                          "client_tls_key_file = /k\n"
                          "server_idle_timeout = 2.5s\n"
                          "query_wait_timeout = 10min\n"
                          "server_lifetime = 1h\n"
                          "reserve_pool_timeout = 500ms\n"
                          "admin_users = admin\n"
                          "server_reset_query =\n");
    INFO(all_problems(r));
    REQUIRE(r.ok());
    const settings& s = r.values;
    CHECK(s.rw.port == 6543);
    CHECK(s.rw.sslmode == sslmode::verify_ca);
    CHECK(s.rw.azure_auth);
    CHECK(s.rw.pool_mode == pool_mode::transaction);
    CHECK(s.rw.pool_size == 7);
    CHECK(s.listen_addr == std::vector<std::string>{"127.0.0.1", "::1"});
    CHECK(s.unix_socket_mode == 0660);
    CHECK(s.allowed_peer_uids == std::vector<std::uint32_t>{0, 1000});
    CHECK(s.rw.allowed_users == std::vector<std::string>{"alice", "bob"});
    CHECK(s.auth_type == auth_type::scram_sha_256);
    CHECK(s.auth_file == "/etc/users");
    CHECK(s.client_tls_sslmode == client_tls_mode::allow);
    CHECK(s.server_idle_timeout == 2500ms);
    CHECK(s.query_wait_timeout == 600s);
    CHECK(s.server_lifetime == 3600s);
    CHECK(s.reserve_pool_timeout == 500ms);
    CHECK(s.admin_users == std::vector<std::string>{"admin"});
    CHECK(s.server_reset_query.empty());  // set to empty: no reset query, not the default
}

TEST_CASE("build_settings: pg_ro_* keys inherit pg_* values when unset", "[config][inherit]")
{
    std::string text = "pg_host = primary\n"
                       "pg_port = 5433\n"
                       "pg_user = svc\n"
                       "pg_database = appdb\n"
                       "pg_password = pw\n"
                       "pg_sslmode = require\n"
                       "pg_sslrootcert = /ca.pem\n"
                       "pg_azure_client_id = cid\n"
                       "pg_pool_size = 11\n"
                       "pg_pool_mode = transaction\n"
                       "pg_ro_host = replica\n";
    load_result r = build(text);
    INFO(all_problems(r));
    REQUIRE(r.ok());
    const settings& s = r.values;
    CHECK(s.ro_enabled);
    CHECK(s.rw.host == "primary");
    CHECK(s.ro.host == "replica");
    CHECK(s.ro.port == 5433);
    CHECK(s.ro.user == "svc");
    CHECK(s.ro.database == "appdb");
    CHECK(s.ro.password.reveal() == "pw");
    CHECK(s.ro.sslmode == sslmode::require);
    CHECK(s.ro.sslrootcert == "/ca.pem");
    CHECK(s.ro.azure_client_id == "cid");
    CHECK(s.ro.pool_size == 11);
    CHECK(s.ro.pool_mode == pool_mode::transaction);
    CHECK(s.ro.listen_port == 6433);
    CHECK(&s.route(true) == &s.ro);
    CHECK(&s.route(false) == &s.rw);

    SECTION("and override them when set")
    {
        load_result r2 = build(text +
                               "pg_ro_port = 5434\n"
                               "pg_ro_user = reader\n"
                               "pg_ro_database = replica_db\n"
                               "pg_ro_password = ropw\n"
                               "pg_ro_sslmode = verify-full\n"
                               "pg_ro_pool_size = 3\n"
                               "pg_ro_pool_mode = session\n");
        INFO(all_problems(r2));
        REQUIRE(r2.ok());
        const settings& t = r2.values;
        CHECK(t.ro.port == 5434);
        CHECK(t.ro.user == "reader");
        CHECK(t.ro.database == "replica_db");
        CHECK(t.ro.password.reveal() == "ropw");
        CHECK(t.ro.sslmode == sslmode::verify_full);
        CHECK(t.ro.pool_size == 3);
        CHECK(t.ro.pool_mode == pool_mode::session);
        // The rw route is unchanged.
        CHECK(t.rw.port == 5433);
        CHECK(t.rw.user == "svc");
        CHECK(t.rw.database == "appdb");
        CHECK(t.rw.password.reveal() == "pw");
        CHECK(t.rw.sslmode == sslmode::require);
        CHECK(t.rw.pool_size == 11);
        CHECK(t.rw.pool_mode == pool_mode::transaction);
    }
    SECTION("from the environment too")
    {
        load_result r3 = build(text, {"TOKENBOUNCER_PG_RO_USER=env_reader", "TOKENBOUNCER_PG_PORT=6000"});
        REQUIRE(r3.ok());
        CHECK(r3.values.ro.user == "env_reader");
        CHECK(r3.values.ro.port == 6000);
        CHECK(r3.values.rw.port == 6000);
    }
}

TEST_CASE("build_settings: pool sizes fall back to the global keys", "[config][inherit]")
{
    struct
    {
        const char* name;
        std::string extra;
        int rw_pool, ro_pool, rw_min, ro_min;
        pool_mode rw_mode, ro_mode;
    } cases[] = {
        {"defaults", "", 20, 20, 0, 0, pool_mode::session, pool_mode::session},
        {"default_pool_size", "default_pool_size = 30\n", 30, 30, 0, 0, pool_mode::session, pool_mode::session},
        {"pg_pool_size beats default_pool_size", "default_pool_size = 30\npg_pool_size = 10\n", 10, 10, 0, 0,
         pool_mode::session, pool_mode::session},
        {"pg_ro_pool_size", "pg_pool_size = 10\npg_ro_pool_size = 5\n", 10, 5, 0, 0, pool_mode::session,
         pool_mode::session},
        {"min_pool_size", "min_pool_size = 3\n", 20, 20, 3, 3, pool_mode::session, pool_mode::session},
        {"pg_ro_min_pool_size", "min_pool_size = 3\npg_ro_min_pool_size = 1\n", 20, 20, 3, 1, pool_mode::session,
         pool_mode::session},
        {"pool_mode", "pool_mode = transaction\n", 20, 20, 0, 0, pool_mode::transaction, pool_mode::transaction},
        {"pg_ro_pool_mode", "pool_mode = transaction\npg_ro_pool_mode = session\n", 20, 20, 0, 0,
         pool_mode::transaction, pool_mode::session},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            load_result r = build(std::string(base) + "pg_ro_host = replica\n" + c.extra);
            INFO(all_problems(r));
            REQUIRE(r.ok());
            CHECK(r.values.rw.pool_size == c.rw_pool);
            CHECK(r.values.ro.pool_size == c.ro_pool);
            CHECK(r.values.rw.min_pool_size == c.rw_min);
            CHECK(r.values.ro.min_pool_size == c.ro_min);
            CHECK(r.values.rw.pool_mode == c.rw_mode);
            CHECK(r.values.ro.pool_mode == c.ro_mode);
        }
    }
}

TEST_CASE("build_settings: the ro route is enabled only by a non-empty pg_ro_host", "[config][inherit]")
{
    CHECK_FALSE(build(std::string(base) + "pg_ro_user = reader\n").values.ro_enabled);
    CHECK_FALSE(build(std::string(base) + "pg_ro_host =\n").values.ro_enabled);
    CHECK(build(std::string(base) + "pg_ro_host = r\n").values.ro_enabled);
}

TEST_CASE("build_settings: Kong keys give only a warning", "[config][kong]")
{
    std::string text = "# An excerpt of kong.conf\n"                                                       // 1
                       "database = postgres             # Determines the database\n"                      // 2
                       "pg_host = mydb.postgres.database.azure.com\n"                                      // 3
                       "pg_port = 5432\n"                                                                  // 4
                       "pg_user = my-managed-identity # needs to be the name of the managed identity\n"   // 5
                       "pg_database = kong\n"                                                              // 6
                       "pg_ssl = on\n"                                                                     // 7
                       "pg_ssl_verify = on\n"                                                              // 8
                       "pg_timeout = 5000\n"                                                               // 9
                       "pg_ro_max_concurrent_queries = 0\n"                                                // 10
                       "pg_iam_auth = off\n";                                                              // 11
    load_result r = build(text);
    INFO(all_problems(r));
    CHECK(r.ok());
    CHECK(r.errors().empty());
    struct
    {
        const char* key;
        const char* where;
    } expected[] = {{"database", "line 2"},     {"pg_ssl", "line 7"},
                    {"pg_ssl_verify", "line 8"}, {"pg_timeout", "line 9"},
                    {"pg_ro_max_concurrent_queries", "line 10"}, {"pg_iam_auth", "line 11"}};
    CHECK(r.warnings().size() == std::size(expected));
    for (const auto& e : expected)
    {
        INFO("key " << e.key);
        const problem* p = find_problem(r.problems, e.key, true);
        REQUIRE(p != nullptr);
        CHECK(p->where == e.where);
        CHECK_THAT(p->message, Catch::Contains("Kong"));
        CHECK(r.raw.count(e.key) == 0);  // ignored, not shown as set
    }
    CHECK(r.values.rw.host == "mydb.postgres.database.azure.com");
    CHECK(r.values.rw.user == "my-managed-identity");
    CHECK(r.values.rw.database == "kong");
    CHECK_FALSE(r.values.ro_enabled);
}

TEST_CASE("load_result: ok, errors and warnings", "[config]")
{
    load_result r;
    CHECK(r.ok());
    r.problems.push_back({"a", "line 1", "w", true});
    CHECK(r.ok());
    r.problems.push_back({"b", "line 2", "e", false});
    CHECK_FALSE(r.ok());
    REQUIRE(r.errors().size() == 1);
    CHECK(r.errors()[0].key == "b");
    REQUIRE(r.warnings().size() == 1);
    CHECK(r.warnings()[0].key == "a");
}

TEST_CASE("problem::to_string", "[config]")
{
    CHECK(problem{"pg_port", "line 2", "bad", false}.to_string() == "error: line 2: pg_port: bad");
    CHECK(problem{"pg_host", "", "is not set", false}.to_string() == "error: pg_host: is not set");
    CHECK(problem{"", "TOKENBOUNCER_FOO", "unknown", false}.to_string() == "error: TOKENBOUNCER_FOO: unknown");
    CHECK(problem{"database", "line 1", "ignored", true}.to_string() == "warning: line 1: database: ignored");
}

// --- load() ---------------------------------------------------------------------------------------

TEST_CASE("load: file, then environment, problems sorted by origin", "[config][load]")
{
    char path[] = "/tmp/tokenbouncer_unit_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    {
        std::ofstream out(path);
        out << "pg_host = db\n"           // 1
               "auth_type = scram-sha-256\n"  // 2: no auth_file (a rule between keys, sorted last)
               "pg_port = 99999\n"        // 3
               "pg_hots = x\n";           // 4
    }
    load_result r = load(path, {"TOKENBOUNCER_BOGUS=1", "TOKENBOUNCER_LISTEN_PORT=7000"});
    std::remove(path);
    INFO(all_problems(r));
    REQUIRE(r.problems.size() == 4);
    CHECK(r.problems[0].where == "line 3");
    CHECK(r.problems[1].where == "line 4");
    CHECK(r.problems[2].where == "TOKENBOUNCER_BOGUS");
    CHECK(r.problems[3].key == "auth_file");
    CHECK(r.values.rw.listen_port == 7000);
    CHECK(r.values.rw.host == "db");
}

TEST_CASE("load: an unreadable file is an error naming the path", "[config][load]")
{
    load_result r = load("/nonexistent/tokenbouncer.conf", {"TOKENBOUNCER_PG_HOST=x"});
    CHECK_FALSE(r.ok());
    bool found = false;
    for (const auto& p : r.errors())
        if (p.where == "/nonexistent/tokenbouncer.conf" && p.message.find("cannot read") != std::string::npos)
            found = true;
    CHECK(found);
}

TEST_CASE("load: no file, environment only", "[config][load]")
{
    load_result r = load("", {"TOKENBOUNCER_PG_HOST=envhost"});
    INFO(all_problems(r));
    CHECK(r.ok());
    CHECK(r.values.rw.host == "envhost");
}

// --- display_value, parse_duration, parse_bool ------------------------------------------------------

TEST_CASE("display_value masks secrets", "[config]")
{
    CHECK(display_value(key("pg_password"), "hunter2") == "***");
    CHECK(display_value(key("pg_ro_password"), "hunter2") == "***");
    CHECK(display_value(key("pg_azure_client_secret"), "abc") == "***");
    CHECK(display_value(key("pg_ro_azure_client_secret"), "abc") == "***");
    CHECK(display_value(key("pg_password"), "") == "");
    CHECK(display_value(key("pg_host"), "db.example.com") == "db.example.com");
    CHECK(display_value(key("pg_user"), "kong") == "kong");
}

TEST_CASE("parse_duration", "[config][duration]")
{
    struct
    {
        const char* text;
        long long ms;  // -1: rejected
    } cases[] = {
        {"15", 15000},     {"0", 0},          {"500ms", 500},      {"2.5s", 2500},     {"10min", 600000},
        {"1h", 3600000},   {"5m", 300000},    {"30s", 30000},      {"30 s", 30000},    {" 7 ", 7000},
        {"1.5", 1500},     {"10MIN", 600000}, {"2sec", 2000},      {"0.5ms", 1},       {"24h", 86400000},
        {"abc", -1},       {"-1", -1},        {"-5s", -1},         {"1y", -1},         {"", -1},
        {"ms", -1},        {"s5", -1},        {"1.2.3", -1},       {"5 5", -1},        {"1d", -1},
        {"inf", -1},       {"nan", -1},       {"1e400", -1},       {"10 minutes", -1}, {"0x10", -1},
    };
    for (const auto& c : cases)
    {
        INFO("\"" << c.text << "\"");
        auto d = parse_duration(c.text);
        if (c.ms < 0)
        {
            CHECK_FALSE(d.has_value());
        }
        else
        {
            REQUIRE(d.has_value());
            CHECK(d->count() == c.ms);
        }
    }
}

TEST_CASE("parse_duration: huge values are rejected, not wrapped to negative", "[config][duration]")
{
    // Regression: parse_duration once multiplied by the unit after the range check, so "1e15min"
    // overflowed std::llround into a negative duration.
    for (const char* text : {"1e15min", "100000000000000h", "1e15h", "999999999999999min"})
    {
        INFO("\"" << text << "\"");
        auto d = parse_duration(text);
        if (d)
            CHECK(d->count() >= 0);
        else
            SUCCEED("rejected");
    }
    // The largest in-range values still work.
    auto ok = parse_duration("1e15ms");
    REQUIRE(ok.has_value());
    CHECK(ok->count() == 1'000'000'000'000'000LL);
}

TEST_CASE("parse_bool", "[config]")
{
    struct
    {
        const char* text;
        int value;  // -1: rejected
    } cases[] = {
        {"on", 1},   {"off", 0},   {"true", 1},  {"false", 0},  {"yes", 1},  {"no", 0},    {"1", 1},
        {"0", 0},    {"ON", 1},    {"Off", 0},   {"TRUE", 1},   {"maybe", -1}, {"", -1},   {"2", -1},
        {"onn", -1}, {" on", -1},  {"y", -1},    {"enable", -1},
    };
    for (const auto& c : cases)
    {
        INFO("\"" << c.text << "\"");
        auto b = parse_bool(c.text);
        if (c.value < 0)
        {
            CHECK_FALSE(b.has_value());
        }
        else
        {
            REQUIRE(b.has_value());
            CHECK(*b == (c.value == 1));
        }
    }
}

// --- The key table --------------------------------------------------------------------------------

TEST_CASE("key table: names are unique, every pg_ key has a pg_ro_ twin", "[config][keys]")
{
    std::set<std::string> names;
    for (const auto& k : key_table())
    {
        INFO("key " << k.name);
        CHECK(names.insert(std::string(k.name)).second);
        CHECK_FALSE(k.description.empty());
        CHECK(find_key(k.name) == &k);
        if (k.name.substr(0, 3) == "pg_" && k.name.substr(0, 6) != "pg_ro_")
        {
            std::string twin = "pg_ro_" + std::string(k.name.substr(3));
            const key_info* t = find_key(twin);
            REQUIRE(t != nullptr);
            CHECK(t->type == k.type);
            CHECK(t->status == k.status);
            if (k.status == key_status::supported)
                CHECK(t->default_value.empty());  // inherits instead
        }
        // Defaults pass their own checks.
        if (!k.default_value.empty() && k.status == key_status::supported)
        {
            raw_config raw{{std::string(k.name), raw_entry{std::string(k.default_value), "line 2"}}};
            if (k.name != "pg_host")
                raw["pg_host"] = raw_entry{"db", "line 1"};
            load_result r = build_settings(raw, {});
            INFO(all_problems(r));
            CHECK(r.ok());
        }
    }
    CHECK(find_key("pg_host") != nullptr);
    CHECK(find_key("no_such_key") == nullptr);
    CHECK(find_key("PG_HOST") == nullptr);  // the loader lower-cases first
}

TEST_CASE("inherited_from", "[config][keys]")
{
    CHECK(inherited_from("pg_ro_host") == std::optional<std::string>("pg_host"));
    CHECK(inherited_from("pg_ro_azure_client_secret") == std::optional<std::string>("pg_azure_client_secret"));
    CHECK_FALSE(inherited_from("pg_host").has_value());
    CHECK_FALSE(inherited_from("ro_listen_port").has_value());
    CHECK_FALSE(inherited_from("listen_port").has_value());
}

TEST_CASE("to_string of enums", "[config]")
{
    CHECK(to_string(sslmode::disable) == "disable");
    CHECK(to_string(sslmode::require) == "require");
    CHECK(to_string(sslmode::verify_ca) == "verify-ca");
    CHECK(to_string(sslmode::verify_full) == "verify-full");
    CHECK(to_string(pool_mode::session) == "session");
    CHECK(to_string(pool_mode::transaction) == "transaction");
}
