// Fuzz target: the HTTP response of a token service, parsed as http::fetch parses it
// (src/http/client.cpp): a Beast response_parser<string_body> with the client's limits, fed in
// the pieces a socket delivers, end of stream at the end; then the body as auth::azure reads it.
//
// Input: control byte (piece sizes), then the bytes the server sends.

#include "targets.hpp"
#include "token_checks.hpp"

#include "tokenbouncer/http/client.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <map>

namespace tokenbouncer::fuzz {

void http_response(std::string_view input)
{
    namespace bhttp = boost::beast::http;
    std::uint8_t control = control_byte(input);
    chunker pieces(input, control);

    // The client's limits (http::options' max_body, and its header limit).
    const std::size_t max_body = http::options{}.max_body;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(max_body);
    parser.header_limit(64 * 1024);
    parser.eager(true);  // what http::async_read sets

    // As Beast's read loop: read when the parser needs more, end of stream when the input ends.
    std::string buf;
    boost::system::error_code ec;
    bool need_more = true;
    while (!parser.is_done())
    {
        if (need_more || buf.empty())
        {
            if (pieces.done())
            {
                if (parser.got_some())
                    parser.put_eof(ec);
                else
                    ec = bhttp::error::end_of_stream;
                break;
            }
            buf.append(pieces.next());
        }
        ec = {};
        std::size_t used = parser.put(boost::asio::buffer(buf.data(), buf.size()), ec);
        TB_FUZZ_CHECK(used <= buf.size());
        buf.erase(0, used);
        need_more = ec == bhttp::error::need_more || (!ec && used == 0);
        if (need_more)
            continue;
        if (ec)
            break;
    }
    if (ec || !parser.is_done())
        return;

    // client.cpp's exchange(): status, body, lower-cased header names.
    auto& res = parser.get();
    unsigned status = res.result_int();
    TB_FUZZ_CHECK(status <= 999);
    std::string body = std::move(res.body());
    TB_FUZZ_CHECK(body.size() <= max_body);
    std::map<std::string, std::string> headers;
    for (const auto& f : res)
    {
        std::string name(f.name_string());
        for (auto& c : name)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        headers[name] = std::string(f.value());
    }
    check_token_body(body);
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::http_response)
