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

// What SHOW SERVERS shows of a server connection.
struct server_info
{
    std::uint64_t id = 0;
    std::string route;  // "rw" or "ro"
    std::string host;
    int port = 0;
    std::string user;
    std::string database;
    std::string state;  // idle, active
    std::chrono::system_clock::time_point connect_time;
    std::uint32_t remote_pid = 0;
    bool tls = false;
    std::string application_name;
    std::size_t prepared_statements = 0;
    std::uint64_t client_id = 0;  // the client it serves, 0 when idle
};

struct server_conn
{
    std::uint64_t id = 0;
    std::unique_ptr<net::stream> stream;
    protocol::backend_key_data key;  // the server's real BackendKeyData (for CancelRequest)
    param_map params;                // the server's current ParameterStatus values
    // The tracked-parameter set (as pool::intern gave it) that `params` was last found or made to
    // match; cleared when a value changes. A client wanting the same set skips the comparison.
    std::shared_ptr<const param_map> in_sync_with;
    std::string signature;           // untracked startup parameters it logged in with
    std::shared_ptr<const upstream::target> target;
    clock::time_point created = clock::now();
    clock::time_point idle_since = clock::now();
    std::chrono::system_clock::time_point connected_at = std::chrono::system_clock::now();
    std::string credential_label;  // "token 1a2b3c4d" or "pg_password": what it logged in with (for logs)

    // Transaction mode: the prepared statements this connection holds (tokenbouncer's names).
    protocol::server_statements statements;

    server_conn() = default;
    ~server_conn();
    server_conn(const server_conn&) = delete;
    server_conn& operator=(const server_conn&) = delete;

    std::string tag() const { return "s" + std::to_string(id); }
    // Call where the connection may be read: on its thread, or idle under the pool's lock.
    server_info info(std::string_view state, std::uint64_t client_id) const;
    // Sends Terminate and closes, never waiting. Call on the thread that owns the stream.
    void terminate() noexcept;
    // Records a ParameterStatus value (a change clears in_sync_with).
    void apply_parameter_status(std::string_view name, std::string_view value);
};

std::uint64_t next_server_id();

}  // namespace tokenbouncer::pool
