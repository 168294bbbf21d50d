#pragma once
// The server connections of one route (rw or ro), shared by all worker threads.
//
// A client's coroutine calls acquire() when it needs a server and release() when it is done (at
// disconnect in session mode, at the end of each transaction in transaction mode). acquire()
// prefers an idle connection whose last user ran on the caller's thread, else takes any idle one
// and moves it to the caller's io_context, else logs in a new one while the pool has room, else
// waits in FIFO order. Waiters are handed a connection (or a free slot to log one in) directly
// by release(), on their own executor; a waiter on the connection's own thread may go ahead of
// the first one if it queued within 1 ms of it and is among the next 8 (no thread hop).
//
// Thread safety: every public function may be called from any thread; the state is guarded by
// one mutex, held only for bookkeeping, never across I/O.

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "tokenbouncer/config/settings.hpp"
#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/pool/params.hpp"
#include "tokenbouncer/pool/server_conn.hpp"
#include "tokenbouncer/upstream/target.hpp"
#include "tokenbouncer/util/async_slot.hpp"
#include "tokenbouncer/util/histogram.hpp"
#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::pool {

struct pool_limits
{
    config::pool_mode mode = config::pool_mode::session;
    int pool_size = 20;
    int min_pool_size = 0;
    int reserve_pool_size = 0;
    int max_db_connections = 0;
    std::chrono::milliseconds reserve_pool_timeout{5000};
    std::chrono::milliseconds server_lifetime{3600 * 1000};
    std::chrono::milliseconds server_idle_timeout{600 * 1000};
    std::chrono::milliseconds server_connect_timeout{15 * 1000};
    std::chrono::milliseconds server_login_retry{15 * 1000};
    std::chrono::milliseconds query_wait_timeout{120 * 1000};
    std::chrono::milliseconds server_check_delay{30 * 1000};
    std::string server_check_query;
    std::string server_reset_query = "DISCARD ALL";
    // Not a setting: how much later than the first waiter a waiter on a released connection's
    // own thread may have queued and still go ahead of it (see pool::hand_over_locked).
    std::chrono::microseconds handover_slack{1000};

    static pool_limits from(const config::settings& s, const config::route_settings& r);
};

// Counters since start (SHOW STATS, /metrics). Updated with relaxed atomics.
struct pool_counters
{
    std::atomic<std::uint64_t> server_assignments{0};
    std::atomic<std::uint64_t> xacts{0};
    std::atomic<std::uint64_t> queries{0};
    std::atomic<std::uint64_t> bytes_received{0};  // from clients
    std::atomic<std::uint64_t> bytes_sent{0};      // to clients
    std::atomic<std::uint64_t> xact_time_us{0};
    std::atomic<std::uint64_t> query_time_us{0};
    std::atomic<std::uint64_t> wait_time_us{0};
    std::atomic<std::uint64_t> logins{0};
    std::atomic<std::uint64_t> login_failures{0};
    std::atomic<std::uint64_t> client_logins{0};
    std::atomic<std::uint64_t> wait_timeouts{0};
    histogram xact_seconds;
    histogram query_seconds;
    histogram wait_seconds;

    // A client waited `waited` for a server and got one.
    void assigned(std::chrono::microseconds waited) noexcept
    {
        server_assignments.fetch_add(1, std::memory_order_relaxed);
        wait_time_us.fetch_add(static_cast<std::uint64_t>(waited.count()), std::memory_order_relaxed);
        wait_seconds.observe(waited);
    }
};

// A point-in-time view for SHOW POOLS and /metrics.
struct pool_snapshot
{
    std::string name;
    std::string database;
    std::string user;
    config::pool_mode mode;
    int pool_size = 0;
    int min_pool_size = 0;
    int reserve_pool_size = 0;
    int max_db_connections = 0;
    int servers_total = 0;
    int servers_idle = 0;
    int servers_connecting = 0;
    int servers_active = 0;
    int clients_waiting = 0;
    std::chrono::microseconds max_wait{0};
    bool paused = false;
    std::string host;
    std::uint16_t port = 0;
};

class pool : public std::enable_shared_from_this<pool>
{
public:
    pool(std::string name, std::shared_ptr<const upstream::target> target, pool_limits limits,
         asio::any_io_executor background);
    ~pool();

    // An idle connection ready for use at once (same startup parameters, on this thread, not due
    // a check), without a coroutine; null when acquire() must be awaited.
    std::unique_ptr<server_conn> take_ready(const client_parameters& client, const asio::any_io_executor& ex);
    // A server connection on the caller's executor, with the caller's untracked parameters.
    // Waits while the pool is full (query_wait_timeout); fails with the error a client should see.
    // `client` must outlive the call (it is the session's own); the tag is copied.
    awaitable<pg_result<std::unique_ptr<server_conn>>> acquire(const client_parameters& client, std::string client_tag);

    // Gives a server back. `reusable`: it is at ReadyForQuery 'I' with nothing outstanding (and
    // reset, in session mode); otherwise it is closed. Call on the server's own thread.
    void release(std::unique_ptr<server_conn> s, bool reusable);

    // The ParameterStatus values a client gets at login: those of the last server login
    // (logs one in when there is none yet, so a client sees upstream errors at login).
    awaitable<pg_result<std::shared_ptr<const param_map>>> welcome_parameters(std::string client_tag);
    // The same when already known (no coroutine), else null.
    std::shared_ptr<const param_map> cached_welcome() const;

    // The one shared copy of a set of tracked parameters that clients want (most clients of a pool
    // want the same set): a server made to match a set remembers it (server_conn::in_sync_with), so
    // the next client wanting the same set skips the comparison.
    std::shared_ptr<const param_map> intern(param_map wanted);

    // What a client is told when it logs in (the ParameterStatus messages of a direct login: the
    // server's `welcome` values, with the client's own for the tracked ones it set) and the tracked
    // values it then wants (interned). Built once per distinct set of client values and reused
    // while `welcome` is the pool's current one.
    struct login_view
    {
        std::shared_ptr<const param_map> wanted;
        std::string parameter_status;
    };
    std::shared_ptr<const login_view> login_view_for(const std::shared_ptr<const param_map>& welcome,
                                                     const param_map& client_tracked);

    // Reload: new settings, new credential; existing servers are replaced when idle if the way to
    // connect changed.
    void reconfigure(std::shared_ptr<const upstream::target> target, pool_limits limits);
    // Closes every server as soon as it is idle (RECONNECT).
    void reconnect();
    void pause();
    void resume();
    bool paused() const;

    // Periodic housekeeping, on the background executor: wait timeouts, reserve pool, idle and
    // lifetime limits, min_pool_size. Call about once a second.
    void housekeeping();

    // Closes all idle servers and fails all waiters (shutdown).
    void close_all(const pg_error& why);

    pool_snapshot snapshot() const;
    std::vector<server_info> idle_servers() const;
    pool_counters& counters() noexcept { return counters_; }
    std::shared_ptr<const upstream::target> target() const;
    pool_limits limits() const;
    const std::string& name() const noexcept { return name_; }

    // Runs tokenbouncer's own simple query on a linked server (reset, parameter sync, check),
    // reading every answer up to ReadyForQuery. ParameterStatus values are applied to the server
    // and, when `reported` is given, collected there. The server is reusable afterwards iff the
    // result has a value (a failed SET leaves the server fine, reported as `sql_error`).
    struct query_outcome
    {
        query_outcome() = default;  // not an aggregate: keeps pg_result<query_outcome>(pg_error) unambiguous
        std::optional<pg_error> sql_error;
    };
    static awaitable<pg_result<query_outcome>> run_query(server_conn& s, std::string sql,
                                                         std::vector<std::pair<std::string, std::string>>* reported);

private:
    // What a waiter is given: a server, a free slot to log one in, or an error.
    struct grant
    {
        std::variant<std::unique_ptr<server_conn>, std::monostate, pg_error> value;
    };
    struct waiter
    {
        std::shared_ptr<async_slot<grant>> slot;  // on the waiting client's executor
        clock::time_point since;
    };

    int limit_locked(bool allow_reserve) const;
    std::unique_ptr<server_conn> take_idle_locked(const std::string& signature, const asio::any_io_executor& ex,
                                                  bool any_signature);
    void hand_over_locked(std::unique_ptr<server_conn> s);  // to the first waiter, or idle
    void grant_slot_locked();                               // a free slot to the first waiter
    void fail_waiters_locked(const pg_error& e);
    void close_on_own_thread(std::unique_ptr<server_conn> s);
    awaitable<pg_result<std::unique_ptr<server_conn>>> login_new(const client_parameters& client, std::string client_tag);
    // Before an idle connection is handed out: still_open (a peek), and passes_check (the
    // server_check_query) when check_due (idle for server_check_delay).
    bool still_open(server_conn& s);
    bool check_due(const server_conn& s);
    bool check_due_locked(const server_conn& s) const;
    void discard(std::unique_ptr<server_conn> s);  // a dead connection: closed, its slot freed
    awaitable<bool> passes_check(server_conn& s);
    // min_pool_size: takes the slots of the connections to open (under mu_), then opens them.
    int reserve_min_pool_size_locked();
    void open_for_min_pool_size(int n);

    const std::string name_;
    const asio::any_io_executor background_;
    pool_counters counters_;

    mutable std::mutex mu_;
    std::shared_ptr<const upstream::target> target_;
    pool_limits limits_;
    std::vector<std::unique_ptr<server_conn>> idle_;  // most recently used at the back
    int total_ = 0;       // idle + in use + logging in
    int connecting_ = 0;  // logging in
    std::deque<waiter> waiters_;
    std::shared_ptr<const param_map> welcome_;  // shared with the sessions that log in, not copied
    std::vector<std::weak_ptr<const param_map>> interned_;  // see intern()
    // login_view_for(): the views built for welcome_ (when views_for_ is welcome_), by client values.
    std::shared_ptr<const param_map> views_for_;
    std::vector<std::pair<param_map, std::shared_ptr<const login_view>>> views_;
    std::optional<pg_error> last_failure_;
    clock::time_point failing_until_{};
    std::uint64_t reconnect_before_id_ = 0;  // servers with a lower id are closed when idle
    bool paused_ = false;
    bool closed_ = false;
};

}  // namespace tokenbouncer::pool
