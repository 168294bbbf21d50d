#include "tokenbouncer/http/client.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <openssl/x509v3.h>

#include <cctype>
#include <stdexcept>

namespace tokenbouncer::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

void throw_exception_from_error(const error& e, const boost::source_location&)
{
    throw std::runtime_error(e.message);
}

std::string response::header(const std::string& lower_name) const
{
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
}

std::string form_encode(std::string_view value)
{
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : value)
    {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            out.push_back(static_cast<char>(c));
        else
        {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0xf]);
        }
    }
    return out;
}

std::string form(const std::vector<std::pair<std::string, std::string>>& fields)
{
    std::string out;
    for (const auto& [k, v] : fields)
    {
        if (!out.empty())
            out.push_back('&');
        out += form_encode(k) + "=" + form_encode(v);
    }
    return out;
}

namespace {

struct target
{
    bool https = false;
    std::string host;
    std::string port;
    std::string path_and_query;
};

template <class Stream>
awaitable<result> exchange(Stream& stream, const request& req, const target& t, const options& opts)
{
    bhttp::request<bhttp::string_body> msg;
    msg.method(bhttp::string_to_verb(req.method));
    msg.target(t.path_and_query);
    msg.version(11);
    std::string host_header = t.host;
    if ((t.https && t.port != "443") || (!t.https && t.port != "80"))
        host_header += ":" + t.port;
    msg.set(bhttp::field::host, host_header);
    msg.set(bhttp::field::user_agent, "tokenbouncer/" TOKENBOUNCER_VERSION);
    msg.set(bhttp::field::connection, "close");
    for (const auto& [k, v] : req.headers)
        msg.set(k, v);
    if (!req.body.empty() || req.method == "POST")
    {
        if (!req.content_type.empty())
            msg.set(bhttp::field::content_type, req.content_type);
        msg.body() = req.body;
        msg.prepare_payload();
    }
    std::string where = req.method + " " + (t.https ? "https://" : "http://") + host_header;
    {
        auto [ec, n] = co_await bhttp::async_write(stream, msg, use_nothrow);
        if (ec)
            co_return error{where + ": sending the request failed: " + ec.message()};
    }
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(opts.max_body);
    parser.header_limit(64 * 1024);
    auto [ec, n] = co_await bhttp::async_read(stream, buf, parser, use_nothrow);
    if (ec)
    {
        if (ec == bhttp::error::body_limit)
            co_return error{where + ": the reply is larger than " + std::to_string(opts.max_body) + " bytes"};
        if (ec == beast::error::timeout)
            co_return error{where + ": no reply", true};
        co_return error{where + ": reading the reply failed: " + ec.message()};
    }
    response out;
    auto& res = parser.get();
    out.status = res.result_int();
    out.body = std::move(res.body());
    for (const auto& f : res)
    {
        std::string name(f.name_string());
        for (auto& c : name)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.headers[name] = std::string(f.value());
    }
    co_return out;
}

// "localhost" or a loopback address; a name that merely starts with "127." (127.0.0.1.example.com)
// is not one.
bool is_loopback_host(const std::string& host)
{
    if (host == "localhost")
        return true;
    std::string h = host.size() > 2 && host.front() == '[' && host.back() == ']' ? host.substr(1, host.size() - 2) : host;
    error_code ec;
    auto addr = asio::ip::make_address(h, ec);
    return !ec && addr.is_loopback();
}

awaitable<result> fetch_inner(const request& req, std::chrono::milliseconds timeout, const options& opts)
{
    auto parsed = boost::urls::parse_uri(req.url);
    if (!parsed)
        co_return error{"invalid URL \"" + req.url + "\""};
    target t;
    std::string scheme(parsed->scheme());
    if (scheme != "http" && scheme != "https")
        co_return error{"unsupported URL scheme in \"" + req.url + "\""};
    t.https = scheme == "https";
    t.host = std::string(parsed->encoded_host());
    if (!t.host.empty() && t.host.front() == '[')
        t.host = t.host.substr(1, t.host.size() - 2);
    t.port = parsed->has_port() ? std::string(parsed->port()) : (t.https ? "443" : "80");
    t.path_and_query = std::string(parsed->encoded_path());
    // After an authority the path is empty or starts with '/' (RFC 3986 path-abempty). Boost.URL
    // 1.81 parses "http://127.0.0.1.example.com/t" as host 127.0.0.1 and path ".example.com/t":
    // such a URL would reach another host than it names.
    if (!t.path_and_query.empty() && t.path_and_query.front() != '/')
        co_return error{"invalid URL \"" + req.url + "\""};
    if (t.path_and_query.empty())
        t.path_and_query = "/";
    if (parsed->has_query())
        t.path_and_query += "?" + std::string(parsed->encoded_query());
    if (!t.https && !opts.allow_plain_http && !is_loopback_host(t.host))
        co_return error{"refusing plain http:// to \"" + t.host + "\": use https://"};

    auto ex = co_await asio::this_coro::executor;
    tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(t.host, t.port, use_nothrow);
    std::string where = (t.https ? "https://" : "http://") + t.host + ":" + t.port;
    if (rec)
        co_return error{where + ": could not resolve host name: " + rec.message()};

    if (!t.https)
    {
        beast::tcp_stream stream(ex);
        stream.expires_after(timeout);
        auto [cec, ep] = co_await stream.async_connect(endpoints, use_nothrow);
        if (cec)
            co_return error{where + ": connect failed: " + cec.message(), cec == beast::error::timeout};
        co_return co_await exchange(stream, req, t, opts);
    }

    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    error_code cec;
    if (opts.ca_file.empty())
        ctx.set_default_verify_paths(cec);
    else
        ctx.load_verify_file(opts.ca_file, cec);
    if (cec)
        co_return error{"cannot load CA certificates: " + cec.message()};
    ctx.set_verify_mode(asio::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(ex, ctx);
    SSL_set_tlsext_host_name(stream.native_handle(), t.host.c_str());
    X509_VERIFY_PARAM* param = SSL_get0_param(stream.native_handle());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(param, t.host.c_str(), 0);
    beast::get_lowest_layer(stream).expires_after(timeout);
    auto [connect_ec, ep] = co_await beast::get_lowest_layer(stream).async_connect(endpoints, use_nothrow);
    if (connect_ec)
        co_return error{where + ": connect failed: " + connect_ec.message(), connect_ec == beast::error::timeout};
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, use_nothrow);
    if (hec)
    {
        long verify = SSL_get_verify_result(stream.native_handle());
        std::string why = verify != X509_V_OK ? std::string("certificate verification failed: ") +
                                                    X509_verify_cert_error_string(verify)
                                              : hec.message();
        co_return error{where + ": TLS handshake failed: " + why, hec == beast::error::timeout};
    }
    co_return co_await exchange(stream, req, t, opts);
}

}  // namespace

awaitable<result> fetch(request req, std::chrono::milliseconds timeout, options opts)
{
    // The stream timeouts cover connect, TLS and the exchange; this one also covers DNS.
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex, timeout + std::chrono::milliseconds(50));
    auto r = co_await (fetch_inner(req, timeout, opts) || timer.async_wait(use_awaitable));
    if (r.index() == 1)
        co_return error{req.method + " " + req.url.substr(0, req.url.find('?')) + ": no reply within " +
                            std::to_string(timeout.count()) + " ms",
                        true};
    co_return std::move(std::get<0>(r));
}

}  // namespace tokenbouncer::http
