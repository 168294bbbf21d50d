#pragma once
// Microsoft Entra ID credentials: how tokenbouncer gets an access token for a route.
//
// The chain, in the order Kong's pg_azure_auth uses (lua-resty-azure):
//   1. ClientCredentials            service principal: client secret, or a certificate (signed JWT)
//   2. WorkloadIdentityCredentials  AKS workload identity: the federated token file as assertion
//   3. ManagedIdentityCredentials   App Service / Container Apps (IDENTITY_ENDPOINT) or IMDS
// The first one that is configured and gets a token wins, and is kept for that route.
//
// Each credential knows how to make one token request (fetch_once); retries, backoff and caching
// are the token cache's business (token_cache.hpp).

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/system/result.hpp>

#include "tokenbouncer/auth/token_reply.hpp"
#include "tokenbouncer/config/settings.hpp"
#include "tokenbouncer/http/client.hpp"
#include "tokenbouncer/net/asio.hpp"
#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::auth {

// The AZURE_* variables of the Azure SDKs, read once at startup (and at reload).
struct azure_environment
{
    std::string tenant_id;                // AZURE_TENANT_ID
    std::string client_id;                // AZURE_CLIENT_ID
    secret client_secret;                 // AZURE_CLIENT_SECRET
    std::string client_certificate_path;  // AZURE_CLIENT_CERTIFICATE_PATH
    std::string federated_token_file;     // AZURE_FEDERATED_TOKEN_FILE
    std::string authority_host;           // AZURE_AUTHORITY_HOST
    std::string identity_endpoint;        // IDENTITY_ENDPOINT (App Service, Container Apps, Functions)
    secret identity_header;               // IDENTITY_HEADER

    static azure_environment from_process();
};

struct cloud_endpoints
{
    std::string authority_host;  // with a trailing slash
    std::string scope;           // Azure Database for PostgreSQL, with /.default
};
// AzurePublicCloud, AzureUSGovernment, AzureChinaCloud.
cloud_endpoints cloud(std::string_view name);

// A route's identity once keys, their pg_ro_ inheritance and the AZURE_* fallbacks are resolved.
struct identity_settings
{
    std::string route;  // "rw" / "ro"
    std::string tenant_id;
    std::string client_id;
    secret client_secret;
    std::string certificate_path;
    std::string federated_token_file;
    std::string scope;
    std::string authority_host;
    std::string imds_endpoint;
    std::string identity_endpoint;
    secret identity_header;
    std::chrono::milliseconds request_timeout{10000};
};
identity_settings resolve_identity(const config::route_settings& r, const config::settings& s,
                                   const azure_environment& env);

enum class credential_kind
{
    client_secret,
    client_certificate,
    workload_identity,
    app_service,  // managed identity through IDENTITY_ENDPOINT
    imds,         // managed identity through the Instance Metadata Service
};
std::string_view to_string(credential_kind k);

struct fetch_failure
{
    std::string message;
    unsigned status = 0;  // HTTP status, 0 when there was no reply
    bool retryable = false;
    std::optional<std::chrono::seconds> retry_after;
};
[[noreturn]] void throw_exception_from_error(const fetch_failure& e, const boost::source_location& loc);
using fetch_result = boost::system::result<token, fetch_failure>;

class credential
{
public:
    virtual ~credential() = default;
    // One token request (no retries). Runs on the calling coroutine's executor.
    virtual awaitable<fetch_result> fetch_once() = 0;
    virtual credential_kind kind() const = 0;
    // Kong's class name: ClientCredentials, WorkloadIdentityCredentials, ManagedIdentityCredentials.
    virtual std::string class_name() const = 0;
    // For logs and SHOW TOKENS: "managed identity (IMDS), client_id 0000...".
    virtual std::string describe() const = 0;
    // authority | tenant | client | scope | kind: tokens are shared between routes with the same key.
    virtual std::string identity_key() const = 0;
    virtual std::string tenant_id() const { return {}; }
    virtual std::string client_id() const { return {}; }
};

// One link of the chain: a credential, or the reason it is not configured.
struct chain_link
{
    std::string class_name;
    std::unique_ptr<credential> cred;  // null: not configured
    std::string not_configured;        // e.g. "Couldn't find AZURE_CLIENT_SECRET env variable"
};
std::vector<chain_link> build_chain(const identity_settings& id);

// Turns a token service's answer to `kind`'s request at `url` into a token or a failure that
// says what failed, where (method and URL without its query), the HTTP status and the error
// Microsoft returned, and whether a retry may help.
fetch_result interpret_reply(const http::result& r, sys_clock::time_point sent, credential_kind kind,
                             const std::string& url);

// How a failed token request is retried (Microsoft's IMDS guidance, used for every endpoint, with
// 404 and 410 only for IMDS): exponential backoff from 1 s with +-25% jitter, at most 60 s,
// honouring Retry-After. Returns nullopt when the failure should not be retried.
std::optional<std::chrono::milliseconds> retry_delay(const fetch_failure& f, int attempt);

}  // namespace tokenbouncer::auth
