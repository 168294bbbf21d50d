#include "tokenbouncer/net/message_io.hpp"

namespace tokenbouncer::net {

awaitable<pg_result<protocol::message_view>> message_reader::next()
{
    start_ += consumed_;
    consumed_ = 0;
    for (;;)
    {
        std::string_view avail(buf_.data() + start_, buf_.size() - start_);
        auto f = protocol::frame_message(avail, max_length_);
        if (f.state == protocol::frame::status::invalid)
            co_return f.error;
        if (f.state == protocol::frame::status::complete)
        {
            consumed_ = f.total;
            co_return protocol::message_view{f.type, avail.substr(5, f.total - 5)};
        }
        // Need more: compact, then read.
        if (start_ > 0)
        {
            buf_.erase(0, start_);
            start_ = 0;
        }
        std::size_t want = f.total > buf_.size() ? f.total - buf_.size() : 0;
        std::size_t chunk = want > 16384 ? want : 16384;
        std::size_t old = buf_.size();
        buf_.resize(old + chunk);
        auto [ec, n] = co_await stream_.read_some(buf_.data() + old, chunk);
        buf_.resize(old + n);
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
    std::string out = buf_.substr(start_);
    buf_.clear();
    start_ = 0;
    return out;
}

}  // namespace tokenbouncer::net
