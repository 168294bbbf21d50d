#pragma once
// Big-endian integer and C-string reading and writing for the PostgreSQL wire format.
// https://www.postgresql.org/docs/current/protocol-message-types.html

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tokenbouncer::protocol {

inline std::uint32_t load_be32(const char* p) noexcept
{
    auto u = reinterpret_cast<const unsigned char*>(p);
    return (std::uint32_t(u[0]) << 24) | (std::uint32_t(u[1]) << 16) | (std::uint32_t(u[2]) << 8) | u[3];
}

inline std::uint16_t load_be16(const char* p) noexcept
{
    auto u = reinterpret_cast<const unsigned char*>(p);
    return static_cast<std::uint16_t>((u[0] << 8) | u[1]);
}

inline void store_be32(char* p, std::uint32_t v) noexcept
{
    p[0] = static_cast<char>(v >> 24);
    p[1] = static_cast<char>(v >> 16);
    p[2] = static_cast<char>(v >> 8);
    p[3] = static_cast<char>(v);
}

// Reads fields from a message body. Every read is bounds-checked: a read past the end sets the
// reader as failed and returns an empty value, so a parser checks ok() once at the end.
class reader
{
public:
    explicit reader(std::string_view data) noexcept : data_(data) {}

    std::optional<std::uint8_t> u8();
    std::optional<std::uint16_t> u16();
    std::optional<std::int16_t> i16();
    std::optional<std::uint32_t> u32();
    std::optional<std::int32_t> i32();
    // A NUL-terminated string, without its NUL.
    std::optional<std::string_view> cstring();
    std::optional<std::string_view> take(std::size_t n);
    std::string_view rest() noexcept;

    std::size_t remaining() const noexcept { return data_.size() - pos_; }
    std::size_t position() const noexcept { return pos_; }
    bool at_end() const noexcept { return pos_ == data_.size(); }

private:
    std::string_view data_;
    std::size_t pos_ = 0;
};

// Builds one message: type byte (or none for the startup family), length, then fields.
// The length is filled in by finish().
class message_builder
{
public:
    // type == 0 builds an untyped message (StartupMessage, SSLRequest, CancelRequest).
    explicit message_builder(char type);

    message_builder& u8(std::uint8_t v);
    message_builder& i16(std::int16_t v);
    message_builder& u16(std::uint16_t v) { return i16(static_cast<std::int16_t>(v)); }
    message_builder& i32(std::int32_t v);
    message_builder& u32(std::uint32_t v) { return i32(static_cast<std::int32_t>(v)); }
    message_builder& cstring(std::string_view s);
    message_builder& raw(std::string_view s);
    // Room for n more bytes: with it, no reallocation leaves a freed copy of a secret behind.
    message_builder& reserve(std::size_t n)
    {
        buf_.reserve(buf_.size() + n);
        return *this;
    }

    // Appends the finished message to out.
    void finish_into(std::string& out);
    std::string finish();

private:
    std::string buf_;
    std::size_t length_at_;
};

}  // namespace tokenbouncer::protocol
