// auth/azure.hpp without the network: retry_delay, the clouds, how a route's identity is resolved
// from its keys and the AZURE_* variables, and the credential chain that identity gives.

#include <catch2/catch.hpp>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "tokenbouncer/auth/azure.hpp"
#include "tokenbouncer/config/settings.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::auth;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

// --- retry_delay --------------------------------------------------------------------------------------

namespace {

fetch_failure failure(bool retryable, std::optional<std::chrono::seconds> retry_after = std::nullopt,
                      unsigned status = 503)
{
    return fetch_failure{"token request failed, status: " + std::to_string(status), status, retryable, retry_after};
}

}  // namespace

TEST_CASE("retry_delay: nothing when the failure is not retryable", "[token][azure][retry]")
{
    CHECK_FALSE(retry_delay(failure(false), 0).has_value());
    CHECK_FALSE(retry_delay(failure(false), 5).has_value());
    CHECK_FALSE(retry_delay(failure(false, 30s, 400), 0).has_value());
    CHECK(retry_delay(failure(true), 0).has_value());
}

TEST_CASE("retry_delay: exponential backoff from 1 s with +-25% jitter, capped at 60 s", "[token][azure][retry]")
{
    struct
    {
        const char* name;
        int attempt;
        ms low, high;
    } cases[] = {
        {"attempt 0: about 1 s", 0, 750ms, 1250ms},
        {"attempt 1: about 2 s", 1, 1500ms, 2500ms},
        {"attempt 2: about 4 s", 2, 3000ms, 5000ms},
        {"attempt 3: about 8 s", 3, 6000ms, 10000ms},
        {"attempt 5: about 32 s", 5, 24000ms, 40000ms},
        {"attempt 6: 64 s capped at 60 s", 6, 48000ms, 60000ms},
        {"attempt 7: capped", 7, 48000ms, 60000ms},
        {"attempt 31: capped (no shift overflow)", 31, 48000ms, 60000ms},
        {"attempt 1000: capped", 1000, 48000ms, 60000ms},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            std::set<long long> seen;
            for (int i = 0; i < 300; ++i)
            {
                auto d = retry_delay(failure(true), c.attempt);
                REQUIRE(d.has_value());
                INFO("delay " << d->count() << " ms");
                CHECK(*d >= c.low);
                CHECK(*d <= c.high);
                seen.insert(d->count());
            }
            // Jitter: 300 draws are not all the same.
            CHECK(seen.size() > 10);
        }
    }
    SECTION("the jitter is spread over the whole +-25% band")
    {
        long long lo = 1000000, hi = 0;
        for (int i = 0; i < 2000; ++i)
        {
            long long d = retry_delay(failure(true), 3)->count();
            lo = std::min(lo, d);
            hi = std::max(hi, d);
        }
        CHECK(lo < 6500);
        CHECK(hi > 9500);
    }
}

TEST_CASE("retry_delay: Retry-After wins when it is longer, never above 120 s", "[token][azure][retry]")
{
    struct
    {
        const char* name;
        int attempt;
        std::chrono::seconds retry_after;
        ms low, high;
    } cases[] = {
        {"Retry-After 30 s over a 1 s backoff", 0, 30s, 30000ms, 30000ms},
        {"Retry-After 10 s over an 8 s backoff", 3, 10s, 10000ms, 10000ms},
        {"Retry-After 1 s under an 8 s backoff: the backoff", 3, 1s, 6000ms, 10000ms},
        {"Retry-After 0: the backoff", 0, 0s, 750ms, 1250ms},
        {"Retry-After 90 s over the 60 s cap", 10, 90s, 90000ms, 90000ms},
        {"Retry-After 120 s", 0, 120s, 120000ms, 120000ms},
        {"Retry-After 121 s: 120 s", 0, 121s, 120000ms, 120000ms},
        {"Retry-After an hour: 120 s", 4, 3600s, 120000ms, 120000ms},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            for (int i = 0; i < 50; ++i)
            {
                auto d = retry_delay(failure(true, c.retry_after, 429), c.attempt);
                REQUIRE(d.has_value());
                INFO("delay " << d->count() << " ms");
                CHECK(*d >= c.low);
                CHECK(*d <= c.high);
            }
        }
    }
}

// --- cloud --------------------------------------------------------------------------------------------

TEST_CASE("cloud: authority hosts and Azure Database for PostgreSQL scopes", "[token][azure]")
{
    struct
    {
        const char* name;
        std::string authority;
        std::string scope;
    } cases[] = {
        {"AzurePublicCloud", "https://login.microsoftonline.com/", "https://ossrdbms-aad.database.windows.net/.default"},
        {"AzureUSGovernment", "https://login.microsoftonline.us/",
         "https://ossrdbms-aad.database.usgovcloudapi.net/.default"},
        {"AzureChinaCloud", "https://login.chinacloudapi.cn/",
         "https://ossrdbms-aad.database.chinacloudapi.cn/.default"},
        {"", "https://login.microsoftonline.com/", "https://ossrdbms-aad.database.windows.net/.default"},
        {"SomethingElse", "https://login.microsoftonline.com/", "https://ossrdbms-aad.database.windows.net/.default"},
    };
    for (const auto& c : cases)
    {
        SECTION(std::string("cloud \"") + c.name + "\"")
        {
            auto e = cloud(c.name);
            CHECK(e.authority_host == c.authority);
            CHECK(e.scope == c.scope);
        }
    }
    CHECK(cloud(config::settings{}.azure_cloud).authority_host == "https://login.microsoftonline.com/");
}

// --- resolve_identity -----------------------------------------------------------------------------------

namespace {

azure_environment full_env()
{
    azure_environment e;
    e.tenant_id = "env-tenant";
    e.client_id = "env-client";
    e.client_secret = secret(std::string("env-secret-VALUE"));
    e.client_certificate_path = "/env/cert.pem";
    e.federated_token_file = "/env/federated-token";
    e.authority_host = "https://login.env.example";
    e.identity_endpoint = "http://localhost:42356/msi/token";
    e.identity_header = secret(std::string("env-identity-HEADER"));
    return e;
}

config::route_settings keyed_route()
{
    config::route_settings r;
    r.name = "ro";
    r.azure_auth = true;
    r.azure_tenant_id = "key-tenant";
    r.azure_client_id = "key-client";
    r.azure_client_secret = secret(std::string("key-secret-VALUE"));
    r.azure_client_certificate_path = "/key/cert.pem";
    r.azure_federated_token_file = "/key/federated-token";
    return r;
}

}  // namespace

TEST_CASE("resolve_identity: configuration keys win over the AZURE_* variables", "[token][azure][identity]")
{
    config::settings s;
    auto id = resolve_identity(keyed_route(), s, full_env());
    CHECK(id.route == "ro");
    CHECK(id.tenant_id == "key-tenant");
    CHECK(id.client_id == "key-client");
    CHECK(id.client_secret.reveal() == "key-secret-VALUE");
    CHECK(id.certificate_path == "/key/cert.pem");
    CHECK(id.federated_token_file == "/key/federated-token");
    // No key for these: the environment's.
    CHECK(id.authority_host == "https://login.env.example/");
    CHECK(id.identity_endpoint == "http://localhost:42356/msi/token");
    CHECK(id.identity_header.reveal() == "env-identity-HEADER");
    CHECK(id.scope == "https://ossrdbms-aad.database.windows.net/.default");
    CHECK(id.imds_endpoint == "http://169.254.169.254/metadata/identity/oauth2/token");
    CHECK(id.request_timeout == 10s);
}

TEST_CASE("resolve_identity: the AZURE_* variables fill the keys left empty", "[token][azure][identity]")
{
    config::settings s;
    config::route_settings r;
    r.name = "rw";
    auto id = resolve_identity(r, s, full_env());
    CHECK(id.route == "rw");
    CHECK(id.tenant_id == "env-tenant");
    CHECK(id.client_id == "env-client");
    CHECK(id.client_secret.reveal() == "env-secret-VALUE");
    CHECK(id.certificate_path == "/env/cert.pem");
    CHECK(id.federated_token_file == "/env/federated-token");

    SECTION("one key set, the others from the environment")
    {
        r.azure_client_id = "key-client";
        auto one = resolve_identity(r, s, full_env());
        CHECK(one.client_id == "key-client");
        CHECK(one.tenant_id == "env-tenant");
        CHECK(one.client_secret.reveal() == "env-secret-VALUE");
    }
    SECTION("nothing anywhere: all empty")
    {
        auto none = resolve_identity(r, s, azure_environment{});
        CHECK(none.tenant_id.empty());
        CHECK(none.client_id.empty());
        CHECK(none.client_secret.empty());
        CHECK(none.certificate_path.empty());
        CHECK(none.federated_token_file.empty());
        CHECK(none.identity_endpoint.empty());
        CHECK(none.identity_header.empty());
        CHECK(none.authority_host == "https://login.microsoftonline.com/");
        CHECK(none.scope == "https://ossrdbms-aad.database.windows.net/.default");
    }
}

TEST_CASE("resolve_identity: scope and authority host from the cloud, the keys and the environment",
          "[token][azure][identity]")
{
    struct
    {
        const char* name;
        std::string azure_cloud;
        std::string scope_key;         // pg_azure_scope
        std::string authority_key;     // azure_authority_host
        std::string authority_env;     // AZURE_AUTHORITY_HOST
        std::string expected_scope;
        std::string expected_authority;
    } cases[] = {
        {"public cloud defaults", "AzurePublicCloud", "", "", "",
         "https://ossrdbms-aad.database.windows.net/.default", "https://login.microsoftonline.com/"},
        {"US Government defaults", "AzureUSGovernment", "", "", "",
         "https://ossrdbms-aad.database.usgovcloudapi.net/.default", "https://login.microsoftonline.us/"},
        {"China defaults", "AzureChinaCloud", "", "", "", "https://ossrdbms-aad.database.chinacloudapi.cn/.default",
         "https://login.chinacloudapi.cn/"},
        {"pg_azure_scope overrides the cloud's", "AzureChinaCloud", "api://my-app/.default", "", "",
         "api://my-app/.default", "https://login.chinacloudapi.cn/"},
        {"AZURE_AUTHORITY_HOST gets a trailing slash", "AzurePublicCloud", "", "", "https://login.fake.test",
         "https://ossrdbms-aad.database.windows.net/.default", "https://login.fake.test/"},
        {"a trailing slash is not doubled", "AzurePublicCloud", "", "", "https://login.fake.test/",
         "https://ossrdbms-aad.database.windows.net/.default", "https://login.fake.test/"},
        {"azure_authority_host gets a trailing slash", "AzurePublicCloud", "", "http://127.0.0.1:8080", "",
         "https://ossrdbms-aad.database.windows.net/.default", "http://127.0.0.1:8080/"},
        {"azure_authority_host wins over AZURE_AUTHORITY_HOST", "AzureUSGovernment", "", "https://key.test/x",
         "https://env.test", "https://ossrdbms-aad.database.usgovcloudapi.net/.default", "https://key.test/x/"},
        {"AZURE_AUTHORITY_HOST wins over the cloud", "AzureChinaCloud", "", "", "https://env.test",
         "https://ossrdbms-aad.database.chinacloudapi.cn/.default", "https://env.test/"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            config::settings s;
            s.azure_cloud = c.azure_cloud;
            s.azure_authority_host = c.authority_key;
            config::route_settings r;
            r.name = "rw";
            r.azure_scope = c.scope_key;
            azure_environment e;
            e.authority_host = c.authority_env;
            auto id = resolve_identity(r, s, e);
            CHECK(id.scope == c.expected_scope);
            CHECK(id.authority_host == c.expected_authority);
        }
    }
}

TEST_CASE("resolve_identity: IMDS endpoint and request timeout from the settings", "[token][azure][identity]")
{
    config::settings s;
    s.azure_imds_endpoint = "http://127.0.0.1:9999/metadata/identity/oauth2/token";
    s.azure_request_timeout = 2500ms;
    config::route_settings r;
    auto id = resolve_identity(r, s, azure_environment{});
    CHECK(id.imds_endpoint == "http://127.0.0.1:9999/metadata/identity/oauth2/token");
    CHECK(id.request_timeout == 2500ms);
}

// --- build_chain ----------------------------------------------------------------------------------------

namespace {

struct link_expectation
{
    bool configured;
    std::string reason_or_kind;  // not_configured text, or to_string(kind)
};

identity_settings identity(std::string tenant, std::string client, std::string client_secret, std::string cert,
                           std::string fed, std::string identity_endpoint = "", std::string identity_header = "")
{
    identity_settings id;
    id.route = "rw";
    id.tenant_id = std::move(tenant);
    id.client_id = std::move(client);
    id.client_secret = secret(std::move(client_secret));
    id.certificate_path = std::move(cert);
    id.federated_token_file = std::move(fed);
    id.scope = "https://ossrdbms-aad.database.windows.net/.default";
    id.authority_host = "https://login.microsoftonline.com/";
    id.imds_endpoint = "http://169.254.169.254/metadata/identity/oauth2/token";
    id.identity_endpoint = std::move(identity_endpoint);
    id.identity_header = secret(std::move(identity_header));
    return id;
}

const std::string no_tenant = "Couldn't find AZURE_TENANT_ID env variable";
const std::string no_client = "Couldn't find AZURE_CLIENT_ID env variable";
const std::string no_secret = "Couldn't find AZURE_CLIENT_SECRET env variable";
const std::string no_fed = "Couldn't find AZURE_FEDERATED_TOKEN_FILE env variable";

}  // namespace

TEST_CASE("build_chain: Kong's order and Kong's reasons for a credential that is not configured",
          "[token][azure][chain]")
{
    struct
    {
        const char* name;
        identity_settings id;
        link_expectation cc, wi, mi;
    } cases[] = {
        {"nothing: managed identity (IMDS) only", identity("", "", "", "", ""), {false, no_secret}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"client id only (user-assigned managed identity)", identity("", "cid", "", "", ""), {false, no_secret},
         {false, no_fed}, {true, "managed_identity_imds"}},
        {"tenant only", identity("tid", "", "", "", ""), {false, no_secret}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"tenant and client, no secret", identity("tid", "cid", "", "", ""), {false, no_secret}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"a secret without a tenant", identity("", "cid", "s3cr3t", "", ""), {false, no_tenant}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"a secret without a client id", identity("tid", "", "s3cr3t", "", ""), {false, no_client}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"a certificate without a tenant", identity("", "cid", "", "/c.pem", ""), {false, no_tenant}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"client secret", identity("tid", "cid", "s3cr3t", "", ""), {true, "client_secret"}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"client certificate", identity("tid", "cid", "", "/c.pem", ""), {true, "client_certificate"},
         {false, no_fed}, {true, "managed_identity_imds"}},
        {"secret and certificate: the secret", identity("tid", "cid", "s3cr3t", "/c.pem", ""),
         {true, "client_secret"}, {false, no_fed}, {true, "managed_identity_imds"}},
        {"federated token file only", identity("", "", "", "", "/var/run/token"), {false, no_secret},
         {false, no_tenant}, {true, "managed_identity_imds"}},
        {"federated token file and tenant", identity("tid", "", "", "", "/var/run/token"), {false, no_secret},
         {false, no_client}, {true, "managed_identity_imds"}},
        {"workload identity (AKS)", identity("tid", "cid", "", "", "/var/run/token"), {false, no_secret},
         {true, "workload_identity"}, {true, "managed_identity_imds"}},
        {"everything", identity("tid", "cid", "s3cr3t", "/c.pem", "/var/run/token", "http://localhost:1/msi", "hdr"),
         {true, "client_secret"}, {true, "workload_identity"}, {true, "managed_identity_app_service"}},
        {"App Service: IDENTITY_ENDPOINT and IDENTITY_HEADER",
         identity("", "", "", "", "", "http://localhost:42356/msi/token", "hdr"), {false, no_secret},
         {false, no_fed}, {true, "managed_identity_app_service"}},
        {"IDENTITY_ENDPOINT without IDENTITY_HEADER: IMDS",
         identity("", "", "", "", "", "http://localhost:42356/msi/token", ""), {false, no_secret}, {false, no_fed},
         {true, "managed_identity_imds"}},
        {"IDENTITY_HEADER without IDENTITY_ENDPOINT: IMDS", identity("", "", "", "", "", "", "hdr"),
         {false, no_secret}, {false, no_fed}, {true, "managed_identity_imds"}},
    };
    const char* names[] = {"ClientCredentials", "WorkloadIdentityCredentials", "ManagedIdentityCredentials"};
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto chain = build_chain(c.id);
            REQUIRE(chain.size() == 3);
            const link_expectation* expected[] = {&c.cc, &c.wi, &c.mi};
            for (int i = 0; i < 3; ++i)
            {
                INFO("link " << i << " " << names[i]);
                const auto& link = chain[i];
                CHECK(link.class_name == names[i]);
                if (expected[i]->configured)
                {
                    REQUIRE(link.cred != nullptr);
                    CHECK(link.not_configured.empty());
                    CHECK(to_string(link.cred->kind()) == expected[i]->reason_or_kind);
                    CHECK(link.cred->class_name() == names[i]);
                }
                else
                {
                    CHECK(link.cred == nullptr);
                    CHECK(link.not_configured == expected[i]->reason_or_kind);
                }
            }
        }
    }
}

TEST_CASE("to_string(credential_kind)", "[token][azure]")
{
    CHECK(to_string(credential_kind::client_secret) == "client_secret");
    CHECK(to_string(credential_kind::client_certificate) == "client_certificate");
    CHECK(to_string(credential_kind::workload_identity) == "workload_identity");
    CHECK(to_string(credential_kind::app_service) == "managed_identity_app_service");
    CHECK(to_string(credential_kind::imds) == "managed_identity_imds");
}

TEST_CASE("credentials: describe(), tenant_id(), client_id(), never a secret", "[token][azure][chain]")
{
    const std::string client_secret = "Zx8Q~SECRETVALUE-do-not-log";
    const std::string identity_header = "IDHEADER-do-not-log-123";
    auto id = identity("11111111-tenant", "22222222-client", client_secret, "/etc/tb/cert.pem", "/var/run/token",
                       "http://localhost:42356/msi/token", identity_header);

    struct
    {
        const char* name;
        identity_settings id;
        int link;
        std::string describe;
        std::string tenant;
        std::string client;
    } cases[] = {
        {"client secret", id, 0, "service principal (client secret), tenant 11111111-tenant, client_id 22222222-client",
         "11111111-tenant", "22222222-client"},
        {"client certificate", identity("11111111-tenant", "22222222-client", "", "/etc/tb/cert.pem", ""), 0,
         "service principal (certificate), tenant 11111111-tenant, client_id 22222222-client", "11111111-tenant",
         "22222222-client"},
        {"workload identity", id, 1, "workload identity, tenant 11111111-tenant, client_id 22222222-client",
         "11111111-tenant", "22222222-client"},
        {"App Service, user-assigned", id, 2, "managed identity (App Service), client_id 22222222-client", "",
         "22222222-client"},
        {"App Service, system-assigned",
         identity("", "", "", "", "", "http://localhost:42356/msi/token", identity_header), 2,
         "managed identity (App Service), system-assigned", "", ""},
        {"IMDS, user-assigned", identity("", "22222222-client", client_secret, "", ""), 2,
         "managed identity (IMDS), client_id 22222222-client", "", "22222222-client"},
        {"IMDS, system-assigned", identity("", "", "", "", ""), 2, "managed identity (IMDS), system-assigned", "", ""},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto chain = build_chain(c.id);
            const auto& cred = chain.at(static_cast<std::size_t>(c.link)).cred;
            REQUIRE(cred != nullptr);
            CHECK(cred->describe() == c.describe);
            CHECK(cred->tenant_id() == c.tenant);
            CHECK(cred->client_id() == c.client);
            for (const std::string& text : {cred->describe(), cred->identity_key(), cred->class_name()})
            {
                INFO(text);
                CHECK(text.find(client_secret) == std::string::npos);
                CHECK(text.find("SECRETVALUE") == std::string::npos);
                CHECK(text.find(identity_header) == std::string::npos);
            }
        }
    }
}

TEST_CASE("credentials: identity_key() tells identities apart", "[token][azure][chain]")
{
    auto base = identity("tid", "cid", "s3cr3t", "", "/var/run/token", "", "");
    auto key = [](const identity_settings& id, int link) {
        auto chain = build_chain(id);
        REQUIRE(chain.at(static_cast<std::size_t>(link)).cred != nullptr);
        return chain[static_cast<std::size_t>(link)].cred->identity_key();
    };

    SECTION("equal settings, equal keys (every link)")
    {
        for (int link = 0; link < 3; ++link)
        {
            auto copy = base;
            copy.route = "ro";  // another route with the same identity shares its token
            CHECK(key(base, link) == key(copy, link));
            CHECK_FALSE(key(base, link).empty());
        }
    }
    SECTION("another client secret of the same service principal: the same identity")
    {
        auto other = base;
        other.client_secret = secret(std::string("another-secret"));
        CHECK(key(base, 0) == key(other, 0));
    }
    SECTION("the kinds differ")
    {
        auto cert = base;
        cert.client_secret = secret();
        cert.certificate_path = "/c.pem";
        std::set<std::string> keys{key(base, 0), key(cert, 0), key(base, 1), key(base, 2)};
        auto app = base;
        app.identity_endpoint = "http://localhost:42356/msi/token";
        app.identity_header = secret(std::string("hdr"));
        keys.insert(key(app, 2));
        CHECK(keys.size() == 5);
    }

    struct
    {
        const char* name;
        void (*change)(identity_settings&);
    } changes[] = {
        {"client id", [](identity_settings& id) { id.client_id = "cid2"; }},
        {"scope", [](identity_settings& id) { id.scope = "api://other/.default"; }},
        {"tenant", [](identity_settings& id) { id.tenant_id = "tid2"; }},
        {"authority host", [](identity_settings& id) { id.authority_host = "https://login.microsoftonline.us/"; }},
    };
    for (const auto& c : changes)
    {
        SECTION(std::string("a different ") + c.name)
        {
            auto other = base;
            c.change(other);
            CHECK(key(base, 0) != key(other, 0));  // client secret
            CHECK(key(base, 1) != key(other, 1));  // workload identity
            if (std::string(c.name) == "client id" || std::string(c.name) == "scope")
                CHECK(key(base, 2) != key(other, 2));  // managed identity
        }
    }
    SECTION("managed identity: user-assigned vs system-assigned, IMDS endpoint")
    {
        auto system = base;
        system.client_id.clear();
        CHECK(key(base, 2) != key(system, 2));
        auto imds = base;
        imds.imds_endpoint = "http://127.0.0.1:8080/metadata/identity/oauth2/token";
        CHECK(key(base, 2) != key(imds, 2));
    }
}

// --- interpret_reply: what a token service's answer becomes ------------------------------------

namespace {

http::result reply(unsigned status, std::string body, std::map<std::string, std::string> headers = {})
{
    http::response r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    return r;
}

const std::string imds_url = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x";
const std::string entra_url = "https://login.microsoftonline.com/tid/oauth2/v2.0/token";

}  // namespace

TEST_CASE("interpret_reply: which failures are retried (Microsoft's guidance)", "[token][azure][retry]")
{
    struct
    {
        credential_kind kind;
        unsigned status;
        bool retryable;
    } cases[] = {
        {credential_kind::imds, 404, true},         {credential_kind::imds, 410, true},
        {credential_kind::imds, 429, true},         {credential_kind::imds, 500, true},
        {credential_kind::imds, 503, true},         {credential_kind::imds, 400, false},
        {credential_kind::imds, 401, false},        {credential_kind::imds, 403, false},
        {credential_kind::imds, 408, false},        {credential_kind::app_service, 404, false},
        {credential_kind::app_service, 500, true},  {credential_kind::client_secret, 404, false},
        {credential_kind::client_secret, 400, false}, {credential_kind::client_secret, 401, false},
        {credential_kind::client_secret, 429, true},  {credential_kind::client_certificate, 502, true},
        {credential_kind::workload_identity, 410, false},
    };
    for (const auto& c : cases)
    {
        INFO(to_string(c.kind) << " " << c.status);
        auto url = c.kind == credential_kind::imds || c.kind == credential_kind::app_service ? imds_url : entra_url;
        auto r = interpret_reply(reply(c.status, R"({"error":"x"})"), sys_clock::now(), c.kind, url);
        REQUIRE(r.has_error());
        CHECK(r.error().status == c.status);
        CHECK(r.error().retryable == c.retryable);
        CHECK(retry_delay(r.error(), 0).has_value() == c.retryable);
    }
}

TEST_CASE("interpret_reply: messages name the endpoint, the status and Microsoft's error", "[token][azure]")
{
    SECTION("IMDS: Kong's words and the body as it is; the URL without its query")
    {
        auto r = interpret_reply(reply(400, R"({"error":"invalid_request","error_description":"Identity not found"})"),
                                 sys_clock::now(), credential_kind::imds, imds_url);
        REQUIRE(r.has_error());
        CHECK(r.error().message ==
              R"(managed identity credentials request failed, status: 400, body: {"error":"invalid_request",)"
              R"("error_description":"Identity not found"} (GET http://169.254.169.254/metadata/identity/oauth2/token))");
    }
    SECTION("Entra: the error fields with the trace id, without the description's second line")
    {
        auto r = interpret_reply(
            reply(401, R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1234\r\nTimestamp: 2026-12-04 05:00:00Z","error_codes":[7000215],"trace_id":"1234"})"),
            sys_clock::now(), credential_kind::client_secret, entra_url);
        REQUIRE(r.has_error());
        CHECK(r.error().message == "token request failed, status: 401, body: invalid_client: AADSTS7000215: Invalid "
                                   "client secret provided. (trace_id: 1234) (POST " + entra_url + ")");
    }
    SECTION("Retry-After in seconds")
    {
        auto r = interpret_reply(reply(429, "{}", {{"retry-after", "7"}}), sys_clock::now(), credential_kind::imds,
                                 imds_url);
        REQUIRE(r.has_error());
        CHECK(r.error().retry_after == std::chrono::seconds(7));
        CHECK(*retry_delay(r.error(), 0) >= std::chrono::seconds(7));
    }
    SECTION("a 200 that is not a token")
    {
        auto r = interpret_reply(reply(200, "<html>captive portal</html>"), sys_clock::now(), credential_kind::imds,
                                 imds_url);
        REQUIRE(r.has_error());
        CHECK(r.error().message.starts_with("managed identity credentials reply unusable, status: 200 (GET "
                                            "http://169.254.169.254/metadata/identity/oauth2/token): the reply "));
        CHECK(r.error().message.find("is not JSON") != std::string::npos);
        CHECK(r.error().status == 200);
        CHECK(r.error().retryable);
    }
    SECTION("no reply: the transport's error, which names the endpoint itself")
    {
        http::result none(boost::system::in_place_error, http::error{"POST " + entra_url + ": no reply within 10000 ms", true});
        auto r = interpret_reply(none, sys_clock::now(), credential_kind::client_secret, entra_url);
        REQUIRE(r.has_error());
        CHECK(r.error().message == "token request failed: POST " + entra_url + ": no reply within 10000 ms");
        CHECK(r.error().status == 0);
        CHECK(r.error().retryable);
    }
    SECTION("a token")
    {
        auto r = interpret_reply(reply(200, R"({"token_type":"Bearer","expires_in":"3599","access_token":"eyJ0"})"),
                                 sys_clock::now(), credential_kind::imds, imds_url);
        REQUIRE(r.has_value());
        CHECK(r->access_token.reveal() == "eyJ0");
    }
}
