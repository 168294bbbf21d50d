#pragma once
// Typed configuration, built from a kong.conf-style file and TOKENBOUNCER_* environment variables.
//
// Every key is declared once, in the key table (key_table() in settings.cpp), with its type,
// default, range, whether SIGHUP can change it, and a one-line description; the loader, --check,
// SHOW CONFIG and docs/configuration.md all come from that table.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::config {

using duration = std::chrono::milliseconds;

enum class sslmode
{
    disable,
    require,
    verify_ca,
    verify_full,
};
std::string_view to_string(sslmode m);

enum class pool_mode
{
    session,
    transaction,
};
std::string_view to_string(pool_mode m);

enum class auth_type
{
    trust,
    scram_sha_256,
};

enum class client_tls_mode
{
    disable,
    allow,    // TLS if the client asks for it
    require,  // TLS required
    verify_ca,
    verify_full,
};

// One upstream server and the identity and pool that go with it: the rw route (pg_* keys)
// or the ro route (pg_ro_* keys, each inheriting its pg_* value when unset).
struct route_settings
{
    std::string name;  // "rw" or "ro"
    std::string host;
    std::uint16_t port = 5432;
    std::string database = "kong";
    std::string user = "kong";
    secret password;
    config::sslmode sslmode = config::sslmode::verify_full;
    std::string sslrootcert;  // empty: the system trust store

    // Microsoft Entra ID
    bool azure_auth = false;
    std::string azure_tenant_id;
    std::string azure_client_id;
    secret azure_client_secret;
    std::string azure_scope;
    std::string azure_client_certificate_path;
    std::string azure_federated_token_file;

    // Pool
    config::pool_mode pool_mode = config::pool_mode::session;
    int pool_size = 20;
    int min_pool_size = 0;
    int reserve_pool_size = 0;
    int max_db_connections = 0;

    // Who may use the route (empty: everybody who authenticates).
    std::vector<std::string> allowed_users;
    std::uint16_t listen_port = 6432;
};

struct settings
{
    route_settings rw;
    route_settings ro;
    bool ro_enabled = false;  // pg_ro_host is set

    // Listening
    std::vector<std::string> listen_addr{"127.0.0.1"};
    std::string unix_socket_dir;
    int unix_socket_mode = 0700;
    std::string unix_socket_group;
    std::vector<std::uint32_t> allowed_peer_uids;
    int workers = 1;

    // Client authentication
    config::auth_type auth_type = config::auth_type::trust;
    std::string auth_file;
    client_tls_mode client_tls_sslmode = client_tls_mode::disable;
    std::string client_tls_cert_file;
    std::string client_tls_key_file;
    std::string client_tls_ca_file;

    // Pooling and timeouts (PgBouncer's names and meanings)
    int max_client_conn = 1000;
    duration reserve_pool_timeout{5000};
    duration server_lifetime{3600 * 1000};
    duration server_idle_timeout{600 * 1000};
    duration server_connect_timeout{15 * 1000};
    duration server_login_retry{15 * 1000};
    duration query_wait_timeout{120 * 1000};
    duration client_idle_timeout{0};
    duration idle_transaction_timeout{0};
    duration client_login_timeout{60 * 1000};
    duration shutdown_timeout{30 * 1000};
    std::string server_reset_query = "DISCARD ALL";
    std::string server_check_query = "";
    duration server_check_delay{30 * 1000};
    int max_prepared_statements = 200;
    std::uint32_t max_packet_size = 0x3ffffffe;  // PostgreSQL drops longer messages without an error

    // Azure (shared by both routes)
    std::string azure_cloud = "AzurePublicCloud";
    std::string azure_authority_host;
    std::string azure_imds_endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    duration azure_request_timeout{10 * 1000};
    duration azure_refresh_margin{5 * 60 * 1000};

    // Operations
    std::string log_level = "info";
    std::string log_format = "text";
    std::vector<std::string> admin_users;
    std::vector<std::string> stats_users;
    std::string http_addr = "127.0.0.1";
    std::uint16_t http_port = 9127;

    const route_settings& route(bool ro) const { return ro ? this->ro : rw; }
};

// --- The key table -------------------------------------------------------------------------

enum class key_type
{
    string,
    secret,
    port,
    integer,
    boolean,
    duration,
    choice,
    list,
    octal,
};

enum class key_status
{
    supported,
    kong_ignored,  // a Kong setting that means nothing here: accepted with a warning
};

struct key_info
{
    std::string_view name;
    key_type type;
    std::string_view default_value;  // as written in a config file; "" = unset
    std::string_view choices;        // key_type::choice: "a|b|c"
    long long min = 0;
    long long max = 0;
    bool reloadable = false;
    std::string_view description;
    key_status status = key_status::supported;
};

// All keys, pg_ro_* twins included.
std::span<const key_info> key_table();
const key_info* find_key(std::string_view name);
// "pg_ro_host" -> "pg_host" (the key a pg_ro_ key inherits from), else nullopt.
std::optional<std::string> inherited_from(std::string_view name);

}  // namespace tokenbouncer::config
