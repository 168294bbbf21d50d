#pragma once
// A listening socket, TCP or Unix, whose accepted connections land on a chosen io_context.

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/net/stream.hpp"

namespace tokenbouncer::net {

class listener
{
public:
    // Binds and listens; returns null with `error` set (address in use, permission denied, ...).
    // reuse_port: SO_REUSEPORT, so each worker thread can have its own listening socket on the
    // same port and the kernel spreads connections over them. defer_accept_seconds: how long the
    // kernel keeps a connection that has sent nothing before handing it over (TCP_DEFER_ACCEPT).
    static std::unique_ptr<listener> open_tcp(asio::io_context& ctx, const std::string& address, std::uint16_t port,
                                              bool reuse_port, std::string& error, int defer_accept_seconds = 45);
    // Fails (with `error`) when something already listens on the address and port; SO_REUSEPORT
    // would otherwise let two tokenbouncers share a port silently.
    static bool probe_tcp(const std::string& address, std::uint16_t port, std::string& error);
    // A Unix socket at `path` (a stale socket file left by a dead process is replaced).
    static std::unique_ptr<listener> open_unix(asio::io_context& ctx, const std::string& path, int mode,
                                               const std::string& group, std::string& error);
    ~listener();

    // Accepts one connection onto `target`'s io_context.
    awaitable<std::pair<error_code, socket_type>> accept(asio::io_context& target);
    asio::generic::stream_protocol protocol() const { return protocol_; }
    void close();
    bool is_unix() const { return unix_.has_value(); }
    bool is_loopback() const { return loopback_; }
    const std::string& describe() const { return description_; }

private:
    std::optional<asio::ip::tcp::acceptor> tcp_;
    std::optional<asio::local::stream_protocol::acceptor> unix_;
    std::string path_;
    std::string description_;
    bool loopback_ = false;
    asio::generic::stream_protocol protocol_{AF_INET, IPPROTO_TCP};
};

}  // namespace tokenbouncer::net
