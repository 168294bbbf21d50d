#pragma once
// A small HTTP/1.1 client (Boost.Beast) for the token services: one request per connection,
// a timeout on the whole exchange, a bound on the reply size, HTTPS with certificate and host-name
// verification against the system trust store. No HTTP proxy is ever used (IMDS must not be
// reached through one, and the other endpoints do not need it).

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <boost/system/result.hpp>

#include "tokenbouncer/net/asio.hpp"

namespace tokenbouncer::http {

struct request
{
    std::string method = "GET";
    std::string url;  // http://host[:port]/path?query or https://...
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string content_type;
};

struct response
{
    unsigned status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lower-case names

    std::string header(const std::string& lower_name) const;
};

struct error
{
    std::string message;  // names the endpoint and what failed: DNS, connect, TLS, timeout, size
    bool timed_out = false;
};
[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

using result = boost::system::result<response, error>;

struct options
{
    bool allow_plain_http = false;    // else http:// is refused
    std::size_t max_body = 1 << 20;   // a token reply is a few KiB; Entra tokens with many groups ~16 KiB
    std::string ca_file;              // HTTPS trust anchors; empty: the system trust store
};

// Sends one request and reads the whole reply, within `timeout`.
// Parameters are taken by value: a coroutine must not hold references to its caller's temporaries
// (GCC 12 also mishandles temporaries bound to reference parameters in co_await expressions).
awaitable<result> fetch(request req, std::chrono::milliseconds timeout, options opts);

// application/x-www-form-urlencoded encoding of one value.
std::string form_encode(std::string_view value);
// Builds "a=1&b=2" with every value encoded.
std::string form(const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace tokenbouncer::http
