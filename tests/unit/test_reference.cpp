// config/reference.hpp: the example configuration and the Markdown key reference printed from the
// key table (tokenbouncer --print-keys=conf|markdown). That the committed config/tokenbouncer.conf
// and docs/configuration.md equal this output is checked by tests/integration/test_packaging.py.

#include <catch2/catch.hpp>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tokenbouncer/config/loader.hpp"
#include "tokenbouncer/config/reference.hpp"
#include "tokenbouncer/config/settings.hpp"

using namespace tokenbouncer::config;

namespace {

std::vector<std::string> lines_of(const std::string& text)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        out.push_back(line);
    return out;
}

std::string all_problems(const std::vector<problem>& ps)
{
    std::string s;
    for (const auto& p : ps)
        s += "  " + p.to_string() + "\n";
    return s;
}

}  // namespace

TEST_CASE("the example configuration documents every key exactly once")
{
    std::map<std::string, int> seen;
    for (const auto& line : lines_of(reference_conf()))
    {
        if (line.size() < 2 || line[0] != '#' || line[1] == ' ' || line[1] == '-')
            continue;
        auto eq = line.find(" =");
        REQUIRE(eq != std::string::npos);
        seen[line.substr(1, eq - 1)]++;
    }
    for (const auto& k : key_table())
    {
        INFO(k.name);
        CHECK(seen[std::string(k.name)] == 1);
    }
    CHECK(seen.size() == key_table().size());
}

TEST_CASE("every line of the example configuration fits in 100 columns")
{
    for (const auto& line : lines_of(reference_conf()))
    {
        INFO(line);
        CHECK(line.size() <= 100);
    }
}

TEST_CASE("the example configuration loads as it is: the managed identity set of Kong's docs")
{
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text(reference_conf(), raw, problems);
    auto r = build_settings(std::move(raw), std::move(problems));
    INFO(all_problems(r.problems));
    CHECK(r.problems.empty());
    CHECK(r.values.rw.host == "your-server.postgres.database.azure.com");
    CHECK(r.values.rw.user == "my-managed-identity");
    CHECK(r.values.rw.azure_auth);
    CHECK(r.values.rw.azure_client_id == "00000000-0000-0000-0000-000000000001");
    CHECK_FALSE(r.values.ro_enabled);
}

TEST_CASE("the defaults shown in the example configuration are valid values")
{
    // Uncomment every "#key = default" line of a supported key: the result must load without errors.
    std::string text = "pg_host = db.example.com\n";
    for (const auto& line : lines_of(reference_conf()))
    {
        if (line.size() < 2 || line[0] != '#' || line[1] == ' ' || line[1] == '-')
            continue;
        auto hash = line.find(" #", 1);
        std::string entry = line.substr(1, hash == std::string::npos ? std::string::npos : hash - 1);
        while (!entry.empty() && entry.back() == ' ')
            entry.pop_back();
        if (entry.back() == '=')
            continue;  // no default
        const key_info* k = find_key(entry.substr(0, entry.find(' ')));
        REQUIRE(k);
        if (k->status == key_status::supported)
            text += entry + "\n";
    }
    raw_config raw;
    std::vector<problem> problems;
    parse_config_text(text, raw, problems);
    auto r = build_settings(std::move(raw), std::move(problems));
    INFO(text << all_problems(r.problems));
    CHECK(r.ok());
    CHECK(r.problems.empty());
}

TEST_CASE("the Markdown reference has one row per key, with its environment variable")
{
    std::string md = reference_markdown();
    for (const auto& k : key_table())
    {
        std::string row = "\n| `" + std::string(k.name) + "` |";
        INFO(k.name);
        auto at = md.find(row);
        REQUIRE(at != std::string::npos);
        CHECK(md.find(row, at + 1) == std::string::npos);
        CHECK(md.find("`" + environment_name(k.name) + "`", at) != std::string::npos);
    }
    CHECK(environment_name("pg_ro_azure_client_id") == "TOKENBOUNCER_PG_RO_AZURE_CLIENT_ID");
}

TEST_CASE("keys are grouped as the documentation expects")
{
    CHECK(key_group(*find_key("pg_host")) == "Upstream server: read-write route (pg_*)");
    CHECK(key_group(*find_key("pg_ro_port")) == "Upstream server: read-only route (pg_ro_*)");
    CHECK(key_group(*find_key("pg_ro_azure_client_id")) == "Microsoft Entra ID (Azure)");
    CHECK(key_group(*find_key("azure_cloud")) == "Microsoft Entra ID (Azure)");
    CHECK(key_group(*find_key("unix_socket_dir")) == "Listeners and client authentication");
    CHECK(key_group(*find_key("query_wait_timeout")) == "Timeouts");
    CHECK(key_group(*find_key("max_client_conn")) == "Pooling");
    CHECK(key_group(*find_key("log_level")) == "Logging");
    CHECK(key_group(*find_key("http_port")) == "Admin console and HTTP endpoint");
    CHECK(key_group(*find_key("pg_timeout")) == "Kong settings accepted and ignored");
    CHECK(key_group(*find_key("database")) == "Kong settings accepted and ignored");
}
