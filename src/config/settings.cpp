#include "tokenbouncer/config/settings.hpp"

#include <deque>
#include <vector>

namespace tokenbouncer::config {

std::string_view to_string(sslmode m)
{
    switch (m)
    {
    case sslmode::disable: return "disable";
    case sslmode::require: return "require";
    case sslmode::verify_ca: return "verify-ca";
    case sslmode::verify_full: return "verify-full";
    }
    return "?";
}

std::string_view to_string(pool_mode m) { return m == pool_mode::session ? "session" : "transaction"; }

namespace {

constexpr long long ms = 1;
constexpr long long s = 1000;
constexpr long long day = 86400 * s;
constexpr long long big = 1LL << 40;

// Keys of one upstream route. Each gets a pg_ro_ twin that inherits its value when unset.
// The rw key names are "pg_" + suffix.
const key_info route_keys[] = {
    {"pg_host", key_type::string, "", {}, 0, 0, false,
     "Host name or IP address of the upstream server (for Azure: <server>.postgres.database.azure.com)."},
    {"pg_port", key_type::port, "5432", {}, 1, 65535, false, "TCP port of the upstream server."},
    {"pg_database", key_type::string, "kong", {}, 0, 0, false,
     "Database on the upstream server; clients must ask for this database name."},
    {"pg_user", key_type::string, "kong", {}, 0, 0, false,
     "Role tokenbouncer logs in as upstream (with Entra: the name of the managed identity or application)."},
    {"pg_password", key_type::secret, "", {}, 0, 0, true,
     "Static upstream password; ignored when pg_azure_auth is on."},
    {"pg_sslmode", key_type::choice, "verify-full", "disable|require|verify-ca|verify-full", 0, 0, false,
     "TLS to the upstream, as libpq's sslmode: verify-full checks the certificate chain and the host name."},
    {"pg_sslrootcert", key_type::string, "", {}, 0, 0, false,
     "PEM file of CA certificates to trust for the upstream; unset: the system trust store."},
    {"pg_azure_auth", key_type::boolean, "off", {}, 0, 0, false,
     "Log in upstream with a Microsoft Entra access token instead of pg_password."},
    {"pg_azure_tenant_id", key_type::string, "", {}, 0, 0, true,
     "Entra tenant of a service principal (falls back to AZURE_TENANT_ID); not needed for managed identity."},
    {"pg_azure_client_id", key_type::string, "", {}, 0, 0, true,
     "Client ID of the user-assigned managed identity or of the application (falls back to AZURE_CLIENT_ID)."},
    {"pg_azure_client_secret", key_type::secret, "", {}, 0, 0, true,
     "Client secret of the application (falls back to AZURE_CLIENT_SECRET)."},
    {"pg_azure_scope", key_type::string, "", {}, 0, 0, true,
     "Token scope; unset: the Azure Database for PostgreSQL scope of azure_cloud (https://ossrdbms-aad.database.windows.net/.default in AzurePublicCloud)."},
    {"pg_azure_client_certificate_path", key_type::string, "", {}, 0, 0, true,
     "PEM file with the application's certificate and private key (falls back to AZURE_CLIENT_CERTIFICATE_PATH)."},
    {"pg_azure_federated_token_file", key_type::string, "", {}, 0, 0, true,
     "Workload identity token file, re-read at every request (falls back to AZURE_FEDERATED_TOKEN_FILE)."},
    {"pg_pool_size", key_type::integer, "", {}, 1, 100000, true,
     "Server connections of this route's pool; unset: default_pool_size."},
    {"pg_min_pool_size", key_type::integer, "", {}, 0, 100000, true,
     "Server connections kept open even when idle; unset: min_pool_size."},
    {"pg_reserve_pool_size", key_type::integer, "", {}, 0, 100000, true,
     "Extra connections allowed when a client waited reserve_pool_timeout; unset: reserve_pool_size."},
    {"pg_pool_mode", key_type::choice, "", "session|transaction", 0, 0, true,
     "Pool mode of this route; unset: pool_mode."},
};

const key_info global_keys[] = {
    // Listening
    {"listen_addr", key_type::list, "127.0.0.1", {}, 0, 0, false,
     "Comma-separated addresses to listen on; trust authentication is allowed on loopback only."},
    {"listen_port", key_type::port, "6432", {}, 1, 65535, false, "Port of the read-write route (pg_*)."},
    {"ro_listen_port", key_type::port, "6433", {}, 1, 65535, false,
     "Port of the read-only route (pg_ro_*); opened only when pg_ro_host is set."},
    {"unix_socket_dir", key_type::string, "", {}, 0, 0, false,
     "Directory for Unix sockets named .s.PGSQL.<port>, as libpq expects; unset: no Unix sockets."},
    {"unix_socket_mode", key_type::octal, "0700", {}, 0, 0777, false, "File mode of the Unix sockets."},
    {"unix_socket_group", key_type::string, "", {}, 0, 0, false, "Group owning the Unix sockets."},
    {"allowed_peer_uids", key_type::list, "", {}, 0, 0, true,
     "Numeric user IDs allowed to connect over the Unix sockets (checked with SO_PEERCRED); unset: any."},
    {"workers", key_type::integer, "1", {}, 0, 256, false, "Event-loop threads. One (as PgBouncer) costs the least CPU per transaction and keeps up with PgBouncer on a sidecar's one or two CPUs; more help only past what one core can relay (docs/benchmarks.md). 0: one per CPU it may use (CPU affinity, and the cgroup CPU quota: a pod's CPU limit)."},
    // Client authentication
    {"auth_type", key_type::choice, "trust", "trust|scram-sha-256", 0, 0, true,
     "How clients authenticate: trust (loopback and Unix sockets only) or scram-sha-256 with auth_file."},
    {"auth_file", key_type::string, "", {}, 0, 0, true,
     "PgBouncer-format file of \"user\" \"SCRAM-SHA-256$...\" (or clear-text password) lines."},
    {"allowed_users", key_type::list, "", {}, 0, 0, true,
     "Client user names allowed on the read-write route; unset: any authenticated user."},
    {"ro_allowed_users", key_type::list, "", {}, 0, 0, true,
     "Client user names allowed on the read-only route; unset: any authenticated user."},
    {"client_tls_sslmode", key_type::choice, "disable", "disable|allow|prefer|require|verify-ca|verify-full", 0, 0,
     false, "TLS for clients: allow/prefer accept it, require demands it, verify-* also demand a client certificate."},
    {"client_tls_cert_file", key_type::string, "", {}, 0, 0, false, "Certificate tokenbouncer shows its clients."},
    {"client_tls_key_file", key_type::string, "", {}, 0, 0, false, "Private key of client_tls_cert_file."},
    {"client_tls_ca_file", key_type::string, "", {}, 0, 0, false, "CA certificates that sign client certificates."},
    // Pooling (PgBouncer's names and defaults)
    {"pool_mode", key_type::choice, "session", "session|transaction", 0, 0, true,
     "session: a client keeps its server connection until it disconnects; transaction: until each transaction ends."},
    {"default_pool_size", key_type::integer, "20", {}, 1, 100000, true, "Server connections per route."},
    {"min_pool_size", key_type::integer, "0", {}, 0, 100000, true, "Server connections kept open even when idle."},
    {"reserve_pool_size", key_type::integer, "0", {}, 0, 100000, true,
     "Extra server connections for clients that waited reserve_pool_timeout."},
    {"reserve_pool_timeout", key_type::duration, "5", {}, 0, day, true,
     "How long a client waits before the reserve pool is used."},
    {"max_client_conn", key_type::integer, "1000", {}, 1, 1000000, true,
     "Client connections accepted; more get SQLSTATE 53300."},
    {"max_db_connections", key_type::integer, "0", {}, 0, 100000, true,
     "Server connections per route, reserve included; 0: no limit beyond the pool."},
    {"server_lifetime", key_type::duration, "3600", {}, 0, big, true,
     "Idle server connections older than this are closed (so fresh tokens replace old logins); 0: never."},
    {"server_idle_timeout", key_type::duration, "600", {}, 0, big, true,
     "Server connections idle for this long are closed; 0: never."},
    {"server_connect_timeout", key_type::duration, "15", {}, 100 * ms, day, true,
     "Time allowed for connect, TLS and login upstream."},
    {"server_login_retry", key_type::duration, "15", {}, 0, day, true,
     "After a login the upstream refused (other than 57P03: starting or shutting down) or that timed out, new "
     "clients fail at once for this long; 0: off."},
    {"query_wait_timeout", key_type::duration, "120", {}, 0, big, true,
     "How long a client waits for a server connection; 0: forever."},
    {"client_idle_timeout", key_type::duration, "0", {}, 0, big, true,
     "Clients idle (outside a transaction) this long are disconnected; 0: never."},
    {"idle_transaction_timeout", key_type::duration, "0", {}, 0, big, true,
     "Clients idle inside a transaction this long are disconnected; 0: never."},
    {"client_login_timeout", key_type::duration, "60", {}, 100 * ms, day, true,
     "Time a client has to finish its startup and authentication."},
    {"shutdown_timeout", key_type::duration, "30", {}, 0, day, true,
     "On SIGTERM, how long running sessions (session mode) or transactions (transaction mode) may take to end."},
    {"server_reset_query", key_type::string, "DISCARD ALL", {}, 0, 0, true,
     "Query run on a server connection before the next client gets it (session mode); empty: none."},
    {"server_check_query", key_type::string, "", {}, 0, 0, true,
     "Query that tests a server connection idle for server_check_delay; empty: an empty query."},
    {"server_check_delay", key_type::duration, "30", {}, 0, big, true,
     "Idle time after which a server connection is tested before use."},
    {"max_prepared_statements", key_type::integer, "200", {}, 0, 100000, true,
     "Protocol-level prepared statements tracked per server connection in transaction mode; 0: off."},
    {"max_packet_size", key_type::integer, "1073741822", {}, 1024, 2147483647, true,
     "Largest protocol message accepted from a client, in bytes; at most PostgreSQL's own limit (1073741822), "
     "which larger values mean."},
    // Azure
    {"azure_cloud", key_type::choice, "AzurePublicCloud", "AzurePublicCloud|AzureUSGovernment|AzureChinaCloud", 0, 0,
     false, "Sets the authority host and the Postgres token scope of that cloud."},
    {"azure_authority_host", key_type::string, "", {}, 0, 0, false,
     "Entra authority; unset: AZURE_AUTHORITY_HOST, else the cloud's (https://login.microsoftonline.com)."},
    {"azure_imds_endpoint", key_type::string, "http://169.254.169.254/metadata/identity/oauth2/token", {}, 0, 0,
     false, "Instance Metadata Service token endpoint for managed identity."},
    {"azure_request_timeout", key_type::duration, "10", {}, 100 * ms, 600 * s, true,
     "Timeout of each request to a token service."},
    {"azure_refresh_margin", key_type::duration, "300", {}, 0, day, true,
     "Tokens that live under 2 hours are refreshed this long before they expire (longer ones at half-life)."},
    // Operations
    {"log_level", key_type::choice, "info", "trace|debug|info|warning|error|off", 0, 0, true,
     "Log verbosity; -v is debug, -vv is trace."},
    {"log_format", key_type::choice, "text", "text|json", 0, 0, false, "text, or one JSON object per line."},
    {"admin_users", key_type::list, "", {}, 0, 0, true, "Users who may run every admin console command."},
    {"stats_users", key_type::list, "", {}, 0, 0, true, "Users who may run the read-only SHOW commands."},
    {"http_addr", key_type::string, "127.0.0.1", {}, 0, 0, false, "Address of the metrics and health endpoint."},
    {"http_port", key_type::port, "9127", {}, 0, 65535, false, "Port of the metrics and health endpoint; 0: off."},
    // Kong's own keys that may come along when a kong.conf excerpt is pasted.
    {"database", key_type::choice, "postgres", "postgres", 0, 0, false,
     "Kong's database setting; tokenbouncer only fronts PostgreSQL.", key_status::kong_ignored},
};

// Kong settings that mean something only to Kong; accepted with a warning.
const char* const kong_only_suffixes[] = {
    "timeout", "schema", "ssl", "ssl_verify", "ssl_required", "max_concurrent_queries",
    "semaphore_timeout", "keepalive_timeout", "backlog", "ssl_version", "iam_auth",
};

std::vector<key_info> build_table()
{
    static std::deque<std::string> names;  // owns the generated names (a deque never moves them)
    std::vector<key_info> t;
    for (const auto& k : route_keys)
        t.push_back(k);
    for (const auto& k : route_keys)
    {
        key_info ro = k;
        names.push_back("pg_ro_" + std::string(k.name.substr(3)));
        ro.name = names.back();
        ro.default_value = {};  // inherits from the pg_ key
        t.push_back(ro);
    }
    for (const char* suffix : kong_only_suffixes)
    {
        for (const char* prefix : {"pg_", "pg_ro_"})
        {
            names.push_back(std::string(prefix) + suffix);
            t.push_back({names.back(), key_type::string, "", {}, 0, 0, false,
                         "Kong setting with no meaning for tokenbouncer.", key_status::kong_ignored});
        }
    }
    for (const auto& k : global_keys)
        t.push_back(k);
    return t;
}

}  // namespace

std::span<const key_info> key_table()
{
    static const std::vector<key_info> table = build_table();
    return table;
}

const key_info* find_key(std::string_view name)
{
    for (const auto& k : key_table())
        if (k.name == name)
            return &k;
    return nullptr;
}

std::optional<std::string> inherited_from(std::string_view name)
{
    if (name.substr(0, 6) == "pg_ro_")
        return "pg_" + std::string(name.substr(6));
    return std::nullopt;
}

}  // namespace tokenbouncer::config
