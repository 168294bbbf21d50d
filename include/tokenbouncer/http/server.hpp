#pragma once
// A small HTTP/1.1 server (Boost.Beast) for the operational endpoints: /metrics, /livez,
// /readyz, /startupz, /quitquitquit. It knows nothing of those: a handler answers each request.
//
// Bounded: request headers of at most 8 KiB and bodies of at most 4 KiB, 10 s per request,
// at most 64 connections at a time (more are closed at once).

#include <functional>
#include <memory>
#include <string>

#include "tokenbouncer/net/asio.hpp"

namespace tokenbouncer::http {

struct server_request
{
    std::string method;  // "GET", "POST", ...
    std::string target;  // "/metrics", with any query string
    bool from_loopback = false;  // the peer is 127.0.0.0/8 or ::1
};

struct server_reply
{
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

using request_handler = std::function<awaitable<server_reply>(server_request)>;

class server
{
public:
    // Listens on addr:port; null with `error` set when the address cannot be used.
    static std::unique_ptr<server> open(asio::io_context& ctx, const std::string& addr, std::uint16_t port,
                                        request_handler handler, std::string& error);
    ~server();

    void start();  // accepts on the io_context it was opened with
    void close();  // stops accepting
    std::string describe() const;

private:
    struct impl;
    explicit server(std::shared_ptr<impl> i) : impl_(std::move(i)) {}
    std::shared_ptr<impl> impl_;
};

}  // namespace tokenbouncer::http
