#include "tokenbouncer/protocol/bytes.hpp"

#include <cstring>

namespace tokenbouncer::protocol {

std::optional<std::uint8_t> reader::u8()
{
    if (remaining() < 1)
        return std::nullopt;
    return static_cast<std::uint8_t>(data_[pos_++]);
}

std::optional<std::uint16_t> reader::u16()
{
    if (remaining() < 2)
        return std::nullopt;
    auto v = load_be16(data_.data() + pos_);
    pos_ += 2;
    return v;
}

std::optional<std::int16_t> reader::i16()
{
    auto v = u16();
    if (!v)
        return std::nullopt;
    return static_cast<std::int16_t>(*v);
}

std::optional<std::uint32_t> reader::u32()
{
    if (remaining() < 4)
        return std::nullopt;
    auto v = load_be32(data_.data() + pos_);
    pos_ += 4;
    return v;
}

std::optional<std::int32_t> reader::i32()
{
    auto v = u32();
    if (!v)
        return std::nullopt;
    return static_cast<std::int32_t>(*v);
}

std::optional<std::string_view> reader::cstring()
{
    auto nul = data_.find('\0', pos_);
    if (nul == std::string_view::npos)
        return std::nullopt;
    auto s = data_.substr(pos_, nul - pos_);
    pos_ = nul + 1;
    return s;
}

std::optional<std::string_view> reader::take(std::size_t n)
{
    if (remaining() < n)
        return std::nullopt;
    auto s = data_.substr(pos_, n);
    pos_ += n;
    return s;
}

std::string_view reader::rest() noexcept
{
    auto s = data_.substr(pos_);
    pos_ = data_.size();
    return s;
}

message_builder::message_builder(char type)
{
    if (type != 0)
        buf_.push_back(type);
    length_at_ = buf_.size();
    buf_.append(4, '\0');
}

message_builder& message_builder::u8(std::uint8_t v)
{
    buf_.push_back(static_cast<char>(v));
    return *this;
}

message_builder& message_builder::i16(std::int16_t v)
{
    auto u = static_cast<std::uint16_t>(v);
    buf_.push_back(static_cast<char>(u >> 8));
    buf_.push_back(static_cast<char>(u));
    return *this;
}

message_builder& message_builder::i32(std::int32_t v)
{
    char b[4];
    store_be32(b, static_cast<std::uint32_t>(v));
    buf_.append(b, 4);
    return *this;
}

message_builder& message_builder::cstring(std::string_view s)
{
    buf_.append(s);
    buf_.push_back('\0');
    return *this;
}

message_builder& message_builder::raw(std::string_view s)
{
    buf_.append(s);
    return *this;
}

void message_builder::finish_into(std::string& out)
{
    store_be32(buf_.data() + length_at_, static_cast<std::uint32_t>(buf_.size() - length_at_));
    out.append(buf_);
}

std::string message_builder::finish()
{
    store_be32(buf_.data() + length_at_, static_cast<std::uint32_t>(buf_.size() - length_at_));
    return std::move(buf_);
}

}  // namespace tokenbouncer::protocol
