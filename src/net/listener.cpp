#include "tokenbouncer/net/listener.hpp"

#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace tokenbouncer::net {

namespace {

std::string listen_host(const std::string& address)
{
    return address == "*" ? "0.0.0.0" : address == "localhost" ? "127.0.0.1" : address;
}

}  // namespace

bool listener::probe_tcp(const std::string& address, std::uint16_t port, std::string& error)
{
    using tcp = asio::ip::tcp;
    asio::io_context ctx;
    error_code ec;
    auto ip = asio::ip::make_address(listen_host(address), ec);
    if (ec)
    {
        error = "listen_addr \"" + address + "\" is not an IP address";
        return false;
    }
    tcp::acceptor probe(ctx);
    tcp::endpoint ep(ip, port);
    probe.open(ep.protocol(), ec);
    if (!ec)
        probe.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec)
        probe.bind(ep, ec);
    if (ec)
    {
        error = "cannot listen on " + listen_host(address) + ":" + std::to_string(port) + ": " + ec.message();
        return false;
    }
    return true;
}

std::unique_ptr<listener> listener::open_tcp(asio::io_context& ctx, const std::string& address, std::uint16_t port,
                                             bool reuse_port, std::string& error, int defer_accept_seconds)
{
    using tcp = asio::ip::tcp;
    auto l = std::unique_ptr<listener>(new listener);
    error_code ec;
    std::string host = listen_host(address);
    auto ip = asio::ip::make_address(host, ec);
    if (ec)
    {
        error = "listen_addr \"" + address + "\" is not an IP address";
        return nullptr;
    }
    tcp::endpoint ep(ip, port);
    l->tcp_.emplace(ctx);
    l->tcp_->open(ep.protocol(), ec);
    if (!ec)
        l->tcp_->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec && reuse_port)
    {
        int one = 1;
        if (::setsockopt(l->tcp_->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
            ec = error_code(errno, boost::system::system_category());
    }
    if (!ec)
        l->tcp_->bind(ep, ec);
    if (!ec)
    {
        // Wake up accept only when the client has sent its first packet (as PgBouncer does): a
        // connection that sends nothing costs nothing, and the first read finds its data. Not
        // longer than the login timeout: after it the kernel hands the silent connection over
        // and the session closes it (otherwise it would stay open, to its client, for 45 s+).
        int seconds = std::clamp(defer_accept_seconds, 1, 45);
        ::setsockopt(l->tcp_->native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds);
    }
    if (!ec)
        l->tcp_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
    {
        error = "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message();
        return nullptr;
    }
    l->loopback_ = ip.is_loopback();
    l->protocol_ = asio::generic::stream_protocol(ep.protocol().family(), IPPROTO_TCP);
    l->description_ = host + ":" + std::to_string(port);
    return l;
}

std::unique_ptr<listener> listener::open_unix(asio::io_context& ctx, const std::string& path, int mode,
                                              const std::string& group, std::string& error)
{
    using local = asio::local::stream_protocol;
    auto l = std::unique_ptr<listener>(new listener);
    error_code ec;
    // A socket file left by a crashed process: replace it, unless something still answers there.
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0)
    {
        if (!S_ISSOCK(st.st_mode))
        {
            error = path + " exists and is not a socket";
            return nullptr;
        }
        local::socket probe(ctx);
        probe.connect(local::endpoint(path), ec);
        if (!ec)
        {
            error = "another process is listening on " + path;
            return nullptr;
        }
        ::unlink(path.c_str());
        ec.clear();
    }
    l->unix_.emplace(ctx);
    l->unix_->open(local(), ec);
    if (!ec)
        l->unix_->bind(local::endpoint(path), ec);
    if (!ec)
        l->unix_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
    {
        error = "cannot listen on Unix socket " + path + ": " + ec.message();
        return nullptr;
    }
    l->path_ = path;
    l->protocol_ = asio::generic::stream_protocol(AF_UNIX, 0);
    if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0)
    {
        error = "cannot set the mode of " + path + ": " + std::string(strerror(errno));
        return nullptr;
    }
    if (!group.empty())
    {
        struct group* g = ::getgrnam(group.c_str());
        if (!g || ::chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0)
        {
            error = "cannot give " + path + " to group \"" + group + "\"" + (g ? ": " + std::string(strerror(errno)) : ": no such group");
            return nullptr;
        }
    }
    l->description_ = path;
    return l;
}

listener::~listener() { close(); }

awaitable<std::pair<error_code, socket_type>> listener::accept(asio::io_context& target)
{
    if (tcp_)
    {
        auto [ec, sock] = co_await tcp_->async_accept(target, use_nothrow);
        if (!ec)
        {
            error_code ignored;
            sock.set_option(asio::ip::tcp::no_delay(true), ignored);
        }
        co_return std::pair<error_code, socket_type>{ec, socket_type(std::move(sock))};
    }
    auto [ec, sock] = co_await unix_->async_accept(target, use_nothrow);
    co_return std::pair<error_code, socket_type>{ec, socket_type(std::move(sock))};
}

void listener::close()
{
    error_code ec;
    if (tcp_ && tcp_->is_open())
        tcp_->close(ec);
    if (unix_ && unix_->is_open())
    {
        unix_->close(ec);
        if (!path_.empty())
            ::unlink(path_.c_str());
        path_.clear();
    }
}

}  // namespace tokenbouncer::net
