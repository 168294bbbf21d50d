#pragma once
// What client sessions share: the current settings, the two routes' pools, the cancel registry,
// client authentication data, counters and the shutdown state. Owned by the app; sessions hold
// a reference for their lifetime (the app outlives every session).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "tokenbouncer/config/auth_file.hpp"
#include "tokenbouncer/config/settings.hpp"
#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/net/tls.hpp"
#include "tokenbouncer/pool/pool.hpp"
#include "tokenbouncer/session/cancel_registry.hpp"

namespace tokenbouncer::session {

class client_session;

// The sessions of one worker thread that are still logging in, with their deadlines
// (client_login_timeout). One timer per worker instead of one per connection: a connection costs
// no timer syscalls. All calls on the worker's thread.
class login_watch
{
public:
    explicit login_watch(asio::any_io_executor ex) : timer_(ex) {}
    void add(const std::shared_ptr<client_session>& s, std::chrono::steady_clock::time_point deadline);

private:
    void arm();
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::weak_ptr<client_session>>> entries_;
    std::size_t sweep_at_ = 64;  // entries_.size() at which ended sessions are swept out
    asio::steady_timer timer_;
    bool armed_ = false;
};

// Where a client connected: which route, over what.
struct listener_info
{
    bool ro = false;
    bool unix_socket = false;
    bool loopback = true;
    login_watch* watch = nullptr;  // of the worker the session runs on
    asio::generic::stream_protocol protocol{AF_INET, IPPROTO_TCP};
};

// The admin console (admin/console.hpp): the virtual database "tokenbouncer", answered by the app.
class admin_handler
{
public:
    virtual ~admin_handler() = default;
    // Answers the SQL of one Query message with the messages up to, not including, ReadyForQuery.
    // `admin`: the user is in admin_users (else stats_users: SHOW only).
    virtual awaitable<std::string> execute(std::string sql, bool admin) = 0;
};

inline constexpr std::string_view admin_database = "tokenbouncer";

// Users of auth_file: name -> SCRAM verifier or clear-text password (as PgBouncer's auth_file),
// wiped from memory when dropped.
using auth_users = config::auth_file_users;

struct shared_state
{
    // --- Replaced as a whole on reload; read through snapshot functions. ---
    std::shared_ptr<const config::settings> settings() const;
    std::shared_ptr<const auth_users> users() const;
    net::ssl_ctx_ptr client_tls() const;
    void set(std::shared_ptr<const config::settings> s, std::shared_ptr<const auth_users> u, net::ssl_ctx_ptr tls);

    std::shared_ptr<pool::pool> rw_pool;
    std::shared_ptr<pool::pool> ro_pool;  // null when there is no read-only route
    pool::pool* route_pool(bool ro) const { return ro ? ro_pool.get() : rw_pool.get(); }

    cancel_registry cancels;
    std::shared_ptr<admin_handler> admin;  // set before the listeners open

    // Clients connected (logged in or logging in), for max_client_conn and SHOW/metrics.
    std::atomic<int> clients{0};
    std::atomic<std::uint64_t> next_client_id{1};
    std::atomic<bool> shutting_down{false};

    // Live sessions, for shutdown and SHOW CLIENTS.
    void add_session(const std::shared_ptr<client_session>& s);
    void remove_session(client_session* s);
    std::vector<std::shared_ptr<client_session>> sessions() const;

    // Called when the last session ends during shutdown.
    std::function<void()> on_idle;

private:
    mutable std::mutex mu_;
    std::shared_ptr<const config::settings> settings_;
    std::shared_ptr<const auth_users> users_;
    net::ssl_ctx_ptr client_tls_;
    mutable std::mutex sessions_mu_;
    std::map<client_session*, std::weak_ptr<client_session>> sessions_;
};

}  // namespace tokenbouncer::session
