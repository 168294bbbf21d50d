#include "tokenbouncer/admin/endpoints.hpp"

#include <spdlog/spdlog.h>

#include <mutex>

#include "tokenbouncer/admin/metrics.hpp"
#include "tokenbouncer/auth/azure.hpp"
#include "tokenbouncer/util/async_slot.hpp"

namespace tokenbouncer::admin {

namespace {

http::server_reply text(int status, std::string body) { return {status, "text/plain; charset=utf-8", body + "\n"}; }

// The /metrics `credential` label of a route: its token's credential type (as SHOW TOKENS and the
// token metrics name it), or "password" for pg_password.
std::string credential_type(const pool::pool& p)
{
    auto target = p.target();
    if (auto* src = dynamic_cast<const auth::token_source*>(target ? target->credential.get() : nullptr))
        if (auto cred = src->entry()->cred())
            return std::string(auth::to_string(cred->kind()));
    return "password";
}

}  // namespace

awaitable<http::server_reply> endpoints::handle(http::server_request r)
{
    std::string_view path = r.target;
    if (auto q = path.find('?'); q != std::string_view::npos)
        path = path.substr(0, q);
    bool get = r.method == "GET" || r.method == "HEAD";
    if (path == "/quitquitquit")
    {
        if (r.method != "POST")
            co_return text(405, "use POST /quitquitquit to shut tokenbouncer down");
        // The probes may listen on the pod's address (http_addr = 0.0.0.0); a shutdown is asked
        // for by a container of the same pod, which reaches it on localhost.
        if (!r.from_loopback)
            co_return text(403, "POST /quitquitquit is accepted from loopback addresses only");
        spdlog::info("http: POST /quitquitquit: graceful shutdown");
        hooks_.shutdown();
        co_return text(200, "shutting down");
    }
    if (path != "/metrics" && path != "/livez" && path != "/readyz" && path != "/startupz")
        co_return text(404, "not found: tokenbouncer serves /metrics, /livez, /readyz, /startupz and POST /quitquitquit");
    if (!get)
        co_return text(405, "use GET");
    if (path == "/metrics")
        co_return co_await metrics();
    if (path == "/livez")
        co_return co_await livez();
    if (path == "/startupz")
        co_return hooks_.serving() ? text(200, "started") : text(503, "starting: listeners or first tokens not ready yet");
    std::string why = not_ready_reason();
    co_return why.empty() ? text(200, "ready") : text(503, why);
}

std::string endpoints::not_ready_reason() const
{
    if (state_.shutting_down)
        return "shutting down";
    if (!hooks_.serving())
        return "starting: listeners or first tokens not ready yet";
    for (const auto& t : hooks_.tokens())
    {
        if (t.valid)
            continue;
        std::string routes;
        for (const auto& r : t.routes)
            routes += (routes.empty() ? "" : ",") + r;
        return "no valid Microsoft Entra token for route " + routes + " (" + t.credential + ")" +
               (t.last_error.empty() ? std::string() : ": " + t.last_error);
    }
    return {};
}

awaitable<http::server_reply> endpoints::metrics()
{
    metrics_input in;
    in.conns = co_await gather_connections(state_);
    for (auto* p : {state_.rw_pool.get(), state_.ro_pool.get()})
        if (p)
            in.routes.push_back({p->snapshot(), &p->counters(), credential_type(*p)});
    in.tokens = hooks_.tokens();
    in.max_client_conn = state_.settings()->max_client_conn;
    in.ready = not_ready_reason().empty();
    in.started = hooks_.started;
    co_return http::server_reply{200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(in)};
}

awaitable<http::server_reply> endpoints::livez()
{
    // Every worker's event loop runs a no-op within a second; one stuck loop is a dead process.
    auto ex = co_await asio::this_coro::executor;
    struct round
    {
        std::mutex mu;
        std::size_t left = 0;
        std::shared_ptr<async_slot<bool>> done;
    };
    auto r = std::make_shared<round>();
    r->left = hooks_.workers.size();
    r->done = std::make_shared<async_slot<bool>>(ex, std::chrono::steady_clock::now() + std::chrono::seconds(1));
    for (const auto& w : hooks_.workers)
        asio::post(w, [r] {
            std::lock_guard lock(r->mu);
            if (--r->left == 0)
                async_slot<bool>::deliver(r->done, true);
        });
    if (!hooks_.workers.empty())
        co_await r->done->wait();
    std::lock_guard lock(r->mu);
    if (r->left > 0)
        co_return text(503, std::to_string(r->left) + " of " + std::to_string(hooks_.workers.size()) +
                                " worker event loops did not answer within 1 s");
    co_return text(200, "ok");
}

}  // namespace tokenbouncer::admin
