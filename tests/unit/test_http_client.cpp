// http/client.hpp: plain http:// is refused before any name is resolved or any connection is made,
// unless the host is loopback (tests) or the caller allows it (IMDS, IDENTITY_ENDPOINT).
// Nothing here leaves the machine: refused URLs never reach the resolver, and the loopback case
// connects to a closed port on 127.0.0.1.

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "tokenbouncer/http/client.hpp"

using namespace tokenbouncer;
using namespace std::chrono_literals;

namespace {

http::result fetch_now(const std::string& url, http::options opts = {})
{
    asio::io_context ioc;
    std::optional<http::result> out;
    http::request req;
    req.method = "POST";
    req.url = url;
    req.body = "grant_type=client_credentials";
    asio::co_spawn(
        ioc, [&]() -> awaitable<void> { out = co_await http::fetch(req, 2000ms, opts); }, asio::detached);
    ioc.run();
    REQUIRE(out.has_value());
    return std::move(*out);
}

// A port on 127.0.0.1 with nobody listening (bound, then closed).
unsigned short closed_port()
{
    asio::io_context ioc;
    asio::ip::tcp::acceptor a(ioc, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    auto port = a.local_endpoint().port();
    a.close();
    return port;
}

}  // namespace

TEST_CASE("http client: plain http:// to a host that is not loopback is refused, with no network",
          "[http][client]")
{
    struct
    {
        std::string url;
        std::string host;
    } cases[] = {
        {"http://login.microsoftonline.com/tid/oauth2/v2.0/token", "login.microsoftonline.com"},
        {"http://login.microsoftonline.com:80/tid/oauth2/v2.0/token?x=1", "login.microsoftonline.com"},
        {"http://10.1.2.3:8080/tid/oauth2/v2.0/token", "10.1.2.3"},
        {"http://169.254.169.254/metadata/identity/oauth2/token", "169.254.169.254"},
        // Names that only look like loopback.
        {"http://localhost.example.com/t", "localhost.example.com"},
        {"http://127.example.com/t", "127.example.com"},
    };
    for (const auto& c : cases)
    {
        INFO(c.url);
        auto started = std::chrono::steady_clock::now();
        auto r = fetch_now(c.url);
        REQUIRE(r.has_error());
        CHECK(r.error().message == "refusing plain http:// to \"" + c.host + "\": use https://");
        CHECK_FALSE(r.error().timed_out);
        CHECK(std::chrono::steady_clock::now() - started < 1s);  // refused up front, nothing resolved
    }
}

TEST_CASE("http client: a host name that begins with an IPv4 address is not cut to that address",
          "[http][client]")
{
    // Boost.URL reads "127.0.0.1.example.com" as host 127.0.0.1 and path ".example.com/t".
    for (const std::string url : {"http://127.0.0.1.example.com/t", "https://10.0.0.1.example.com/t",
                                  "https://127.0.0.1.example.com:8443/t"})
    {
        INFO(url);
        auto r = fetch_now(url);
        REQUIRE(r.has_error());
        CHECK(r.error().message == "invalid URL \"" + url + "\"");
    }
}

TEST_CASE("http client: plain http:// to loopback is not refused", "[http][client]")
{
    auto port = std::to_string(closed_port());
    SECTION("loopback hosts")
    {
        for (const std::string host : {"127.0.0.1", "127.0.0.2", "localhost"})
        {
            INFO(host);
            auto r = fetch_now("http://" + host + ":" + port + "/tid/oauth2/v2.0/token");
            REQUIRE(r.has_error());
            CHECK(r.error().message.find("refusing") == std::string::npos);
            CHECK(r.error().message.find("connect failed") != std::string::npos);
        }
    }
    SECTION("IPv6 loopback")
    {
        auto r = fetch_now("http://[::1]:" + port + "/t");
        REQUIRE(r.has_error());
        CHECK(r.error().message.find("refusing") == std::string::npos);
    }
}

TEST_CASE("http client: https:// is not subject to the plain-http check", "[http][client]")
{
    // A closed loopback port: the attempt fails at connect, after the scheme checks.
    auto r = fetch_now("https://127.0.0.1:" + std::to_string(closed_port()) + "/t");
    REQUIRE(r.has_error());
    CHECK(r.error().message.find("refusing") == std::string::npos);
    CHECK(r.error().message.find("connect failed") != std::string::npos);
}
