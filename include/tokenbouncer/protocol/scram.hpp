#pragma once
// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, both sides, with no I/O.
// https://www.postgresql.org/docs/current/sasl-authentication.html
//
// Client flow (tokenbouncer logging in upstream):
//     scram_client c(password);
//     send SASLInitialResponse("SCRAM-SHA-256", c.client_first())
//     c.handle_server_first(data)  -> client-final, send as SASLResponse
//     c.verify_server_final(data)  -> the server proved it knows the verifier
//
// Server flow (a client logging in to tokenbouncer, auth_type = scram-sha-256):
//     scram_server s(verifier);
//     s.handle_client_first(data)  -> server-first, send as AuthenticationSASLContinue
//     s.handle_client_final(data)  -> server-final, send as AuthenticationSASLFinal

#include <optional>
#include <string>
#include <string_view>

#include "tokenbouncer/util/crypto.hpp"
#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::protocol {

inline constexpr std::string_view scram_sha_256 = "SCRAM-SHA-256";

// A stored SCRAM verifier: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
struct scram_verifier
{
    int iterations = 4096;
    bytes salt;
    bytes stored_key;
    bytes server_key;

    static std::optional<scram_verifier> parse(std::string_view text);
    // Computes the verifier of a clear-text password (PostgreSQL's default: 4096 iterations).
    static scram_verifier from_password(std::string_view password, int iterations = 4096);
    std::string to_string() const;
};

class scram_client
{
public:
    explicit scram_client(secret password, std::string nonce = {});

    std::string client_first();
    // Returns client-final, or an error text naming what is wrong with server-first.
    bool handle_server_first(std::string_view server_first, std::string& client_final, std::string& error);
    bool verify_server_final(std::string_view server_final, std::string& error) const;

private:
    secret password_;
    std::string nonce_;
    std::string client_first_bare_;
    std::string auth_message_;
    bytes server_key_;
};

class scram_server
{
public:
    explicit scram_server(scram_verifier verifier, std::string nonce = {});

    // Both return false with an error text when the client's message is malformed or wrong.
    bool handle_client_first(std::string_view client_first, std::string& server_first, std::string& error);
    bool handle_client_final(std::string_view client_final, std::string& server_final, std::string& error);

private:
    scram_verifier verifier_;
    std::string server_nonce_;
    std::string gs2_header_;
    std::string client_first_bare_;
    std::string server_first_;
    std::string full_nonce_;
};

}  // namespace tokenbouncer::protocol
