#pragma once
// Thin wrappers over OpenSSL's hashes, HMAC, PBKDF2, random numbers and base64, so the rest of
// the code works on strings and byte vectors.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tokenbouncer {

using bytes = std::vector<std::uint8_t>;

bytes sha256(std::string_view data);
bytes sha256(const bytes& data);
bytes hmac_sha256(const bytes& key, std::string_view data);
bytes pbkdf2_sha256(std::string_view password, const bytes& salt, int iterations);
bytes md5(std::string_view data);

// Cryptographically strong random bytes (RAND_bytes).
bytes random_bytes(std::size_t n);
std::uint32_t random_u32();

std::string to_hex(const bytes& data);
std::string base64_encode(const bytes& data);
std::string base64_encode(std::string_view data);
// Standard alphabet, padding required; nullopt on any malformed input.
std::optional<bytes> base64_decode(std::string_view text);
// base64url without padding (JWT).
std::string base64url_encode(std::string_view data);

// XOR of two byte strings of the same length.
bytes xor_bytes(const bytes& a, const bytes& b);

// Constant-time comparison.
bool equal_consttime(const bytes& a, const bytes& b);

}  // namespace tokenbouncer
