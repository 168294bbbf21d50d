#pragma once
// A connected socket, in clear text or TLS, for the relay and the login code.
//
// Reads go through Asio's async_read_some, which skips the speculative read after a short one, so
// a request/response exchange costs one recv per message and no epoll_ctl. TLS is OpenSSL with a
// small BIO of our own (rather than asio::ssl::stream): raw bytes are read with async_read_some
// into the stream's buffer and handed to OpenSSL from there; encrypted output goes straight to
// send(). All TLS state stays in this object, so a server connection can move from one worker's
// io_context to another's (rebind()) when the pool hands it to a client on another thread.
//
// Usage:
//     auto [ec, n] = co_await s.read_some(buf, len);  // waits until something can be read
//     std::size_t m = s.read_now(buf, len, ec);        // never waits (would_block: nothing buffered)
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
    // Skips asking the socket for its protocol (one syscall less per accepted connection).
    stream(socket_type sock, asio::generic::stream_protocol protocol);
    stream(stream&&) = delete;
    stream& operator=(stream&&) = delete;
    ~stream();

    // --- Reading ----------------------------------------------------------------------------
    // Waits until at least one byte can be read; returns eof at the end of the stream.
    awaitable<std::pair<error_code, std::size_t>> read_some(char* buf, std::size_t len);
    awaitable<error_code> read_exactly(char* buf, std::size_t len);
    // Never waits: bytes already buffered (TLS), or what the socket has; would_block otherwise.
    std::size_t read_now(char* buf, std::size_t len, error_code& ec);
    // Bytes already received and buffered here (TLS), readable without touching the socket.
    bool has_pending_input() const noexcept;

    // --- Writing ----------------------------------------------------------------------------
    std::size_t write_now(const char* buf, std::size_t len, error_code& ec);
    awaitable<error_code> write_all(std::string_view data);
    // Writes what the socket takes now, never waiting (no coroutine: the usual case costs no
    // frame). True when all of `data` went; false with `ec` set on an error, or with no error and
    // `data` left as the rest when the socket is full: co_await write_all(data) for that.
    bool write_all_now(std::string_view& data, error_code& ec);

    // --- TLS ------------------------------------------------------------------------------
    // Client handshake. `host` goes into SNI (unless it is an IP address) and, with
    // check_host_name, is matched against the certificate. Returns a reason on failure.
    awaitable<std::optional<std::string>> tls_connect(SSL_CTX* ctx, std::string host, bool check_host_name);
    // Server handshake (a client of ours asked for TLS).
    awaitable<std::optional<std::string>> tls_accept(SSL_CTX* ctx);
    bool is_tls() const noexcept { return ssl_ != nullptr; }
    SSL* ssl() const noexcept { return ssl_; }

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
    // server connection (buffered bytes, or recv with MSG_PEEK; never blocks).
    bool peer_closed_or_sent_data() noexcept;

private:
    struct bio_access;
    enum class tls_step
    {
        done,
        want_read,
        want_write,
        failed,
    };
    // Reads raw bytes from the socket into the TLS input buffer.
    awaitable<error_code> fill_tls_input();
    awaitable<std::optional<std::string>> tls_handshake();
    std::size_t tls_io(bool is_read, char* buf, std::size_t len, error_code& ec, tls_step& step);
    // One write of what the socket (or TLS) takes now; `step` says what a would_block waits for.
    std::size_t write_some_now(std::string_view data, error_code& ec, tls_step& step);
    // write_all_now, with the step a would-block waits for (want_read: TLS needs input first).
    bool write_available(std::string_view& data, error_code& ec, tls_step& step);

    socket_type sock_;
    asio::generic::stream_protocol protocol_;
    SSL* ssl_ = nullptr;
    // TLS input: bytes read from the socket that OpenSSL has not consumed yet.
    std::unique_ptr<char[]> in_;
    std::size_t in_begin_ = 0;
    std::size_t in_end_ = 0;
    bool in_eof_ = false;
};

}  // namespace tokenbouncer::net
