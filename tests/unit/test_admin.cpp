// The admin console's command parser and result encoding, and the /metrics text.
#include <catch2/catch.hpp>

#include <string>

#include "tokenbouncer/admin/console.hpp"
#include "tokenbouncer/admin/endpoints.hpp"
#include "tokenbouncer/admin/metrics.hpp"
#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/scanner.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::admin;

namespace {

command parsed(std::string_view sql)
{
    auto r = parse_command(sql);
    REQUIRE(std::holds_alternative<command>(r));
    return std::get<command>(r);
}

std::string problem(std::string_view sql)
{
    auto r = parse_command(sql);
    REQUIRE(std::holds_alternative<std::string>(r));
    return std::get<std::string>(r);
}

// The messages of an encoded answer: (type, body).
std::vector<std::pair<char, std::string>> messages(const std::string& bytes)
{
    std::vector<std::pair<char, std::string>> out;
    std::size_t i = 0;
    while (i + 5 <= bytes.size())
    {
        std::uint32_t len = protocol::load_be32(bytes.data() + i + 1);
        out.emplace_back(bytes[i], bytes.substr(i + 5, len - 4));
        i += 1 + len;
    }
    REQUIRE(i == bytes.size());
    return out;
}

}  // namespace

TEST_CASE("admin commands: case, blanks and semicolons do not matter", "[admin]")
{
    CHECK(parsed("show pools").verb == "SHOW");
    CHECK(parsed("show pools").object == "POOLS");
    CHECK(parsed("  SHOW\tStats ;; \n").object == "STATS");
    CHECK(parsed("reload;").verb == "RELOAD");
    CHECK(parsed("PAUSE appdb").object == "appdb");  // database names keep their case
    CHECK(parsed("resume \"AppDb\"").object == "AppDb");
    CHECK(parsed("RECONNECT").object.empty());
    CHECK(parsed("SET application_name = 'psql'").verb == "SET");
    CHECK(parsed("").verb.empty());
    CHECK(parsed(" ; ").verb.empty());
}

TEST_CASE("admin commands: what is not a command says what is wrong", "[admin]")
{
    CHECK(problem("DROP TABLE x") == "unknown admin command \"DROP\"");
    CHECK(problem("SHOW") == "SHOW needs one object, for example SHOW POOLS");
    CHECK(problem("SHOW POOLS extra") == "SHOW needs one object, for example SHOW POOLS");
    CHECK(problem("RELOAD now") == "RELOAD takes no argument");
    CHECK(problem("PAUSE a b") == "PAUSE takes at most one database name");
}

TEST_CASE("result_set: RowDescription, DataRows with NULLs, CommandComplete SHOW", "[admin]")
{
    result_set r({{"name"}, {"count", result_set::column_type::int8}});
    r.add_row({std::string("rw"), std::string("3")});
    r.add_row({std::string("ro")});  // missing values are NULL
    auto m = messages(r.encode());
    REQUIRE(m.size() == 4);
    CHECK(m[0].first == 'T');
    CHECK(protocol::load_be16(m[0].second.data()) == 2);
    CHECK(m[0].second.find(std::string("count\0", 6)) != std::string::npos);
    CHECK(m[1].first == 'D');
    CHECK(m[1].second == std::string("\0\x02\0\0\0\x02rw\0\0\0\x01" "3", 13));
    CHECK(m[2].second == std::string("\0\x02\0\0\0\x02ro\xff\xff\xff\xff", 12));
    CHECK(m[3] == std::pair<char, std::string>('C', std::string("SHOW\0", 5)));
}

TEST_CASE("format_time: UTC, as PgBouncer shows it", "[admin]")
{
    CHECK(format_time(std::chrono::system_clock::time_point(std::chrono::seconds(1796300000))) ==
          "2026-12-03 12:13:20 UTC");
}

TEST_CASE("metrics: families, labels escaped, cumulative histograms", "[admin][metrics]")
{
    pool::pool_counters counters;
    counters.xacts = 5;
    counters.xact_seconds.observe(std::chrono::microseconds(300));     // <= 0.0005
    counters.xact_seconds.observe(std::chrono::microseconds(2000));    // <= 0.0025
    counters.xact_seconds.observe(std::chrono::seconds(60));           // +Inf
    metrics_input in;
    pool::pool_snapshot snap;
    snap.name = "rw";
    snap.servers_idle = 2;
    in.routes.push_back({snap, &counters});  // credential: "password" (pg_password)
    pool::pool_counters ro_counters;
    ro_counters.logins = 3;
    ro_counters.login_failures = 1;
    pool::pool_snapshot ro_snap;
    ro_snap.name = "ro";
    in.routes.push_back({ro_snap, &ro_counters, "managed_identity_imds"});
    session::client_info c;
    c.logged_in = true;
    c.state = "waiting";
    in.conns.clients.push_back(c);
    auth::token_status t;
    t.routes = {"rw", "ro"};
    t.credential = "Managed\"Identity";
    t.expires_at = in.now + std::chrono::seconds(100);
    in.tokens.push_back(t);
    std::string text = render_metrics(in);

    CHECK(text.find("# TYPE tokenbouncer_transactions_total counter\ntokenbouncer_transactions_total{route=\"rw\"} 5\n") !=
          std::string::npos);
    CHECK(text.find("tokenbouncer_client_connections{route=\"rw\",state=\"waiting\"} 1\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_server_connections{route=\"rw\",state=\"idle\"} 2\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_bucket{route=\"rw\",le=\"0.0005\"} 1\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_bucket{route=\"rw\",le=\"0.0025\"} 2\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_bucket{route=\"rw\",le=\"10\"} 2\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_bucket{route=\"rw\",le=\"+Inf\"} 3\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_count{route=\"rw\"} 3\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_transaction_duration_seconds_sum{route=\"rw\"} 60.0023\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_token_expiry_seconds{route=\"rw,ro\",credential=\"Managed\\\"Identity\"} 100\n") !=
          std::string::npos);
    // Upstream logins by route and credential type; the other counters by route only.
    CHECK(text.find("tokenbouncer_server_logins_total{route=\"rw\",credential=\"password\"} 0\n") != std::string::npos);
    CHECK(text.find("tokenbouncer_server_logins_total{route=\"ro\",credential=\"managed_identity_imds\"} 3\n") !=
          std::string::npos);
    CHECK(text.find("tokenbouncer_server_login_errors_total{route=\"ro\",credential=\"managed_identity_imds\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("tokenbouncer_server_login_errors_total{route=\"rw\",credential=\"password\"} 0\n") !=
          std::string::npos);
    CHECK(text.find("tokenbouncer_transactions_total{route=\"ro\"} 0\n") != std::string::npos);
}

TEST_CASE("endpoints: POST /quitquitquit only from loopback, and only as POST", "[admin][http]")
{
    asio::io_context ioc;
    session::shared_state state;
    int shutdowns = 0;
    app_hooks hooks;
    hooks.shutdown = [&] { ++shutdowns; };
    endpoints ep(state, hooks);
    auto ask = [&](http::server_request r) {
        std::optional<http::server_reply> out;
        asio::co_spawn(ioc, [&]() -> awaitable<void> { out = co_await ep.handle(r); }, asio::detached);
        ioc.restart();
        ioc.run();
        REQUIRE(out.has_value());
        return *out;
    };
    auto from_pod_network = ask({"POST", "/quitquitquit", false});
    CHECK(from_pod_network.status == 403);
    CHECK(from_pod_network.body == "POST /quitquitquit is accepted from loopback addresses only\n");
    CHECK(shutdowns == 0);
    CHECK(ask({"GET", "/quitquitquit", true}).status == 405);
    CHECK(shutdowns == 0);
    auto local = ask({"POST", "/quitquitquit", true});
    CHECK(local.status == 200);
    CHECK(shutdowns == 1);
}
