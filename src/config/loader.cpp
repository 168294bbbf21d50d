#include "tokenbouncer/config/loader.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

extern char** environ;

namespace tokenbouncer::config {

namespace {

std::string_view trim(std::string_view s)
{
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

std::string lower(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// Strips a comment: everything from the first '#' that is not written "\#".
std::string strip_comment(std::string_view line)
{
    std::string out;
    for (std::size_t i = 0; i < line.size(); ++i)
    {
        if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '#')
        {
            out.push_back('#');
            ++i;
            continue;
        }
        if (line[i] == '#')
            break;
        out.push_back(line[i]);
    }
    return out;
}

std::optional<long long> parse_integer(std::string_view text, int base = 10)
{
    long long v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
    if (ec != std::errc() || p != text.data() + text.size() || text.empty())
        return std::nullopt;
    return v;
}

std::vector<std::string> split_list(std::string_view text)
{
    std::vector<std::string> out;
    while (true)
    {
        auto comma = text.find(',');
        auto item = trim(text.substr(0, comma));
        if (!item.empty())
            out.emplace_back(item);
        if (comma == std::string_view::npos)
            break;
        text.remove_prefix(comma + 1);
    }
    return out;
}

std::string describe_duration_range(const key_info& k)
{
    auto fmt = [](long long v) {
        if (v % 1000 == 0)
            return std::to_string(v / 1000) + " s";
        return std::to_string(v) + " ms";
    };
    return "between " + fmt(k.min) + " and " + fmt(k.max);
}

// Checks one value against its key's type; returns an error text, or "" when it is fine.
std::string check_value(const key_info& k, std::string_view v)
{
    switch (k.type)
    {
    case key_type::string:
    case key_type::secret:
    case key_type::list:
        return {};
    case key_type::port:
    case key_type::integer: {
        auto n = parse_integer(v);
        if (!n || *n < k.min || *n > k.max)
        {
            std::string what = k.type == key_type::port ? "a port number" : "an integer";
            return "must be " + what + " between " + std::to_string(k.min) + " and " + std::to_string(k.max);
        }
        return {};
    }
    case key_type::octal: {
        auto n = parse_integer(v, 8);
        if (!n || *n < k.min || *n > k.max)
            return "must be an octal file mode such as 0700 or 0660";
        return {};
    }
    case key_type::boolean:
        if (!parse_bool(v))
            return "must be on or off";
        return {};
    case key_type::duration: {
        auto d = parse_duration(v);
        if (!d || d->count() < k.min || d->count() > k.max)
            return "must be a duration " + describe_duration_range(k) +
                   " (seconds, or with a unit: 500ms, 30s, 5min, 1h)";
        return {};
    }
    case key_type::choice: {
        std::string_view choices = k.choices;
        while (true)
        {
            auto bar = choices.find('|');
            if (choices.substr(0, bar) == v)
                return {};
            if (bar == std::string_view::npos)
                break;
            choices.remove_prefix(bar + 1);
        }
        std::string list(k.choices);
        std::replace(list.begin(), list.end(), '|', ',');
        return "must be one of: " + list;
    }
    }
    return {};
}

// The effective text of a key: set value, else the pg_ key it inherits from, else the default.
struct effective
{
    const raw_config& raw;

    std::optional<std::string> get(std::string_view name) const
    {
        if (auto it = raw.find(name); it != raw.end())
            return it->second.value;
        if (auto parent = inherited_from(name))
            return get(*parent);
        const key_info* k = find_key(name);
        if (k && !k->default_value.empty())
            return std::string(k->default_value);
        return std::nullopt;
    }
    bool is_set(std::string_view name) const { return raw.count(name) > 0; }
    std::string str(std::string_view name) const { return get(name).value_or(""); }
    long long integer(std::string_view name, long long fallback) const
    {
        auto v = get(name);
        if (!v)
            return fallback;
        return parse_integer(*v).value_or(fallback);
    }
    bool boolean(std::string_view name) const { return parse_bool(str(name)).value_or(false); }
    duration dur(std::string_view name) const
    {
        auto v = get(name);
        return v ? parse_duration(*v).value_or(duration{0}) : duration{0};
    }
    std::vector<std::string> list(std::string_view name) const { return split_list(str(name)); }
};

sslmode parse_sslmode(std::string_view v)
{
    if (v == "disable")
        return sslmode::disable;
    if (v == "require")
        return sslmode::require;
    if (v == "verify-ca")
        return sslmode::verify_ca;
    return sslmode::verify_full;
}

void build_route(const effective& e, route_settings& r, bool ro)
{
    std::string p = ro ? "pg_ro_" : "pg_";
    auto key = [&](std::string_view suffix) { return p + std::string(suffix); };
    r.name = ro ? "ro" : "rw";
    r.host = e.str(key("host"));
    r.port = static_cast<std::uint16_t>(e.integer(key("port"), 5432));
    r.database = e.str(key("database"));
    r.user = e.str(key("user"));
    r.password = secret(e.str(key("password")));
    r.sslmode = parse_sslmode(e.str(key("sslmode")));
    r.sslrootcert = e.str(key("sslrootcert"));
    r.azure_auth = e.boolean(key("azure_auth"));
    r.azure_tenant_id = e.str(key("azure_tenant_id"));
    r.azure_client_id = e.str(key("azure_client_id"));
    r.azure_client_secret = secret(e.str(key("azure_client_secret")));
    r.azure_scope = e.str(key("azure_scope"));
    r.azure_client_certificate_path = e.str(key("azure_client_certificate_path"));
    r.azure_federated_token_file = e.str(key("azure_federated_token_file"));
    r.pool_size = static_cast<int>(e.integer(key("pool_size"), e.integer("default_pool_size", 20)));
    r.min_pool_size = static_cast<int>(e.integer(key("min_pool_size"), e.integer("min_pool_size", 0)));
    r.reserve_pool_size = static_cast<int>(e.integer(key("reserve_pool_size"), e.integer("reserve_pool_size", 0)));
    std::string mode = e.get(key("pool_mode")).value_or(e.str("pool_mode"));
    r.pool_mode = mode == "transaction" ? pool_mode::transaction : pool_mode::session;
    r.max_db_connections = static_cast<int>(e.integer("max_db_connections", 0));
    r.allowed_users = e.list(ro ? "ro_allowed_users" : "allowed_users");
    r.listen_port = static_cast<std::uint16_t>(e.integer(ro ? "ro_listen_port" : "listen_port", ro ? 6433 : 6432));
}

bool is_loopback_address(std::string_view addr)
{
    return addr == "localhost" || addr == "::1" || addr.substr(0, 4) == "127.";
}

}  // namespace

std::string problem::to_string() const
{
    std::string s = warning ? "warning: " : "error: ";
    if (!where.empty())
        s += where + ": ";
    if (!key.empty())
        s += key + ": ";
    return s + message;
}

bool load_result::ok() const
{
    return std::none_of(problems.begin(), problems.end(), [](const problem& p) { return !p.warning; });
}

std::vector<problem> load_result::errors() const
{
    std::vector<problem> out;
    std::copy_if(problems.begin(), problems.end(), std::back_inserter(out), [](const problem& p) { return !p.warning; });
    return out;
}

std::vector<problem> load_result::warnings() const
{
    std::vector<problem> out;
    std::copy_if(problems.begin(), problems.end(), std::back_inserter(out), [](const problem& p) { return p.warning; });
    return out;
}

std::optional<bool> parse_bool(std::string_view text)
{
    std::string v = lower(text);
    if (v == "on" || v == "true" || v == "yes" || v == "1")
        return true;
    if (v == "off" || v == "false" || v == "no" || v == "0")
        return false;
    return std::nullopt;
}

std::optional<duration> parse_duration(std::string_view text)
{
    text = trim(text);
    std::size_t unit_at = text.size();
    while (unit_at > 0 && std::isalpha(static_cast<unsigned char>(text[unit_at - 1])))
        --unit_at;
    std::string_view number = trim(text.substr(0, unit_at));
    std::string unit = lower(text.substr(unit_at));
    double scale = 0;
    if (unit.empty() || unit == "s" || unit == "sec")
        scale = 1000;
    else if (unit == "ms")
        scale = 1;
    else if (unit == "min" || unit == "m")
        scale = 60'000;
    else if (unit == "h")
        scale = 3'600'000;
    else
        return std::nullopt;
    if (number.empty())
        return std::nullopt;
    double v = 0;
    auto [p, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
    if (ec != std::errc() || p != number.data() + number.size() || !std::isfinite(v) || v < 0 || v > 1e15)
        return std::nullopt;
    double ms = v * scale;
    if (ms > 1e15)
        return std::nullopt;
    return duration(static_cast<long long>(std::llround(ms)));
}

void parse_config_text(std::string_view text, raw_config& raw, std::vector<problem>& problems)
{
    int line_no = 0;
    while (!text.empty())
    {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        ++line_no;
        std::string where = "line " + std::to_string(line_no);
        std::string stripped = strip_comment(line);
        std::string_view content = trim(stripped);
        if (content.empty())
            continue;
        auto eq = content.find('=');
        if (eq == std::string_view::npos)
        {
            problems.push_back({std::string(content.substr(0, 40)), where, "expected \"key = value\""});
            continue;
        }
        std::string key = lower(trim(content.substr(0, eq)));
        std::string value(trim(content.substr(eq + 1)));
        if (key.empty())
        {
            problems.push_back({"", where, "a value without a key"});
            continue;
        }
        if (auto it = raw.find(key); it != raw.end())
        {
            problems.push_back({key, where, "set again (first on " + it->second.where + "); the last value wins", true});
        }
        raw[key] = raw_entry{value, where};
    }
}

void apply_environment(const std::vector<std::string>& environment, raw_config& raw, std::vector<problem>& problems)
{
    constexpr std::string_view prefix = "TOKENBOUNCER_";
    for (const auto& entry : environment)
    {
        if (entry.compare(0, prefix.size(), prefix) != 0)
            continue;
        auto eq = entry.find('=');
        if (eq == std::string::npos)
            continue;
        std::string name = entry.substr(0, eq);
        std::string key = lower(name.substr(prefix.size()));
        if (!find_key(key))
        {
            problems.push_back({"", name, "unknown setting: no key \"" + key + "\" (see docs/configuration.md)"});
            continue;
        }
        raw[key] = raw_entry{entry.substr(eq + 1), name};
    }
}

load_result build_settings(raw_config raw, std::vector<problem> problems)
{
    load_result res;
    // 1. Each value on its own.
    for (auto it = raw.begin(); it != raw.end();)
    {
        const auto& [key, entry] = *it;
        const key_info* k = find_key(key);
        if (!k)
        {
            problems.push_back({key, entry.where, "unknown key (see docs/configuration.md for the keys)"});
            it = raw.erase(it);
            continue;
        }
        if (k->status == key_status::kong_ignored)
        {
            if (std::string err = check_value(*k, entry.value); !err.empty())
                problems.push_back({key, entry.where, err});
            else
                problems.push_back({key, entry.where, "a Kong setting with no meaning for tokenbouncer; ignored", true});
            it = raw.erase(it);
            continue;
        }
        if (std::string err = check_value(*k, entry.value); !err.empty())
        {
            problems.push_back({key, entry.where, "\"" + display_value(*k, entry.value) + "\" " + err});
            it = raw.erase(it);  // fall back to the default so later checks do not repeat this one
            continue;
        }
        ++it;
    }

    // 2. Typed settings.
    effective e{raw};
    settings& s = res.values;
    build_route(e, s.rw, false);
    s.ro_enabled = !e.str("pg_ro_host").empty() && e.is_set("pg_ro_host");
    build_route(e, s.ro, true);
    s.listen_addr = e.list("listen_addr");
    s.unix_socket_dir = e.str("unix_socket_dir");
    s.unix_socket_mode = static_cast<int>(parse_integer(e.str("unix_socket_mode"), 8).value_or(0700));
    s.unix_socket_group = e.str("unix_socket_group");
    for (const auto& uid : e.list("allowed_peer_uids"))
    {
        auto n = parse_integer(uid);
        if (!n || *n < 0 || *n > 0xffffffffLL)
            problems.push_back({"allowed_peer_uids", raw["allowed_peer_uids"].where, "\"" + uid + "\" is not a numeric user ID"});
        else
            s.allowed_peer_uids.push_back(static_cast<std::uint32_t>(*n));
    }
    s.workers = static_cast<int>(e.integer("workers", 1));
    s.auth_type = e.str("auth_type") == "scram-sha-256" ? auth_type::scram_sha_256 : auth_type::trust;
    s.auth_file = e.str("auth_file");
    {
        std::string m = e.str("client_tls_sslmode");
        s.client_tls_sslmode = m == "allow" || m == "prefer" ? client_tls_mode::allow
                               : m == "require"              ? client_tls_mode::require
                               : m == "verify-ca"            ? client_tls_mode::verify_ca
                               : m == "verify-full"          ? client_tls_mode::verify_full
                                                             : client_tls_mode::disable;
    }
    s.client_tls_cert_file = e.str("client_tls_cert_file");
    s.client_tls_key_file = e.str("client_tls_key_file");
    s.client_tls_ca_file = e.str("client_tls_ca_file");
    s.max_client_conn = static_cast<int>(e.integer("max_client_conn", 1000));
    s.reserve_pool_timeout = e.dur("reserve_pool_timeout");
    s.server_lifetime = e.dur("server_lifetime");
    s.server_idle_timeout = e.dur("server_idle_timeout");
    s.server_connect_timeout = e.dur("server_connect_timeout");
    s.server_login_retry = e.dur("server_login_retry");
    s.query_wait_timeout = e.dur("query_wait_timeout");
    s.client_idle_timeout = e.dur("client_idle_timeout");
    s.idle_transaction_timeout = e.dur("idle_transaction_timeout");
    s.client_login_timeout = e.dur("client_login_timeout");
    s.shutdown_timeout = e.dur("shutdown_timeout");
    s.server_reset_query = e.str("server_reset_query");
    s.server_check_query = e.str("server_check_query");
    s.server_check_delay = e.dur("server_check_delay");
    s.max_prepared_statements = static_cast<int>(e.integer("max_prepared_statements", 200));
    // PostgreSQL drops a client message longer than 0x3ffffffe (PQ_LARGE_MESSAGE_LIMIT) without an
    // answer; refusing it here gives the client 08P01 instead of a lost server connection.
    s.max_packet_size = static_cast<std::uint32_t>(std::min<long long>(e.integer("max_packet_size", 0x3ffffffe), 0x3ffffffe));
    s.azure_cloud = e.str("azure_cloud");
    s.azure_authority_host = e.str("azure_authority_host");
    s.azure_imds_endpoint = e.str("azure_imds_endpoint");
    s.azure_request_timeout = e.dur("azure_request_timeout");
    s.azure_refresh_margin = e.dur("azure_refresh_margin");
    s.log_level = e.str("log_level");
    s.log_format = e.str("log_format");
    s.admin_users = e.list("admin_users");
    s.stats_users = e.list("stats_users");
    s.http_addr = e.str("http_addr");
    s.http_port = static_cast<std::uint16_t>(e.integer("http_port", 9127));

    // 3. Rules between keys.
    auto where = [&](std::string_view key) {
        auto it = raw.find(key);
        return it == raw.end() ? std::string() : it->second.where;
    };
    if (s.rw.host.empty())
        problems.push_back({"pg_host", "",
                            "is not set: set it to the upstream server's host name "
                            "(for Azure: <server>.postgres.database.azure.com)"});
    for (const route_settings* r : {&s.rw, &s.ro})
    {
        if (r == &s.ro && !s.ro_enabled)
            continue;
        std::string p = r == &s.ro ? "pg_ro_" : "pg_";
        if (r->database.empty())
            problems.push_back({p + "database", where(p + "database"), "must not be empty"});
        if (r->user.empty())
            problems.push_back({p + "user", where(p + "user"), "must not be empty"});
        if (r->azure_auth)
        {
            std::string sslkey = raw.count(p + "sslmode") ? p + "sslmode" : "pg_sslmode";
            if (r->sslmode == sslmode::disable)
                problems.push_back({sslkey, where(sslkey),
                                    "is disable, but " + p + "azure_auth = on requires TLS to the upstream: "
                                    "use verify-full (or require)"});
            if (!r->password.empty() && (r == &s.rw || raw.count("pg_ro_password")))
                problems.push_back({p + "password", where(p + "password"),
                                    "is ignored because " + p + "azure_auth is on", true});
        }
        if (r->min_pool_size > r->pool_size)
        {
            // Name the keys the user actually wrote (pg_ro_ inherits pg_, which falls back to the global key).
            auto written = [&](std::initializer_list<std::string> chain) {
                for (const auto& k : chain)
                    if (raw.count(k))
                        return k;
                return *std::prev(chain.end());
            };
            bool ro = r == &s.ro;
            std::string min_key = ro ? written({"pg_ro_min_pool_size", "pg_min_pool_size", "min_pool_size"})
                                     : written({"pg_min_pool_size", "min_pool_size"});
            std::string size_key = ro ? written({"pg_ro_pool_size", "pg_pool_size", "default_pool_size"})
                                      : written({"pg_pool_size", "default_pool_size"});
            bool ro_specific = min_key.rfind("pg_ro_", 0) == 0 || size_key.rfind("pg_ro_", 0) == 0;
            if (!ro || ro_specific)
                problems.push_back({min_key, where(min_key),
                                    "(" + std::to_string(r->min_pool_size) + ") is larger than the pool size (" +
                                        size_key + " = " + std::to_string(r->pool_size) + ")"});
        }
    }
    if (s.ro_enabled && s.ro.listen_port == s.rw.listen_port)
        problems.push_back({"ro_listen_port", where("ro_listen_port"),
                            "is the same as listen_port (" + std::to_string(s.rw.listen_port) +
                                "): the read-only route needs its own port"});
    if (s.http_port != 0 && (s.http_port == s.rw.listen_port || (s.ro_enabled && s.http_port == s.ro.listen_port)))
        problems.push_back({"http_port", where("http_port"), "is the same as a listen port"});
    if (s.listen_addr.empty() && s.unix_socket_dir.empty())
        problems.push_back({"listen_addr", where("listen_addr"), "is empty and unix_socket_dir is not set: nothing to listen on"});
    if (s.auth_type == auth_type::trust)
    {
        for (const auto& a : s.listen_addr)
        {
            if (!is_loopback_address(a))
                problems.push_back({"listen_addr", where("listen_addr"),
                                    "\"" + a + "\" is not a loopback address, and auth_type = trust lets anyone who "
                                    "can reach it use the database without a password. Listen on 127.0.0.1 (the "
                                    "default), or set auth_type = scram-sha-256 with an auth_file (and "
                                    "client_tls_sslmode = require); see docs/security.md"});
        }
    }
    if (s.auth_type == auth_type::scram_sha_256 && s.auth_file.empty())
        problems.push_back({"auth_file", where("auth_file"), "is not set, but auth_type = scram-sha-256 needs it"});
    if (s.client_tls_sslmode != client_tls_mode::disable &&
        (s.client_tls_cert_file.empty() || s.client_tls_key_file.empty()))
        problems.push_back({"client_tls_sslmode", where("client_tls_sslmode"),
                            "needs client_tls_cert_file and client_tls_key_file"});
    if ((s.client_tls_sslmode == client_tls_mode::verify_ca || s.client_tls_sslmode == client_tls_mode::verify_full) &&
        s.client_tls_ca_file.empty())
        problems.push_back({"client_tls_ca_file", where("client_tls_ca_file"),
                            "is not set, but client_tls_sslmode = verify-ca/verify-full needs it"});

    res.raw = std::move(raw);
    res.problems = std::move(problems);
    return res;
}

load_result load(const std::string& path, const std::vector<std::string>& environment)
{
    raw_config raw;
    std::vector<problem> problems;
    if (!path.empty())
    {
        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            problems.push_back({"", path, "cannot read the configuration file"});
        }
        else
        {
            std::stringstream ss;
            ss << in.rdbuf();
            parse_config_text(ss.str(), raw, problems);
        }
    }
    apply_environment(environment, raw, problems);
    load_result res = build_settings(std::move(raw), std::move(problems));
    // File lines in order, then environment variables, then rules between keys.
    auto rank = [](const problem& p) -> long {
        if (p.where.rfind("line ", 0) == 0)
            return std::strtol(p.where.c_str() + 5, nullptr, 10);
        return p.where.empty() ? 2'000'000'000L : 1'000'000'000L;
    };
    std::stable_sort(res.problems.begin(), res.problems.end(),
                     [&](const problem& a, const problem& b) { return rank(a) < rank(b); });
    return res;
}

std::vector<std::string> process_environment()
{
    std::vector<std::string> out;
    for (char** e = environ; e && *e; ++e)
        out.emplace_back(*e);
    return out;
}

std::vector<effective_entry> effective_config(const raw_config& raw)
{
    std::vector<effective_entry> out;
    for (const auto& k : key_table())
    {
        if (k.status != key_status::supported)
            continue;
        effective_entry e{std::string(k.name), std::string(k.default_value), display_value(k, k.default_value),
                          k.reloadable, "default"};
        if (auto it = raw.find(k.name); it != raw.end())
        {
            e.value = it->second.value;
            e.source = it->second.where;
        }
        else if (auto from = inherited_from(k.name))
        {
            if (auto p = raw.find(*from); p != raw.end())
            {
                e.value = p->second.value;
                e.source = "inherited from " + *from;
            }
        }
        e.value = display_value(k, e.value);
        out.push_back(std::move(e));
    }
    return out;
}

std::string display_value(const key_info& key, std::string_view value)
{
    if (key.type == key_type::secret && !value.empty())
        return "***";
    return std::string(value);
}

}  // namespace tokenbouncer::config
