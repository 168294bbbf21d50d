#include "tokenbouncer/util/secret.hpp"

#include <openssl/crypto.h>

#include "tokenbouncer/util/crypto.hpp"

namespace tokenbouncer {

void wipe_string(std::string& s) noexcept
{
    // Wipe the whole capacity: a shorter value may have left a longer one behind it.
    if (s.capacity() > 0)
    {
        s.resize(s.capacity());
        OPENSSL_cleanse(s.data(), s.size());
    }
    s.clear();
}

void secret::wipe() noexcept { wipe_string(value_); }

secret& secret::operator=(const secret& other)
{
    if (this != &other)
    {
        wipe();
        value_ = other.value_;
    }
    return *this;
}

secret& secret::operator=(secret&& other) noexcept
{
    if (this != &other)
    {
        wipe();
        value_ = std::move(other.value_);
        other.wipe();
    }
    return *this;
}

std::string secret::fingerprint() const
{
    if (value_.empty())
        return "none";
    return to_hex(sha256(value_)).substr(0, 8);
}

bool operator==(const secret& a, const secret& b) noexcept
{
    return a.value_.size() == b.value_.size() &&
           CRYPTO_memcmp(a.value_.data(), b.value_.data(), a.value_.size()) == 0;
}

}  // namespace tokenbouncer
