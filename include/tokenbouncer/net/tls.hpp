#pragma once
// OpenSSL contexts for the two sides: tokenbouncer as a TLS client of the upstream server, and as
// a TLS server for its own clients.

#include <memory>
#include <string>

#include <openssl/ssl.h>

#include "tokenbouncer/config/settings.hpp"

namespace tokenbouncer::net {

struct ssl_ctx_deleter
{
    void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
using ssl_ctx_ptr = std::shared_ptr<SSL_CTX>;

// For connections to the upstream. verify-ca and verify-full check the chain against
// `rootcert` (a PEM file) or, when it is empty, the system trust store; the host name check
// of verify-full is per connection (see stream::tls_connect). TLS 1.2 or later.
ssl_ctx_ptr make_upstream_tls_context(config::sslmode mode, const std::string& rootcert, std::string& error);

// For clients connecting to tokenbouncer. `ca_file` non-empty: client certificates are requested
// and, with require_client_cert, demanded.
ssl_ctx_ptr make_client_facing_tls_context(const std::string& cert_file, const std::string& key_file,
                                           const std::string& ca_file, bool require_client_cert, std::string& error);

// The text of the most recent OpenSSL errors of this thread (and clears them).
std::string openssl_errors();

}  // namespace tokenbouncer::net
