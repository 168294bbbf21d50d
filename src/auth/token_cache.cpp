#include "tokenbouncer/auth/token_cache.hpp"

#include <spdlog/spdlog.h>

#include "tokenbouncer/util/log.hpp"

#include <algorithm>
#include <ctime>

namespace tokenbouncer::auth {

using namespace std::chrono_literals;

std::string format_time(sys_clock::time_point t)
{
    std::time_t tt = sys_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

sys_clock::time_point refresh_policy::refresh_at(sys_clock::time_point fetched, const token& t) const
{
    if (t.refresh_on)
        return *t.refresh_on;
    auto life = t.expires_on - fetched;
    if (life >= 2h)
        return fetched + life / 2;
    auto before = std::min<sys_clock::duration>(margin, life / 2);
    return t.expires_on - before;
}

bool refresh_policy::usable(sys_clock::time_point fetched, const token& t, sys_clock::time_point now) const
{
    auto life = t.expires_on - fetched;
    auto safety = std::min<sys_clock::duration>(30s, life / 4);
    return now < t.expires_on - safety;
}

token_entry::token_entry(asio::any_io_executor control, std::unique_ptr<credential> cred, refresh_policy policy)
    : control_(std::move(control)), policy_(policy), cred_(std::move(cred)), timer_(control_)
{
}

token_entry::~token_entry() = default;

void token_entry::add_route(const std::string& route)
{
    std::lock_guard lock(mu_);
    if (std::find(routes_.begin(), routes_.end(), route) == routes_.end())
        routes_.push_back(route);
}

void token_entry::install(token t, sys_clock::time_point fetched_at)
{
    std::lock_guard lock(mu_);
    ++fetches_;
    fetched_at_ = fetched_at;
    next_refresh_ = policy_.refresh_at(fetched_at, t);
    current_ = std::move(t);
    auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*next_refresh_ - sys_clock::now());
    schedule_locked(std::max(delay, std::chrono::milliseconds(0)));
}

void token_entry::schedule_locked(std::chrono::milliseconds delay)
{
    if (stopped_)
        return;
    // The timer lives on the control thread: touch it there.
    asio::post(control_, [self = shared_from_this(), delay] {
        self->timer_.expires_after(delay);
        self->timer_.async_wait([self](error_code ec) {
            if (ec)
                return;
            std::lock_guard lock(self->mu_);
            if (!self->in_flight_)
                self->start_fetch_locked();
        });
    });
}

void token_entry::start_fetch_locked()
{
    if (in_flight_ || stopped_)
        return;
    in_flight_ = true;
    // The credential as configured now (a reload may replace it while this fetch runs). co_spawn
    // may run the coroutine at once, on this thread, while the caller holds mu_.
    asio::co_spawn(
        control_, [self = shared_from_this(), cred = cred_]() -> awaitable<void> { co_await self->fetch(cred); },
        asio::detached);
}

void token_entry::set_routes(std::vector<std::string> routes)
{
    std::lock_guard lock(mu_);
    routes_ = std::move(routes);
}

std::shared_ptr<const credential> token_entry::cred() const
{
    std::lock_guard lock(mu_);
    return cred_;
}

void token_entry::replace(std::unique_ptr<credential> cred, token t, sys_clock::time_point fetched_at,
                          refresh_policy policy)
{
    {
        std::lock_guard lock(mu_);
        cred_ = std::move(cred);
        policy_ = policy;
        failures_ = 0;
        last_error_.clear();
    }
    install(std::move(t), fetched_at);
}

awaitable<void> token_entry::fetch(std::shared_ptr<credential> cred)
{
    auto r = co_await cred->fetch_once();
    std::vector<std::shared_ptr<async_slot<get_result>>> waiters;
    std::lock_guard lock(mu_);
    in_flight_ = false;
    waiters.swap(waiters_);
    auto now = sys_clock::now();
    if (cred != cred_ && current_ && policy_.usable(fetched_at_, *current_, now))
    {
        // A reload replaced the credential (and its token) while this request ran: its outcome,
        // good or bad, is the old configuration's.
        for (auto& w : waiters)
            async_slot<get_result>::deliver(w, get_result(current_->access_token));
        co_return;
    }
    if (r)
    {
        ++fetches_;
        failures_ = 0;
        last_error_.clear();
        fetched_at_ = now;
        current_ = std::move(*r);
        next_refresh_ = policy_.refresh_at(now, *current_);
        auto in = std::chrono::duration_cast<std::chrono::seconds>(current_->expires_on - now).count();
        log::scoped_fields fields{{"identity", cred_->describe()}, {"fingerprint", current_->access_token.fingerprint()}};
        spdlog::info("{}: token fetched ({}): fingerprint {}, expires {} (in {} s), next refresh {}",
                     routes_.empty() ? "token" : routes_.front(), cred_->describe(), current_->access_token.fingerprint(),
                     format_time(current_->expires_on), in, format_time(*next_refresh_));
        for (auto& w : waiters)
            async_slot<get_result>::deliver(w, get_result(current_->access_token));
        auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*next_refresh_ - now);
        schedule_locked(std::max(delay, std::chrono::milliseconds(0)));
        co_return;
    }
    ++fetch_errors_;
    ++failures_;
    last_error_ = r.error().message;
    last_failure_at_ = std::chrono::steady_clock::now();
    bool have_valid = current_ && policy_.usable(fetched_at_, *current_, now);
    auto delay = retry_delay(r.error(), failures_ - 1).value_or(60s);
    // Never wait past the moment the current token stops being usable.
    if (have_valid)
    {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(current_->expires_on - now);
        delay = std::clamp(delay, 1000ms, std::max(1000ms, left / 2));
    }
    next_refresh_ = now + delay;
    log::scoped_fields fields{{"identity", cred_->describe()},
                              {"fingerprint", current_ ? current_->access_token.fingerprint() : std::string()}};
    spdlog::warn("{}: token request failed ({}, attempt {}): {}; {}; next attempt in {} ms",
                 routes_.empty() ? "token" : routes_.front(), cred_->describe(), failures_, last_error_,
                 have_valid ? "the current token (" + current_->access_token.fingerprint() + ") stays in use until " +
                                  format_time(current_->expires_on)
                            : std::string("no valid token"),
                 delay.count());
    for (auto& w : waiters)
    {
        if (have_valid)
            async_slot<get_result>::deliver(w, get_result(current_->access_token));
        else
            async_slot<get_result>::deliver(w, get_result(boost::system::in_place_error, last_error_));
    }
    schedule_locked(delay);
}

awaitable<token_entry::get_result> token_entry::get(std::optional<secret> rejected,
                                                    std::chrono::steady_clock::time_point deadline)
{
    auto ex = co_await asio::this_coro::executor;
    std::shared_ptr<async_slot<get_result>> slot;
    {
        std::lock_guard lock(mu_);
        auto now = sys_clock::now();
        if (rejected && current_ && current_->access_token == *rejected)
        {
            log::scoped_fields fields{{"identity", cred_->describe()}, {"fingerprint", current_->access_token.fingerprint()}};
            spdlog::info("{}: the upstream rejected token {}; dropping it", routes_.empty() ? "token" : routes_.front(),
                         current_->access_token.fingerprint());
            current_.reset();
        }
        if (current_ && policy_.usable(fetched_at_, *current_, now))
            co_return current_->access_token;
        if (!in_flight_)
        {
            // A request that just failed is not repeated for every client that arrives.
            if (failures_ > 0 && std::chrono::steady_clock::now() - last_failure_at_ < 1s)
                co_return get_result(boost::system::in_place_error, last_error_);
            start_fetch_locked();
        }
        slot = std::make_shared<async_slot<get_result>>(ex, deadline);
        waiters_.push_back(slot);
    }
    co_await slot->wait();
    std::lock_guard lock(mu_);
    if (slot->value())
        co_return std::move(*slot->value());
    std::erase(waiters_, slot);
    co_return get_result(boost::system::in_place_error,
                         "no token within the wait limit" + (last_error_.empty() ? "" : " (last error: " + last_error_ + ")"));
}

token_status token_entry::status() const
{
    std::lock_guard lock(mu_);
    token_status s;
    s.routes = routes_;
    s.credential = std::string(to_string(cred_->kind()));
    s.description = cred_->describe();
    s.tenant_id = cred_->tenant_id();
    s.client_id = cred_->client_id();
    if (current_)
    {
        s.fingerprint = current_->access_token.fingerprint();
        s.fetched_at = fetched_at_;
        s.expires_at = current_->expires_on;
        s.valid = policy_.usable(fetched_at_, *current_, sys_clock::now());
    }
    s.next_refresh = next_refresh_;
    s.refresh_failures = failures_;
    s.last_error = last_error_;
    s.fetches = fetches_;
    s.fetch_errors = fetch_errors_;
    return s;
}

void token_entry::stop()
{
    std::lock_guard lock(mu_);
    stopped_ = true;
    asio::post(control_, [self = shared_from_this()] { self->timer_.cancel(); });
}

std::shared_ptr<token_entry> token_cache::entry_for(std::unique_ptr<credential> cred, token first,
                                                    sys_clock::time_point fetched, const std::string& route,
                                                    refresh_policy policy)
{
    std::lock_guard lock(mu_);
    std::string key = cred->identity_key();
    auto it = entries_.find(key);
    if (it != entries_.end())
    {
        // The same identity again (a reload, or a second route): take the credential as now
        // configured and the token it just fetched.
        it->second->add_route(route);
        it->second->replace(std::move(cred), std::move(first), fetched, policy);
        return it->second;
    }
    auto e = std::make_shared<token_entry>(control_, std::move(cred), policy);
    e->add_route(route);
    e->install(std::move(first), fetched);
    entries_[key] = e;
    return e;
}

void token_cache::retain(const std::vector<std::pair<std::string, std::shared_ptr<token_entry>>>& in_use)
{
    std::lock_guard lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end();)
    {
        std::vector<std::string> routes;
        for (const auto& [route, entry] : in_use)
            if (entry == it->second)
                routes.push_back(route);
        if (routes.empty())
        {
            it->second->stop();
            it = entries_.erase(it);
            continue;
        }
        it->second->set_routes(std::move(routes));
        ++it;
    }
}

std::vector<token_status> token_cache::status() const
{
    std::lock_guard lock(mu_);
    std::vector<token_status> out;
    for (const auto& [k, e] : entries_)
        out.push_back(e->status());
    return out;
}

void token_cache::stop()
{
    std::lock_guard lock(mu_);
    for (auto& [k, e] : entries_)
        e->stop();
}

awaitable<std::optional<resolved_credential>> resolve_chain(std::vector<chain_link> chain, std::string route)
{
    auto ex = co_await asio::this_coro::executor;
    for (auto& link : chain)
    {
        if (!link.cred)
        {
            spdlog::debug("{}: could not authenticate to azure with {} class, error: {}", route, link.class_name,
                          link.not_configured);
            continue;
        }
        // A few quick retries for transient failures (IMDS restarting, throttling); a startup does
        // not wait minutes.
        for (int attempt = 0;; ++attempt)
        {
            auto sent = sys_clock::now();
            auto r = co_await link.cred->fetch_once();
            if (r)
            {
                log::scoped_fields fields{{"identity", link.cred->describe()}, {"fingerprint", r->access_token.fingerprint()}};
                spdlog::info("{}: authenticated to azure with {} ({}): token {} expires {}", route, link.class_name,
                             link.cred->describe(), r->access_token.fingerprint(), format_time(r->expires_on));
                co_return resolved_credential{std::move(link.cred), std::move(*r), sent};
            }
            auto delay = retry_delay(r.error(), attempt);
            if (!delay || attempt >= 2 || *delay > 10s)
            {
                spdlog::debug("{}: could not authenticate to azure with {} class, error: {}", route, link.class_name,
                              r.error().message);
                break;
            }
            spdlog::debug("{}: {} attempt {} failed ({}); retrying in {} ms", route, link.class_name, attempt + 1,
                          r.error().message, delay->count());
            asio::steady_timer t(ex, *delay);
            co_await t.async_wait(use_nothrow);
        }
    }
    co_return std::nullopt;
}

awaitable<pg_result<secret>> token_source::password(std::optional<secret> rejected)
{
    auto r = co_await entry_->get(std::move(rejected), std::chrono::steady_clock::now() + wait_);
    if (r)
        co_return std::move(*r);
    co_return pg_error::fatal(sqlstate::invalid_authorization,
                              "could not obtain a Microsoft Entra access token for role \"" + role_ + "\" (" +
                                  entry_->cred()->describe() + "): " + r.error(),
                              "tokenbouncer keeps retrying in the background; check the identity's configuration "
                              "and that the token service is reachable (see docs/azure.md).");
}

std::string token_source::describe() const { return "a Microsoft Entra token (" + entry_->cred()->describe() + ")"; }

}  // namespace tokenbouncer::auth
