#pragma once
// The HTTP endpoints, as Cloud SQL Auth Proxy and Kubernetes probes expect them:
//   GET  /metrics       Prometheus text format (admin/metrics.hpp)
//   GET  /startupz      200 once the listeners are up and the first tokens are held, else 503
//   GET  /livez         200 when every event loop answers within a second, else 503
//   GET  /readyz        200 while every route has a usable token and no shutdown has begun;
//                       503 with a one-line reason otherwise
//   POST /quitquitquit  graceful shutdown (a Kubernetes sidecar that must stop with its pod);
//                       from loopback peers only, 403 otherwise

#include "tokenbouncer/admin/console.hpp"
#include "tokenbouncer/http/server.hpp"

namespace tokenbouncer::admin {

class endpoints
{
public:
    endpoints(session::shared_state& state, app_hooks hooks) : state_(state), hooks_(std::move(hooks)) {}

    awaitable<http::server_reply> handle(http::server_request r);

    // The reason /readyz is not 200, or "" when ready.
    std::string not_ready_reason() const;

private:
    awaitable<http::server_reply> metrics();
    awaitable<http::server_reply> livez();

    session::shared_state& state_;
    app_hooks hooks_;
};

}  // namespace tokenbouncer::admin
