#include "tokenbouncer/http/server.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <atomic>

namespace tokenbouncer::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr int max_connections = 64;
constexpr auto request_timeout = std::chrono::seconds(10);
}  // namespace

struct server::impl : std::enable_shared_from_this<impl>
{
    impl(asio::io_context& ctx, request_handler h) : acceptor(ctx), handler(std::move(h)) {}

    tcp::acceptor acceptor;
    request_handler handler;
    std::atomic<int> connections{0};
    std::string where;

    awaitable<void> accept_loop()
    {
        auto self = shared_from_this();
        for (;;)
        {
            auto [ec, sock] = co_await acceptor.async_accept(use_nothrow);
            if (ec == asio::error::operation_aborted || !acceptor.is_open())
                co_return;
            if (ec)
            {
                spdlog::warn("http: accept on {} failed: {}", where, ec.message());
                asio::steady_timer t(acceptor.get_executor(), std::chrono::milliseconds(100));
                co_await t.async_wait(use_nothrow);
                continue;
            }
            if (connections.load() >= max_connections)
            {
                spdlog::debug("http: more than {} connections; closing a new one", max_connections);
                continue;  // sock closes here
            }
            asio::co_spawn(acceptor.get_executor(), serve(std::move(sock)), asio::detached);
        }
    }

    awaitable<void> serve(tcp::socket sock)
    {
        auto self = shared_from_this();
        ++connections;
        struct leave
        {
            std::atomic<int>& n;
            ~leave() { --n; }
        } guard{connections};
        error_code pec;
        auto peer = sock.remote_endpoint(pec);
        auto addr = peer.address();
        if (addr.is_v6() && addr.to_v6().is_v4_mapped())  // a dual-stack [::] listener
            addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
        bool from_loopback = !pec && addr.is_loopback();
        beast::tcp_stream stream(std::move(sock));
        beast::flat_buffer buffer;
        for (;;)
        {
            bhttp::request_parser<bhttp::string_body> parser;
            parser.header_limit(8 * 1024);
            parser.body_limit(4 * 1024);
            stream.expires_after(request_timeout);
            auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, use_nothrow);
            if (ec)
            {
                if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                    ec != beast::error::timeout && ec != asio::error::connection_reset)
                {
                    bhttp::response<bhttp::string_body> bad{bhttp::status::bad_request, 11};
                    bad.set(bhttp::field::content_type, "text/plain; charset=utf-8");
                    bad.body() = "bad request: " + ec.message() + "\n";
                    bad.keep_alive(false);
                    bad.prepare_payload();
                    co_await bhttp::async_write(stream, bad, use_nothrow);
                }
                break;
            }
            auto& req = parser.get();
            server_request r{std::string(req.method_string()), std::string(req.target()), from_loopback};
            server_reply reply = co_await handler(std::move(r));
            bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(reply.status), req.version()};
            res.set(bhttp::field::server, "tokenbouncer");
            res.set(bhttp::field::content_type, reply.content_type);
            res.set(bhttp::field::cache_control, "no-store");
            res.keep_alive(req.keep_alive());
            if (req.method() != bhttp::verb::head)
                res.body() = std::move(reply.body);
            res.prepare_payload();
            stream.expires_after(request_timeout);
            auto [wec, wn] = co_await bhttp::async_write(stream, res, use_nothrow);
            if (wec || !res.keep_alive())
                break;
        }
        error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
};

std::unique_ptr<server> server::open(asio::io_context& ctx, const std::string& addr, std::uint16_t port,
                                     request_handler handler, std::string& error)
{
    auto i = std::make_shared<impl>(ctx, std::move(handler));
    error_code ec;
    auto ip = asio::ip::make_address(addr, ec);
    if (ec)
    {
        error = "http_addr \"" + addr + "\" is not an IP address";
        return nullptr;
    }
    tcp::endpoint ep(ip, port);
    i->where = (ip.is_v6() ? "[" + addr + "]" : addr) + ":" + std::to_string(port);
    i->acceptor.open(ep.protocol(), ec);
    if (!ec)
        i->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec)
        i->acceptor.bind(ep, ec);
    if (!ec)
        i->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
    {
        error = "cannot listen for HTTP on " + i->where + ": " + ec.message() +
                " (set http_port to a free port, or 0 to turn the HTTP endpoint off)";
        return nullptr;
    }
    return std::unique_ptr<server>(new server(std::move(i)));
}

server::~server() { close(); }

void server::start() { asio::co_spawn(impl_->acceptor.get_executor(), impl_->accept_loop(), asio::detached); }

void server::close()
{
    error_code ignored;
    impl_->acceptor.close(ignored);
}

std::string server::describe() const { return "http://" + impl_->where; }

}  // namespace tokenbouncer::http
