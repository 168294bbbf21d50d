#include "tokenbouncer/util/crypto.hpp"

#include <array>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace tokenbouncer {

namespace {

bytes digest(const EVP_MD* md, const void* data, std::size_t len)
{
    bytes out(EVP_MAX_MD_SIZE);
    unsigned int n = 0;
    if (EVP_Digest(data, len, out.data(), &n, md, nullptr) != 1)
        throw std::runtime_error("EVP_Digest failed");
    out.resize(n);
    return out;
}

}  // namespace

bytes sha256(std::string_view data) { return digest(EVP_sha256(), data.data(), data.size()); }
bytes sha256(const bytes& data) { return digest(EVP_sha256(), data.data(), data.size()); }
bytes md5(std::string_view data) { return digest(EVP_md5(), data.data(), data.size()); }

bytes hmac_sha256(const bytes& key, std::string_view data)
{
    bytes out(EVP_MAX_MD_SIZE);
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &n))
        throw std::runtime_error("HMAC failed");
    out.resize(n);
    return out;
}

bytes pbkdf2_sha256(std::string_view password, const bytes& salt, int iterations)
{
    bytes out(32);
    if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(),
                          static_cast<int>(salt.size()), iterations, EVP_sha256(),
                          static_cast<int>(out.size()), out.data()) != 1)
        throw std::runtime_error("PKCS5_PBKDF2_HMAC failed");
    return out;
}

bytes random_bytes(std::size_t n)
{
    bytes out(n);
    if (n > 0 && RAND_bytes(out.data(), static_cast<int>(n)) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return out;
}

std::uint32_t random_u32()
{
    // One RAND_bytes call per 64 values: a call costs thousands of instructions (DRBG, locks),
    // and every client login takes a cancel key.
    thread_local std::array<std::uint32_t, 64> pool;
    thread_local std::size_t left = 0;
    if (left == 0)
    {
        if (RAND_bytes(reinterpret_cast<unsigned char*>(pool.data()), static_cast<int>(sizeof pool)) != 1)
            throw std::runtime_error("RAND_bytes failed");
        left = pool.size();
    }
    std::uint32_t v = pool[--left];
    pool[left] = 0;  // a value handed out is not kept
    return v;
}

std::string to_hex(const bytes& data)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(data.size() * 2);
    for (auto b : data)
    {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0xf]);
    }
    return out;
}

std::string base64_encode(std::string_view data)
{
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string base64_encode(const bytes& data)
{
    return base64_encode(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

std::optional<bytes> base64_decode(std::string_view text)
{
    if (text.size() % 4 != 0)
        return std::nullopt;
    for (char c : text)
    {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                  c == '/' || c == '=';
        if (!ok)
            return std::nullopt;
    }
    bytes out(text.size() / 4 * 3 + 1);
    int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                            static_cast<int>(text.size()));
    if (n < 0)
        return std::nullopt;
    // EVP_DecodeBlock counts padding as zero bytes: drop them.
    std::size_t pad = 0;
    if (!text.empty() && text.back() == '=')
        pad = (text.size() >= 2 && text[text.size() - 2] == '=') ? 2 : 1;
    // '=' may only appear as padding at the very end.
    auto first_eq = text.find('=');
    if (first_eq != std::string_view::npos && first_eq < text.size() - pad)
        return std::nullopt;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

std::string base64url_encode(std::string_view data)
{
    std::string s = base64_encode(data);
    while (!s.empty() && s.back() == '=')
        s.pop_back();
    for (auto& c : s)
    {
        if (c == '+')
            c = '-';
        else if (c == '/')
            c = '_';
    }
    return s;
}

bytes xor_bytes(const bytes& a, const bytes& b)
{
    bytes out(a.size());
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
        out[i] = a[i] ^ b[i];
    return out;
}

bool equal_consttime(const bytes& a, const bytes& b)
{
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tokenbouncer
