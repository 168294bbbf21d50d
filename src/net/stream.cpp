#include "tokenbouncer/net/stream.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ssl/error.hpp>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>

#include "tokenbouncer/net/tls.hpp"

namespace tokenbouncer::net {

namespace {

// One TLS record is at most 16 KiB plus overhead; room for a few.
constexpr std::size_t tls_input_size = 64 * 1024;

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

// The BIO OpenSSL reads from and writes to: reads come from the stream's input buffer, writes go
// straight to the socket (non-blocking send).
struct stream::bio_access
{
    static int read(BIO* b, char* out, std::size_t len, std::size_t* done)
    {
        auto* s = static_cast<stream*>(BIO_get_data(b));
        BIO_clear_retry_flags(b);
        std::size_t avail = s->in_end_ - s->in_begin_;
        if (avail == 0)
        {
            if (s->in_eof_)
                return 0;  // end of stream
            BIO_set_retry_read(b);
            return 0;
        }
        std::size_t n = std::min(avail, len);
        std::memcpy(out, s->in_.get() + s->in_begin_, n);
        s->in_begin_ += n;
        *done = n;
        return 1;
    }

    static int write(BIO* b, const char* in, std::size_t len, std::size_t* done)
    {
        auto* s = static_cast<stream*>(BIO_get_data(b));
        BIO_clear_retry_flags(b);
        ssize_t n = ::send(s->sock_.native_handle(), in, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
        {
            *done = static_cast<std::size_t>(n);
            return 1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            BIO_set_retry_write(b);
        return 0;
    }

    static long ctrl(BIO*, int cmd, long, void*)
    {
        return cmd == BIO_CTRL_FLUSH ? 1 : 0;
    }

    static int create(BIO* b)
    {
        BIO_set_init(b, 1);
        return 1;
    }

    static BIO_METHOD* method()
    {
        static BIO_METHOD* m = [] {
            BIO_METHOD* bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tokenbouncer stream");
            BIO_meth_set_read_ex(bm, &read);
            BIO_meth_set_write_ex(bm, &write);
            BIO_meth_set_ctrl(bm, &ctrl);
            BIO_meth_set_create(bm, &create);
            return bm;
        }();
        return m;
    }
};

stream::stream(socket_type sock) : sock_(std::move(sock)), protocol_(sock_.local_endpoint().protocol())
{
    // non_blocking (not only native_non_blocking): synchronous calls must return would_block, never wait.
    sock_.non_blocking(true);
}

stream::stream(socket_type sock, asio::generic::stream_protocol protocol)
    : sock_(std::move(sock)), protocol_(protocol)
{
    sock_.non_blocking(true);
}

stream::~stream()
{
    if (ssl_)
        SSL_free(ssl_);
}

// --- reading --------------------------------------------------------------------------------------

bool stream::has_pending_input() const noexcept
{
    return ssl_ && (SSL_pending(ssl_) > 0 || in_end_ > in_begin_);
}

std::size_t stream::tls_io(bool is_read, char* buf, std::size_t len, error_code& ec, tls_step& step)
{
    // SSL_get_error needs an empty error queue; peeking is cheaper than clearing every time.
    if (ERR_peek_error() != 0)
        ERR_clear_error();
    std::size_t n = 0;
    int ok = is_read ? SSL_read_ex(ssl_, buf, len, &n) : SSL_write_ex(ssl_, buf, len, &n);
    if (ok == 1)
    {
        ec = {};
        step = tls_step::done;
        return n;
    }
    int err = SSL_get_error(ssl_, ok);
    switch (err)
    {
    case SSL_ERROR_WANT_READ:
        step = tls_step::want_read;
        ec = asio::error::would_block;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        step = tls_step::want_write;
        ec = asio::error::would_block;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        step = tls_step::failed;
        ec = asio::error::eof;
        return 0;
    case SSL_ERROR_SYSCALL:
        step = tls_step::failed;
        ec = errno != 0 ? error_code(errno, boost::system::system_category()) : error_code(asio::error::eof);
        return 0;
    default:
        step = tls_step::failed;
        ec = ssl_error_code();
        return 0;
    }
}

awaitable<error_code> stream::fill_tls_input()
{
    if (!in_)
        in_ = std::make_unique_for_overwrite<char[]>(tls_input_size);
    if (in_begin_ > 0)
    {
        std::memmove(in_.get(), in_.get() + in_begin_, in_end_ - in_begin_);
        in_end_ -= in_begin_;
        in_begin_ = 0;
    }
    auto [ec, n] =
        co_await sock_.async_read_some(asio::buffer(in_.get() + in_end_, tls_input_size - in_end_), use_nothrow);
    if (ec == asio::error::eof)
    {
        in_eof_ = true;  // OpenSSL sees the end of stream next
        co_return error_code{};
    }
    in_end_ += n;
    co_return ec;
}

awaitable<std::pair<error_code, std::size_t>> stream::read_some(char* buf, std::size_t len)
{
    if (!ssl_)
    {
        auto [ec, n] = co_await sock_.async_read_some(asio::buffer(buf, len), use_nothrow);
        co_return std::pair{ec, n};
    }
    // Nothing buffered, here or inside OpenSSL: wait for bytes before asking OpenSSL for a record
    // (an SSL_read that can only fail costs about a thousand instructions).
    if (!in_eof_ && in_end_ == in_begin_ && SSL_has_pending(ssl_) == 0)
    {
        if (auto fec = co_await fill_tls_input())
            co_return std::pair{fec, std::size_t(0)};
    }
    for (;;)
    {
        error_code ec;
        tls_step step;
        std::size_t n = tls_io(true, buf, len, ec, step);
        if (step == tls_step::want_read)
        {
            if (in_eof_)
                co_return std::pair{error_code(asio::error::eof), std::size_t(0)};
            if (auto fec = co_await fill_tls_input())
                co_return std::pair{fec, std::size_t(0)};
            continue;
        }
        if (step == tls_step::want_write)
        {
            auto [wec] = co_await sock_.async_wait(socket_type::wait_write, use_nothrow);
            if (wec)
                co_return std::pair{wec, std::size_t(0)};
            continue;
        }
        co_return std::pair{ec, n};
    }
}

std::size_t stream::read_now(char* buf, std::size_t len, error_code& ec)
{
    if (!ssl_)
        return sock_.read_some(asio::buffer(buf, len), ec);
    tls_step step;
    std::size_t n = tls_io(true, buf, len, ec, step);
    if (step == tls_step::want_read && in_eof_)
        ec = asio::error::eof;
    return n;
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

// --- writing --------------------------------------------------------------------------------------

std::size_t stream::write_some_now(std::string_view data, error_code& ec, tls_step& step)
{
    step = tls_step::done;
    if (!ssl_)
        return sock_.write_some(asio::buffer(data.data(), data.size()), ec);
    return tls_io(false, const_cast<char*>(data.data()), data.size(), ec, step);
}

std::size_t stream::write_now(const char* buf, std::size_t len, error_code& ec)
{
    tls_step step;
    return write_some_now(std::string_view(buf, len), ec, step);
}

bool stream::write_available(std::string_view& data, error_code& ec, tls_step& step)
{
    while (!data.empty())
    {
        std::size_t n = write_some_now(data, ec, step);
        if (ec == asio::error::would_block)
        {
            ec = {};
            return false;
        }
        if (ec)
            return false;
        data.remove_prefix(n);
    }
    return true;
}

bool stream::write_all_now(std::string_view& data, error_code& ec)
{
    tls_step step;
    return write_available(data, ec, step);
}

awaitable<error_code> stream::write_all(std::string_view data)
{
    for (;;)
    {
        error_code ec;
        tls_step step;
        if (write_available(data, ec, step))
            co_return error_code{};
        if (ec)
            co_return ec;
        if (step == tls_step::want_read)
        {
            // A TLS write that needs input first (renegotiation, key update).
            if (auto fec = co_await fill_tls_input())
                co_return fec;
            continue;
        }
        auto [wec] = co_await sock_.async_wait(socket_type::wait_write, use_nothrow);
        if (wec)
            co_return wec;
    }
}

// --- TLS ------------------------------------------------------------------------------------------

awaitable<std::optional<std::string>> stream::tls_handshake()
{
    for (;;)
    {
        ERR_clear_error();
        int r = SSL_do_handshake(ssl_);
        if (r == 1)
            co_return std::nullopt;
        int err = SSL_get_error(ssl_, r);
        if (err == SSL_ERROR_WANT_READ)
        {
            if (in_eof_)
                co_return std::string("the connection was closed during the TLS handshake");
            if (auto ec = co_await fill_tls_input())
                co_return "TLS handshake interrupted: " + ec.message();
            continue;
        }
        if (err == SSL_ERROR_WANT_WRITE)
        {
            auto [ec] = co_await sock_.async_wait(socket_type::wait_write, use_nothrow);
            if (ec)
                co_return "TLS handshake interrupted: " + ec.message();
            continue;
        }
        co_return std::string();  // failed: the caller explains why
    }
}

awaitable<std::optional<std::string>> stream::tls_connect(SSL_CTX* ctx, std::string host, bool check_host_name)
{
    ERR_clear_error();
    ssl_ = SSL_new(ctx);
    if (!ssl_)
        co_return "cannot create a TLS session: " + openssl_errors();
    BIO* bio = BIO_new(bio_access::method());
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio);
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
    auto failure = co_await tls_handshake();
    if (!failure || !failure->empty())
        co_return failure;
    long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK)
    {
        std::string why = X509_verify_cert_error_string(verify);
        if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
            why = "the server certificate is not valid for host name \"" + host + "\" (" + why + ")";
        else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                 verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN || verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                 verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT)
            why = "the server certificate is signed by an unknown certificate authority (" + why + ")";
        co_return "TLS certificate verification failed: " + why;
    }
    std::string details = openssl_errors();
    co_return "TLS handshake failed: " + (details.empty() ? std::string("the server closed the connection") : details);
}

awaitable<std::optional<std::string>> stream::tls_accept(SSL_CTX* ctx)
{
    ERR_clear_error();
    ssl_ = SSL_new(ctx);
    if (!ssl_)
        co_return "cannot create a TLS session: " + openssl_errors();
    BIO* bio = BIO_new(bio_access::method());
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_accept_state(ssl_);
    auto failure = co_await tls_handshake();
    if (!failure || !failure->empty())
        co_return failure;
    std::string details = openssl_errors();
    co_return "TLS handshake with the client failed: " + (details.empty() ? std::string("connection closed") : details);
}

// --- socket ---------------------------------------------------------------------------------------

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
        SSL_shutdown(ssl_);
        ERR_clear_error();
    }
    sock_.close(ec);  // no shutdown(2) first: close is enough, and a syscall less
}

bool stream::peer_closed_or_sent_data() noexcept
{
    if (has_pending_input() || in_eof_)
        return true;
    char c;
    ssize_t n = ::recv(sock_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0)
        return true;  // 0: orderly shutdown; > 0: unsolicited bytes (a FATAL error, a NOTICE, ...)
    return errno != EAGAIN && errno != EWOULDBLOCK;
}

}  // namespace tokenbouncer::net
