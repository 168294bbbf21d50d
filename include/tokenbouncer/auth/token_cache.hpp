#pragma once
// Access tokens in memory: one entry per identity, shared by every route and connection using it,
// refreshed in the background before it expires.
//
//   - refresh at half-life for tokens that live 2 hours or more, else azure_refresh_margin (5 min)
//     before expiry (at most half the lifetime), or when the service's refresh_in says;
//   - a failed refresh is retried with backoff while the current token stays in use until it
//     really expires;
//   - single-flight: any number of clients needing a token cause one request;
//   - a token the upstream rejected is dropped and fetched again (get(refresh = true)).
//
// The token never leaves memory: no file, no log line (logs show its fingerprint and expiry).

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tokenbouncer/auth/azure.hpp"
#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/upstream/credential.hpp"
#include "tokenbouncer/util/async_slot.hpp"

namespace tokenbouncer::auth {

// When to refresh and whether a token may still be used, as pure functions (tested without time).
struct refresh_policy
{
    std::chrono::milliseconds margin{5 * 60 * 1000};

    sys_clock::time_point refresh_at(sys_clock::time_point fetched, const token& t) const;
    // Usable for a new login: not within min(30 s, a quarter of its life) of expiring.
    bool usable(sys_clock::time_point fetched, const token& t, sys_clock::time_point now) const;
};

struct token_status
{
    std::vector<std::string> routes;
    std::string credential;  // credential_kind as text
    std::string description;
    std::string tenant_id;
    std::string client_id;
    std::string fingerprint;  // "" when there is no token
    std::optional<sys_clock::time_point> fetched_at;
    std::optional<sys_clock::time_point> expires_at;
    std::optional<sys_clock::time_point> next_refresh;
    int refresh_failures = 0;  // since the last success
    std::string last_error;
    std::uint64_t fetches = 0;
    std::uint64_t fetch_errors = 0;
    bool valid = false;
};

class token_entry : public std::enable_shared_from_this<token_entry>
{
public:
    using get_result = boost::system::result<secret, std::string>;

    token_entry(asio::any_io_executor control, std::unique_ptr<credential> cred, refresh_policy policy);
    ~token_entry();

    // Takes the token the chain resolution fetched and schedules its refresh.
    void install(token t, sys_clock::time_point fetched_at);
    // A token for a login, from any thread; waits (until `deadline`) when there is none.
    // `rejected`: a token the upstream refused; it is dropped if it is still the current one.
    awaitable<get_result> get(std::optional<secret> rejected, std::chrono::steady_clock::time_point deadline);

    token_status status() const;
    std::shared_ptr<const credential> cred() const;
    // A reload: the credential as now configured (a rotated secret, say), the token it just
    // fetched, and the refresh policy; the current token is replaced, established sessions are
    // not touched.
    void replace(std::unique_ptr<credential> cred, token t, sys_clock::time_point fetched_at, refresh_policy policy);
    void add_route(const std::string& route);
    void set_routes(std::vector<std::string> routes);
    void stop();

private:
    void start_fetch_locked();
    void schedule_locked(std::chrono::milliseconds delay);
    awaitable<void> fetch(std::shared_ptr<credential> cred);

    const asio::any_io_executor control_;
    mutable std::mutex mu_;
    refresh_policy policy_;
    std::shared_ptr<credential> cred_;  // shared: a fetch in flight keeps the one it started with
    std::optional<token> current_;
    sys_clock::time_point fetched_at_{};
    std::optional<sys_clock::time_point> next_refresh_;
    int failures_ = 0;
    std::string last_error_;
    std::chrono::steady_clock::time_point last_failure_at_{};
    bool in_flight_ = false;
    bool stopped_ = false;
    std::vector<std::shared_ptr<async_slot<get_result>>> waiters_;
    asio::steady_timer timer_;
    std::vector<std::string> routes_;
    std::uint64_t fetches_ = 0;
    std::uint64_t fetch_errors_ = 0;
};

// The entries, by identity.
class token_cache
{
public:
    explicit token_cache(asio::any_io_executor control) : control_(std::move(control)) {}

    // The entry for this credential's identity; creates it with `first` as its token, or reuses
    // the existing one (another route with the same identity).
    std::shared_ptr<token_entry> entry_for(std::unique_ptr<credential> cred, token first, sys_clock::time_point fetched,
                                           const std::string& route, refresh_policy policy);
    // After a reload: the entries the routes use now, with the routes that use them; the others
    // (an identity no route uses any more) stop refreshing and leave SHOW TOKENS and /readyz.
    void retain(const std::vector<std::pair<std::string, std::shared_ptr<token_entry>>>& in_use);
    std::vector<token_status> status() const;
    void stop();

private:
    asio::any_io_executor control_;
    mutable std::mutex mu_;
    std::map<std::string, std::shared_ptr<token_entry>> entries_;
};

// Tries the chain for a route, in order; logs why each credential did not work (debug, as Kong
// does at --vv). Returns the first credential that got a token, with that token.
struct resolved_credential
{
    std::unique_ptr<credential> cred;
    token first;
    sys_clock::time_point fetched_at;
};
awaitable<std::optional<resolved_credential>> resolve_chain(std::vector<chain_link> chain, std::string route);

// The upstream password of an Entra route: the current token.
class token_source final : public upstream::credential_source
{
public:
    token_source(std::shared_ptr<token_entry> entry, std::string role, std::chrono::milliseconds wait)
        : entry_(std::move(entry)), role_(std::move(role)), wait_(wait)
    {
    }
    awaitable<pg_result<secret>> password(std::optional<secret> rejected) override;
    std::string describe() const override;
    bool refreshable() const override { return true; }
    const std::shared_ptr<token_entry>& entry() const { return entry_; }

private:
    std::shared_ptr<token_entry> entry_;
    std::string role_;
    std::chrono::milliseconds wait_;
};

// "2026-12-03T17:00:00Z"
std::string format_time(sys_clock::time_point t);

}  // namespace tokenbouncer::auth
