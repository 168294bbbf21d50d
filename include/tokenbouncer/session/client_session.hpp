#pragma once
// One client connection, from its first byte to its close.
//
// Flow:
//   startup   SSLRequest/GSSENCRequest ('N', or TLS when client TLS is on), CancelRequest
//             (forwarded to the linked server of the client it names), StartupMessage; route and
//             user checks; client authentication; AuthenticationOk, ParameterStatus (from the
//             pool's last server login, with the client's own values), our BackendKeyData,
//             ReadyForQuery.
//   relay     The client reader (run()) forwards client bytes to a server connection it acquires
//             from the pool when the client first sends something; a server pump coroutine
//             forwards server bytes back. Both scan message headers only. In transaction mode the
//             pump hands the server back to the pool at ReadyForQuery 'I' once nothing is
//             outstanding; in session mode the server is reset and returned when the client leaves.
//
// Both coroutines run on the client's worker thread; the server connection is moved to that
// thread when it is acquired.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenbouncer/net/stream.hpp"
#include "tokenbouncer/pool/params.hpp"
#include "tokenbouncer/pool/server_conn.hpp"
#include "tokenbouncer/protocol/scanner.hpp"
#include "tokenbouncer/protocol/startup.hpp"
#include "tokenbouncer/protocol/statements.hpp"
#include "tokenbouncer/session/cancel_registry.hpp"
#include "tokenbouncer/session/context.hpp"
#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::session {

// A growable byte buffer for one relay direction: [0, len) holds bytes not yet forwarded.
class relay_buffer
{
public:
    explicit relay_buffer(std::size_t capacity) : capacity_(capacity) {}
    char* data() { return data_.get(); }
    std::size_t size() const { return len_; }
    std::size_t capacity() const { return capacity_; }
    std::size_t space() const { return capacity_ - len_; }
    char* tail() { return data_.get() + len_; }
    // Allocates the buffer if it has none (a spare one of this thread, when there is one).
    void ensure();
    // Gives an empty buffer up (to this thread's spares): between transactions a client holds none.
    void release_if_empty();
    void grow(std::size_t n) { len_ += n; }
    // Doubles the capacity (up to `limit`); false when already there.
    bool enlarge(std::size_t limit);
    void consume(std::size_t n);
    void append(std::string_view s);
    std::string_view view() const { return {data_.get(), len_}; }

private:
    std::unique_ptr<char[]> data_;
    std::size_t capacity_;
    std::size_t len_ = 0;
};

// What SHOW CLIENTS shows of a client.
struct client_info
{
    std::uint64_t id = 0;
    std::string user;
    std::string database;
    std::string state;  // active, idle, waiting
    std::string addr;
    int port = 0;
    bool ro = false;
    bool tls = false;
    std::string application_name;
    std::chrono::system_clock::time_point connect_time;
    bool logged_in = false;
    std::optional<pool::server_info> server;  // the server it is linked to
};

class client_session : public std::enable_shared_from_this<client_session>
{
public:
    client_session(shared_state& state, net::socket_type sock, listener_info where);
    ~client_session();

    awaitable<void> run();

    // Shutdown began: leave at the next point where no transaction is open.
    // Call on the session's executor (post it there).
    void request_shutdown();
    asio::any_io_executor executor() { return client_.get_executor(); }
    // client_login_timeout passed: closes the connection if the login is not done.
    void login_deadline_passed();
    client_info info() const;
    std::string tag() const { return "c" + std::to_string(id_); }

private:
    enum class end_reason
    {
        client_left,
        client_error,
        server_error,
        shutdown,
        timeout,
    };

    // --- startup ---
    awaitable<std::optional<protocol::startup_packet>> read_startup();
    awaitable<bool> handle_startup(protocol::startup_packet& pkt);
    awaitable<bool> authenticate_client(const std::string& user);
    awaitable<void> handle_cancel(std::uint32_t pid, std::uint32_t key);
    awaitable<void> send_error(const pg_error& e);
    // The admin console (database "tokenbouncer"): login, then simple queries answered by state_.admin.
    awaitable<bool> admin_login();
    awaitable<void> admin_loop();

    // --- relay ---
    awaitable<void> relay();
    awaitable<bool> link_server();
    awaitable<void> server_pump();  // started by the first link_server, lives until stop_pump
    awaitable<void> pump_from_server();  // one server's bytes, until it is released or fails
    void stop_pump();                // when relay() ends: the pump (and its hold on us) ends
    awaitable<void> wait_for_pump();
    awaitable<void> unlink_at_end();
    bool server_clean() const;
    void note_request();  // a Query/Sync/FunctionCall goes out: start the query and transaction clocks
    protocol::scan_action on_client_message(char type);
    protocol::scan_action on_server_message(char type, std::uint32_t total, std::string_view bytes);
    // Transaction mode: how the bytes of a chunk are changed on their way (see statements.hpp).
    struct patch
    {
        std::size_t offset;  // in the chunk
        std::size_t cut;     // bytes removed there
        std::string insert;  // bytes sent there instead
    };
    // The bytes to send for `chunk`: itself, or (a statement was prepared, re-sent or answered by
    // us) with its patches applied, assembled in `out`.
    static std::string_view apply_patches(std::string_view chunk, std::vector<patch>& patches, std::string& out);
    std::string c2s_out_, s2c_out_;  // see apply_patches

    shared_state& state_;
    std::shared_ptr<const config::settings> settings_;
    net::stream client_;
    listener_info where_;
    std::uint64_t id_;
    std::chrono::system_clock::time_point connected_at_ = std::chrono::system_clock::now();
    std::string peer_addr_;                  // "unix..." (a TCP client: peer_ip_)
    std::optional<asio::ip::address> peer_ip_;
    std::string peer_addr() const;
    int peer_port_ = 0;
    std::optional<std::uint32_t> peer_uid_;  // unix sockets: SO_PEERCRED
    bool counted_ = false;  // counts in state_.clients

    // Login
    std::string user_;
    std::string database_;
    pool::pool* pool_ = nullptr;
    pool::client_parameters params_;
    // Tracked parameters as this client should see them: one set shared with the pool's other
    // clients that want the same (pool::intern), replaced, never changed in place.
    std::shared_ptr<const pool::param_map> wanted_;
    // Sets one of them (a new shared set); false when it already had that value.
    bool want(std::string_view name, std::string_view value);
    protocol::backend_key_data our_key_;
    std::shared_ptr<cancel_target> cancel_target_ = std::make_shared<cancel_target>();
    std::string leftover_;  // client bytes read past the startup packet
    bool logged_in_ = false;
    bool login_timed_out_ = false;
    bool waiting_ = false;  // in the pool's queue for a server
    bool admin_session_ = false;  // on the admin console
    bool admin_rights_ = false;   // in admin_users (else stats_users)

    // Relay state
    std::unique_ptr<pool::server_conn> server_;
    relay_buffer c2s_{2 * 1024};
    relay_buffer s2c_{64 * 1024};
    protocol::message_scanner client_scanner_;
    protocol::message_scanner server_scanner_;
    int outstanding_ = 0;            // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
    bool pending_since_sync_ = false;  // extended-protocol messages sent after the last Sync
    char txn_status_ = 'I';
    bool in_xact_ = false;  // a transaction (or a lone query) is running, since xact_started_
    pool::clock::time_point query_started_{};
    pool::clock::time_point xact_started_{};
    bool client_terminated_ = false;
    bool release_after_pump_ = false;
    bool pump_running_ = false;  // the pump has a server (link_server gave it one)
    bool pump_alive_ = false;    // the pump coroutine exists
    bool pump_stop_ = false;
    bool server_failed_ = false;
    bool client_failed_ = false;
    bool shutdown_requested_ = false;
    bool transaction_mode_ = false;
    asio::steady_timer pump_done_;  // cancelled when the pump is done with its server
    asio::steady_timer pump_wake_;  // cancelled when it has a new one (or must stop)
    std::optional<pg_error> server_failure_;

    // client_idle_timeout / idle_transaction_timeout: the client has been silent, with nothing
    // outstanding, since idle_since_; armed when the wait starts and again when the server's last
    // ReadyForQuery arrives during it.
    asio::steady_timer idle_timer_;
    pool::clock::time_point idle_since_{};
    bool reading_client_ = false;  // relay() waits for the client with an empty buffer
    bool idle_fired_ = false;
    void arm_idle_timer();

    // Transaction mode with max_prepared_statements > 0.
    bool tracking_ = false;
    protocol::statement_tracker tracker_{0};
    protocol::response_queue queue_;
    std::vector<patch> c2s_patches_;
    std::vector<patch> s2c_patches_;
    std::string pending_after_;  // our answers due after a server message still arriving
    bool kick_ = false;          // the pump was woken to send our answers

    // A parameter sync (SET application_name ...) sent in front of the client's first message on a
    // newly linked server, instead of a round trip of its own; its answers are swallowed.
    std::string pipelined_sync_;
    int sync_answers_pending_ = 0;
};

}  // namespace tokenbouncer::session
