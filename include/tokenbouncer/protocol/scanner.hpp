#pragma once
// Finds message boundaries in a stream of typed messages that arrives in arbitrary pieces, so the
// relay can forward bytes as they come and look only at the headers (and the few bodies) it needs.
//
// Flow:
//   The relay reads into its buffer, calls scan() on the bytes it holds, forwards the first
//   `consumed` bytes, keeps the rest (a partial header, or a message the handler wants whole) at
//   the front of its buffer and reads more after it.
//
// The body of a message the handler does not need to see is skipped, even across reads, so a
// 1 GiB DataRow passes through a 64 KiB buffer.

#include <cstdint>
#include <string_view>

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"

namespace tokenbouncer::protocol {

enum class scan_action
{
    next,         // go on with the next message
    stop_before,  // stop; this message is not consumed
    stop_after,   // stop after this message (it is consumed)
};

struct scan_result
{
    std::size_t consumed = 0;  // bytes the caller may forward (and drop from its buffer)
    bool stopped = false;      // the handler asked to stop
    bool invalid = false;      // a length field is impossible; the stream cannot be followed
    char invalid_type = 0;
    std::uint32_t invalid_length = 0;
};

class message_scanner
{
public:
    explicit message_scanner(std::uint32_t max_length = max_message_length) noexcept : max_length_(max_length) {}

    // need(type, total) -> how many bytes of the message (from its type byte) the handler must see
    //                      at once: 5 for the header only, `total` for all of it.
    // handler(type, total, bytes) -> scan_action, where bytes holds at least min(need, total) bytes
    //                      of the message, starting at its type byte.
    // capacity: the caller's buffer size. A message that needs more than that is shown header-only.
    template <class Need, class Handler>
    scan_result scan(std::string_view buf, std::size_t capacity, Need&& need, Handler&& handler)
    {
        scan_result res;
        std::size_t pos = 0;
        // The rest of a body that started in an earlier piece.
        if (remaining_ > 0)
        {
            std::size_t skip = remaining_ < buf.size() ? static_cast<std::size_t>(remaining_) : buf.size();
            pos += skip;
            remaining_ -= skip;
        }
        while (pos < buf.size())
        {
            std::size_t avail = buf.size() - pos;
            if (avail < 5)
                break;  // partial header: keep it for the next read
            char type = buf[pos];
            std::uint32_t length = load_be32(buf.data() + pos + 1);
            if (length < 4 || length > max_length_)
            {
                res.invalid = true;
                res.invalid_type = type;
                res.invalid_length = length;
                break;
            }
            std::uint64_t total = std::uint64_t(length) + 1;
            std::size_t wanted = need(type, static_cast<std::uint32_t>(total));
            if (wanted > total)
                wanted = static_cast<std::size_t>(total);
            if (wanted > capacity)
                wanted = 5;
            if (avail < wanted)
                break;  // the handler needs more of it: keep it
            scan_action act = handler(type, static_cast<std::uint32_t>(total),
                                      buf.substr(pos, avail < total ? avail : static_cast<std::size_t>(total)));
            if (act == scan_action::stop_before)
            {
                res.stopped = true;
                break;
            }
            if (avail >= total)
            {
                pos += static_cast<std::size_t>(total);
            }
            else
            {
                remaining_ = total - avail;
                pos = buf.size();
            }
            if (act == scan_action::stop_after)
            {
                res.stopped = true;
                break;
            }
        }
        res.consumed = pos;
        return res;
    }

    // Bytes of the current message still to come (0 at a message boundary).
    std::uint64_t remaining() const noexcept { return remaining_; }
    bool at_boundary() const noexcept { return remaining_ == 0; }
    void reset() noexcept { remaining_ = 0; }

private:
    std::uint32_t max_length_;
    std::uint64_t remaining_ = 0;
};

}  // namespace tokenbouncer::protocol
