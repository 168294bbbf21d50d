#pragma once
// /metrics in the Prometheus text exposition format (version 0.0.4), from a snapshot of the
// pools, the connections and the tokens. Plain text building: no I/O here.

#include <string>
#include <vector>

#include "tokenbouncer/admin/console.hpp"
#include "tokenbouncer/auth/token_cache.hpp"
#include "tokenbouncer/pool/pool.hpp"

namespace tokenbouncer::admin {

struct metrics_input
{
    struct route
    {
        pool::pool_snapshot pool;
        const pool::pool_counters* counters = nullptr;
        // What the route logs in upstream with: "password" (pg_password / pg_ro_password), or
        // the token's credential type as SHOW TOKENS shows it ("managed_identity_imds", ...).
        // The upstream login counters carry it as their `credential` label.
        std::string credential = "password";
    };
    std::vector<route> routes;
    connections conns;
    std::vector<auth::token_status> tokens;
    int max_client_conn = 0;
    bool ready = false;
    std::chrono::system_clock::time_point started;
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
};

std::string render_metrics(const metrics_input& in);

}  // namespace tokenbouncer::admin
