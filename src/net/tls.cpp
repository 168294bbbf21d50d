#include "tokenbouncer/net/tls.hpp"

#include <openssl/err.h>

namespace tokenbouncer::net {

std::string openssl_errors()
{
    std::string out;
    while (unsigned long e = ERR_get_error())
    {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty())
            out += "; ";
        out += buf;
    }
    return out;
}

ssl_ctx_ptr make_upstream_tls_context(config::sslmode mode, const std::string& rootcert, std::string& error)
{
    ERR_clear_error();
    ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()), ssl_ctx_deleter{});
    if (!ctx)
    {
        error = "cannot create a TLS context: " + openssl_errors();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    // No SSL_MODE_RELEASE_BUFFERS here (the client-facing side has it: thousands of idle clients):
    // a pool holds few server connections, and each busy one would otherwise allocate and free its
    // record buffers (about 34 KB) on every read and write.
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // PostgreSQL may close without close_notify; report that as an ordinary end of stream.
    SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (mode == config::sslmode::verify_ca || mode == config::sslmode::verify_full)
    {
        int ok = rootcert.empty() ? SSL_CTX_set_default_verify_paths(ctx.get())
                                  : SSL_CTX_load_verify_locations(ctx.get(), rootcert.c_str(), nullptr);
        if (ok != 1)
        {
            error = rootcert.empty() ? "cannot load the system trust store: " + openssl_errors()
                                     : "cannot load CA certificates from pg_sslrootcert \"" + rootcert +
                                           "\": " + openssl_errors();
            return nullptr;
        }
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    }
    else
    {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
    return ctx;
}

ssl_ctx_ptr make_client_facing_tls_context(const std::string& cert_file, const std::string& key_file,
                                           const std::string& ca_file, bool require_client_cert, std::string& error)
{
    ERR_clear_error();
    ssl_ctx_ptr ctx(SSL_CTX_new(TLS_server_method()), ssl_ctx_deleter{});
    if (!ctx)
    {
        error = "cannot create a TLS context: " + openssl_errors();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                    SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1)
    {
        error = "cannot load client_tls_cert_file \"" + cert_file + "\": " + openssl_errors();
        return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1)
    {
        error = "cannot load client_tls_key_file \"" + key_file + "\" (or it does not match the certificate): " +
                openssl_errors();
        return nullptr;
    }
    if (!ca_file.empty())
    {
        if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
        {
            error = "cannot load client_tls_ca_file \"" + ca_file + "\": " + openssl_errors();
            return nullptr;
        }
        SSL_CTX_set_verify(ctx.get(),
                           SSL_VERIFY_PEER | (require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
    }
    return ctx;
}

}  // namespace tokenbouncer::net
