#pragma once
// Where the upstream password comes from: the interface every credential source implements.
//
// A static pg_password is one; the Microsoft Entra token providers are the others (a token is the
// password). The connector asks for the password only when the server requests one.

#include <memory>
#include <optional>
#include <string>

#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/util/pg_error.hpp"
#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::upstream {

class credential_source
{
public:
    virtual ~credential_source() = default;

    // The password for the next login. `rejected` is the one the upstream just refused: a token
    // source drops it (unless it already has a newer one) and fetches a new one. Errors reach the
    // client as they are. May be called from any worker thread; completes on the caller's executor.
    virtual awaitable<pg_result<secret>> password(std::optional<secret> rejected) = 0;

    // A short description for logs and errors, never the secret: "pg_password", "managed identity ...".
    virtual std::string describe() const = 0;

    // True when a rejected login is worth one retry with refresh = true.
    virtual bool refreshable() const { return false; }
};

// pg_password.
class static_password final : public credential_source
{
public:
    explicit static_password(secret password, std::string key_name)
        : password_(std::move(password)), key_name_(std::move(key_name)) {}

    awaitable<pg_result<secret>> password(std::optional<secret>) override { co_return password_; }
    std::string describe() const override { return key_name_; }

private:
    secret password_;
    std::string key_name_;
};

}  // namespace tokenbouncer::upstream
