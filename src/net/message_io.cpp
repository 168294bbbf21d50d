#include "tokenbouncer/net/message_io.hpp"

#include <algorithm>
#include <cstring>

namespace tokenbouncer::net {

void message_reader::make_room(std::size_t n)
{
    if (start_ > 0)
    {
        std::memmove(buf_.get(), buf_.get() + start_, size_ - start_);
        size_ -= start_;
        start_ = 0;
    }
    if (capacity_ - size_ >= n)
        return;
    std::size_t want = std::max(size_ + n, capacity_ * 2);
    auto bigger = std::make_unique_for_overwrite<char[]>(want);
    if (size_ > 0)
        std::memcpy(bigger.get(), buf_.get(), size_);
    buf_ = std::move(bigger);
    capacity_ = want;
}

void message_reader::feed(std::string_view bytes)
{
    if (bytes.empty())
        return;  // (and no memcpy to a buffer not yet allocated)
    make_room(bytes.size());
    std::memcpy(buf_.get() + size_, bytes.data(), bytes.size());
    size_ += bytes.size();
}

awaitable<pg_result<protocol::message_view>> message_reader::next()
{
    start_ += consumed_;
    consumed_ = 0;
    for (;;)
    {
        std::string_view avail(buf_.get() + start_, size_ - start_);
        auto f = protocol::frame_message(avail, max_length_);
        if (f.state == protocol::frame::status::invalid)
            co_return f.error;
        if (f.state == protocol::frame::status::complete)
        {
            consumed_ = f.total;
            co_return protocol::message_view{f.type, avail.substr(5, f.total - 5)};
        }
        // Need more: compact, then read.
        std::size_t held = size_ - start_;
        std::size_t want = f.total > held ? f.total - held : 0;
        std::size_t chunk = want > 16384 ? want : 16384;
        make_room(chunk);
        auto [ec, n] = co_await stream_.read_some(buf_.get() + size_, chunk);
        size_ += n;
        if (ec)
        {
            std::string why = ec == asio::error::eof ? std::string("the connection was closed") : ec.message();
            co_return pg_error::fatal(sqlstate::connection_failure, why);
        }
    }
}

std::string message_reader::take_leftover()
{
    start_ += consumed_;
    consumed_ = 0;
    std::string out = size_ > start_ ? std::string(buf_.get() + start_, size_ - start_) : std::string();
    size_ = 0;
    start_ = 0;
    return out;
}

}  // namespace tokenbouncer::net
