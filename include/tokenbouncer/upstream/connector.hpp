#pragma once
// Opens a logged-in connection to the upstream server:
//
//     TCP connect -> SSLRequest -> TLS handshake (SNI, certificate and host-name checks as
//     pg_sslmode says) -> StartupMessage (pg_user, pg_database, the client's untracked
//     parameters) -> authentication (cleartext, MD5 or SCRAM-SHA-256 with the credential's
//     password) -> ParameterStatus, BackendKeyData -> ReadyForQuery
//
// Every failure comes back as the pg_error the client should see: 08006 with host:port and the
// reason for network and TLS failures, the server's own error (28P01 ...) for a refused login.

#include <chrono>
#include <memory>

#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/pool/server_conn.hpp"
#include "tokenbouncer/protocol/startup.hpp"
#include "tokenbouncer/upstream/target.hpp"
#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::upstream {

struct login_failure
{
    pg_error error;
    // True when the server itself refused (bad credential ...), false for network/TLS trouble
    // or a timeout. Used to decide whether the pool should stop trying for a while.
    bool refused_by_server = false;
    bool timed_out = false;
};

[[noreturn]] void throw_exception_from_error(const login_failure& e, const boost::source_location& loc);

using connect_result = boost::system::result<std::unique_ptr<pool::server_conn>, login_failure>;

// Connects on the calling coroutine's executor, within `timeout`. A login rejected with 28P01 or
// 28000 while using a refreshable credential (a token) is retried once with a fresh one.
awaitable<connect_result> connect_server(std::shared_ptr<const target> t, protocol::startup_parameters extra,
                                         std::chrono::milliseconds timeout);

// Sends a CancelRequest for `key` to the server `t` points to (over TLS when pg_sslmode is not
// disable, as libpq does). Best effort: errors are logged.
awaitable<void> send_cancel(std::shared_ptr<const target> t, protocol::backend_key_data key,
                            std::chrono::milliseconds timeout);

}  // namespace tokenbouncer::upstream
