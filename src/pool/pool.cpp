#include "tokenbouncer/pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <variant>

#include "tokenbouncer/net/message_io.hpp"
#include "tokenbouncer/upstream/connector.hpp"

namespace tokenbouncer::pool {

namespace {

// How far a client on a server connection's own thread may go ahead of the first waiter (see
// hand_over_locked): among the next 8 waiters, and only if it queued within
// pool_limits::handover_slack (1 ms) of the first.
constexpr std::size_t handover_window = 8;

std::string seconds_text(std::chrono::milliseconds d)
{
    if (d.count() % 1000 == 0)
        return std::to_string(d.count() / 1000) + " s";
    return std::to_string(d.count()) + " ms";
}

// Failures that say nothing about the upstream as a whole (a client's bad startup parameter)
// only concern the client that caused them.
bool is_pool_level(const upstream::login_failure& f)
{
    if (!f.refused_by_server)
        return true;
    const std::string& c = f.error.code;
    return c.rfind("28", 0) == 0 || c.rfind("08", 0) == 0 || c == "57P03" || c == "53300" || c == "3D000";
}

// Connections made for one of these settings are valid for the other.
bool same_server(const config::route_settings& a, const config::route_settings& b)
{
    return a.host == b.host && a.port == b.port && a.database == b.database && a.user == b.user &&
           a.sslmode == b.sslmode && a.sslrootcert == b.sslrootcert;
}

}  // namespace

pool_limits pool_limits::from(const config::settings& s, const config::route_settings& r)
{
    pool_limits l;
    l.mode = r.pool_mode;
    l.pool_size = r.pool_size;
    l.min_pool_size = r.min_pool_size;
    l.reserve_pool_size = r.reserve_pool_size;
    l.max_db_connections = r.max_db_connections;
    l.reserve_pool_timeout = s.reserve_pool_timeout;
    l.server_lifetime = s.server_lifetime;
    l.server_idle_timeout = s.server_idle_timeout;
    l.server_connect_timeout = s.server_connect_timeout;
    l.server_login_retry = s.server_login_retry;
    l.query_wait_timeout = s.query_wait_timeout;
    l.server_check_delay = s.server_check_delay;
    l.server_check_query = s.server_check_query;
    l.server_reset_query = s.server_reset_query;
    return l;
}

pool::pool(std::string name, std::shared_ptr<const upstream::target> target, pool_limits limits,
           asio::any_io_executor background)
    : name_(std::move(name)), background_(std::move(background)), target_(std::move(target)), limits_(std::move(limits))
{
}

pool::~pool() = default;

std::shared_ptr<const upstream::target> pool::target() const
{
    std::lock_guard lock(mu_);
    return target_;
}

pool_limits pool::limits() const
{
    std::lock_guard lock(mu_);
    return limits_;
}

int pool::limit_locked(bool allow_reserve) const
{
    int limit = limits_.pool_size + (allow_reserve ? limits_.reserve_pool_size : 0);
    if (limits_.max_db_connections > 0 && limit > limits_.max_db_connections)
        limit = limits_.max_db_connections;
    return limit;
}

std::unique_ptr<server_conn> pool::take_idle_locked(const std::string& signature, const asio::any_io_executor& ex,
                                                    bool any_signature)
{
    // Newest first (LIFO keeps few connections warm); same thread first, then any thread.
    for (int pass = 0; pass < 2; ++pass)
    {
        for (auto it = idle_.rbegin(); it != idle_.rend(); ++it)
        {
            server_conn& s = **it;
            if (!any_signature && s.signature != signature)
                continue;
            if (pass == 0 && s.stream->get_executor() != ex)
                continue;
            auto out = std::move(*it);
            idle_.erase(std::next(it).base());
            return out;
        }
    }
    return nullptr;
}

void pool::close_on_own_thread(std::unique_ptr<server_conn> s)
{
    if (!s)
        return;
    auto ex = s->stream->get_executor();
    asio::post(ex, [s = std::move(s)]() mutable {
        spdlog::debug("{}: closing server connection", s->tag());
        s->terminate();
    });
}

void pool::hand_over_locked(std::unique_ptr<server_conn> s)
{
    if (!waiters_.empty() && !paused_)
    {
        // First come, first served, with one exception that saves moving the connection to another
        // thread (a wake-up of that thread and two epoll_ctl calls): a client on the server's own
        // thread among the next few may go ahead, if it queued within limits_.handover_slack of the first.
        // Only clients that came at most 1 ms later can pass the first one, and each only once.
        auto pick = waiters_.begin();
        const auto& ex = s->stream->get_executor();
        if (pick->slot->executor() != ex)
        {
            std::size_t window = std::min(waiters_.size(), handover_window);
            for (std::size_t i = 1; i < window; ++i)
            {
                const waiter& w = waiters_[i];
                if (w.since - waiters_.front().since > limits_.handover_slack)
                    break;
                if (w.slot->executor() == ex)
                {
                    pick = waiters_.begin() + static_cast<std::ptrdiff_t>(i);
                    break;
                }
            }
        }
        auto w = std::move(*pick);
        waiters_.erase(pick);
        async_slot<grant>::deliver(w.slot, grant{std::move(s)});
        return;
    }
    idle_.push_back(std::move(s));
}

void pool::grant_slot_locked()
{
    if (waiters_.empty() || paused_)
        return;
    auto w = std::move(waiters_.front());
    waiters_.pop_front();
    ++total_;
    async_slot<grant>::deliver(w.slot, grant{std::monostate{}});
}

void pool::fail_waiters_locked(const pg_error& e)
{
    while (!waiters_.empty())
    {
        auto w = std::move(waiters_.front());
        waiters_.pop_front();
        async_slot<grant>::deliver(w.slot, grant{e});
    }
}

awaitable<pg_result<std::unique_ptr<server_conn>>> pool::login_new(const client_parameters& client,
                                                                   std::string client_tag)
{
    std::shared_ptr<const upstream::target> t;
    std::chrono::milliseconds timeout;
    {
        std::lock_guard lock(mu_);
        t = target_;
        timeout = limits_.server_connect_timeout;
        ++connecting_;
    }
    auto started = clock::now();
    auto res = co_await upstream::connect_server(t, client.untracked, timeout);
    std::lock_guard lock(mu_);
    --connecting_;
    if (!res)
    {
        --total_;
        const auto& f = res.error();
        bool pool_level = is_pool_level(f);
        spdlog::warn("{}: login to upstream {} ({} pool) failed: {}", client_tag, t->address(), name_,
                     f.error.to_string());
        counters_.login_failures.fetch_add(1, std::memory_order_relaxed);
        if (pool_level)
        {
            last_failure_ = f.error;
            // A server that is starting or stopping (57P03, as in a restart) is back in a moment:
            // the next client tries again instead of getting this error for server_login_retry.
            bool restarting = f.error.code == sqlstate::cannot_connect_now;
            if ((f.refused_by_server || f.timed_out) && !restarting && limits_.server_login_retry.count() > 0)
                failing_until_ = clock::now() + limits_.server_login_retry;
            fail_waiters_locked(f.error);
        }
        else
        {
            grant_slot_locked();  // the slot is free again
        }
        co_return f.error;
    }
    auto& s = *res;
    counters_.logins.fetch_add(1, std::memory_order_relaxed);
    failing_until_ = {};
    last_failure_.reset();
    if (client.untracked.items.empty())
        welcome_ = std::make_shared<const param_map>(s->params);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count();
    spdlog::info("{}: logged in to upstream {} as \"{}\" for {} in {} ms ({}, backend pid {})", s->tag(),
                 t->address(), t->settings.user, client_tag, ms, s->credential_label, s->key.pid);
    co_return std::move(s);
}

awaitable<pg_result<pool::query_outcome>> pool::run_query(server_conn& s, std::string sql,
                                                            std::vector<std::pair<std::string, std::string>>* reported)
{
    auto lost = [&](const std::string& why) {
        return pg_error::fatal(sqlstate::connection_failure,
                               "lost the connection to upstream server " + s.target->address() + ": " + why);
    };
    if (auto ec = co_await s.stream->write_all(protocol::build_query(sql)))
        co_return lost(ec.message());
    net::message_reader reader(*s.stream, protocol::max_login_message_length);
    query_outcome out;
    for (;;)
    {
        auto msg = co_await reader.next();
        if (!msg)
            co_return lost(msg.error().message);
        switch (msg->type)
        {
        case protocol::backend::parameter_status: {
            auto ps = protocol::parse_parameter_status(msg->body);
            if (!ps)
                co_return ps.error();
            s.apply_parameter_status(ps->name, ps->value);
            if (reported)
                reported->emplace_back(ps->name, ps->value);
            break;
        }
        case protocol::backend::error_response: {
            auto fields = protocol::parse_error_fields(msg->body);
            out.sql_error = fields ? protocol::to_pg_error(*fields) : pg_error::error(sqlstate::internal_error, "?");
            if (out.sql_error->severity == "FATAL" || out.sql_error->severity == "PANIC")
                co_return *out.sql_error;
            break;
        }
        case protocol::backend::ready_for_query: {
            auto st = protocol::parse_ready_for_query(msg->body);
            if (!st || *st != 'I' || !reader.take_leftover().empty())
                co_return pg_error::fatal(sqlstate::protocol_violation, "unexpected state after \"" + sql + "\"");
            co_return out;
        }
        case protocol::backend::copy_in_response:
        case protocol::backend::copy_out_response:
        case protocol::backend::copy_both_response:
            co_return pg_error::fatal(sqlstate::protocol_violation, "\"" + sql + "\" started a COPY");
        default:
            break;  // CommandComplete, RowDescription, DataRow, EmptyQueryResponse, NoticeResponse ...
        }
    }
}

std::unique_ptr<server_conn> pool::take_ready(const client_parameters& client, const asio::any_io_executor& ex)
{
    std::unique_ptr<server_conn> s;
    {
        std::lock_guard lock(mu_);
        if (closed_ || paused_ || (last_failure_ && clock::now() < failing_until_))
            return nullptr;
        s = take_idle_locked(client.signature, ex, false);
        if (!s)
            return nullptr;
        if (check_due_locked(*s))
        {
            idle_.push_back(std::move(s));  // acquire() runs its server_check_query
            return nullptr;
        }
    }
    s->stream->rebind(ex);
    if (!still_open(*s))
    {
        discard(std::move(s));
        return nullptr;
    }
    counters_.assigned(std::chrono::microseconds(0));
    return s;
}

bool pool::still_open(server_conn& s)
{
    // The connection may have died while idle (server restart, idle kill): a peek tells.
    if (!s.stream->peer_closed_or_sent_data())
        return true;
    spdlog::info("{}: server connection was closed by the upstream while idle", s.tag());
    return false;
}

bool pool::check_due_locked(const server_conn& s) const
{
    return clock::now() - s.idle_since >= limits_.server_check_delay;
}

bool pool::check_due(const server_conn& s)
{
    std::lock_guard lock(mu_);
    return check_due_locked(s);
}

void pool::discard(std::unique_ptr<server_conn> s)
{
    s->terminate();
    std::lock_guard lock(mu_);
    --total_;
}

awaitable<bool> pool::passes_check(server_conn& s)
{
    std::string check;
    {
        std::lock_guard lock(mu_);
        check = limits_.server_check_query;
    }
    auto r = co_await run_query(s, check, nullptr);
    if (!r)
    {
        spdlog::info("{}: server connection failed its check: {}", s.tag(), r.error().message);
        co_return false;
    }
    co_return true;
}

awaitable<pg_result<std::unique_ptr<server_conn>>> pool::acquire(const client_parameters& client,
                                                                 std::string client_tag)
{
    auto ex = co_await asio::this_coro::executor;
    auto started = clock::now();
    std::shared_ptr<async_slot<grant>> w;
    for (;;)
    {
        std::unique_ptr<server_conn> s;
        bool replace = false;  // close s and log in a new one in its slot
        bool login = false;
        {
            std::unique_lock lock(mu_);
            if (closed_)
                co_return pg_error::fatal(sqlstate::admin_shutdown, "tokenbouncer is shutting down");
            if (w && w->value())
            {
                // Woken with a grant.
                grant g = std::move(*w->value());
                w.reset();
                if (auto* e = std::get_if<pg_error>(&g.value))
                    co_return *e;
                if (std::holds_alternative<std::monostate>(g.value))
                    login = true;
                else
                    s = std::move(std::get<0>(g.value));
                if (s && s->signature != client.signature)
                    replace = true;
            }
            else if (w)
            {
                // The timer expired: query_wait_timeout.
                auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const waiter& x) { return x.slot == w; });
                if (it != waiters_.end())
                    waiters_.erase(it);
                counters_.wait_timeouts.fetch_add(1, std::memory_order_relaxed);
                auto timeout = limits_.query_wait_timeout;
                int size = limits_.pool_size;
                co_return pg_error::fatal(
                    sqlstate::query_canceled,
                    "no server connection became free within query_wait_timeout (" + seconds_text(timeout) +
                        "): all " + std::to_string(size) + " connections of the " + name_ + " pool are in use",
                    "Raise default_pool_size (or pg_pool_size) or query_wait_timeout, or use pool_mode = transaction.");
            }
            else
            {
                auto now = clock::now();
                if (last_failure_ && now < failing_until_)
                {
                    auto left = std::chrono::duration_cast<std::chrono::seconds>(failing_until_ - now).count() + 1;
                    pg_error e = *last_failure_;
                    e.hint = "The last login to the upstream failed; tokenbouncer tries again in " +
                             std::to_string(left) + " s (server_login_retry).";
                    co_return e;
                }
                if (!paused_)
                {
                    s = take_idle_locked(client.signature, ex, false);
                    if (!s && total_ < limit_locked(false))
                    {
                        ++total_;
                        login = true;
                    }
                    else if (!s && !idle_.empty())
                    {
                        s = take_idle_locked(client.signature, ex, true);
                        replace = true;
                    }
                }
                if (!s && !login)
                {
                    auto timeout = limits_.query_wait_timeout;
                    auto deadline = timeout.count() > 0 ? clock::now() + timeout : clock::time_point::max();
                    w = std::make_shared<async_slot<grant>>(ex, deadline);
                    waiters_.push_back(waiter{w, clock::now()});
                }
            }
        }

        if (w)
        {
            co_await w->wait();
            continue;
        }
        if (s)
        {
            s->stream->rebind(ex);
            if (replace)
            {
                spdlog::debug("{}: closing idle server connection with other startup parameters", s->tag());
                s->terminate();
                s.reset();
                login = true;
            }
            // Checked without a coroutine unless a check query is due (server_check_delay).
            else if (!still_open(*s) || (check_due(*s) && !co_await passes_check(*s)))
            {
                discard(std::move(s));
                continue;  // try again
            }
            else
            {
                counters_.assigned(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started));
                co_return std::move(s);
            }
        }
        if (login)
        {
            auto r = co_await login_new(client, client_tag);
            if (r)
            {
                counters_.assigned(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started));
            }
            co_return r;
        }
    }
}

void pool::release(std::unique_ptr<server_conn> s, bool reusable)
{
    if (!s)
        return;
    std::unique_lock lock(mu_);
    auto now = clock::now();
    bool expired = limits_.server_lifetime.count() > 0 && now - s->created >= limits_.server_lifetime;
    bool stale = (s->target != target_ && !same_server(s->target->settings, target_->settings)) ||
                 s->id < reconnect_before_id_;
    bool surplus = total_ > limit_locked(true);  // a reload made the pool smaller
    if (!reusable || closed_ || expired || stale || surplus || !s->stream->is_open())
    {
        --total_;
        if (!closed_ && !surplus)
            grant_slot_locked();
        lock.unlock();
        if (expired && reusable)
            spdlog::debug("{}: closing server connection older than server_lifetime", s->tag());
        if (surplus && reusable)
            spdlog::debug("{}: closing server connection beyond the pool size", s->tag());
        s->terminate();
        return;
    }
    // server_check_delay counts from the last use, also for a connection handed straight on.
    s->idle_since = now;
    hand_over_locked(std::move(s));
}

std::shared_ptr<const param_map> pool::cached_welcome() const
{
    std::lock_guard lock(mu_);
    return welcome_;
}

awaitable<pg_result<std::shared_ptr<const param_map>>> pool::welcome_parameters(std::string client_tag)
{
    if (auto w = cached_welcome())
        co_return w;
    client_parameters plain;  // a login with no client parameters gives the server's defaults
    auto s = co_await acquire(plain, client_tag);
    if (!s)
        co_return s.error();
    auto p = std::make_shared<const param_map>((*s)->params);
    release(std::move(*s), true);
    std::lock_guard lock(mu_);
    welcome_ = p;
    co_return p;
}

std::shared_ptr<const param_map> pool::intern(param_map wanted)
{
    // A handful of distinct sets in practice; past 64 live ones, sets are simply not shared.
    constexpr std::size_t max_interned = 64;
    std::lock_guard lock(mu_);
    for (const auto& w : interned_)
        if (auto p = w.lock(); p && *p == wanted)
            return p;
    std::erase_if(interned_, [](const auto& w) { return w.expired(); });
    auto p = std::make_shared<const param_map>(std::move(wanted));
    if (interned_.size() < max_interned)
        interned_.push_back(p);
    return p;
}

std::shared_ptr<const pool::login_view> pool::login_view_for(const std::shared_ptr<const param_map>& welcome,
                                                             const param_map& client_tracked)
{
    constexpr std::size_t max_views = 64;  // distinct client values per pool; past it, built each time
    {
        std::lock_guard lock(mu_);
        if (welcome == welcome_ && views_for_ == welcome_)
            for (const auto& [key, view] : views_)
                if (key == client_tracked)
                    return view;
    }
    param_map wanted;
    std::string status;
    status.reserve(512);
    for (const auto& [name, value] : *welcome)
    {
        std::string_view v = value;
        if (auto t = tracked_name(name))
        {
            auto it = client_tracked.find(*t);
            if (it != client_tracked.end())
                v = it->second;
            wanted.insert_or_assign(std::string(*t), std::string(v));
        }
        protocol::append_parameter_status(status, name, v);
    }
    for (const auto& [name, value] : client_tracked)
        if (!wanted.count(name))
        {
            wanted[name] = value;
            protocol::append_parameter_status(status, name, value);
        }
    auto view = std::make_shared<const login_view>(login_view{intern(std::move(wanted)), std::move(status)});
    std::lock_guard lock(mu_);
    if (welcome == welcome_)
    {
        if (views_for_ != welcome_)
        {
            views_.clear();
            views_for_ = welcome_;
        }
        if (views_.size() < max_views)
            views_.emplace_back(client_tracked, view);
    }
    return view;
}

void pool::reconfigure(std::shared_ptr<const upstream::target> target, pool_limits limits)
{
    std::vector<std::unique_ptr<server_conn>> to_close;
    {
        std::lock_guard lock(mu_);
        bool same = same_server(target_->settings, target->settings);
        limits_ = std::move(limits);
        target_ = std::move(target);
        failing_until_ = {};
        last_failure_.reset();
        if (!same)
        {
            // Another server or role: every connection is replaced, idle ones now, busy ones when released.
            welcome_.reset();
            reconnect_before_id_ = next_server_id();
            for (auto& s : idle_)
                to_close.push_back(std::move(s));
            idle_.clear();
            total_ -= static_cast<int>(to_close.size());
        }
        // A smaller pool: idle connections beyond it close now, busy ones when released. Oldest
        // first (the back of idle_ is the most recently used).
        while (total_ > limit_locked(true) && !idle_.empty())
        {
            to_close.push_back(std::move(idle_.front()));
            idle_.erase(idle_.begin());
            --total_;
        }
        // A bigger pool (or closed connections) may let waiters in now.
        while (!waiters_.empty() && total_ < limit_locked(false) && !paused_)
            grant_slot_locked();
    }
    for (auto& s : to_close)
        close_on_own_thread(std::move(s));
}

void pool::reconnect()
{
    std::vector<std::unique_ptr<server_conn>> to_close;
    {
        std::lock_guard lock(mu_);
        reconnect_before_id_ = next_server_id();
        for (auto& s : idle_)
            to_close.push_back(std::move(s));
        idle_.clear();
        total_ -= static_cast<int>(to_close.size());
        for (std::size_t i = 0; i < to_close.size(); ++i)
            grant_slot_locked();
    }
    for (auto& s : to_close)
        close_on_own_thread(std::move(s));
}

void pool::pause()
{
    std::lock_guard lock(mu_);
    paused_ = true;
}

void pool::resume()
{
    std::lock_guard lock(mu_);
    paused_ = false;
    // Wake waiters: idle servers first, then free slots.
    while (!waiters_.empty() && !idle_.empty())
    {
        auto s = std::move(idle_.back());
        idle_.pop_back();
        hand_over_locked(std::move(s));
    }
    while (!waiters_.empty() && total_ < limit_locked(false))
        grant_slot_locked();
}

bool pool::paused() const
{
    std::lock_guard lock(mu_);
    return paused_;
}

int pool::reserve_min_pool_size_locked()
{
    if (paused_ || closed_ || clock::now() < failing_until_)
        return 0;
    int n = 0;
    while (total_ < limits_.min_pool_size && total_ < limit_locked(false))
    {
        ++total_;
        ++n;
    }
    return n;
}

void pool::open_for_min_pool_size(int n)
{
    // Not under mu_: co_spawn may run the coroutine at once, and login_new takes mu_.
    for (int i = 0; i < n; ++i)
        asio::co_spawn(
            background_,
            [self = shared_from_this()]() -> awaitable<void> {
                client_parameters none;
                std::string tag = "min_pool_size";
                auto s = co_await self->login_new(none, tag);
                if (s)
                    self->release(std::move(*s), true);
            },
            asio::detached);
}

void pool::housekeeping()
{
    std::vector<std::unique_ptr<server_conn>> to_close;
    int warm = 0;
    {
        std::lock_guard lock(mu_);
        auto now = clock::now();
        // Reserve pool: a client that waited reserve_pool_timeout may use an extra connection.
        if (limits_.reserve_pool_size > 0 && !waiters_.empty() && !paused_)
        {
            auto& first = waiters_.front();
            if (now - first.since >= limits_.reserve_pool_timeout && total_ < limit_locked(true))
            {
                spdlog::info("{} pool: a client waited {} ms; using the reserve pool", name_,
                             std::chrono::duration_cast<std::chrono::milliseconds>(now - first.since).count());
                grant_slot_locked();
            }
        }
        // Idle and lifetime limits, keeping min_pool_size.
        for (auto it = idle_.begin(); it != idle_.end();)
        {
            server_conn& s = **it;
            bool too_old = limits_.server_lifetime.count() > 0 && now - s.created >= limits_.server_lifetime;
            bool too_idle = limits_.server_idle_timeout.count() > 0 && now - s.idle_since >= limits_.server_idle_timeout &&
                            total_ > limits_.min_pool_size;
            if (too_old || too_idle || s.id < reconnect_before_id_)
            {
                spdlog::debug("{}: closing idle server connection ({})", s.tag(),
                              too_old ? "server_lifetime" : too_idle ? "server_idle_timeout" : "reconnect");
                to_close.push_back(std::move(*it));
                it = idle_.erase(it);
                --total_;
            }
            else
            {
                ++it;
            }
        }
        warm = reserve_min_pool_size_locked();
    }
    for (auto& s : to_close)
        close_on_own_thread(std::move(s));
    open_for_min_pool_size(warm);
}

void pool::close_all(const pg_error& why)
{
    std::vector<std::unique_ptr<server_conn>> to_close;
    {
        std::lock_guard lock(mu_);
        closed_ = true;
        for (auto& s : idle_)
            to_close.push_back(std::move(s));
        idle_.clear();
        total_ -= static_cast<int>(to_close.size());
        fail_waiters_locked(why);
    }
    for (auto& s : to_close)
        close_on_own_thread(std::move(s));
}

std::vector<server_info> pool::idle_servers() const
{
    std::lock_guard lock(mu_);
    std::vector<server_info> out;
    out.reserve(idle_.size());
    for (const auto& s : idle_)
        out.push_back(s->info("idle", 0));
    return out;
}

pool_snapshot pool::snapshot() const
{
    std::lock_guard lock(mu_);
    pool_snapshot p;
    p.name = name_;
    p.database = target_->settings.database;
    p.user = target_->settings.user;
    p.host = target_->settings.host;
    p.port = target_->settings.port;
    p.mode = limits_.mode;
    p.pool_size = limits_.pool_size;
    p.min_pool_size = limits_.min_pool_size;
    p.reserve_pool_size = limits_.reserve_pool_size;
    p.max_db_connections = limits_.max_db_connections;
    p.servers_total = total_;
    p.servers_idle = static_cast<int>(idle_.size());
    p.servers_connecting = connecting_;
    p.servers_active = total_ - p.servers_idle - connecting_;
    p.clients_waiting = static_cast<int>(waiters_.size());
    if (!waiters_.empty())
        p.max_wait = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - waiters_.front().since);
    p.paused = paused_;
    return p;
}

}  // namespace tokenbouncer::pool
