#pragma once
// The admin console: the virtual database "tokenbouncer", on the same ports as the routes, for
// the users of admin_users (every command) and stats_users (SHOW only). psql works against it.
//
// PgBouncer's commands with PgBouncer's column names and order (so the pgbouncer exporters and
// dashboards work unchanged), where tokenbouncer has the same thing, and ours: SHOW TOKENS.
//
// Two parts: parse_command() and result_set are plain functions on text and bytes (unit-tested);
// console gathers the data from the running process (pools, sessions, token cache) and runs the
// commands.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenbouncer/auth/token_cache.hpp"
#include "tokenbouncer/config/loader.hpp"
#include "tokenbouncer/session/client_session.hpp"
#include "tokenbouncer/session/context.hpp"

namespace tokenbouncer::admin {

struct command
{
    std::string verb;    // upper case: SHOW, RELOAD, PAUSE, RESUME, RECONNECT, SHUTDOWN, SET
    std::string object;  // SHOW's object, upper case; PAUSE/RESUME/RECONNECT's database or route
};

// One statement of the console's language. Case-insensitive, surrounding blanks and a trailing
// ';' ignored. Returns the problem as text when it is not a command.
std::variant<command, std::string> parse_command(std::string_view sql);

// Rows to send as RowDescription + DataRow... + CommandComplete.
class result_set
{
public:
    enum class column_type
    {
        text,
        int8,
    };
    struct column
    {
        std::string name;
        column_type type = column_type::text;
    };

    explicit result_set(std::vector<column> columns) : columns_(std::move(columns)) {}
    // One value per column; nullopt is SQL NULL.
    void add_row(std::vector<std::optional<std::string>> values);
    std::size_t rows() const { return rows_.size(); }
    // The messages, with CommandComplete "SHOW" (as PgBouncer answers SHOW).
    std::string encode() const;

private:
    std::vector<column> columns_;
    std::vector<std::vector<std::optional<std::string>>> rows_;
};

// "2026-12-03 18:58:47 UTC", as PgBouncer shows times.
std::string format_time(std::chrono::system_clock::time_point t);

// What the console needs from the app besides the shared state.
struct app_hooks
{
    std::function<void()> reload;    // as SIGHUP
    std::function<void()> shutdown;  // as SIGTERM
    std::function<config::raw_config()> raw_config;
    std::function<std::vector<auth::token_status>()> tokens;
    std::function<bool()> serving;  // listeners are up and the first tokens are held
    std::vector<asio::any_io_executor> workers;
    std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
};

// A consistent-enough view of the clients and servers, gathered from each session on its own
// thread (sessions are not thread-safe) and from each pool's idle list.
struct connections
{
    std::vector<session::client_info> clients;
    std::vector<pool::server_info> servers;  // linked ones and idle ones
};
awaitable<connections> gather_connections(session::shared_state& state);

class console final : public session::admin_handler
{
public:
    console(session::shared_state& state, app_hooks hooks) : state_(state), hooks_(std::move(hooks)) {}

    awaitable<std::string> execute(std::string sql, bool admin) override;

private:
    awaitable<std::string> run(const command& c, bool admin);
    std::vector<pool::pool*> pools_named(const std::string& name) const;
    // The pool's name in SHOW POOLS, STATS and DATABASES: its database, "<database>_ro" for the
    // read-only route of the same database.
    std::string pool_label(const pool::pool& p) const;
    std::string show_pools(const connections& c) const;
    std::string show_stats() const;
    std::string show_clients(const connections& c) const;
    std::string show_servers(const connections& c) const;
    std::string show_databases(const connections& c) const;
    std::string show_config() const;
    std::string show_tokens() const;
    std::string show_lists(const connections& c) const;

    session::shared_state& state_;
    app_hooks hooks_;
};

}  // namespace tokenbouncer::admin
