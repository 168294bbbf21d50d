#include "tokenbouncer/auth/azure.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "tokenbouncer/auth/jwt.hpp"
#include "tokenbouncer/http/client.hpp"

namespace tokenbouncer::auth {

void throw_exception_from_error(const fetch_failure& e, const boost::source_location&)
{
    throw std::runtime_error(e.message);
}

namespace {

std::string env(const char* name)
{
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

std::string with_slash(std::string s)
{
    if (!s.empty() && s.back() != '/')
        s.push_back('/');
    return s;
}

std::string strip_default(const std::string& scope)
{
    constexpr std::string_view suffix = "/.default";
    if (scope.size() > suffix.size() && scope.compare(scope.size() - suffix.size(), suffix.size(), suffix) == 0)
        return scope.substr(0, scope.size() - suffix.size());
    return scope;
}

std::optional<std::chrono::seconds> parse_retry_after(const std::string& v)
{
    if (v.empty())
        return std::nullopt;
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || n < 0)
        return std::nullopt;  // the HTTP-date form is not used by Azure's token services
    return std::chrono::seconds(std::min<long>(n, 3600));
}

// Client credentials and workload identity: a form POST to the Entra v2 token endpoint.
class entra_credential : public credential
{
public:
    entra_credential(const identity_settings& id, credential_kind kind)
        : id_(id), kind_(kind), token_url_(with_slash(id.authority_host) + id.tenant_id + "/oauth2/v2.0/token")
    {
    }

    awaitable<fetch_result> fetch_once() override
    {
        std::vector<std::pair<std::string, std::string>> fields{
            {"grant_type", "client_credentials"}, {"client_id", id_.client_id}, {"scope", id_.scope}};
        secret assertion;
        if (kind_ == credential_kind::client_secret)
        {
            fields.emplace_back("client_secret", id_.client_secret.reveal());
        }
        else if (kind_ == credential_kind::client_certificate)
        {
            if (!cert_)
            {
                auto c = load_client_certificate(id_.certificate_path);
                if (!c)
                    co_return fetch_failure{c.error().message, 0, false, std::nullopt};
                cert_ = std::move(*c);
            }
            assertion = secret(build_client_assertion(*cert_, id_.client_id, token_url_, sys_clock::now()));
        }
        else
        {
            // The kubelet rotates the file: read it for every request.
            std::ifstream in(id_.federated_token_file, std::ios::binary);
            if (!in)
                co_return fetch_failure{"cannot read the federated token file \"" + id_.federated_token_file +
                                            "\" (AZURE_FEDERATED_TOKEN_FILE)",
                                        0, true, std::nullopt};
            std::stringstream ss;
            ss << in.rdbuf();
            std::string text = ss.str();
            while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
                text.pop_back();
            if (text.empty())
                co_return fetch_failure{"the federated token file \"" + id_.federated_token_file + "\" is empty", 0,
                                        true, std::nullopt};
            assertion = secret(std::move(text));
        }
        if (!assertion.empty())
        {
            fields.emplace_back("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
            fields.emplace_back("client_assertion", assertion.reveal());
        }
        http::request req;
        req.method = "POST";
        req.url = token_url_;
        req.content_type = "application/x-www-form-urlencoded";
        req.body = http::form(fields);
        req.headers.emplace_back("Accept", "application/json");
        auto sent = sys_clock::now();
        http::options opts;
        auto r = co_await http::fetch(req, id_.request_timeout, opts);
        wipe_string(req.body);
        for (auto& [k, v] : fields)
            wipe_string(v);
        co_return interpret_reply(r, sent, kind_, token_url_);
    }

    credential_kind kind() const override { return kind_; }
    std::string class_name() const override
    {
        return kind_ == credential_kind::workload_identity ? "WorkloadIdentityCredentials" : "ClientCredentials";
    }
    std::string describe() const override
    {
        std::string what = kind_ == credential_kind::client_secret        ? "service principal (client secret)"
                           : kind_ == credential_kind::client_certificate ? "service principal (certificate)"
                                                                          : "workload identity";
        return what + ", tenant " + id_.tenant_id + ", client_id " + id_.client_id;
    }
    std::string identity_key() const override
    {
        return token_url_ + "|" + id_.client_id + "|" + id_.scope + "|" + std::string(to_string(kind_));
    }
    std::string tenant_id() const override { return id_.tenant_id; }
    std::string client_id() const override { return id_.client_id; }

private:
    identity_settings id_;
    credential_kind kind_;
    std::string token_url_;
    std::optional<client_certificate> cert_;
};

// Managed identity: App Service / Container Apps when IDENTITY_ENDPOINT and IDENTITY_HEADER are
// set, otherwise the Instance Metadata Service.
class managed_identity_credential : public credential
{
public:
    explicit managed_identity_credential(const identity_settings& id)
        : id_(id), app_service_(!id.identity_endpoint.empty() && !id.identity_header.empty())
    {
    }

    awaitable<fetch_result> fetch_once() override
    {
        std::string resource = strip_default(id_.scope);
        http::request req;
        std::string query;
        if (app_service_)
        {
            query = "api-version=2019-08-01&resource=" + http::form_encode(resource);
            if (!id_.client_id.empty())
                query += "&client_id=" + http::form_encode(id_.client_id);
            req.url = id_.identity_endpoint + (id_.identity_endpoint.find('?') == std::string::npos ? "?" : "&") + query;
            req.headers.emplace_back("X-IDENTITY-HEADER", id_.identity_header.reveal());
        }
        else
        {
            query = "api-version=2018-02-01&resource=" + http::form_encode(resource);
            if (!id_.client_id.empty())
                query += "&client_id=" + http::form_encode(id_.client_id);
            req.url = id_.imds_endpoint + "?" + query;
            req.headers.emplace_back("Metadata", "true");
        }
        if (!logged_source_)
        {
            logged_source_ = true;
            spdlog::debug("{}: use managed identity in {}", id_.route, app_service_ ? "App Service (IDENTITY_ENDPOINT)" : "IMDS");
            if (!id_.client_id.empty())
                spdlog::debug("{}: try to use managed identity client_id {}", id_.route, id_.client_id);
        }
        http::options opts;
        opts.allow_plain_http = true;  // IMDS and IDENTITY_ENDPOINT are link-local / localhost HTTP
        auto sent = sys_clock::now();
        auto r = co_await http::fetch(req, id_.request_timeout, opts);
        co_return interpret_reply(r, sent, kind(), req.url);
    }

    credential_kind kind() const override { return app_service_ ? credential_kind::app_service : credential_kind::imds; }
    std::string class_name() const override { return "ManagedIdentityCredentials"; }
    std::string describe() const override
    {
        std::string s = app_service_ ? "managed identity (App Service)" : "managed identity (IMDS)";
        return s + (id_.client_id.empty() ? ", system-assigned" : ", client_id " + id_.client_id);
    }
    std::string identity_key() const override
    {
        return (app_service_ ? id_.identity_endpoint : id_.imds_endpoint) + "|" + id_.client_id + "|" + id_.scope +
               "|" + std::string(to_string(kind()));
    }
    std::string client_id() const override { return id_.client_id; }

private:
    identity_settings id_;
    bool app_service_;
    bool logged_source_ = false;
};

}  // namespace

azure_environment azure_environment::from_process()
{
    azure_environment e;
    e.tenant_id = env("AZURE_TENANT_ID");
    e.client_id = env("AZURE_CLIENT_ID");
    e.client_secret = secret(env("AZURE_CLIENT_SECRET"));
    e.client_certificate_path = env("AZURE_CLIENT_CERTIFICATE_PATH");
    e.federated_token_file = env("AZURE_FEDERATED_TOKEN_FILE");
    e.authority_host = env("AZURE_AUTHORITY_HOST");
    e.identity_endpoint = env("IDENTITY_ENDPOINT");
    e.identity_header = secret(env("IDENTITY_HEADER"));
    return e;
}

cloud_endpoints cloud(std::string_view name)
{
    if (name == "AzureUSGovernment")
        return {"https://login.microsoftonline.us/", "https://ossrdbms-aad.database.usgovcloudapi.net/.default"};
    if (name == "AzureChinaCloud")
        return {"https://login.chinacloudapi.cn/", "https://ossrdbms-aad.database.chinacloudapi.cn/.default"};
    return {"https://login.microsoftonline.com/", "https://ossrdbms-aad.database.windows.net/.default"};
}

identity_settings resolve_identity(const config::route_settings& r, const config::settings& s,
                                   const azure_environment& e)
{
    identity_settings id;
    id.route = r.name;
    auto pick = [](const std::string& key_value, const std::string& env_value) {
        return key_value.empty() ? env_value : key_value;
    };
    id.tenant_id = pick(r.azure_tenant_id, e.tenant_id);
    id.client_id = pick(r.azure_client_id, e.client_id);
    id.client_secret = r.azure_client_secret.empty() ? e.client_secret : r.azure_client_secret;
    id.certificate_path = pick(r.azure_client_certificate_path, e.client_certificate_path);
    id.federated_token_file = pick(r.azure_federated_token_file, e.federated_token_file);
    cloud_endpoints c = cloud(s.azure_cloud);
    id.scope = r.azure_scope.empty() ? c.scope : r.azure_scope;
    id.authority_host = with_slash(pick(s.azure_authority_host, pick(e.authority_host, c.authority_host)));
    id.imds_endpoint = s.azure_imds_endpoint;
    id.identity_endpoint = e.identity_endpoint;
    id.identity_header = e.identity_header;
    id.request_timeout = s.azure_request_timeout;
    return id;
}

fetch_result interpret_reply(const http::result& r, sys_clock::time_point sent, credential_kind kind,
                             const std::string& url)
{
    bool managed = kind == credential_kind::imds || kind == credential_kind::app_service;
    std::string what = managed ? "managed identity credentials" : "token";  // Kong's words
    if (!r)
        return fetch_failure{what + " request failed: " + r.error().message, 0, true, std::nullopt};
    const auto& res = *r;
    std::string where = std::string(" (") + (managed ? "GET " : "POST ") + url.substr(0, url.find('?')) + ")";
    if (res.status != 200)
    {
        fetch_failure f;
        f.status = res.status;
        // A managed identity endpoint's body as it is (the seed shows it so); Entra's error
        // fields with its trace and correlation ids, without the timestamps.
        f.message = what + " request failed, status: " + std::to_string(res.status) +
                    ", body: " + (managed ? excerpt(res.body) : describe_error_reply(res.body)) + where;
        // Microsoft's guidance: 429 and 5xx are transient; IMDS also answers 404 and 410 while
        // it starts or updates. Any other 4xx is a configuration problem that a retry won't fix.
        f.retryable = res.status == 429 || res.status >= 500 ||
                      (kind == credential_kind::imds && (res.status == 404 || res.status == 410));
        f.retry_after = parse_retry_after(res.header("retry-after"));
        return f;
    }
    auto t = parse_token_reply(res.body, sent);
    if (!t)
        return fetch_failure{what + " reply unusable, status: " + std::to_string(res.status) + where + ": " +
                                 t.error().message,
                             res.status, true, std::nullopt};
    return std::move(*t);
}

std::string_view to_string(credential_kind k)
{
    switch (k)
    {
    case credential_kind::client_secret: return "client_secret";
    case credential_kind::client_certificate: return "client_certificate";
    case credential_kind::workload_identity: return "workload_identity";
    case credential_kind::app_service: return "managed_identity_app_service";
    case credential_kind::imds: return "managed_identity_imds";
    }
    return "?";
}

std::vector<chain_link> build_chain(const identity_settings& id)
{
    std::vector<chain_link> chain;
    // 1. ClientCredentials: tenant, client id and a secret or a certificate.
    {
        chain_link link{"ClientCredentials", nullptr, {}};
        // The secret first, as Kong does: the seed's configuration (a client id only) gives
        // "Couldn't find AZURE_CLIENT_SECRET env variable".
        if (id.client_secret.empty() && id.certificate_path.empty())
            link.not_configured = "Couldn't find AZURE_CLIENT_SECRET env variable";
        else if (id.tenant_id.empty())
            link.not_configured = "Couldn't find AZURE_TENANT_ID env variable";
        else if (id.client_id.empty())
            link.not_configured = "Couldn't find AZURE_CLIENT_ID env variable";
        else if (!id.client_secret.empty())
            link.cred = std::make_unique<entra_credential>(id, credential_kind::client_secret);
        else
            link.cred = std::make_unique<entra_credential>(id, credential_kind::client_certificate);
        chain.push_back(std::move(link));
    }
    // 2. WorkloadIdentityCredentials: the federated token file, tenant and client id.
    {
        chain_link link{"WorkloadIdentityCredentials", nullptr, {}};
        if (id.federated_token_file.empty())
            link.not_configured = "Couldn't find AZURE_FEDERATED_TOKEN_FILE env variable";
        else if (id.tenant_id.empty())
            link.not_configured = "Couldn't find AZURE_TENANT_ID env variable";
        else if (id.client_id.empty())
            link.not_configured = "Couldn't find AZURE_CLIENT_ID env variable";
        else
            link.cred = std::make_unique<entra_credential>(id, credential_kind::workload_identity);
        chain.push_back(std::move(link));
    }
    // 3. ManagedIdentityCredentials: always worth a try.
    chain.push_back({"ManagedIdentityCredentials", std::make_unique<managed_identity_credential>(id), {}});
    return chain;
}

std::optional<std::chrono::milliseconds> retry_delay(const fetch_failure& f, int attempt)
{
    if (!f.retryable)
        return std::nullopt;
    thread_local std::mt19937 rng{std::random_device{}()};
    double base = 1000.0 * (1 << std::min(attempt, 6));  // 1 s, 2 s, 4 s ... 64 s
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    auto ms = static_cast<long long>(std::min(base * jitter(rng), 60000.0));
    if (f.retry_after)
        ms = std::max<long long>(ms, std::chrono::duration_cast<std::chrono::milliseconds>(*f.retry_after).count());
    return std::chrono::milliseconds(std::min<long long>(ms, 120000));
}

}  // namespace tokenbouncer::auth
