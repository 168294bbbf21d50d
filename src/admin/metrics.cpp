#include "tokenbouncer/admin/metrics.hpp"

#include <cstdio>
#include <map>

namespace tokenbouncer::admin {

namespace {

// Writes one metric family: HELP and TYPE once, then its samples.
class writer
{
public:
    void family(const char* name, const char* type, const char* help)
    {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }
    void sample(std::string_view name, const std::vector<std::pair<std::string, std::string>>& labels, double value)
    {
        out_ += name;
        if (!labels.empty())
        {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels)
            {
                if (!first)
                    out_ += ',';
                first = false;
                out_ += k;
                out_ += "=\"";
                for (char c : v)
                {
                    if (c == '\\' || c == '"')
                        out_ += '\\';
                    if (c == '\n')
                    {
                        out_ += "\\n";
                        continue;
                    }
                    out_ += c;
                }
                out_ += '"';
            }
            out_ += '}';
        }
        char buf[64];
        if (value == static_cast<double>(static_cast<long long>(value)))
            std::snprintf(buf, sizeof buf, " %lld\n", static_cast<long long>(value));
        else
            std::snprintf(buf, sizeof buf, " %.6g\n", value);
        out_ += buf;
    }
    void histogram(std::string_view name, const std::vector<std::pair<std::string, std::string>>& labels,
                   const tokenbouncer::histogram& h)
    {
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= tokenbouncer::histogram::bounds.size(); ++i)
        {
            cumulative += h.count(i);
            auto l = labels;
            char le[32];
            if (i < tokenbouncer::histogram::bounds.size())
                std::snprintf(le, sizeof le, "%g", tokenbouncer::histogram::bounds[i]);
            else
                std::snprintf(le, sizeof le, "+Inf");
            l.emplace_back("le", le);
            sample(std::string(name) + "_bucket", l, static_cast<double>(cumulative));
        }
        sample(std::string(name) + "_sum", labels, static_cast<double>(h.sum_us()) / 1e6);
        sample(std::string(name) + "_count", labels, static_cast<double>(cumulative));
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

double load(const std::atomic<std::uint64_t>& a) { return static_cast<double>(a.load(std::memory_order_relaxed)); }

}  // namespace

std::string render_metrics(const metrics_input& in)
{
    writer w;
    using labels = std::vector<std::pair<std::string, std::string>>;

    w.family("tokenbouncer_build_info", "gauge", "Version of tokenbouncer.");
    w.sample("tokenbouncer_build_info", {{"version", TOKENBOUNCER_VERSION}}, 1);
    w.family("tokenbouncer_start_time_seconds", "gauge", "Start time of the process, seconds since the epoch.");
    w.sample("tokenbouncer_start_time_seconds", {},
             static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(in.started.time_since_epoch()).count()));
    w.family("tokenbouncer_ready", "gauge", "1 while /readyz answers 200.");
    w.sample("tokenbouncer_ready", {}, in.ready ? 1 : 0);
    w.family("tokenbouncer_max_client_connections", "gauge", "max_client_conn.");
    w.sample("tokenbouncer_max_client_connections", {}, in.max_client_conn);

    // Clients by route and state.
    std::map<std::pair<std::string, std::string>, int> clients;
    for (const auto& r : in.routes)
        for (const char* st : {"active", "idle", "waiting"})
            clients[{r.pool.name, st}] = 0;
    int logging_in = 0, admin = 0;
    for (const auto& c : in.conns.clients)
    {
        if (!c.logged_in)
            ++logging_in;
        else if (c.database == session::admin_database)
            ++admin;
        else
            ++clients[{c.ro ? "ro" : "rw", c.state}];
    }
    w.family("tokenbouncer_client_connections", "gauge", "Client connections by route and state (active: linked to a server).");
    for (const auto& [k, n] : clients)
        w.sample("tokenbouncer_client_connections", {{"route", k.first}, {"state", k.second}}, n);
    w.sample("tokenbouncer_client_connections", {{"route", ""}, {"state", "login"}}, logging_in);
    w.sample("tokenbouncer_client_connections", {{"route", ""}, {"state", "admin"}}, admin);

    w.family("tokenbouncer_server_connections", "gauge", "Server connections by route and state.");
    for (const auto& r : in.routes)
    {
        w.sample("tokenbouncer_server_connections", {{"route", r.pool.name}, {"state", "active"}}, r.pool.servers_active);
        w.sample("tokenbouncer_server_connections", {{"route", r.pool.name}, {"state", "idle"}}, r.pool.servers_idle);
        w.sample("tokenbouncer_server_connections", {{"route", r.pool.name}, {"state", "login"}}, r.pool.servers_connecting);
    }
    w.family("tokenbouncer_pool_size", "gauge", "Configured server connections per route (pool_size).");
    for (const auto& r : in.routes)
        w.sample("tokenbouncer_pool_size", {{"route", r.pool.name}}, r.pool.pool_size);
    w.family("tokenbouncer_pool_paused", "gauge", "1 while the route is paused (PAUSE).");
    for (const auto& r : in.routes)
        w.sample("tokenbouncer_pool_paused", {{"route", r.pool.name}}, r.pool.paused ? 1 : 0);
    w.family("tokenbouncer_pool_max_wait_seconds", "gauge", "How long the oldest waiting client has waited for a server.");
    for (const auto& r : in.routes)
        w.sample("tokenbouncer_pool_max_wait_seconds", {{"route", r.pool.name}},
                 static_cast<double>(r.pool.max_wait.count()) / 1e6);

    struct counter_family
    {
        const char* name;
        const char* help;
        std::atomic<std::uint64_t> pool::pool_counters::*field;
        double scale;
        bool by_credential = false;  // also labelled with the route's credential type
    };
    const counter_family counters[] = {
        {"tokenbouncer_transactions_total", "Transactions (and lone queries) finished.", &pool::pool_counters::xacts, 1},
        {"tokenbouncer_queries_total", "Queries finished (ReadyForQuery messages).", &pool::pool_counters::queries, 1},
        {"tokenbouncer_received_bytes_total", "Bytes received from clients.", &pool::pool_counters::bytes_received, 1},
        {"tokenbouncer_sent_bytes_total", "Bytes sent to clients.", &pool::pool_counters::bytes_sent, 1},
        {"tokenbouncer_server_assignments_total", "Times a client was given a server connection.",
         &pool::pool_counters::server_assignments, 1},
        {"tokenbouncer_client_logins_total", "Client logins accepted.", &pool::pool_counters::client_logins, 1},
        {"tokenbouncer_server_logins_total", "Upstream logins that succeeded, by route and credential type.",
         &pool::pool_counters::logins, 1, true},
        {"tokenbouncer_server_login_errors_total", "Upstream logins that failed, by route and credential type.",
         &pool::pool_counters::login_failures, 1, true},
        {"tokenbouncer_pool_wait_timeouts_total", "Clients that waited longer than query_wait_timeout.",
         &pool::pool_counters::wait_timeouts, 1},
    };
    for (const auto& f : counters)
    {
        w.family(f.name, "counter", f.help);
        for (const auto& r : in.routes)
            w.sample(f.name,
                     f.by_credential ? labels{{"route", r.pool.name}, {"credential", r.credential}}
                                     : labels{{"route", r.pool.name}},
                     load(r.counters->*f.field) * f.scale);
    }
    struct histogram_family
    {
        const char* name;
        const char* help;
        tokenbouncer::histogram pool::pool_counters::*field;
    };
    const histogram_family histograms[] = {
        {"tokenbouncer_transaction_duration_seconds", "Duration of transactions, first query to ReadyForQuery idle.",
         &pool::pool_counters::xact_seconds},
        {"tokenbouncer_query_duration_seconds", "Duration of queries, sent to ReadyForQuery.",
         &pool::pool_counters::query_seconds},
        {"tokenbouncer_pool_wait_seconds", "Time clients waited for a server connection.",
         &pool::pool_counters::wait_seconds},
    };
    for (const auto& f : histograms)
    {
        w.family(f.name, "histogram", f.help);
        for (const auto& r : in.routes)
            w.histogram(f.name, {{"route", r.pool.name}}, r.counters->*f.field);
    }

    // Tokens, per identity: labels route (comma-separated when shared) and credential type.
    auto token_labels = [](const auth::token_status& t) {
        std::string routes;
        for (const auto& r : t.routes)
            routes += (routes.empty() ? "" : ",") + r;
        return labels{{"route", routes}, {"credential", t.credential}};
    };
    w.family("tokenbouncer_token_fetches_total", "counter", "Token requests that succeeded, by credential type.");
    for (const auto& t : in.tokens)
        w.sample("tokenbouncer_token_fetches_total", token_labels(t), static_cast<double>(t.fetches));
    w.family("tokenbouncer_token_fetch_errors_total", "counter", "Token requests that failed, by credential type.");
    for (const auto& t : in.tokens)
        w.sample("tokenbouncer_token_fetch_errors_total", token_labels(t), static_cast<double>(t.fetch_errors));
    w.family("tokenbouncer_token_refresh_failures", "gauge", "Failed refreshes since the last success.");
    for (const auto& t : in.tokens)
        w.sample("tokenbouncer_token_refresh_failures", token_labels(t), t.refresh_failures);
    w.family("tokenbouncer_token_valid", "gauge", "1 while the identity holds a token usable for new logins.");
    for (const auto& t : in.tokens)
        w.sample("tokenbouncer_token_valid", token_labels(t), t.valid ? 1 : 0);
    w.family("tokenbouncer_token_expiry_seconds", "gauge", "Seconds until the current token expires (negative: expired).");
    for (const auto& t : in.tokens)
        if (t.expires_at)
            w.sample("tokenbouncer_token_expiry_seconds", token_labels(t),
                     static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(*t.expires_at - in.now).count()));
    return w.take();
}

}  // namespace tokenbouncer::admin
