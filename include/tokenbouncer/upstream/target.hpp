#pragma once
// Everything needed to open a connection to one upstream: its settings, its TLS context and its
// credential source. Immutable; a reload builds a new one and swaps it in.

#include <cstdint>
#include <memory>
#include <string>

#include "tokenbouncer/config/settings.hpp"
#include "tokenbouncer/net/tls.hpp"
#include "tokenbouncer/upstream/credential.hpp"

namespace tokenbouncer::upstream {

struct target
{
    config::route_settings settings;
    net::ssl_ctx_ptr tls;  // null when pg_sslmode = disable
    std::shared_ptr<credential_source> credential;
    std::uint64_t generation = 0;  // bumped by reloads that change how to connect

    std::string address() const { return settings.host + ":" + std::to_string(settings.port); }
};

}  // namespace tokenbouncer::upstream
