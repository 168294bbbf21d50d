#pragma once
// Small helpers shared by the unit tests: raw wire bytes written by hand, so the tests do not
// depend on the builders they check.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tb_test {

// Big-endian int32, written without the code under test.
inline std::string be32(std::uint32_t v)
{
    std::string s(4, '\0');
    s[0] = static_cast<char>((v >> 24) & 0xff);
    s[1] = static_cast<char>((v >> 16) & 0xff);
    s[2] = static_cast<char>((v >> 8) & 0xff);
    s[3] = static_cast<char>(v & 0xff);
    return s;
}

inline std::string be16(std::uint16_t v)
{
    std::string s(2, '\0');
    s[0] = static_cast<char>((v >> 8) & 0xff);
    s[1] = static_cast<char>(v & 0xff);
    return s;
}

// An untyped startup-family packet: int32 length (including itself), int32 code, payload.
inline std::string startup_raw(std::uint32_t code, std::string_view payload)
{
    return be32(static_cast<std::uint32_t>(8 + payload.size())) + be32(code) + std::string(payload);
}

// A typed message: type byte, int32 length (including itself), body.
inline std::string typed_raw(char type, std::string_view body)
{
    return std::string(1, type) + be32(static_cast<std::uint32_t>(4 + body.size())) + std::string(body);
}

// A typed message with a body of `body_len` bytes of `fill`.
inline std::string typed_filled(char type, std::size_t body_len, char fill = 'x')
{
    return typed_raw(type, std::string(body_len, fill));
}

// Each string followed by a NUL: cstrs({"user", "bob", ""}) == "user\0bob\0\0".
// (Avoids the "\0" + digit octal-escape trap of string literals.)
inline std::string cstrs(const std::vector<std::string>& parts)
{
    std::string out;
    for (const auto& p : parts)
    {
        out += p;
        out.push_back('\0');
    }
    return out;
}

// Printable form of binary data, for INFO/CAPTURE.
inline std::string printable(std::string_view s)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s)
    {
        if (c >= 0x20 && c < 0x7f && c != '\\')
        {
            out.push_back(static_cast<char>(c));
        }
        else
        {
            out += "\\x";
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 0xf]);
        }
    }
    return out;
}

}  // namespace tb_test
