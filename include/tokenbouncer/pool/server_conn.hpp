#pragma once
// One logged-in connection to an upstream server, as the pool keeps it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>

#include "tokenbouncer/net/stream.hpp"
#include "tokenbouncer/pool/params.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/protocol/statements.hpp"
#include "tokenbouncer/upstream/target.hpp"

namespace tokenbouncer::pool {

using clock = std::chrono::steady_clock;

struct server_conn
{
    std::uint64_t id = 0;
    std::unique_ptr<net::stream> stream;
    protocol::backend_key_data key;  // the server's real BackendKeyData (for CancelRequest)
    param_map params;                // the server's current ParameterStatus values
    std::string signature;           // untracked startup parameters it logged in with
    std::shared_ptr<const upstream::target> target;
    clock::time_point created = clock::now();
    clock::time_point idle_since = clock::now();
    std::string credential_label;  // "token 1a2b3c4d" or "pg_password": what it logged in with (for logs)

    // Transaction mode: the prepared statements this connection holds (tokenbouncer's names).
    protocol::server_statements statements;

    std::string tag() const { return "s" + std::to_string(id); }
    // Sends Terminate and closes, never waiting. Call on the thread that owns the stream.
    void terminate() noexcept;
    // Updates params from a ParameterStatus body; returns the canonical tracked name if tracked.
    void apply_parameter_status(std::string_view name, std::string_view value);
};

std::uint64_t next_server_id();

}  // namespace tokenbouncer::pool
