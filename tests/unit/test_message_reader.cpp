// net/message_io.hpp: whole messages out of a byte stream however the bytes arrive (split headers,
// several messages per read, a message bigger than the first buffer), over a local socket pair.

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <string>
#include <vector>

#include "test_helpers.hpp"
#include "tokenbouncer/net/message_io.hpp"

using namespace tokenbouncer;
using tb_test::cstrs;
using tb_test::typed_raw;

namespace {

struct received
{
    char type;
    std::string body;
};

// Sends `chunks` one write at a time into one end of a socket pair, closes it, and reads `want`
// messages from the other end with a message_reader that was first fed `fed`.
std::vector<received> read_messages(const std::vector<std::string>& chunks, std::size_t want,
                                    const std::string& fed = "", std::string* leftover = nullptr,
                                    std::string* error = nullptr)
{
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    asio::io_context ioc;
    asio::generic::stream_protocol proto(AF_UNIX, 0);
    net::socket_type a(ioc, proto, fds[0]);
    net::socket_type b(ioc, proto, fds[1]);
    net::stream writer(std::move(a), proto);
    net::stream reader_stream(std::move(b), proto);
    std::vector<received> out;
    error_code write_error;
    asio::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
            // No co_await inside a Catch macro: its expansion may hold the expression twice.
            for (const auto& c : chunks)
                if ((write_error = co_await writer.write_all(c)))
                    break;
            writer.close();
        },
        asio::detached);
    asio::co_spawn(
        ioc,
        [&]() -> awaitable<void> {
            net::message_reader r(reader_stream, 1 << 20);
            r.feed("");  // nothing to feed: the admin console does this (UBSan caught a memcpy to null)
            r.feed(fed);
            while (out.size() < want)
            {
                auto m = co_await r.next();
                if (!m)
                {
                    if (error)
                        *error = m.error().message;
                    co_return;
                }
                out.push_back({m->type, std::string(m->body)});
            }
            if (leftover)
                *leftover = r.take_leftover();
        },
        asio::detached);
    ioc.run();
    CHECK_FALSE(write_error);
    return out;
}

}  // namespace

TEST_CASE("message_reader: messages split across reads and packed into one", "[message_reader]")
{
    std::string m1 = typed_raw('C', std::string("SELECT 1\0", 9));
    std::string m2 = typed_raw('Z', "I");
    std::string m3 = typed_raw('S', cstrs({"TimeZone", "UTC"}));
    std::string all = m1 + m2 + m3;
    SECTION("one byte at a time")
    {
        std::vector<std::string> chunks;
        for (char c : all)
            chunks.emplace_back(1, c);
        auto got = read_messages(chunks, 3);
        REQUIRE(got.size() == 3);
        CHECK(got[0].type == 'C');
        CHECK(got[0].body == std::string("SELECT 1\0", 9));
        CHECK(got[1].type == 'Z');
        CHECK(got[1].body == "I");
        CHECK(got[2].body == cstrs({"TimeZone", "UTC"}));
    }
    SECTION("all in one write, the rest left over")
    {
        std::string leftover;
        auto got = read_messages({all + "xyz"}, 2, "", &leftover);
        REQUIRE(got.size() == 2);
        CHECK(got[1].type == 'Z');
        CHECK(leftover == m3 + "xyz");
    }
    SECTION("nothing read, nothing left over")
    {
        std::string leftover = "x";
        auto got = read_messages({}, 0, "", &leftover);
        CHECK(got.empty());
        CHECK(leftover.empty());
    }
    SECTION("bytes fed before reading come first")
    {
        auto got = read_messages({m2.substr(3), m3}, 3, m1 + m2.substr(0, 3));
        REQUIRE(got.size() == 3);
        CHECK(got[0].type == 'C');
        CHECK(got[1].body == "I");
        CHECK(got[2].type == 'S');
    }
}

TEST_CASE("message_reader: a message bigger than the first buffer, between small ones", "[message_reader]")
{
    std::string big_body(100000, 'x');
    for (std::size_t i = 0; i < big_body.size(); i += 97)
        big_body[i] = static_cast<char>('a' + i % 26);  // a pattern, so a misplaced copy shows
    std::string all = typed_raw('Z', "I") + typed_raw('D', big_body) + typed_raw('Z', "T");
    std::vector<std::string> chunks;
    for (std::size_t i = 0; i < all.size(); i += 7000)
        chunks.push_back(all.substr(i, 7000));
    auto got = read_messages(chunks, 3);
    REQUIRE(got.size() == 3);
    CHECK(got[0].body == "I");
    CHECK(got[1].type == 'D');
    CHECK(got[1].body == big_body);
    CHECK(got[2].body == "T");
}

TEST_CASE("message_reader: the peer closing mid-message is an error, not a hang", "[message_reader]")
{
    std::string m = typed_raw('C', std::string("SELECT 1\0", 9));
    std::string error;
    auto got = read_messages({m, m.substr(0, 6)}, 2, "", nullptr, &error);
    CHECK(got.size() == 1);
    CHECK(error == "the connection was closed");
}
