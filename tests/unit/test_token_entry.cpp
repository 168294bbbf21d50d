// auth/token_cache.hpp: token_entry with a fake credential and no network. Single-flight (any
// number of clients cause one request), rejected tokens, failures and their errors, deadlines,
// background refresh and status(). Every io_context here must run out of work by itself
// (token_entry::stop() cancels the refresh timer); run_until_drained() checks that.

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "tokenbouncer/auth/azure.hpp"
#include "tokenbouncer/auth/token_cache.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::auth;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using get_result = token_entry::get_result;

namespace {

// What one fetch_once() does: wait `delay`, then return a token living `life` or a failure.
struct step
{
    std::chrono::milliseconds delay{50};
    bool ok = true;
    sys_clock::duration life = 1h;
    std::optional<sys_clock::duration> refresh_in;
    fetch_failure failure;
};

step ok_step(sys_clock::duration life = 1h, std::chrono::milliseconds delay = 50ms)
{
    step s;
    s.delay = delay;
    s.life = life;
    return s;
}

step fail_step(std::string message, bool retryable, std::chrono::milliseconds delay = 50ms, unsigned status = 400)
{
    step s;
    s.delay = delay;
    s.ok = false;
    s.failure = fetch_failure{std::move(message), status, retryable, std::nullopt};
    return s;
}

// Shared between the test and the credential the entry owns.
struct fake_state
{
    std::mutex mu;
    std::vector<step> plan;  // call n uses plan[n-1]; the last step repeats
    std::atomic<int> calls{0};
    std::atomic<int> answered{0};  // fetch_once() calls that have returned
    std::vector<std::string> issued;  // the tokens returned, in order
    std::vector<std::thread::id> threads;

    std::string token_value(std::size_t i)
    {
        std::lock_guard lock(mu);
        REQUIRE(i < issued.size());
        return issued[i];
    }
};

class fake_credential final : public credential
{
public:
    explicit fake_credential(std::shared_ptr<fake_state> st) : st_(std::move(st)) {}

    awaitable<fetch_result> fetch_once() override
    {
        step s;
        int n = 0;
        {
            std::lock_guard lock(st_->mu);
            n = ++st_->calls;
            if (!st_->plan.empty())
                s = st_->plan[std::min<std::size_t>(static_cast<std::size_t>(n - 1), st_->plan.size() - 1)];
            st_->threads.push_back(std::this_thread::get_id());
        }
        asio::steady_timer t(co_await asio::this_coro::executor, s.delay);
        co_await t.async_wait(use_nothrow);
        ++st_->answered;
        if (!s.ok)
            co_return s.failure;
        std::string value = "fake-access-token-" + std::to_string(n) + "-TOPSECRET";
        {
            std::lock_guard lock(st_->mu);
            st_->issued.push_back(value);
        }
        auto now = sys_clock::now();
        token tk{secret(value), now + s.life, std::nullopt};
        if (s.refresh_in)
            tk.refresh_on = now + *s.refresh_in;
        co_return tk;
    }
    credential_kind kind() const override { return credential_kind::client_secret; }
    std::string class_name() const override { return "FakeCredentials"; }
    std::string describe() const override { return "fake service principal, tenant fake-tenant, client_id fake-client"; }
    std::string identity_key() const override { return "fake|fake-client"; }
    std::string tenant_id() const override { return "fake-tenant"; }
    std::string client_id() const override { return "fake-client"; }

private:
    std::shared_ptr<fake_state> st_;
};

std::shared_ptr<token_entry> make_entry(asio::any_io_executor control, const std::shared_ptr<fake_state>& st,
                                        refresh_policy policy = {})
{
    return std::make_shared<token_entry>(std::move(control), std::make_unique<fake_credential>(st), policy);
}

token make_token(const std::string& value, sys_clock::duration life,
                 std::optional<sys_clock::duration> refresh_in = std::nullopt)
{
    auto now = sys_clock::now();
    token t{secret(value), now + life, std::nullopt};
    if (refresh_in)
        t.refresh_on = now + *refresh_in;
    return t;
}

// co_spawn, with an exception (a failed REQUIRE) coming out of io_context::run.
template <class F>
void spawn(asio::io_context& ioc, F f)
{
    asio::co_spawn(ioc, std::move(f), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
}

// Runs until the context has no work left; fails when something (a refresh timer) keeps it alive.
void run_until_drained(asio::io_context& ioc, std::chrono::seconds limit = 15s)
{
    ioc.run_for(limit);
    REQUIRE(ioc.stopped());
}

awaitable<void> sleep_for(std::chrono::milliseconds d)
{
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(use_nothrow);
}

// Polls `pred` every 5 ms until it holds; fails after `limit`.
awaitable<void> wait_until(std::function<bool()> pred, std::chrono::milliseconds limit, const char* what)
{
    auto until = steady::now() + limit;
    while (!pred())
    {
        // (No INFO here: a scoped message must not live across a suspension.)
        if (steady::now() >= until)
            FAIL("timed out waiting for " << what);
        co_await sleep_for(5ms);
    }
}

std::string value_of(const std::optional<get_result>& r)
{
    REQUIRE(r.has_value());
    INFO("error: " << (r->has_error() ? r->error() : std::string()));
    REQUIRE(r->has_value());
    return (**r).reveal();
}

std::string error_of(const std::optional<get_result>& r)
{
    REQUIRE(r.has_value());
    REQUIRE(r->has_error());
    return r->error();
}

std::string fp(const std::string& value) { return secret(value).fingerprint(); }

// Captures spdlog's default logger for the test (and keeps the test output quiet).
class log_capture
{
public:
    log_capture() : previous_(spdlog::default_logger())
    {
        sink_ = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        auto l = std::make_shared<spdlog::logger>("tokenbouncer-test", sink_);
        l->set_level(spdlog::level::trace);
        spdlog::set_default_logger(l);
    }
    ~log_capture() { spdlog::set_default_logger(previous_); }
    log_capture(const log_capture&) = delete;
    log_capture& operator=(const log_capture&) = delete;

    // Only once the threads that log are done.
    std::string text()
    {
        sink_->flush();
        return out_.str();
    }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
    std::shared_ptr<spdlog::logger> previous_;
};

// No log line holds a token (every token here contains TOPSECRET).
void check_logs_have_no_token(log_capture& logs)
{
    std::string text = logs.text();
    INFO(text);
    CHECK(text.find("TOPSECRET") == std::string::npos);
}

// No field of a status holds a token (every fake token contains TOPSECRET).
void check_status_has_no_token(const token_status& s)
{
    std::vector<std::string> fields{s.credential, s.description, s.tenant_id, s.client_id, s.fingerprint, s.last_error};
    fields.insert(fields.end(), s.routes.begin(), s.routes.end());
    for (const auto& f : fields)
    {
        INFO(f);
        CHECK(f.find("TOPSECRET") == std::string::npos);
        CHECK(f.find("access-token") == std::string::npos);
    }
}

}  // namespace

TEST_CASE("token_entry: 100 concurrent get() with no token cause one fetch", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    st->plan = {ok_step(1h)};
    auto entry = make_entry(ioc.get_executor(), st);
    entry->add_route("rw");

    constexpr int n = 100;
    std::vector<std::optional<get_result>> results(n);
    int done = 0;
    for (int i = 0; i < n; ++i)
    {
        spawn(ioc, [&, i]() -> awaitable<void> {
            results[static_cast<std::size_t>(i)] = co_await entry->get(std::nullopt, steady::now() + 5s);
            if (++done == n)
                entry->stop();
        });
    }
    run_until_drained(ioc);

    REQUIRE(done == n);
    CHECK(st->calls == 1);
    std::string expected = st->token_value(0);
    for (const auto& r : results)
    {
        CHECK(value_of(r) == expected);
        CHECK((**r).fingerprint() == fp(expected));
    }
    auto s = entry->status();
    CHECK(s.fingerprint == fp(expected));
    CHECK(s.valid);
    CHECK(s.fetches == 1);
    CHECK(s.fetch_errors == 0);
    CHECK(s.refresh_failures == 0);
    CHECK(s.last_error.empty());
    REQUIRE(s.fetched_at.has_value());
    REQUIRE(s.expires_at.has_value());
    REQUIRE(s.next_refresh.has_value());
    CHECK(*s.expires_at - *s.fetched_at > 59min);
    CHECK(*s.expires_at - *s.fetched_at <= 1h);
    CHECK(*s.next_refresh == *s.expires_at - 5min);  // a 1 h token: 5 min before expiry
    CHECK(s.routes == std::vector<std::string>{"rw"});
    CHECK(s.credential == "client_secret");
    CHECK(s.description == "fake service principal, tenant fake-tenant, client_id fake-client");
    CHECK(s.tenant_id == "fake-tenant");
    CHECK(s.client_id == "fake-client");
    check_status_has_no_token(s);
    CHECK(logs.text().find("rw: token fetched (fake service principal, tenant fake-tenant, client_id fake-client): "
                           "fingerprint " + fp(expected)) != std::string::npos);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a valid installed token is returned at once, without a fetch", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    auto entry = make_entry(ioc.get_executor(), st);
    auto fetched = sys_clock::now();
    token t{secret(std::string("installed-access-token-TOPSECRET")), fetched + 1h, std::nullopt};
    entry->install(t, fetched);

    std::optional<get_result> r;
    spawn(ioc, [&]() -> awaitable<void> { r = co_await entry->get(std::nullopt, steady::now() + 5s); });
    // poll() runs what is ready and never waits: a get() that needed the 50 ms fetch would not finish.
    ioc.poll();
    CHECK(value_of(r) == "installed-access-token-TOPSECRET");
    CHECK(st->calls == 0);

    SECTION("status of an installed token")
    {
        auto s = entry->status();
        CHECK(s.fingerprint == fp("installed-access-token-TOPSECRET"));
        CHECK(s.fetched_at == fetched);
        CHECK(s.expires_at == fetched + 1h);
        CHECK(s.next_refresh == fetched + 55min);
        CHECK(s.valid);
        CHECK(s.fetches == 1);  // the chain resolution's fetch
        check_status_has_no_token(s);
    }
    SECTION("a custom margin")
    {
        asio::io_context ioc2;
        auto e2 = make_entry(ioc2.get_executor(), st, refresh_policy{std::chrono::milliseconds(60 * 1000)});
        e2->install(t, fetched);
        CHECK(e2->status().next_refresh == fetched + 59min);
        e2->stop();
        run_until_drained(ioc2);
    }
    entry->stop();
    run_until_drained(ioc);
    CHECK(st->calls == 0);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a rejected current token is dropped and fetched once for 50 callers",
          "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    st->plan = {ok_step(1h)};
    auto entry = make_entry(ioc.get_executor(), st);
    const std::string old_value = "old-access-token-TOPSECRET";
    entry->install(make_token(old_value, 1h), sys_clock::now());

    constexpr int n = 50;
    std::vector<std::optional<get_result>> results(n);
    int done = 0;
    std::optional<get_result> late, unknown;
    for (int i = 0; i < n; ++i)
    {
        spawn(ioc, [&, i]() -> awaitable<void> {
            results[static_cast<std::size_t>(i)] =
                co_await entry->get(secret(old_value), steady::now() + 5s);
            ++done;
        });
    }
    spawn(ioc, [&]() -> awaitable<void> {
        co_await wait_until([&] { return done == n; }, 5000ms, "the 50 callers");
        // A connection that still used the old token reports it later: the new one, no fetch.
        late = co_await entry->get(secret(old_value), steady::now() + 5s);
        // A token the entry never had: the current one, no fetch.
        unknown = co_await entry->get(secret(std::string("never-seen")), steady::now() + 5s);
        entry->stop();
    });
    run_until_drained(ioc);

    REQUIRE(done == n);
    CHECK(st->calls == 1);
    std::string fresh = st->token_value(0);
    CHECK(fresh != old_value);
    for (const auto& r : results)
        CHECK(value_of(r) == fresh);
    CHECK(value_of(late) == fresh);
    CHECK(value_of(unknown) == fresh);
    CHECK(entry->status().fingerprint == fp(fresh));
    CHECK(entry->status().fetches == 2);  // install + one fetch
    CHECK(logs.text().find("the upstream rejected token " + fp(old_value) + "; dropping it") != std::string::npos);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: rejecting an older token returns the current one without a fetch", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    auto entry = make_entry(ioc.get_executor(), st);
    entry->install(make_token("token-A-TOPSECRET", 1h), sys_clock::now());
    entry->install(make_token("token-B-TOPSECRET", 1h), sys_clock::now());

    std::optional<get_result> r1, r2;
    spawn(ioc, [&]() -> awaitable<void> {
        r1 = co_await entry->get(secret(std::string("token-A-TOPSECRET")), steady::now() + 5s);
        r2 = co_await entry->get(std::nullopt, steady::now() + 5s);
        entry->stop();
    });
    run_until_drained(ioc);
    CHECK(value_of(r1) == "token-B-TOPSECRET");
    CHECK(value_of(r2) == "token-B-TOPSECRET");
    CHECK(st->calls == 0);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a failed fetch with no usable token gives its error to every waiter",
          "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    const std::string message =
        "token request failed, status: 401, body: invalid_client: AADSTS7000215: Invalid client secret provided.";
    st->plan = {fail_step(message, false, 50ms, 401), ok_step(1h)};
    auto entry = make_entry(ioc.get_executor(), st);
    entry->add_route("rw");
    entry->add_route("ro");
    entry->add_route("rw");

    constexpr int n = 10;
    std::vector<std::optional<get_result>> results(n);
    int done = 0;
    std::optional<get_result> again, after_a_second;
    int calls_after_again = -1;
    std::optional<token_status> after_failure;
    for (int i = 0; i < n; ++i)
    {
        spawn(ioc, [&, i]() -> awaitable<void> {
            results[static_cast<std::size_t>(i)] = co_await entry->get(std::nullopt, steady::now() + 5s);
            ++done;
        });
    }
    spawn(ioc, [&]() -> awaitable<void> {
        co_await wait_until([&] { return done == n; }, 5000ms, "the waiters");
        after_failure = entry->status();
        // Within 1 s of the failure: its error again, no new request.
        again = co_await entry->get(std::nullopt, steady::now() + 5s);
        calls_after_again = st->calls;
        // Later: a new request (which works).
        co_await sleep_for(1100ms);
        after_a_second = co_await entry->get(std::nullopt, steady::now() + 5s);
        entry->stop();
    });
    run_until_drained(ioc);

    REQUIRE(done == n);
    for (const auto& r : results)
        CHECK(error_of(r) == message);
    CHECK(error_of(again) == message);
    CHECK(calls_after_again == 1);

    REQUIRE(after_failure.has_value());
    CHECK(after_failure->fingerprint.empty());
    CHECK_FALSE(after_failure->valid);
    CHECK_FALSE(after_failure->expires_at.has_value());
    CHECK(after_failure->refresh_failures == 1);
    CHECK(after_failure->fetch_errors == 1);
    CHECK(after_failure->fetches == 0);
    CHECK(after_failure->last_error == message);
    CHECK(after_failure->routes == std::vector<std::string>{"rw", "ro"});
    REQUIRE(after_failure->next_refresh.has_value());
    // Not retryable: the next attempt in 60 s.
    CHECK(*after_failure->next_refresh > sys_clock::now() + 55s);
    check_status_has_no_token(*after_failure);

    CHECK(st->calls == 2);
    CHECK(value_of(after_a_second) == st->token_value(0));
    auto s = entry->status();
    CHECK(s.refresh_failures == 0);
    CHECK(s.last_error.empty());
    CHECK(s.fetch_errors == 1);
    CHECK(s.fetches == 1);
    CHECK(s.fingerprint == fp(st->token_value(0)));
    CHECK(logs.text().find(message + "; no valid token; next attempt in 60000 ms") != std::string::npos);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a failed background refresh keeps the usable token, and is retried",
          "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    const std::string message = "token request failed, status: 503, body: busy";
    st->plan = {fail_step(message, true, 20ms, 503), ok_step(1h, 20ms)};
    auto entry = make_entry(ioc.get_executor(), st);
    const std::string current = "current-access-token-TOPSECRET";
    // The service asked for a refresh right away.
    entry->install(make_token(current, 1h, 0s), sys_clock::now());

    std::optional<get_result> during, after;
    std::optional<token_status> failed;
    sys_clock::time_point failed_seen{};
    int calls_during = -1;
    spawn(ioc, [&]() -> awaitable<void> {
        co_await wait_until([&] { return entry->status().refresh_failures == 1; }, 3000ms, "the failed refresh");
        failed_seen = sys_clock::now();
        failed = entry->status();
        during = co_await entry->get(std::nullopt, steady::now() + 5s);
        calls_during = st->calls;
        // The retry, after about 1 s (attempt 0, at least 1 s while a token is usable).
        co_await wait_until([&] { return entry->status().fetches == 2; }, 4000ms, "the retry");
        after = co_await entry->get(std::nullopt, steady::now() + 5s);
        entry->stop();
    });
    auto started = sys_clock::now();
    run_until_drained(ioc);

    CHECK(value_of(during) == current);
    CHECK(calls_during == 1);
    REQUIRE(failed.has_value());
    CHECK(failed->fingerprint == fp(current));
    CHECK(failed->valid);
    CHECK(failed->refresh_failures == 1);
    CHECK(failed->fetch_errors == 1);
    CHECK(failed->last_error == message);
    REQUIRE(failed->next_refresh.has_value());
    CHECK(*failed->next_refresh >= started + 1000ms);
    CHECK(*failed->next_refresh <= failed_seen + 1250ms);
    check_status_has_no_token(*failed);

    CHECK(st->calls == 2);
    CHECK(value_of(after) == st->token_value(0));
    auto s = entry->status();
    CHECK(s.refresh_failures == 0);
    CHECK(s.last_error.empty());
    CHECK(s.fingerprint == fp(st->token_value(0)));
    CHECK(logs.text().find("the current token (" + fp(current) + ") stays in use until") != std::string::npos);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a failed refresh is retried after at least 1 s, even for a short-lived token",
          "[token][token_entry]")
{
    // A 2 s token: half of what is left is under 1 s, so the retry comes after exactly 1 s,
    // whatever the jitter (10 rounds: a shorter floor would show in one of them).
    log_capture logs;
    constexpr int rounds = 10;
    for (int i = 0; i < rounds; ++i)
    {
        asio::io_context ioc;
        auto st = std::make_shared<fake_state>();
        st->plan = {fail_step("token request failed, status: 503", true, 10ms, 503)};
        auto entry = make_entry(ioc.get_executor(), st);
        entry->install(make_token("short-lived-TOPSECRET", 2s, 0s), sys_clock::now());
        spawn(ioc, [&]() -> awaitable<void> {
            co_await wait_until([&] { return entry->status().refresh_failures == 1; }, 1000ms, "the failure");
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(st->calls == 1);
    }
    std::string text = logs.text();
    INFO(text);
    std::size_t retries = 0, exact = 0;
    for (std::size_t p = text.find("next attempt in "); p != std::string::npos; p = text.find("next attempt in ", p + 1))
    {
        ++retries;
        if (text.compare(p, 24, "next attempt in 1000 ms\n") == 0 || text.compare(p, 25, "next attempt in 1000 ms\r\n") == 0)
            ++exact;
    }
    CHECK(retries == rounds);
    CHECK(exact == rounds);
    CHECK(text.find("stays in use until") != std::string::npos);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: waiters get a usable token when the fetch fails", "[token][token_entry]")
{
    log_capture logs;
    // The only way a usable token appears while clients wait is install() during the fetch.
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    st->plan = {fail_step("token request failed: connection refused", true, 100ms, 0)};
    auto entry = make_entry(ioc.get_executor(), st);
    std::optional<get_result> r;
    spawn(ioc, [&]() -> awaitable<void> {
        r = co_await entry->get(std::nullopt, steady::now() + 5s);
        entry->stop();
    });
    spawn(ioc, [&]() -> awaitable<void> {
        co_await sleep_for(20ms);
        entry->install(make_token("installed-meanwhile-TOPSECRET", 1h), sys_clock::now());
    });
    run_until_drained(ioc);
    CHECK(value_of(r) == "installed-meanwhile-TOPSECRET");
    CHECK(st->calls == 1);
    CHECK(entry->status().last_error == "token request failed: connection refused");
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a token about to expire is not handed out", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    // A 20 s token fetched 17 s ago: 3 s left, within a quarter of its life of expiring.
    auto now = sys_clock::now();
    token expiring{secret(std::string("expiring-access-token-TOPSECRET")), now + 3s, std::nullopt};

    SECTION("the fetch works: the new token")
    {
        st->plan = {ok_step(1h)};
        auto entry = make_entry(ioc.get_executor(), st);
        entry->install(expiring, now - 17s);
        CHECK_FALSE(entry->status().valid);
        std::optional<get_result> r;
        spawn(ioc, [&]() -> awaitable<void> {
            r = co_await entry->get(std::nullopt, steady::now() + 5s);
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(value_of(r) == st->token_value(0));
        CHECK(st->calls == 1);
    }
    SECTION("the fetch fails: the error, not the expiring token")
    {
        st->plan = {fail_step("token request failed, status: 500, body: oops", true, 50ms, 500)};
        auto entry = make_entry(ioc.get_executor(), st);
        entry->install(expiring, now - 17s);
        std::optional<get_result> r;
        spawn(ioc, [&]() -> awaitable<void> {
            r = co_await entry->get(std::nullopt, steady::now() + 5s);
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(error_of(r) == "token request failed, status: 500, body: oops");
        CHECK(st->calls == 1);
        auto s = entry->status();
        CHECK(s.fingerprint == fp("expiring-access-token-TOPSECRET"));  // still shown, but not valid
        CHECK_FALSE(s.valid);
        CHECK(s.refresh_failures == 1);
    }
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a get() that outlives its deadline fails with the wait limit", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();

    SECTION("no earlier error")
    {
        st->plan = {ok_step(1h, 1000ms)};
        auto entry = make_entry(ioc.get_executor(), st);
        std::optional<get_result> r;
        steady::duration waited{};
        spawn(ioc, [&]() -> awaitable<void> {
            auto t0 = steady::now();
            r = co_await entry->get(std::nullopt, t0 + 50ms);
            waited = steady::now() - t0;
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(error_of(r) == "no token within the wait limit");
        CHECK(waited >= 50ms);
        CHECK(waited < 900ms);
        // The fetch itself went on and its token is kept.
        CHECK(st->calls == 1);
        CHECK(entry->status().fingerprint == fp(st->token_value(0)));
    }
    SECTION("with the last error")
    {
        const std::string message = "managed identity credentials request failed, status: 400, body: "
                                    "invalid_request: Identity not found";
        st->plan = {fail_step(message, true, 10ms), ok_step(1h, 500ms)};
        auto entry = make_entry(ioc.get_executor(), st);
        std::optional<get_result> first, r;
        spawn(ioc, [&]() -> awaitable<void> {
            first = co_await entry->get(std::nullopt, steady::now() + 5s);
            co_await sleep_for(1100ms);
            r = co_await entry->get(std::nullopt, steady::now() + 50ms);
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(error_of(first) == message);
        CHECK(error_of(r) == "no token within the wait limit (last error: " + message + ")");
        CHECK(st->calls == 2);
    }
    SECTION("a deadline already passed")
    {
        st->plan = {ok_step(1h, 200ms)};
        auto entry = make_entry(ioc.get_executor(), st);
        std::optional<get_result> r;
        spawn(ioc, [&]() -> awaitable<void> {
            r = co_await entry->get(std::nullopt, steady::now() - 1s);
            entry->stop();
        });
        run_until_drained(ioc);
        CHECK(error_of(r).find("wait limit") != std::string::npos);
    }
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: the background refresh replaces the token", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    st->plan = {ok_step(1h, 10ms)};
    auto entry = make_entry(ioc.get_executor(), st);
    const std::string first = "first-access-token-TOPSECRET";
    entry->install(make_token(first, 1h, 100ms), sys_clock::now());

    std::optional<get_result> before, after;
    spawn(ioc, [&]() -> awaitable<void> {
        before = co_await entry->get(std::nullopt, steady::now() + 5s);
        co_await wait_until([&] { return entry->status().fetches == 2; }, 3000ms, "the refresh");
        after = co_await entry->get(std::nullopt, steady::now() + 5s);
        entry->stop();
    });
    run_until_drained(ioc);
    CHECK(value_of(before) == first);
    CHECK(st->calls == 1);
    CHECK(value_of(after) == st->token_value(0));
    auto s = entry->status();
    REQUIRE(s.expires_at.has_value());
    CHECK(s.next_refresh == *s.expires_at - 5min);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: stop() cancels the refresh timer", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    auto entry = make_entry(ioc.get_executor(), st);
    entry->install(make_token("soon-refreshed-TOPSECRET", 1h, 50ms), sys_clock::now());
    entry->stop();
    auto t0 = steady::now();
    run_until_drained(ioc);
    CHECK(steady::now() - t0 < 1s);
    CHECK(st->calls == 0);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: callers on one thread, the control executor on another", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context control;
    auto guard = asio::make_work_guard(control);
    std::thread::id control_id;
    std::thread control_thread([&] {
        control_id = std::this_thread::get_id();
        control.run_for(20s);
    });

    asio::io_context callers;
    auto st = std::make_shared<fake_state>();
    st->plan = {ok_step(1h, 50ms)};
    auto entry = make_entry(control.get_executor(), st);

    constexpr int n = 100;
    std::vector<std::optional<get_result>> results(n);
    std::vector<std::thread::id> resumed_on(n);
    int done = 0;
    for (int i = 0; i < n; ++i)
    {
        spawn(callers, [&, i]() -> awaitable<void> {
            results[static_cast<std::size_t>(i)] = co_await entry->get(std::nullopt, steady::now() + 5s);
            resumed_on[static_cast<std::size_t>(i)] = std::this_thread::get_id();
            ++done;
        });
    }
    callers.run_for(10s);
    bool callers_drained = callers.stopped();

    entry->stop();
    guard.reset();
    control_thread.join();
    CHECK(control.stopped());
    REQUIRE(callers_drained);

    REQUIRE(done == n);
    CHECK(st->calls == 1);
    std::string expected = st->token_value(0);
    for (int i = 0; i < n; ++i)
    {
        CHECK(value_of(results[static_cast<std::size_t>(i)]) == expected);
        CHECK(resumed_on[static_cast<std::size_t>(i)] == std::this_thread::get_id());
    }
    {
        std::lock_guard lock(st->mu);
        REQUIRE(st->threads.size() == 1);
        CHECK(st->threads[0] == control_id);
        CHECK(st->threads[0] != std::this_thread::get_id());
    }
    // A second round from the callers' thread: the token is there, no fetch.
    callers.restart();
    std::optional<get_result> again;
    spawn(callers, [&]() -> awaitable<void> { again = co_await entry->get(std::nullopt, steady::now() + 1s); });
    callers.run_for(5s);
    CHECK(value_of(again) == expected);
    CHECK(st->calls == 1);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_cache: one entry per identity, shared by routes; the newest credential and token win",
          "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    token_cache cache(ioc.get_executor());
    auto e1 = cache.entry_for(std::make_unique<fake_credential>(st), make_token("first-TOPSECRET", 1h),
                              sys_clock::now(), "rw", refresh_policy{});
    auto e2 = cache.entry_for(std::make_unique<fake_credential>(st), make_token("second-TOPSECRET", 1h),
                              sys_clock::now(), "ro", refresh_policy{});
    CHECK(e1 == e2);
    auto all = cache.status();
    REQUIRE(all.size() == 1);
    CHECK(all[0].routes == std::vector<std::string>{"rw", "ro"});
    CHECK(all[0].fingerprint == fp("second-TOPSECRET"));  // a reload takes the token it just fetched
    check_status_has_no_token(all[0]);
    cache.stop();
    run_until_drained(ioc);
    CHECK(st->calls == 0);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_entry: a reload during a refresh keeps the new credential's token", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto old_state = std::make_shared<fake_state>();
    old_state->plan = {fail_step("AADSTS7000215: Invalid client secret provided.", false, 200ms, 401)};
    auto new_state = std::make_shared<fake_state>();
    new_state->plan = {ok_step(1h, 10ms)};
    auto entry = make_entry(ioc.get_executor(), old_state);
    entry->install(make_token("old-secret-token-TOPSECRET", 1h, 20ms), sys_clock::now());

    std::optional<get_result> after;
    spawn(ioc, [&]() -> awaitable<void> {
        // The refresh with the old (now revoked) secret is in flight...
        co_await wait_until([&] { return old_state->calls == 1; }, 3000ms, "the refresh with the old secret");
        // ...when the reload brings the rotated secret and the token it fetched.
        entry->replace(std::make_unique<fake_credential>(new_state), make_token("rotated-secret-token-TOPSECRET", 1h),
                       sys_clock::now(), refresh_policy{});
        co_await wait_until([&] { return old_state->answered == 1; }, 3000ms, "the old secret's failure");
        after = co_await entry->get(std::nullopt, steady::now() + 1s);
        entry->stop();
    });
    run_until_drained(ioc);
    CHECK(value_of(after) == "rotated-secret-token-TOPSECRET");
    auto s = entry->status();
    CHECK(s.refresh_failures == 0);  // the old secret's failure is not the new configuration's
    CHECK(s.last_error.empty());
    CHECK(s.fingerprint == fp("rotated-secret-token-TOPSECRET"));
    CHECK(old_state->calls == 1);
    CHECK(new_state->calls == 0);
    check_logs_have_no_token(logs);
}

TEST_CASE("token_cache: retain() stops the identities no route uses any more", "[token][token_entry]")
{
    log_capture logs;
    asio::io_context ioc;
    auto st = std::make_shared<fake_state>();
    struct other_identity final : public credential
    {
        awaitable<fetch_result> fetch_once() override { co_return fetch_failure{"unused", 0, false, std::nullopt}; }
        credential_kind kind() const override { return credential_kind::imds; }
        std::string class_name() const override { return "ManagedIdentityCredentials"; }
        std::string describe() const override { return "managed identity (IMDS), client_id other"; }
        std::string identity_key() const override { return "imds|other"; }
        std::string tenant_id() const override { return ""; }
        std::string client_id() const override { return "other"; }
    };
    token_cache cache(ioc.get_executor());
    // Before the reload: rw and ro share the service principal.
    auto shared = cache.entry_for(std::make_unique<fake_credential>(st), make_token("sp-TOPSECRET", 1h, 50ms),
                                  sys_clock::now(), "rw", refresh_policy{});
    cache.entry_for(std::make_unique<fake_credential>(st), make_token("sp2-TOPSECRET", 1h, 50ms), sys_clock::now(), "ro",
                    refresh_policy{});
    // The reload gives ro an identity of its own.
    auto ro = cache.entry_for(std::make_unique<other_identity>(), make_token("mi-TOPSECRET", 1h), sys_clock::now(), "ro",
                              refresh_policy{});
    REQUIRE(cache.status().size() == 2);
    cache.retain({{"rw", shared}, {"ro", ro}});
    auto all = cache.status();
    REQUIRE(all.size() == 2);
    for (const auto& s : all)
        CHECK(s.routes == std::vector<std::string>{s.client_id == "other" ? "ro" : "rw"});

    // Then rw moves to the managed identity too: the service principal stops (its 50 ms refresh
    // never runs, the context drains).
    cache.retain({{"rw", ro}, {"ro", ro}});
    all = cache.status();
    REQUIRE(all.size() == 1);
    CHECK(all[0].client_id == "other");
    CHECK(all[0].routes == std::vector<std::string>{"rw", "ro"});
    ro->stop();
    run_until_drained(ioc);
    CHECK(st->calls == 0);
    check_logs_have_no_token(logs);
}
