#include "tokenbouncer/net/stream.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <boost/asio/ssl/error.hpp>

#include "tokenbouncer/net/tls.hpp"

namespace tokenbouncer::net {

namespace {

bool is_ip_address(const std::string& host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

error_code ssl_error_code()
{
    unsigned long e = ERR_peek_error();
    return error_code(static_cast<int>(e ? e : 1), asio::error::get_ssl_category());
}

}  // namespace

stream::stream(socket_type sock) : sock_(std::move(sock)), protocol_(sock_.local_endpoint().protocol())
{
    // non_blocking (not only native_non_blocking): synchronous calls must return would_block, never wait.
    sock_.non_blocking(true);
}

stream::~stream()
{
    if (ssl_)
        SSL_free(ssl_);
}

std::size_t stream::tls_io(bool is_read, char* buf, std::size_t len, error_code& ec)
{
    ERR_clear_error();
    std::size_t n = 0;
    int ok = is_read ? SSL_read_ex(ssl_, buf, len, &n) : SSL_write_ex(ssl_, buf, len, &n);
    if (ok == 1)
    {
        ec = {};
        return n;
    }
    int err = SSL_get_error(ssl_, ok);
    switch (err)
    {
    case SSL_ERROR_WANT_READ:
        if (!is_read)
            tls_wants_read_for_write_ = true;
        ec = asio::error::would_block;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        if (is_read)
            tls_wants_write_for_read_ = true;
        ec = asio::error::would_block;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        ec = asio::error::eof;
        return 0;
    case SSL_ERROR_SYSCALL:
        // A socket error (an EOF without close_notify is ZERO_RETURN: SSL_OP_IGNORE_UNEXPECTED_EOF).
        ec = errno != 0 ? error_code(errno, boost::system::system_category()) : error_code(asio::error::eof);
        return 0;
    default:
        ec = ssl_error_code();
        return 0;
    }
}

std::size_t stream::read_now(char* buf, std::size_t len, error_code& ec)
{
    if (ssl_)
    {
        tls_wants_write_for_read_ = false;
        return tls_io(true, buf, len, ec);
    }
    std::size_t n = sock_.read_some(asio::buffer(buf, len), ec);
    return n;
}

std::size_t stream::write_now(const char* buf, std::size_t len, error_code& ec)
{
    if (ssl_)
    {
        tls_wants_read_for_write_ = false;
        return tls_io(false, const_cast<char*>(buf), len, ec);
    }
    return sock_.write_some(asio::buffer(buf, len), ec);
}

awaitable<error_code> stream::wait_readable()
{
    auto w = tls_wants_write_for_read_ ? socket_type::wait_write : socket_type::wait_read;
    auto [ec] = co_await sock_.async_wait(w, use_nothrow);
    co_return ec;
}

awaitable<error_code> stream::wait_writable()
{
    auto w = tls_wants_read_for_write_ ? socket_type::wait_read : socket_type::wait_write;
    auto [ec] = co_await sock_.async_wait(w, use_nothrow);
    co_return ec;
}

awaitable<std::pair<error_code, std::size_t>> stream::read_some(char* buf, std::size_t len)
{
    for (;;)
    {
        error_code ec;
        std::size_t n = read_now(buf, len, ec);
        if (ec != asio::error::would_block)
            co_return std::pair{ec, n};
        if (auto wec = co_await wait_readable())
            co_return std::pair{wec, std::size_t(0)};
    }
}

awaitable<error_code> stream::read_exactly(char* buf, std::size_t len)
{
    std::size_t done = 0;
    while (done < len)
    {
        auto [ec, n] = co_await read_some(buf + done, len - done);
        if (ec)
            co_return ec;
        done += n;
    }
    co_return error_code{};
}

awaitable<error_code> stream::write_all(std::string_view data)
{
    std::size_t done = 0;
    while (done < data.size())
    {
        error_code ec;
        std::size_t n = write_now(data.data() + done, data.size() - done, ec);
        if (ec == asio::error::would_block)
        {
            if (auto wec = co_await wait_writable())
                co_return wec;
            continue;
        }
        if (ec)
            co_return ec;
        done += n;
    }
    co_return error_code{};
}

awaitable<std::optional<std::string>> stream::tls_connect(SSL_CTX* ctx, std::string host, bool check_host_name)
{
    ERR_clear_error();
    ssl_ = SSL_new(ctx);
    if (!ssl_ || SSL_set_fd(ssl_, sock_.native_handle()) != 1)
        co_return "cannot create a TLS session: " + openssl_errors();
    bool ip = is_ip_address(host);
    if (!ip)
        SSL_set_tlsext_host_name(ssl_, host.c_str());
    if (check_host_name)
    {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) : SSL_set1_host(ssl_, host.c_str());
        if (ok != 1)
            co_return "cannot set the host name to verify: " + openssl_errors();
    }
    SSL_set_connect_state(ssl_);
    for (;;)
    {
        ERR_clear_error();
        int r = SSL_do_handshake(ssl_);
        if (r == 1)
            co_return std::nullopt;
        int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        {
            auto [ec] = co_await sock_.async_wait(
                err == SSL_ERROR_WANT_READ ? socket_type::wait_read : socket_type::wait_write, use_nothrow);
            if (ec)
                co_return "TLS handshake interrupted: " + ec.message();
            continue;
        }
        long verify = SSL_get_verify_result(ssl_);
        if (verify != X509_V_OK)
        {
            std::string why = X509_verify_cert_error_string(verify);
            if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
                why = "the server certificate is not valid for host name \"" + host + "\" (" + why + ")";
            else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                     verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                     verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                     verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT)
                why = "the server certificate is signed by an unknown certificate authority (" + why + ")";
            co_return "TLS certificate verification failed: " + why;
        }
        std::string details = openssl_errors();
        if (err == SSL_ERROR_SYSCALL && details.empty())
            co_return std::string("the server closed the connection during the TLS handshake");
        co_return "TLS handshake failed: " + (details.empty() ? std::string("error ") + std::to_string(err) : details);
    }
}

awaitable<std::optional<std::string>> stream::tls_accept(SSL_CTX* ctx)
{
    ERR_clear_error();
    ssl_ = SSL_new(ctx);
    if (!ssl_ || SSL_set_fd(ssl_, sock_.native_handle()) != 1)
        co_return "cannot create a TLS session: " + openssl_errors();
    SSL_set_accept_state(ssl_);
    for (;;)
    {
        ERR_clear_error();
        int r = SSL_do_handshake(ssl_);
        if (r == 1)
            co_return std::nullopt;
        int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        {
            auto [ec] = co_await sock_.async_wait(
                err == SSL_ERROR_WANT_READ ? socket_type::wait_read : socket_type::wait_write, use_nothrow);
            if (ec)
                co_return "TLS handshake interrupted: " + ec.message();
            continue;
        }
        std::string details = openssl_errors();
        co_return "TLS handshake with the client failed: " + (details.empty() ? std::string("connection closed") : details);
    }
}

void stream::rebind(const asio::any_io_executor& ex)
{
    if (sock_.get_executor() == ex)
        return;
    error_code ec;
    int fd = sock_.release(ec);
    sock_ = socket_type(ex);
    if (ec || fd < 0)
        return;
    sock_.assign(protocol_, fd, ec);
    if (ec)
    {
        ::close(fd);
        return;
    }
    sock_.non_blocking(true, ec);
}

void stream::cancel() noexcept
{
    error_code ec;
    sock_.cancel(ec);
}

void stream::close() noexcept
{
    error_code ec;
    if (ssl_ && sock_.is_open())
    {
        // Best effort close_notify; never waits.
        ERR_clear_error();
        SSL_set_quiet_shutdown(ssl_, 0);
        SSL_shutdown(ssl_);
        ERR_clear_error();
    }
    sock_.shutdown(socket_type::shutdown_both, ec);
    sock_.close(ec);
}

bool stream::peer_closed_or_sent_data() noexcept
{
    if (has_pending_input())
        return true;
    char c;
    ssize_t n = ::recv(sock_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;  // orderly shutdown
    if (n > 0)
        return true;  // unsolicited bytes (a FATAL error, a NOTICE, ...)
    return errno != EAGAIN && errno != EWOULDBLOCK;
}

}  // namespace tokenbouncer::net
