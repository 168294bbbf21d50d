#include "tokenbouncer/admin/console.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <mutex>

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/util/async_slot.hpp"

namespace tokenbouncer::admin {

namespace be = protocol::backend;
using column_type = result_set::column_type;
using row = std::vector<std::optional<std::string>>;

namespace {

std::string upper(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

std::string num(long long v) { return std::to_string(v); }

std::optional<std::string> time_or_null(const std::optional<std::chrono::system_clock::time_point>& t)
{
    if (!t)
        return std::nullopt;
    return format_time(*t);
}

std::string complete(std::string_view tag)
{
    protocol::message_builder b(be::command_complete);
    b.cstring(tag);
    return b.finish();
}

constexpr const char* help_text =
    "SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|CONFIG|VERSION|TOKENS|LISTS|STATE|HELP; "
    "RELOAD; PAUSE [db]; RESUME [db]; RECONNECT [db]; SHUTDOWN";

}  // namespace

// --- parsing and encoding ---------------------------------------------------------------------

std::variant<command, std::string> parse_command(std::string_view sql)
{
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
    while (!sql.empty() && (blank(sql.back()) || sql.back() == ';'))
        sql.remove_suffix(1);
    std::vector<std::string_view> words;
    std::size_t i = 0;
    while (i < sql.size())
    {
        while (i < sql.size() && blank(sql[i]))
            ++i;
        std::size_t start = i;
        while (i < sql.size() && !blank(sql[i]))
            ++i;
        if (i > start)
            words.push_back(sql.substr(start, i - start));
    }
    if (words.empty())
        return command{};  // empty query
    command c;
    c.verb = upper(words[0]);
    if (c.verb == "SET")
        return c;  // session settings of drivers (application_name, ...): accepted, ignored
    if (c.verb == "SHOW")
    {
        if (words.size() != 2)
            return std::string("SHOW needs one object, for example SHOW POOLS");
        c.object = upper(words[1]);
        return c;
    }
    if (c.verb == "RELOAD" || c.verb == "SHUTDOWN")
    {
        if (words.size() != 1)
            return c.verb + " takes no argument";
        return c;
    }
    if (c.verb == "PAUSE" || c.verb == "RESUME" || c.verb == "RECONNECT")
    {
        if (words.size() > 2)
            return c.verb + " takes at most one database name";
        if (words.size() == 2)
        {
            std::string_view db = words[1];
            if (db.size() >= 2 && db.front() == '"' && db.back() == '"')
                db = db.substr(1, db.size() - 2);
            c.object = std::string(db);
        }
        return c;
    }
    return "unknown admin command \"" + std::string(words[0]) + "\"";
}

void result_set::add_row(std::vector<std::optional<std::string>> values)
{
    values.resize(columns_.size());
    rows_.push_back(std::move(values));
}

std::string result_set::encode() const
{
    std::string out;
    protocol::message_builder desc(be::row_description);
    desc.i16(static_cast<std::int16_t>(columns_.size()));
    for (const auto& c : columns_)
    {
        bool int8 = c.type == column_type::int8;
        desc.cstring(c.name).i32(0).i16(0).u32(int8 ? 20 : 25).i16(int8 ? 8 : -1).i32(-1).i16(0);
    }
    desc.finish_into(out);
    for (const auto& r : rows_)
    {
        protocol::message_builder b(be::data_row);
        b.i16(static_cast<std::int16_t>(r.size()));
        for (const auto& v : r)
        {
            if (!v)
            {
                b.i32(-1);
                continue;
            }
            b.i32(static_cast<std::int32_t>(v->size())).raw(*v);
        }
        b.finish_into(out);
    }
    out += complete("SHOW");
    return out;
}

std::string format_time(std::chrono::system_clock::time_point t)
{
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

// --- gathering ----------------------------------------------------------------------------------

awaitable<connections> gather_connections(session::shared_state& state)
{
    auto ex = co_await asio::this_coro::executor;
    auto sessions = state.sessions();
    struct gathering
    {
        std::mutex mu;
        connections out;
        std::size_t left = 0;
        std::shared_ptr<async_slot<bool>> done;
    };
    auto g = std::make_shared<gathering>();
    g->left = sessions.size();
    g->done = std::make_shared<async_slot<bool>>(ex, std::chrono::steady_clock::now() + std::chrono::seconds(2));
    for (auto& s : sessions)
    {
        asio::post(s->executor(), [g, s] {
            auto info = s->info();
            std::lock_guard lock(g->mu);
            g->out.clients.push_back(std::move(info));
            if (--g->left == 0)
                async_slot<bool>::deliver(g->done, true);
        });
    }
    if (!sessions.empty())
        co_await g->done->wait();
    connections c;
    {
        std::lock_guard lock(g->mu);
        c = std::move(g->out);
        g->out = {};
    }
    std::sort(c.clients.begin(), c.clients.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    for (const auto& cl : c.clients)
        if (cl.server)
            c.servers.push_back(*cl.server);
    for (auto* p : {state.rw_pool.get(), state.ro_pool.get()})
        if (p)
            for (auto& s : p->idle_servers())
                c.servers.push_back(std::move(s));
    std::sort(c.servers.begin(), c.servers.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    co_return c;
}

// --- commands -----------------------------------------------------------------------------------

awaitable<std::string> console::execute(std::string sql, bool admin)
{
    auto parsed = parse_command(sql);
    if (auto* problem = std::get_if<std::string>(&parsed))
        co_return protocol::build_error_response(
            pg_error::error(sqlstate::syntax_error, *problem, std::string("The admin console knows: ") + help_text));
    const auto& c = std::get<command>(parsed);
    if (c.verb.empty())
        co_return protocol::message_builder(be::empty_query_response).finish();
    co_return co_await run(c, admin);
}

std::string console::pool_label(const pool::pool& p) const
{
    // PgBouncer's rows are unique by database name, and exporters label by it: the read-only
    // route of the same database is "<database>_ro".
    const std::string& db = p.target()->settings.database;
    if (&p == state_.ro_pool.get() && state_.rw_pool && state_.rw_pool->target()->settings.database == db)
        return db + "_ro";
    return db;
}

std::vector<pool::pool*> console::pools_named(const std::string& name) const
{
    std::vector<pool::pool*> out;
    for (auto* p : {state_.rw_pool.get(), state_.ro_pool.get()})
    {
        if (!p)
            continue;
        if (name.empty() || name == p->name() || name == pool_label(*p) ||
            (name == p->target()->settings.database && p == state_.rw_pool.get()))
            out.push_back(p);
    }
    return out;
}

awaitable<std::string> console::run(const command& c, bool admin)
{
    if (c.verb == "SET")
        co_return complete("SET");
    if (c.verb == "SHOW")
    {
        const std::string& o = c.object;
        if (o == "HELP")
        {
            std::string out = protocol::build_notice_response("NOTICE", "00000", std::string("Console usage: ") + help_text);
            co_return out + complete("SHOW");
        }
        if (o == "VERSION")
        {
            result_set r({{"version"}});
            r.add_row({std::string("tokenbouncer ") + TOKENBOUNCER_VERSION});
            co_return r.encode();
        }
        if (o == "STATS")
            co_return show_stats();
        if (o == "CONFIG")
            co_return show_config();
        if (o == "TOKENS")
            co_return show_tokens();
        if (o == "STATE")
        {
            bool paused = true;
            for (auto* p : pools_named(""))
                paused = paused && p->paused();
            result_set r({{"key"}, {"value"}});
            r.add_row({std::string("active"), std::string(state_.shutting_down ? "no" : paused ? "no" : "yes")});
            r.add_row({std::string("paused"), std::string(paused ? "yes" : "no")});
            r.add_row({std::string("shutting_down"), std::string(state_.shutting_down ? "yes" : "no")});
            co_return r.encode();
        }
        if (o == "POOLS" || o == "CLIENTS" || o == "SERVERS" || o == "DATABASES" || o == "LISTS")
        {
            auto conns = co_await gather_connections(state_);
            if (o == "POOLS")
                co_return show_pools(conns);
            if (o == "CLIENTS")
                co_return show_clients(conns);
            if (o == "SERVERS")
                co_return show_servers(conns);
            if (o == "DATABASES")
                co_return show_databases(conns);
            co_return show_lists(conns);
        }
        co_return protocol::build_error_response(pg_error::error(
            sqlstate::syntax_error, "unknown SHOW object \"" + o + "\"", std::string("The admin console knows: ") + help_text));
    }

    if (!admin)
        co_return protocol::build_error_response(pg_error::error(
            sqlstate::insufficient_privilege, c.verb + " is for admin_users only; stats_users may only use SHOW",
            "Add the user to admin_users."));
    if (c.verb == "RELOAD")
    {
        spdlog::info("admin console: RELOAD");
        hooks_.reload();
        co_return complete("RELOAD");
    }
    if (c.verb == "SHUTDOWN")
    {
        spdlog::info("admin console: SHUTDOWN");
        hooks_.shutdown();
        co_return complete("SHUTDOWN");
    }
    auto pools = pools_named(c.object);
    if (pools.empty())
        co_return protocol::build_error_response(
            pg_error::error(sqlstate::invalid_catalog_name, "no such database or route: \"" + c.object + "\"",
                            "Name a database tokenbouncer serves, or the route: rw or ro."));
    for (auto* p : pools)
    {
        spdlog::info("admin console: {} {} route", c.verb, p->name());
        if (c.verb == "PAUSE")
            p->pause();
        else if (c.verb == "RESUME")
            p->resume();
        else
            p->reconnect();
    }
    co_return complete(c.verb);
}

std::string console::show_pools(const connections& conns) const
{
    result_set r({{"database"}, {"user"}, {"cl_active", column_type::int8}, {"cl_waiting", column_type::int8},
                  {"cl_active_cancel_req", column_type::int8}, {"cl_waiting_cancel_req", column_type::int8},
                  {"sv_active", column_type::int8}, {"sv_active_cancel", column_type::int8},
                  {"sv_being_canceled", column_type::int8}, {"sv_idle", column_type::int8},
                  {"sv_used", column_type::int8}, {"sv_tested", column_type::int8}, {"sv_login", column_type::int8},
                  {"maxwait", column_type::int8}, {"maxwait_us", column_type::int8}, {"pool_mode"},
                  {"load_balance_hosts"}, {"route"}, {"paused"}});
    for (auto* p : pools_named(""))
    {
        auto s = p->snapshot();
        bool ro = p == state_.ro_pool.get();
        long long active = 0, waiting = 0;
        for (const auto& c : conns.clients)
        {
            if (!c.logged_in || c.ro != ro || c.database == session::admin_database)
                continue;
            (c.state == "waiting" ? waiting : active) += 1;
        }
        r.add_row({pool_label(*p), s.user, num(active), num(waiting), "0", "0", num(s.servers_active), "0", "0",
                   num(s.servers_idle), "0", "0", num(s.servers_connecting), num(s.max_wait.count() / 1000000),
                   num(s.max_wait.count() % 1000000), std::string(config::to_string(s.mode)), std::nullopt, s.name,
                   std::string(s.paused ? "yes" : "no")});
    }
    return r.encode();
}

std::string console::show_stats() const
{
    result_set r({{"database"}, {"total_server_assignment_count", column_type::int8},
                  {"total_xact_count", column_type::int8}, {"total_query_count", column_type::int8},
                  {"total_received", column_type::int8}, {"total_sent", column_type::int8},
                  {"total_xact_time", column_type::int8}, {"total_query_time", column_type::int8},
                  {"total_wait_time", column_type::int8}, {"total_client_parse_count", column_type::int8},
                  {"total_server_parse_count", column_type::int8}, {"total_bind_count", column_type::int8},
                  {"total_client_login_count", column_type::int8},
                  {"avg_server_assignment_count", column_type::int8}, {"avg_xact_count", column_type::int8},
                  {"avg_query_count", column_type::int8}, {"avg_recv", column_type::int8},
                  {"avg_sent", column_type::int8}, {"avg_xact_time", column_type::int8},
                  {"avg_query_time", column_type::int8}, {"avg_wait_time", column_type::int8},
                  {"avg_client_parse_count", column_type::int8}, {"avg_server_parse_count", column_type::int8},
                  {"avg_bind_count", column_type::int8}, {"avg_client_login_count", column_type::int8},
                  {"route"}});
    // Averages are over the whole uptime (PgBouncer's are over its last stats_period): per second
    // for counts and bytes, per transaction or query for times, in microseconds.
    auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - hooks_.started).count();
    long long secs = std::max<long long>(1, uptime);
    for (auto* p : pools_named(""))
    {
        auto& k = p->counters();
        auto get = [](const std::atomic<std::uint64_t>& a) { return static_cast<long long>(a.load(std::memory_order_relaxed)); };
        long long assignments = get(k.server_assignments), xacts = get(k.xacts), queries = get(k.queries),
                  recv = get(k.bytes_received), sent = get(k.bytes_sent), xact_us = get(k.xact_time_us),
                  query_us = get(k.query_time_us), wait_us = get(k.wait_time_us), logins = get(k.client_logins);
        r.add_row({pool_label(*p), num(assignments), num(xacts), num(queries), num(recv), num(sent),
                   num(xact_us), num(query_us), num(wait_us), "0", "0", "0", num(logins), num(assignments / secs),
                   num(xacts / secs), num(queries / secs), num(recv / secs), num(sent / secs),
                   num(xacts ? xact_us / xacts : 0), num(queries ? query_us / queries : 0),
                   num(assignments ? wait_us / assignments : 0), "0", "0", "0", num(logins / secs), p->name()});
    }
    return r.encode();
}

namespace {

std::vector<result_set::column> connection_columns()
{
    return {{"type"},          {"user"},        {"database"},    {"replication"},
            {"state"},         {"addr"},        {"port", column_type::int8},
            {"local_addr"},    {"local_port", column_type::int8},
            {"connect_time"},  {"request_time"}, {"wait", column_type::int8},
            {"wait_us", column_type::int8},      {"close_needed", column_type::int8},
            {"ptr"},           {"link"},        {"remote_pid", column_type::int8},
            {"tls"},           {"application_name"}, {"prepared_statements", column_type::int8},
            {"id", column_type::int8},           {"route"}};
}

}  // namespace

std::string console::show_clients(const connections& conns) const
{
    result_set r(connection_columns());
    for (const auto& c : conns.clients)
    {
        if (!c.logged_in)
            continue;
        std::optional<std::string> link;
        if (c.server)
            link = "s" + num(static_cast<long long>(c.server->id));
        r.add_row({std::string("C"), c.user, c.database, std::string("none"), c.state, c.addr, num(c.port),
                   std::nullopt, std::nullopt, format_time(c.connect_time), format_time(c.connect_time), "0", "0",
                   "0", "c" + num(static_cast<long long>(c.id)), link, "0", std::string(c.tls ? "TLS" : ""),
                   c.application_name, "0", num(static_cast<long long>(c.id)), std::string(c.ro ? "ro" : "rw")});
    }
    return r.encode();
}

std::string console::show_servers(const connections& conns) const
{
    result_set r(connection_columns());
    for (const auto& s : conns.servers)
    {
        std::optional<std::string> link;
        if (s.client_id)
            link = "c" + num(static_cast<long long>(s.client_id));
        r.add_row({std::string("S"), s.user, s.database, std::string("none"), s.state, s.host, num(s.port),
                   std::nullopt, std::nullopt, format_time(s.connect_time), format_time(s.connect_time), "0", "0",
                   "0", "s" + num(static_cast<long long>(s.id)), link, num(s.remote_pid),
                   std::string(s.tls ? "TLS" : ""), s.application_name,
                   num(static_cast<long long>(s.prepared_statements)), num(static_cast<long long>(s.id)), s.route});
    }
    return r.encode();
}

std::string console::show_databases(const connections& conns) const
{
    result_set r({{"name"}, {"host"}, {"port", column_type::int8}, {"database"}, {"force_user"},
                  {"pool_size", column_type::int8}, {"min_pool_size", column_type::int8},
                  {"reserve_pool_size", column_type::int8}, {"server_lifetime", column_type::int8}, {"pool_mode"},
                  {"load_balance_hosts"}, {"max_connections", column_type::int8},
                  {"current_connections", column_type::int8}, {"max_client_connections", column_type::int8},
                  {"current_client_connections", column_type::int8}, {"paused", column_type::int8},
                  {"disabled", column_type::int8}, {"route"}});
    auto settings = state_.settings();
    for (auto* p : pools_named(""))
    {
        auto s = p->snapshot();
        bool ro = p == state_.ro_pool.get();
        long long clients = std::count_if(conns.clients.begin(), conns.clients.end(), [&](const auto& c) {
            return c.logged_in && c.ro == ro && c.database != session::admin_database;
        });
        auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(p->limits().server_lifetime).count();
        r.add_row({pool_label(*p), s.host, num(s.port), s.database, s.user, num(s.pool_size), num(s.min_pool_size),
                   num(s.reserve_pool_size), num(lifetime), std::string(config::to_string(s.mode)), std::nullopt,
                   num(s.max_db_connections), num(s.servers_total), num(settings->max_client_conn), num(clients),
                   num(s.paused ? 1 : 0), "0", s.name});
    }
    long long admins = std::count_if(conns.clients.begin(), conns.clients.end(),
                                     [](const auto& c) { return c.database == session::admin_database; });
    r.add_row({std::string(session::admin_database), std::nullopt, num(settings->rw.listen_port),
               std::string(session::admin_database), std::string("tokenbouncer"), "2", "0", "0", "0",
               std::string("statement"), std::nullopt, "0", "0", num(settings->max_client_conn), num(admins), "0", "0",
               std::nullopt});
    return r.encode();
}

std::string console::show_config() const
{
    result_set r({{"key"}, {"value"}, {"default"}, {"changeable"}, {"source"}});
    for (auto& e : config::effective_config(hooks_.raw_config()))
        r.add_row({e.key, e.value, e.default_value, std::string(e.reloadable ? "yes" : "no"), e.source});
    return r.encode();
}

std::string console::show_tokens() const
{
    result_set r({{"route"}, {"credential"}, {"tenant_id"}, {"client_id"}, {"fingerprint"}, {"fetched_at"},
                  {"expires_at"}, {"expires_in", column_type::int8}, {"next_refresh"},
                  {"refresh_failures", column_type::int8}, {"fetches", column_type::int8},
                  {"fetch_errors", column_type::int8}, {"valid"}, {"last_error"}});
    auto now = std::chrono::system_clock::now();
    for (const auto& t : hooks_.tokens())
    {
        std::string routes;
        for (const auto& rt : t.routes)
            routes += (routes.empty() ? "" : ",") + rt;
        std::optional<std::string> expires_in;
        if (t.expires_at)
            expires_in = num(std::chrono::duration_cast<std::chrono::seconds>(*t.expires_at - now).count());
        r.add_row({routes, t.credential, t.tenant_id.empty() ? std::nullopt : std::optional(t.tenant_id),
                   t.client_id.empty() ? std::nullopt : std::optional(t.client_id),
                   t.fingerprint.empty() ? std::nullopt : std::optional(t.fingerprint), time_or_null(t.fetched_at),
                   time_or_null(t.expires_at), expires_in, time_or_null(t.next_refresh), num(t.refresh_failures),
                   num(static_cast<long long>(t.fetches)), num(static_cast<long long>(t.fetch_errors)),
                   std::string(t.valid ? "yes" : "no"),
                   t.last_error.empty() ? std::nullopt : std::optional(t.last_error)});
    }
    return r.encode();
}

std::string console::show_lists(const connections& conns) const
{
    long long used_clients = 0, login_clients = 0, free_servers = 0, used_servers = 0;
    for (const auto& c : conns.clients)
        (c.logged_in ? used_clients : login_clients) += 1;
    for (const auto& s : conns.servers)
        (s.client_id ? used_servers : free_servers) += 1;
    auto pools = pools_named("");
    result_set r({{"list"}, {"items", column_type::int8}});
    r.add_row({std::string("databases"), num(static_cast<long long>(pools.size()))});
    r.add_row({std::string("users"), num(static_cast<long long>(pools.size()))});
    r.add_row({std::string("pools"), num(static_cast<long long>(pools.size()))});
    r.add_row({std::string("free_clients"), "0"});
    r.add_row({std::string("used_clients"), num(used_clients)});
    r.add_row({std::string("login_clients"), num(login_clients)});
    r.add_row({std::string("free_servers"), num(free_servers)});
    r.add_row({std::string("used_servers"), num(used_servers)});
    r.add_row({std::string("dns_names"), "0"});
    r.add_row({std::string("dns_zones"), "0"});
    r.add_row({std::string("dns_queries"), "0"});
    r.add_row({std::string("dns_pending"), "0"});
    return r.encode();
}

}  // namespace tokenbouncer::admin
