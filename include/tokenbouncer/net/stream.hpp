#pragma once
// A connected socket, in clear text or TLS, with non-blocking reads and writes.
//
// TLS is OpenSSL bound directly to the socket's file descriptor (SSL_set_fd) rather than
// asio::ssl::stream. That keeps all TLS state inside the SSL object, so a server connection can
// move from one worker's io_context to another's (rebind()) when the pool hands it to a client on
// another thread, and it saves the copy through asio::ssl's BIO pair on the relay's hot path.
//
// Usage:
//     std::size_t n = s.read_now(buf, len, ec);      // never waits; ec == would_block: nothing yet
//     co_await s.wait_readable();                     // waits for what the last read needs
//     auto [ec, n] = co_await s.read_some(buf, len); // both of the above
//     ec = co_await s.write_all(bytes);

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <openssl/ssl.h>

#include "tokenbouncer/net/asio.hpp"

namespace tokenbouncer::net {

using socket_type = asio::generic::stream_protocol::socket;

class stream
{
public:
    explicit stream(socket_type sock);
    stream(stream&&) = delete;
    stream& operator=(stream&&) = delete;
    ~stream();

    // --- Non-blocking attempts ------------------------------------------------------------
    // A read returns the bytes read (> 0), or 0 with ec set: would_block, eof, or an error.
    std::size_t read_now(char* buf, std::size_t len, error_code& ec);
    std::size_t write_now(const char* buf, std::size_t len, error_code& ec);

    // --- Waiting ----------------------------------------------------------------------------
    // Waits until the socket is ready for what the last TLS call asked for (a TLS read may need
    // to write and the other way round); in clear text simply for readable/writable.
    awaitable<error_code> wait_readable();
    awaitable<error_code> wait_writable();

    awaitable<std::pair<error_code, std::size_t>> read_some(char* buf, std::size_t len);
    awaitable<error_code> write_all(std::string_view data);
    awaitable<error_code> read_exactly(char* buf, std::size_t len);

    // --- TLS ------------------------------------------------------------------------------
    // Client handshake. `host` goes into SNI (unless it is an IP address) and, with
    // check_host_name, is matched against the certificate. Returns a reason on failure.
    awaitable<std::optional<std::string>> tls_connect(SSL_CTX* ctx, std::string host, bool check_host_name);
    // Server handshake (a client of ours asked for TLS).
    awaitable<std::optional<std::string>> tls_accept(SSL_CTX* ctx);
    bool is_tls() const noexcept { return ssl_ != nullptr; }
    SSL* ssl() const noexcept { return ssl_; }
    // Bytes already decrypted and waiting in OpenSSL.
    bool has_pending_input() const noexcept { return ssl_ && SSL_pending(ssl_) > 0; }

    // --- Socket -----------------------------------------------------------------------------
    // Moves the socket to another executor (io_context). No operation may be pending.
    void rebind(const asio::any_io_executor& ex);
    asio::any_io_executor get_executor() { return sock_.get_executor(); }
    void cancel() noexcept;
    void close() noexcept;
    bool is_open() const noexcept { return sock_.is_open(); }
    int native_handle() noexcept { return sock_.native_handle(); }
    socket_type& socket() noexcept { return sock_; }

    // True when the peer has closed or sent something: a cheap liveness check for an idle
    // server connection (recv with MSG_PEEK, never blocks).
    bool peer_closed_or_sent_data() noexcept;

private:
    std::size_t tls_io(bool is_read, char* buf, std::size_t len, error_code& ec);

    socket_type sock_;
    asio::generic::stream_protocol protocol_;
    SSL* ssl_ = nullptr;
    bool tls_wants_write_for_read_ = false;
    bool tls_wants_read_for_write_ = false;
};

}  // namespace tokenbouncer::net
