#include "tokenbouncer/upstream/connector.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <spdlog/spdlog.h>

#include "tokenbouncer/util/log.hpp"

#include <stdexcept>

#include "tokenbouncer/net/message_io.hpp"
#include "tokenbouncer/protocol/md5.hpp"
#include "tokenbouncer/protocol/scram.hpp"

namespace tokenbouncer::upstream {

using namespace asio::experimental::awaitable_operators;
using protocol::auth_code;

void throw_exception_from_error(const login_failure& e, const boost::source_location&)
{
    throw std::runtime_error(e.error.to_string());
}

namespace {

using tcp = asio::ip::tcp;

std::string seconds_text(std::chrono::milliseconds d)
{
    if (d.count() % 1000 == 0)
        return std::to_string(d.count() / 1000) + " s";
    return std::to_string(d.count()) + " ms";
}

login_failure network_failure(const target& t, const std::string& reason)
{
    return {pg_error::fatal(sqlstate::connection_failure,
                            "could not connect to upstream server " + t.address() + ": " + reason),
            false, false};
}

// TCP connect to any of the host's addresses.
awaitable<boost::system::result<tcp::socket, login_failure>> open_socket(const target& t)
{
    auto ex = co_await asio::this_coro::executor;
    const auto& s = t.settings;
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(s.host, std::to_string(s.port), use_nothrow);
    if (rec)
        co_return network_failure(t, "could not resolve host name \"" + s.host + "\": " + rec.message());
    error_code last = asio::error::host_not_found;
    for (const auto& entry : results)
    {
        tcp::socket sock(ex);
        auto [cec] = co_await sock.async_connect(entry.endpoint(), use_nothrow);
        if (!cec)
        {
            error_code ignored;
            sock.set_option(tcp::no_delay(true), ignored);
            sock.set_option(asio::socket_base::keep_alive(true), ignored);
            co_return std::move(sock);
        }
        last = cec;
        if (cec == asio::error::operation_aborted)
            break;
    }
    std::string reason = last.message();
    if (last == asio::error::connection_refused)
        reason += " (is the server running on that host and accepting TCP/IP connections?)";
    co_return network_failure(t, reason);
}

// SSLRequest and the TLS handshake, as pg_sslmode says.
awaitable<std::optional<login_failure>> negotiate_tls(const target& t, net::stream& st)
{
    const auto& s = t.settings;
    if (s.sslmode == config::sslmode::disable)
        co_return std::nullopt;
    if (auto ec = co_await st.write_all(protocol::build_ssl_request()))
        co_return network_failure(t, "could not send SSLRequest: " + ec.message());
    char answer = 0;
    if (auto ec = co_await st.read_exactly(&answer, 1))
        co_return network_failure(t, "the server closed the connection instead of answering SSLRequest");
    if (answer == 'N')
        co_return network_failure(t, "the server does not support TLS, but pg_sslmode = " +
                                         std::string(config::to_string(s.sslmode)) + " requires it");
    if (answer != 'S')
        co_return network_failure(t, "unexpected answer to SSLRequest (is this a PostgreSQL server?)");
    bool check_host = s.sslmode == config::sslmode::verify_full;
    spdlog::trace("upstream {}: server accepts TLS; handshake (pg_sslmode {})", t.address(), config::to_string(s.sslmode));
    if (auto why = co_await st.tls_connect(t.tls.get(), s.host, check_host))
    {
        login_failure f = network_failure(t, *why + " (pg_sslmode = " + std::string(config::to_string(s.sslmode)) + ")");
        f.error.hint = "Check pg_host and pg_sslrootcert: with verify-full the certificate must be issued by a "
                       "trusted CA for the host name in pg_host.";
        co_return f;
    }
    spdlog::debug("upstream {}: TLS established ({}, {}){}", t.address(), SSL_get_version(st.ssl()),
                  SSL_get_cipher_name(st.ssl()),
                  s.sslmode == config::sslmode::verify_full ? "; certificate and host name verified"
                  : s.sslmode == config::sslmode::verify_ca ? "; certificate chain verified"
                                                            : "; certificate not verified (pg_sslmode require)");
    co_return std::nullopt;
}

login_failure refused(const target& t, const protocol::message_view& msg)
{
    auto fields = protocol::parse_error_fields(msg.body);
    pg_error e = fields ? protocol::to_pg_error(*fields)
                        : pg_error::fatal(sqlstate::protocol_violation, "malformed ErrorResponse from the server");
    if (e.detail.empty())
        e.detail = "The upstream server " + t.address() + " refused tokenbouncer's login as role \"" +
                   t.settings.user + "\" with " + t.credential->describe() + ".";
    return {std::move(e), true, false};
}

login_failure violation(const target& t, const std::string& what)
{
    return {pg_error::fatal(sqlstate::protocol_violation,
                            "protocol error from upstream server " + t.address() + ": " + what),
            false, false};
}

// The authentication exchange, up to AuthenticationOk.
awaitable<std::optional<login_failure>> authenticate(const target& t, net::stream& st, net::message_reader& reader,
                                                     const std::optional<secret>& prefetched, std::string& label)
{
    std::optional<protocol::scram_client> scram;
    bool scram_verified = false;
    for (;;)
    {
        auto msg = co_await reader.next();
        if (!msg)
            co_return network_failure(t, "connection lost during login: " + msg.error().message);
        if (msg->type == protocol::backend::error_response)
            co_return refused(t, *msg);
        if (msg->type == protocol::backend::negotiate_protocol_version)
            continue;
        if (msg->type != protocol::backend::authentication)
            co_return violation(t, std::string("unexpected message '") + msg->type + "' during authentication");
        auto req = protocol::parse_auth_request(msg->body);
        if (!req)
            co_return violation(t, req.error().message);

        auto get_password = [&]() -> awaitable<pg_result<secret>> {
            if (prefetched)
                co_return *prefetched;
            auto p = co_await t.credential->password(std::nullopt);
            // A token's fingerprint helps to follow refreshes; a static password's would only
            // help someone guessing it.
            if (p)
                label = t.credential->refreshable() ? "token " + p->fingerprint() : t.credential->describe();
            co_return p;
        };
        std::string reply;
        spdlog::trace("upstream {}: authentication request code {}", t.address(), static_cast<int>(req->code));
        switch (req->code)
        {
        case auth_code::ok:
            if (scram && !scram_verified)
                co_return violation(t, "the server skipped the SCRAM server signature: it did not prove it knows "
                                       "the password");
            spdlog::trace("upstream {}: authentication ok", t.address());
            co_return std::nullopt;
        case auth_code::cleartext_password: {
            auto pw = co_await get_password();
            if (!pw)
                co_return login_failure{pw.error(), false, false};
            reply = protocol::build_password_message(pw->reveal());
            break;
        }
        case auth_code::md5_password: {
            auto pw = co_await get_password();
            if (!pw)
                co_return login_failure{pw.error(), false, false};
            reply = protocol::build_password_message(
                protocol::md5_password_response(pw->reveal(), t.settings.user, req->data));
            break;
        }
        case auth_code::sasl: {
            auto mechs = protocol::parse_sasl_mechanisms(req->data);
            if (!mechs)
                co_return violation(t, mechs.error().message);
            bool has_scram = false;
            for (auto m : *mechs)
                has_scram = has_scram || m == protocol::scram_sha_256;
            if (!has_scram)
                co_return violation(t, "the server offers no SASL mechanism tokenbouncer supports (SCRAM-SHA-256)");
            auto pw = co_await get_password();
            if (!pw)
                co_return login_failure{pw.error(), false, false};
            scram.emplace(std::move(*pw));
            reply = protocol::build_sasl_initial_response(protocol::scram_sha_256, scram->client_first());
            break;
        }
        case auth_code::sasl_continue: {
            if (!scram)
                co_return violation(t, "SASL continue without SASL start");
            std::string final_msg, err;
            if (!scram->handle_server_first(req->data, final_msg, err))
                co_return violation(t, err);
            reply = protocol::build_sasl_response(final_msg);
            break;
        }
        case auth_code::sasl_final: {
            std::string err;
            if (!scram || !scram->verify_server_final(req->data, err))
                co_return violation(t, err.empty() ? "SASL final without SASL start" : err);
            scram_verified = true;
            continue;
        }
        default:
            co_return login_failure{
                pg_error::fatal(sqlstate::feature_not_supported,
                                "upstream server " + t.address() + " asks for an authentication method tokenbouncer "
                                "does not support (code " + std::to_string(static_cast<int>(req->code)) + ")",
                                "Use password, md5 or scram-sha-256 in the server's pg_hba.conf for this role."),
                true, false};
        }
        // The reply may carry the password or token in clear text (PasswordMessage).
        auto ec = co_await st.write_all(reply);
        wipe_string(reply);
        if (ec)
            co_return network_failure(t, "connection lost during login: " + ec.message());
    }
}

awaitable<connect_result> login_once(std::shared_ptr<const target> t, protocol::startup_parameters extra,
                                     std::optional<secret> password)
{
    spdlog::debug("upstream {}: connecting", t->address());
    auto sock = co_await open_socket(*t);
    if (!sock)
        co_return sock.error();
    auto conn = std::make_unique<pool::server_conn>();
    conn->id = pool::next_server_id();
    conn->target = t;
    if (log::json_enabled())
        log::remember_route(conn->tag(), t->settings.name);
    conn->stream = std::make_unique<net::stream>(net::socket_type(std::move(*sock)));
    net::stream& st = *conn->stream;

    if (auto f = co_await negotiate_tls(*t, st))
        co_return std::move(*f);

    protocol::startup_parameters params;
    params.items.emplace_back("user", t->settings.user);
    params.items.emplace_back("database", t->settings.database);
    for (const auto& kv : extra.items)
        params.items.push_back(kv);
    if (auto ec = co_await st.write_all(protocol::build_startup_message(params)))
        co_return network_failure(*t, "could not send the startup packet: " + ec.message());

    net::message_reader reader(st, protocol::max_login_message_length);
    if (password)
        conn->credential_label = "token " + password->fingerprint();
    if (auto f = co_await authenticate(*t, st, reader, password, conn->credential_label))
        co_return std::move(*f);

    // After AuthenticationOk: parameters, the cancel key, then ReadyForQuery.
    for (;;)
    {
        auto msg = co_await reader.next();
        if (!msg)
            co_return network_failure(*t, "connection lost during login: " + msg.error().message);
        switch (msg->type)
        {
        case protocol::backend::parameter_status: {
            auto ps = protocol::parse_parameter_status(msg->body);
            if (!ps)
                co_return violation(*t, ps.error().message);
            conn->apply_parameter_status(ps->name, ps->value);
            break;
        }
        case protocol::backend::backend_key_data: {
            auto k = protocol::parse_backend_key_data(msg->body);
            if (!k)
                co_return violation(*t, k.error().message);
            conn->key = *k;
            break;
        }
        case protocol::backend::notice_response:
            break;
        case protocol::backend::error_response:
            co_return refused(*t, *msg);
        case protocol::backend::ready_for_query:
            if (!reader.take_leftover().empty())
                co_return violation(*t, "data after ReadyForQuery during login");
            conn->signature.clear();
            for (const auto& [k, v] : extra.items)
            {
                conn->signature += k;
                conn->signature.push_back('\0');
                conn->signature += v;
                conn->signature.push_back('\0');
            }
            co_return std::move(conn);
        default:
            co_return violation(*t, std::string("unexpected message '") + msg->type + "' after authentication");
        }
    }
}

bool is_auth_rejection(const pg_error& e)
{
    return e.code == sqlstate::invalid_password || e.code == sqlstate::invalid_authorization ||
           e.message.find("access token") != std::string::npos;
}

}  // namespace

awaitable<connect_result> connect_server(std::shared_ptr<const target> t, protocol::startup_parameters extra,
                                         std::chrono::milliseconds timeout)
{
    auto ex = co_await asio::this_coro::executor;
    std::optional<secret> rejected;
    for (int attempt = 0;; ++attempt)
    {
        bool refresh = attempt > 0;
        // A token is fetched before connecting, outside the connect timeout, so that a token
        // service that is slow or down is reported as such.
        std::optional<secret> password;
        if (t->credential->refreshable())
        {
            auto p = co_await t->credential->password(rejected);
            if (!p)
                co_return login_failure{p.error(), false, false};
            password = std::move(*p);
        }
        std::optional<secret> used = password;
        asio::steady_timer timer(ex, timeout);
        std::variant<connect_result, std::monostate> r =
            co_await (login_once(t, extra, std::move(password)) || timer.async_wait(use_awaitable));
        if (r.index() == 1)
        {
            login_failure f = network_failure(*t, "no answer within server_connect_timeout (" + seconds_text(timeout) + ")");
            f.timed_out = true;
            co_return f;
        }
        connect_result res = std::move(std::get<0>(r));
        if (!res && res.error().refused_by_server && !refresh && t->credential->refreshable() &&
            is_auth_rejection(res.error().error))
        {
            spdlog::info("upstream {} rejected the login with a token ({}); fetching a new token and retrying once",
                         t->address(), res.error().error.message);
            rejected = std::move(used);
            continue;
        }
        co_return res;
    }
}

awaitable<void> send_cancel(std::shared_ptr<const target> t, protocol::backend_key_data key,
                            std::chrono::milliseconds timeout)
{
    auto ex = co_await asio::this_coro::executor;
    auto run = [t, key]() -> awaitable<std::string> {
        auto sock = co_await open_socket(*t);
        if (!sock)
            co_return sock.error().error.message;
        net::stream st{net::socket_type(std::move(*sock))};
        if (auto f = co_await negotiate_tls(*t, st))
            co_return f->error.message;
        if (auto ec = co_await st.write_all(protocol::build_cancel_request(key.pid, key.key)))
            co_return "could not send the CancelRequest: " + ec.message();
        // The server answers nothing and closes the connection once it has read the request.
        char c;
        co_await st.read_some(&c, 1);
        st.close();
        co_return std::string();
    };
    asio::steady_timer timer(ex, timeout);
    auto r = co_await (run() || timer.async_wait(use_awaitable));
    if (r.index() == 1)
        spdlog::warn("cancel request to upstream {} timed out", t->address());
    else if (!std::get<0>(r).empty())
        spdlog::warn("cancel request to upstream {} failed: {}", t->address(), std::get<0>(r));
}

}  // namespace tokenbouncer::upstream
