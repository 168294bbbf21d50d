#pragma once
// Reads whole typed messages from a stream, for the phases that look at every message (login,
// tokenbouncer's own queries). The relay does not use this: it forwards bytes and scans headers.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "tokenbouncer/net/stream.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/util/pg_error.hpp"

namespace tokenbouncer::net {

class message_reader
{
public:
    message_reader(stream& s, std::uint32_t max_length) : stream_(s), max_length_(max_length) {}

    // The next whole message; its view stays valid until the next call. Errors: 08006 when the
    // peer goes away, 08P01 when a length is impossible.
    awaitable<pg_result<protocol::message_view>> next();

    // Bytes already read from the stream by someone else, to be parsed first.
    void feed(std::string_view bytes);

    // Bytes read past the last message returned (the relay takes them over).
    std::string take_leftover();

private:
    // Room for n more bytes after the last one held; the bytes already read are kept.
    void make_room(std::size_t n);

    stream& stream_;
    std::uint32_t max_length_;
    // Not a std::string: growing one zeroes the new bytes, 16 KiB for every read of a short answer.
    std::unique_ptr<char[]> buf_;
    std::size_t capacity_ = 0;
    std::size_t size_ = 0;      // bytes held in buf_
    std::size_t start_ = 0;     // first unread byte in buf_
    std::size_t consumed_ = 0;  // length of the message last returned
};

}  // namespace tokenbouncer::net
