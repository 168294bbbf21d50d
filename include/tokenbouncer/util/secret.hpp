#pragma once
// A string that holds a secret (password, client secret, access token).
//
// It is wiped from memory (OPENSSL_cleanse) when it is destroyed or overwritten, it has no
// stream or fmt output (formatting it prints "***"), and it is only read through reveal(),
// so every place that touches the clear text is easy to find with grep.

#include <string>
#include <string_view>

namespace tokenbouncer {

class secret
{
public:
    secret() = default;
    explicit secret(std::string value) : value_(std::move(value)) {}
    explicit secret(std::string_view value) : value_(value) {}
    secret(const secret& other) : value_(other.value_) {}
    secret(secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
    secret& operator=(const secret& other);
    secret& operator=(secret&& other) noexcept;
    ~secret() { wipe(); }

    // The clear text. Never pass it to a log line or an error message.
    const std::string& reveal() const noexcept { return value_; }
    bool empty() const noexcept { return value_.empty(); }
    std::size_t size() const noexcept { return value_.size(); }

    // The first 8 hex digits of the SHA-256 of the value: safe to log, enough to tell tokens apart.
    std::string fingerprint() const;

    friend bool operator==(const secret& a, const secret& b) noexcept;

private:
    void wipe() noexcept;
    std::string value_;
};

// Wipes any string (for temporaries that held a secret).
void wipe_string(std::string& s) noexcept;

}  // namespace tokenbouncer
