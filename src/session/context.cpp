#include "tokenbouncer/session/context.hpp"

#include "tokenbouncer/session/client_session.hpp"

#include <algorithm>

namespace tokenbouncer::session {

void login_watch::add(const std::shared_ptr<client_session>& s, std::chrono::steady_clock::time_point deadline)
{
    entries_.emplace_back(deadline, s);
    // A weak_ptr keeps a make_shared session's memory until it is dropped, and most sessions end
    // (or log in and later end) long before their deadline: without this sweep every session of
    // the last client_login_timeout (60 s) stayed allocated, ~1.2 KiB each (12 MB per 10,000).
    if (entries_.size() >= sweep_at_)
    {
        std::erase_if(entries_, [](const auto& e) { return e.second.expired(); });
        sweep_at_ = std::max<std::size_t>(64, 2 * entries_.size());
    }
    arm();
}

void login_watch::arm()
{
    if (armed_ || entries_.empty())
        return;
    armed_ = true;
    timer_.expires_at(entries_.front().first);
    timer_.async_wait([this](error_code ec) {
        armed_ = false;
        if (ec)
            return;
        auto now = std::chrono::steady_clock::now();
        // Deadlines are (nearly) in order: a reload may shorten the timeout, which then takes
        // effect a little late for the connections already waiting.
        while (!entries_.empty() && entries_.front().first <= now)
        {
            if (auto s = entries_.front().second.lock())
                s->login_deadline_passed();
            entries_.pop_front();
        }
        // Drop entries of sessions that are gone or logged in, so idle times cost nothing.
        while (!entries_.empty() && entries_.front().second.expired())
            entries_.pop_front();
        arm();
    });
}

std::shared_ptr<const config::settings> shared_state::settings() const
{
    std::lock_guard lock(mu_);
    return settings_;
}

std::shared_ptr<const auth_users> shared_state::users() const
{
    std::lock_guard lock(mu_);
    return users_;
}

net::ssl_ctx_ptr shared_state::client_tls() const
{
    std::lock_guard lock(mu_);
    return client_tls_;
}

void shared_state::set(std::shared_ptr<const config::settings> s, std::shared_ptr<const auth_users> u,
                       net::ssl_ctx_ptr tls)
{
    std::lock_guard lock(mu_);
    settings_ = std::move(s);
    users_ = std::move(u);
    client_tls_ = std::move(tls);
}

void shared_state::add_session(const std::shared_ptr<client_session>& s)
{
    std::lock_guard lock(sessions_mu_);
    sessions_[s.get()] = s;
}

void shared_state::remove_session(client_session* s)
{
    std::function<void()> notify;
    {
        std::lock_guard lock(sessions_mu_);
        sessions_.erase(s);
        if (sessions_.empty() && shutting_down.load())
            notify = on_idle;
    }
    if (notify)
        notify();
}

std::vector<std::shared_ptr<client_session>> shared_state::sessions() const
{
    std::vector<std::shared_ptr<client_session>> out;
    std::lock_guard lock(sessions_mu_);
    out.reserve(sessions_.size());
    for (const auto& [_, w] : sessions_)
        if (auto s = w.lock())
            out.push_back(std::move(s));
    return out;
}

}  // namespace tokenbouncer::session
