#include "tokenbouncer/session/client_session.hpp"

#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "tokenbouncer/net/message_io.hpp"
#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/protocol/scram.hpp"
#include "tokenbouncer/upstream/connector.hpp"
#include "tokenbouncer/util/crypto.hpp"
#include "tokenbouncer/util/log.hpp"

namespace tokenbouncer::session {

namespace be = protocol::backend;
namespace fe = protocol::frontend;

// Parse messages up to this size are tracked in transaction mode (the client buffer grows to it).
constexpr std::size_t max_tracked_message = 1 << 20;
// Client buffers start small (2 KiB: idle clients cost little) and grow to this when a client streams.
constexpr std::size_t bulk_buffer = 32 * 1024;

namespace {

// Buffers given up between transactions, kept per thread for the next transaction instead of a
// 64 KiB malloc and free each time (a few per thread: about as many as servers are linked at once).
struct spare_buffers
{
    static constexpr std::size_t max_kept = 32;
    std::size_t size = 0;  // the one capacity kept (the server-to-client buffer's)
    std::vector<std::unique_ptr<char[]>> kept;
};
thread_local spare_buffers spares;

}  // namespace

void relay_buffer::ensure()
{
    if (data_)
        return;
    if (!spares.kept.empty() && spares.size == capacity_)
    {
        data_ = std::move(spares.kept.back());
        spares.kept.pop_back();
        return;
    }
    data_ = std::make_unique_for_overwrite<char[]>(capacity_);
}

void relay_buffer::release_if_empty()
{
    if (len_ != 0 || !data_)
        return;
    if (spares.kept.empty())
        spares.size = capacity_;
    if (spares.size == capacity_ && spares.kept.size() < spare_buffers::max_kept)
        spares.kept.push_back(std::move(data_));
    else
        data_.reset();
}

void relay_buffer::consume(std::size_t n)
{
    if (n >= len_)
    {
        len_ = 0;
        return;
    }
    std::memmove(data_.get(), data_.get() + n, len_ - n);
    len_ -= n;
}

bool relay_buffer::enlarge(std::size_t limit)
{
    if (capacity_ >= limit)
        return false;
    std::size_t bigger = std::min(capacity_ * 2, limit);
    auto data = std::make_unique_for_overwrite<char[]>(bigger);
    if (data_)
        std::memcpy(data.get(), data_.get(), len_);
    data_ = std::move(data);
    capacity_ = bigger;
    return true;
}

void relay_buffer::append(std::string_view s)
{
    ensure();
    std::memcpy(data_.get() + len_, s.data(), s.size());
    len_ += s.size();
}

client_session::client_session(shared_state& state, net::socket_type sock, listener_info where)
    : state_(state),
      settings_(state.settings()),
      client_(std::move(sock), where.protocol),
      where_(where),
      id_(state.next_client_id.fetch_add(1, std::memory_order_relaxed)),
      client_scanner_(settings_->max_packet_size),
      server_scanner_(protocol::max_message_length),
      pump_done_(client_.get_executor()),
      pump_wake_(client_.get_executor()),
      idle_timer_(client_.get_executor())
{
    if (log::json_enabled())
        log::remember_route(tag(), where_.ro ? "ro" : "rw");
    error_code ec;
    auto ep = client_.socket().remote_endpoint(ec);
    if (!ec && !where_.unix_socket)
    {
        // A generic endpoint: turn it back into an IP address for logs.
        if (ep.protocol().family() == AF_INET || ep.protocol().family() == AF_INET6)
        {
            asio::ip::tcp::endpoint tcp_ep;
            std::memcpy(tcp_ep.data(), ep.data(), std::min<std::size_t>(ep.size(), sizeof(sockaddr_in6)));
            peer_ip_ = tcp_ep.address();  // printed when asked for (inet_ntop for every client adds up)
            peer_port_ = tcp_ep.port();
        }
    }
    else if (where_.unix_socket)
    {
        peer_addr_ = "unix";
        struct ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(client_.socket().native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        {
            peer_uid_ = cred.uid;
            peer_addr_ = "unix:uid=" + std::to_string(cred.uid);
        }
    }
}

std::string client_session::peer_addr() const
{
    return peer_ip_ ? peer_ip_->to_string() : peer_addr_;
}

client_session::~client_session()
{
    if (log::json_enabled())
        log::forget_route(tag());
    if (our_key_.pid != 0)
        state_.cancels.forget(our_key_.pid);
    if (counted_)
        state_.clients.fetch_sub(1, std::memory_order_relaxed);
}

client_info client_session::info() const
{
    client_info i;
    i.id = id_;
    i.user = user_;
    i.database = database_;
    i.addr = peer_addr();
    i.port = peer_port_;
    i.ro = where_.ro;
    i.tls = client_.is_tls();
    i.connect_time = connected_at_;
    if (wanted_)
    {
        auto it = wanted_->find("application_name");
        if (it != wanted_->end())
            i.application_name = it->second;
    }
    i.logged_in = logged_in_ && (pool_ != nullptr || admin_session_);  // not a CancelRequest
    i.state = server_ ? "active" : waiting_ ? "waiting" : "idle";
    if (server_)
        i.server = server_->info("active", id_);
    return i;
}

void client_session::login_deadline_passed()
{
    if (logged_in_)
        return;
    login_timed_out_ = true;
    client_.cancel();
}

void client_session::request_shutdown()
{
    shutdown_requested_ = true;
    // Wake the client reader if it holds no server (idle between transactions, or not started);
    // a client in a transaction or a session-mode session is left to finish.
    if (!server_)
        client_.cancel();
}

awaitable<void> client_session::send_error(const pg_error& e)
{
    co_await client_.write_all(protocol::build_error_response(e));
}

// --- startup ------------------------------------------------------------------------------------

awaitable<std::optional<protocol::startup_packet>> client_session::read_startup()
{
    std::string buf;
    for (;;)
    {
        auto f = protocol::frame_startup_packet(buf);
        if (f.state == protocol::startup_frame::status::invalid)
        {
            spdlog::info("{}: {}", tag(), f.error.message);
            co_await send_error(f.error);
            co_return std::nullopt;
        }
        if (f.state == protocol::startup_frame::status::complete)
        {
            auto pkt = protocol::parse_startup_packet(std::string_view(buf).substr(0, f.length));
            leftover_ = buf.substr(f.length);
            if (!pkt)
            {
                spdlog::info("{}: rejected startup packet: {}", tag(), pkt.error().message);
                co_await send_error(pkt.error());
                co_return std::nullopt;
            }
            co_return std::move(*pkt);
        }
        std::size_t want = f.length > buf.size() ? f.length - buf.size() : 4 - buf.size();
        std::size_t old = buf.size();
        buf.resize(old + std::max<std::size_t>(want, 1));
        auto [ec, n] = co_await client_.read_some(buf.data() + old, buf.size() - old);
        buf.resize(old + n);
        if (ec)
        {
            if (login_timed_out_)
                spdlog::info("{}: closing connection: no startup packet within client_login_timeout", tag());
            else if (old > 0 || ec != asio::error::eof)
                spdlog::debug("{}: connection closed during startup: {}", tag(), ec.message());
            co_return std::nullopt;
        }
    }
}

awaitable<void> client_session::handle_cancel(std::uint32_t pid, std::uint32_t key)
{
    auto target = state_.cancels.find(pid, key);
    if (!target)
    {
        spdlog::debug("{}: cancel request for unknown client key; ignored", tag());
        co_return;
    }
    auto linked = target->current();
    if (!linked)
    {
        spdlog::debug("{}: cancel request for a client that holds no server connection; dropped", tag());
        co_return;
    }
    spdlog::info("{}: forwarding cancel request to upstream {} (backend pid {})", tag(), linked->target->address(),
                 linked->key.pid);
    co_await upstream::send_cancel(linked->target, linked->key, settings_->server_connect_timeout);
}

awaitable<bool> client_session::authenticate_client(const std::string& user)
{
    const auto& s = *settings_;
    if (s.auth_type == config::auth_type::trust)
    {
        if (!where_.loopback && !where_.unix_socket)
        {
            co_await send_error(pg_error::fatal(sqlstate::invalid_authorization,
                                                "trust authentication is only allowed on loopback and Unix sockets"));
            co_return false;
        }
        co_return true;
    }
    // scram-sha-256 against auth_file.
    auto users = state_.users();
    auto it = users ? users->find(user) : decltype(users->end()){};
    std::optional<protocol::scram_verifier> verifier;
    if (users && it != users->end())
    {
        verifier = protocol::scram_verifier::parse(it->second.reveal());
        if (!verifier)
            verifier = protocol::scram_verifier::from_password(it->second.reveal());
    }
    // An unknown user goes through the same exchange with a made-up verifier, so the answer
    // does not tell who exists.
    if (!verifier)
        verifier = protocol::scram_verifier::from_password(to_hex(random_bytes(16)));
    bool known = users && it != users->end();

    std::string mechs(protocol::scram_sha_256);
    mechs.push_back('\0');
    mechs.push_back('\0');
    if (co_await client_.write_all(protocol::build_auth_request(protocol::auth_code::sasl, mechs)))
        co_return false;

    // No coroutine lambda for the failure path: GCC 12 frees temporaries passed into one twice.
    std::string why;
    net::message_reader reader(client_, 64 * 1024);
    do
    {
        auto first = co_await reader.next();
        if (!first || first->type != fe::password)
        {
            why = "no SASLInitialResponse";
            break;
        }
        protocol::reader r(first->body);
        auto mech = r.cstring();
        auto len = r.i32();
        if (!mech || *mech != protocol::scram_sha_256 || !len || *len < 0 ||
            static_cast<std::size_t>(*len) != r.remaining())
        {
            why = "malformed SASLInitialResponse";
            break;
        }
        protocol::scram_server scram(std::move(*verifier));
        std::string reply, err;
        if (!scram.handle_client_first(r.rest(), reply, err))
        {
            why = err;
            break;
        }
        if (co_await client_.write_all(protocol::build_auth_request(protocol::auth_code::sasl_continue, reply)))
            co_return false;
        auto final_msg = co_await reader.next();
        if (!final_msg || final_msg->type != fe::password)
        {
            why = "no SASLResponse";
            break;
        }
        if (!scram.handle_client_final(final_msg->body, reply, err))
        {
            why = err;
            break;
        }
        if (!known)
        {
            why = "no such user in auth_file";
            break;
        }
        if (co_await client_.write_all(protocol::build_auth_request(protocol::auth_code::sasl_final, reply)))
            co_return false;
        leftover_ += reader.take_leftover();
        co_return true;
    } while (false);
    spdlog::info("{}: authentication of user \"{}\" failed: {}", tag(), user, why);
    pg_error e = pg_error::fatal(sqlstate::invalid_password, "password authentication failed for user \"" + user + "\"");
    co_await send_error(e);
    co_return false;
}

awaitable<bool> client_session::handle_startup(protocol::startup_packet& pkt)
{
    const auto& s = *settings_;
    const std::string* user = pkt.params.find("user");
    user_ = user ? *user : std::string();
    const std::string* db = pkt.params.find("database");
    database_ = db && !db->empty() ? *db : user_;

    if (!counted_)
    {
        int n = state_.clients.fetch_add(1, std::memory_order_relaxed) + 1;
        counted_ = true;
        if (n > s.max_client_conn)
        {
            spdlog::warn("{}: refused: max_client_conn ({}) reached", tag(), s.max_client_conn);
            co_await send_error(pg_error::fatal(sqlstate::too_many_connections,
                                                "sorry, too many clients already: max_client_conn (" +
                                                    std::to_string(s.max_client_conn) + ") reached",
                                                "Raise max_client_conn, or close idle client connections."));
            co_return false;
        }
    }
    if (state_.shutting_down.load())
    {
        co_await send_error(pg_error::fatal(sqlstate::cannot_connect_now, "tokenbouncer is shutting down"));
        co_return false;
    }
    if (where_.unix_socket && !s.allowed_peer_uids.empty() &&
        (!peer_uid_ || std::find(s.allowed_peer_uids.begin(), s.allowed_peer_uids.end(), *peer_uid_) ==
                           s.allowed_peer_uids.end()))
    {
        std::string who = peer_uid_ ? "user ID " + std::to_string(*peer_uid_) : std::string("an unknown user ID");
        spdlog::warn("{}: refused: unix socket peer with {} is not in allowed_peer_uids", tag(), who);
        co_await send_error(pg_error::fatal(sqlstate::invalid_authorization,
                                            "connections from " + who + " are not allowed on this unix socket",
                                            "Add the user ID to allowed_peer_uids, or connect as an allowed user."));
        co_return false;
    }

    // Protocol 3.x with x > 0, or protocol options: tell the client what we speak (as PostgreSQL does).
    std::vector<std::string> unsupported;
    for (const auto& [k, v] : pkt.params.items)
        if (k.rfind("_pq_.", 0) == 0)
            unsupported.push_back(k);
    if (pkt.minor > 0 || !unsupported.empty())
    {
        if (co_await client_.write_all(protocol::build_negotiate_protocol_version(0, unsupported)))
            co_return false;
    }
    if (const std::string* repl = pkt.params.find("replication"); repl && *repl != "false" && *repl != "0" && *repl != "off")
    {
        co_await send_error(pg_error::fatal(sqlstate::feature_not_supported,
                                            "replication connections are not supported by tokenbouncer"));
        co_return false;
    }

    if (database_ == admin_database)
        co_return co_await admin_login();

    const config::route_settings& route = s.route(where_.ro);
    if (database_ != route.database)
    {
        spdlog::info("{}: refused: asked for database \"{}\" on the {} port, which serves \"{}\"", tag(), database_,
                     route.name, route.database);
        co_await send_error(pg_error::fatal(
            sqlstate::invalid_catalog_name,
            "database \"" + database_ + "\" does not exist: this tokenbouncer port (" +
                std::to_string(route.listen_port) + ", " + (where_.ro ? "read-only" : "read-write") +
                ") serves database \"" + route.database + "\"",
            "Connect with dbname=" + route.database + "."));
        co_return false;
    }
    if (!route.allowed_users.empty() &&
        std::find(route.allowed_users.begin(), route.allowed_users.end(), user_) == route.allowed_users.end())
    {
        spdlog::info("{}: refused: user \"{}\" is not in {}allowed_users", tag(), user_, where_.ro ? "ro_" : "");
        co_await send_error(pg_error::fatal(sqlstate::invalid_authorization,
                                            "user \"" + user_ + "\" may not use the " +
                                                (where_.ro ? "read-only" : "read-write") + " route of tokenbouncer"));
        co_return false;
    }
    if (!co_await authenticate_client(user_))
        co_return false;

    pool_ = state_.route_pool(where_.ro);
    transaction_mode_ = pool_->limits().mode == config::pool_mode::transaction;
    tracking_ = transaction_mode_ && s.max_prepared_statements > 0;
    tracker_ = protocol::statement_tracker(tracking_ ? static_cast<std::size_t>(s.max_prepared_statements) : 0);
    params_ = pool::split_startup_parameters(pkt.params);
    pg_result<std::shared_ptr<const pool::param_map>> welcome = pool_->cached_welcome();
    if (params_.signature.empty())
    {
        if (!*welcome)
            welcome = co_await pool_->welcome_parameters(tag());
    }
    else
    {
        // Startup parameters of its own (options, search_path, ...) may change what the server
        // reports: log in (or reuse) a server with them, as a direct login would.
        auto s = co_await pool_->acquire(params_, tag());
        if (s)
        {
            welcome = std::make_shared<const pool::param_map>((*s)->params);
            pool_->release(std::move(*s), true);
        }
        else
        {
            welcome = s.error();
        }
    }
    if (!welcome)
    {
        co_await send_error(welcome.error());
        co_return false;
    }

    // What the client would have been told by a direct login: the server's parameters with the
    // client's own values for those it set.
    auto view = pool_->login_view_for(*welcome, params_.tracked);
    wanted_ = view->wanted;
    std::string out = protocol::build_auth_ok();
    out.reserve(view->parameter_status.size() + 64);
    out += view->parameter_status;
    our_key_ = state_.cancels.add(cancel_target_);
    out += protocol::build_backend_key_data(our_key_.pid, our_key_.key);
    out += protocol::build_ready_for_query('I');
    if (co_await client_.write_all(out))
        co_return false;
    pool_->counters().client_logins.fetch_add(1, std::memory_order_relaxed);
    if (spdlog::should_log(spdlog::level::info))
        spdlog::info("{}: login: user \"{}\" database \"{}\" from {}{} on the {} route{}", tag(), user_, database_,
                     peer_addr(), peer_port_ ? ":" + std::to_string(peer_port_) : "", where_.ro ? "ro" : "rw",
                     client_.is_tls() ? " (TLS)" : "");
    co_return true;
}

awaitable<bool> client_session::admin_login()
{
    const auto& s = *settings_;
    auto listed = [&](const std::vector<std::string>& users) {
        return std::find(users.begin(), users.end(), user_) != users.end();
    };
    admin_rights_ = listed(s.admin_users);
    if (!state_.admin || (!admin_rights_ && !listed(s.stats_users)))
    {
        spdlog::info("{}: refused: user \"{}\" is in neither admin_users nor stats_users", tag(), user_);
        co_await send_error(pg_error::fatal(sqlstate::invalid_authorization,
                                            "user \"" + user_ + "\" may not use the admin console",
                                            "Add the user to admin_users (every command) or stats_users (SHOW only)."));
        co_return false;
    }
    if (!co_await authenticate_client(user_))
        co_return false;
    admin_session_ = true;
    // What PgBouncer's console reports, so drivers and psql are content.
    std::string out = protocol::build_auth_ok();
    for (auto [name, value] : {std::pair{"server_version", "15.0 (tokenbouncer " TOKENBOUNCER_VERSION ")"},
                               {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"}, {"DateStyle", "ISO, MDY"},
                               {"TimeZone", "UTC"}, {"standard_conforming_strings", "on"},
                               {"integer_datetimes", "on"}, {"application_name", ""}})
        out += protocol::build_parameter_status(name, value);
    out += protocol::build_backend_key_data(0, 0);
    out += protocol::build_ready_for_query('I');
    if (co_await client_.write_all(out))
        co_return false;
    spdlog::info("{}: login: user \"{}\" on the admin console from {} ({})", tag(), user_, peer_addr(),
                 admin_rights_ ? "admin" : "stats");
    co_return true;
}

awaitable<void> client_session::admin_loop()
{
    net::message_reader reader(client_, static_cast<std::uint32_t>(settings_->max_packet_size));
    reader.feed(leftover_);
    leftover_.clear();
    while (!shutdown_requested_)
    {
        auto msg = co_await reader.next();
        if (!msg)
        {
            if (msg.error().code == sqlstate::protocol_violation)
                co_await send_error(msg.error());
            co_return;
        }
        if (msg->type == fe::terminate)
            co_return;
        if (msg->type != fe::query)
        {
            co_await send_error(pg_error::fatal(sqlstate::feature_not_supported,
                                                "the admin console supports only the simple query protocol",
                                                "Use psql, or send plain queries (no prepared statements)."));
            co_return;
        }
        std::string_view sql = msg->body;
        if (!sql.empty() && sql.back() == '\0')
            sql.remove_suffix(1);
        std::string answer = co_await state_.admin->execute(std::string(sql), admin_rights_);
        answer += protocol::build_ready_for_query('I');
        if (co_await client_.write_all(answer))
            co_return;
    }
}

awaitable<void> client_session::run()
{
    if (where_.watch)
        where_.watch->add(shared_from_this(), std::chrono::steady_clock::now() + settings_->client_login_timeout);

    bool tls_done = false;
    std::optional<protocol::startup_packet> pkt;
    for (;;)
    {
        pkt = co_await read_startup();
        if (!pkt)
            break;
        if (pkt->type == protocol::startup_packet::kind::cancel_request)
        {
            logged_in_ = true;
            co_await handle_cancel(pkt->cancel_pid, pkt->cancel_key);
            pkt.reset();
            break;
        }
        if (pkt->type == protocol::startup_packet::kind::startup)
        {
            if (spdlog::should_log(spdlog::level::trace))
            {
                std::string p;
                for (const auto& [k, v] : pkt->params.items)
                    p += (p.empty() ? "" : ", ") + k + "=" + v;
                spdlog::trace("{}: StartupMessage {}.{}: {}", tag(), pkt->major, pkt->minor, p);
            }
            break;
        }
        spdlog::trace("{}: {}", tag(), pkt->type == protocol::startup_packet::kind::ssl_request ? "SSLRequest" : "GSSENCRequest");
        // SSLRequest or GSSENCRequest: nothing may follow it before our answer.
        if (!leftover_.empty())
        {
            co_await send_error(pg_error::fatal(sqlstate::protocol_violation,
                                                "received unencrypted data after SSL request"));
            pkt.reset();
            break;
        }
        auto tls = state_.client_tls();
        bool offer_tls = pkt->type == protocol::startup_packet::kind::ssl_request && tls && !tls_done &&
                         settings_->client_tls_sslmode != config::client_tls_mode::disable;
        if (co_await client_.write_all(offer_tls ? "S" : "N"))
        {
            pkt.reset();
            break;
        }
        if (offer_tls)
        {
            if (auto why = co_await client_.tls_accept(tls.get()))
            {
                spdlog::info("{}: {}", tag(), *why);
                pkt.reset();
                break;
            }
            tls_done = true;
        }
    }
    if (pkt)
    {
        auto mode = settings_->client_tls_sslmode;
        if (mode != config::client_tls_mode::disable && mode != config::client_tls_mode::allow && !client_.is_tls())
        {
            co_await send_error(pg_error::fatal(sqlstate::invalid_authorization,
                                                "TLS is required to connect to tokenbouncer (client_tls_sslmode)",
                                                "Connect with sslmode=require."));
        }
        else if (co_await handle_startup(*pkt))
        {
            logged_in_ = true;
            if (admin_session_)
                co_await admin_loop();
            else
                co_await relay();
        }
    }
    logged_in_ = true;
    client_.close();
}

// --- relay --------------------------------------------------------------------------------------

protocol::scan_action client_session::on_client_message(char type)
{
    switch (type)
    {
    case fe::terminate:
        client_terminated_ = true;
        return protocol::scan_action::stop_before;
    case fe::query:
    case fe::function_call:
        note_request();
        ++outstanding_;
        return protocol::scan_action::next;
    case fe::sync:
        note_request();
        ++outstanding_;
        pending_since_sync_ = false;
        return protocol::scan_action::next;
    case fe::parse:
    case fe::bind:
    case fe::describe:
    case fe::execute:
    case fe::close:
    case fe::flush:
        pending_since_sync_ = true;
        return protocol::scan_action::next;
    default:
        return protocol::scan_action::next;  // CopyData/CopyDone/CopyFail and unknown types pass through
    }
}

protocol::scan_action client_session::on_server_message(char type, std::uint32_t total, std::string_view bytes)
{
    if (sync_answers_pending_ > 0)
    {
        // The answers to our pipelined SET: swallowed, its ParameterStatus recorded.
        std::size_t offset = static_cast<std::size_t>(bytes.data() - s2c_.data());
        if (type == be::parameter_status && bytes.size() >= total)
        {
            if (auto ps = protocol::parse_parameter_status(bytes.substr(5)))
                server_->apply_parameter_status(ps->name, ps->value);
        }
        else if (type == be::error_response)
        {
            spdlog::warn("{}: {}: setting application_name failed", tag(), server_->tag());
        }
        else if (type == be::ready_for_query)
        {
            --sync_answers_pending_;
        }
        s2c_patches_.push_back({offset, total, {}});
        return protocol::scan_action::next;
    }
    if (tracking_)
    {
        auto d = queue_.on_server_message(type);
        for (const auto& name : d.undo)
            server_->statements.remove(name);
        std::size_t offset = static_cast<std::size_t>(bytes.data() - s2c_.data());
        if (!d.forward)
            s2c_patches_.push_back({offset, total, {}});
        if (!d.after.empty())
        {
            if (offset + total <= s2c_.size())
                s2c_patches_.push_back({offset + total, 0, std::move(d.after)});
            else
                pending_after_ += d.after;  // due when the rest of this message has passed
        }
        // SQL-level DISCARD ALL / DEALLOCATE ALL drop the server's statements behind our back.
        if (type == be::command_complete && bytes.size() >= total &&
            (bytes.substr(5) == std::string_view("DISCARD ALL\0", 12) ||
             bytes.substr(5) == std::string_view("DEALLOCATE ALL\0", 15)))
            server_->statements.clear();
    }
    switch (type)
    {
    case be::ready_for_query: {
        if (total != 6)
            return protocol::scan_action::next;
        txn_status_ = bytes[5];
        if (outstanding_ > 0)
            --outstanding_;
        auto& c = pool_->counters();
        c.queries.fetch_add(1, std::memory_order_relaxed);
        auto now = pool::clock::now();
        if (outstanding_ == 0)
        {
            if (reading_client_)
            {
                idle_since_ = now;  // the answer is in: the client's silence counts from here
                arm_idle_timer();
            }
            auto q = std::chrono::duration_cast<std::chrono::microseconds>(now - query_started_);
            c.query_seconds.observe(q);
            c.query_time_us.fetch_add(static_cast<std::uint64_t>(q.count()), std::memory_order_relaxed);
        }
        if (txn_status_ == 'I' && in_xact_)
        {
            in_xact_ = false;
            auto x = std::chrono::duration_cast<std::chrono::microseconds>(now - xact_started_);
            c.xacts.fetch_add(1, std::memory_order_relaxed);
            c.xact_seconds.observe(x);
            c.xact_time_us.fetch_add(static_cast<std::uint64_t>(x.count()), std::memory_order_relaxed);
        }
        if (transaction_mode_ && txn_status_ == 'I' && outstanding_ == 0 && !pending_since_sync_ &&
            (!tracking_ || queue_.idle()))
        {
            release_after_pump_ = true;
            return protocol::scan_action::stop_after;
        }
        return protocol::scan_action::next;
    }
    case be::parameter_status: {
        if (bytes.size() < total)
            return protocol::scan_action::next;
        auto ps = protocol::parse_parameter_status(bytes.substr(5));
        if (ps && server_)
        {
            server_->apply_parameter_status(ps->name, ps->value);
            if (auto t = pool::tracked_name(ps->name))
                want(*t, ps->value);
        }
        return protocol::scan_action::next;
    }
    default:
        return protocol::scan_action::next;
    }
}

bool client_session::want(std::string_view name, std::string_view value)
{
    auto it = wanted_->find(name);
    if (it != wanted_->end() && it->second == value)
        return false;
    pool::param_map changed = *wanted_;
    changed.insert_or_assign(std::string(name), std::string(value));
    wanted_ = pool_->intern(std::move(changed));
    return true;
}

void client_session::note_request()
{
    if (outstanding_ > 0)
        return;
    query_started_ = pool::clock::now();
    if (!in_xact_)
    {
        in_xact_ = true;
        xact_started_ = query_started_;
    }
}

bool client_session::server_clean() const
{
    return server_ && !server_failed_ && outstanding_ == 0 && !pending_since_sync_ && txn_status_ == 'I' &&
           sync_answers_pending_ == 0 &&
           server_scanner_.at_boundary() && s2c_.size() == 0 && client_scanner_.at_boundary();
}

awaitable<bool> client_session::link_server()
{
    // A previous pump may still be writing its last bytes to the client.
    if (pump_running_)
        co_await wait_for_pump();
    server_ = pool_->take_ready(params_, co_await asio::this_coro::executor);
    if (!server_)
    {
        waiting_ = true;
        auto s = co_await pool_->acquire(params_, tag());
        waiting_ = false;
        if (!s)
        {
            spdlog::info("{}: no server connection: {}", tag(), s.error().to_string());
            co_await send_error(s.error());
            co_return false;
        }
        server_ = std::move(*s);
    }
    if (spdlog::should_log(spdlog::level::debug))  // tag() builds a string: not for every transaction
        spdlog::debug("{}: linked to {} (backend pid {})", tag(), server_->tag(), server_->key.pid);
    // Make the server's tracked parameters match what this client expects (known to, when it
    // last matched the same shared set).
    std::string sync;
    if (server_->in_sync_with != wanted_)
    {
        sync = pool::build_sync_query(*wanted_, server_->params);
        if (sync.empty())
            server_->in_sync_with = wanted_;
    }
    pipelined_sync_.clear();
    sync_answers_pending_ = 0;
    bool only_application_name = !sync.empty() && sync.rfind("SET \"application_name\"", 0) == 0 &&
                                 sync.find(";SET ") == std::string::npos;
    if (only_application_name)
    {
        // Any application_name is accepted, so this SET cannot fail: send it with the client's
        // first message and skip a round trip.
        pipelined_sync_ = protocol::build_query(sync);
    }
    else if (!sync.empty())
    {
        std::vector<std::pair<std::string, std::string>> reported;
        auto r = co_await pool::pool::run_query(*server_, sync, &reported);
        if (!r)
        {
            spdlog::info("{}: {}: setting client parameters failed: {}", tag(), server_->tag(), r.error().to_string());
            pool_->release(std::move(server_), false);
            co_await send_error(r.error());
            co_return false;
        }
        if (r->sql_error)
        {
            // A value the server does not accept (a direct login would have failed the same way).
            pool_->release(std::move(server_), true);
            pg_error e = *r->sql_error;
            e.severity = "FATAL";
            co_await send_error(e);
            co_return false;
        }
        // Values the server normalised ("iso" -> "ISO, MDY"): tell the client, as a login would have.
        std::string notes;
        for (const auto& [name, value] : reported)
        {
            if (auto t = pool::tracked_name(name); t && want(*t, value))
                notes += protocol::build_parameter_status(name, value);
        }
        if (!notes.empty() && co_await client_.write_all(notes))
        {
            client_failed_ = true;
            co_return false;
        }
    }
    cancel_target_->link(server_->target, server_->key);
    txn_status_ = 'I';
    server_scanner_.reset();
    queue_.clear();
    pending_after_.clear();
    kick_ = false;
    release_after_pump_ = false;
    pump_running_ = true;
    pump_done_.expires_at(asio::steady_timer::time_point::max());
    if (pump_alive_)
    {
        pump_wake_.cancel();  // it waits for this server (see server_pump)
        co_return true;
    }
    pump_alive_ = true;
    asio::co_spawn(client_.get_executor(), server_pump(), [self = shared_from_this()](std::exception_ptr e) {
        if (e)
        {
            try
            {
                std::rethrow_exception(e);
            }
            catch (const std::exception& ex)
            {
                spdlog::error("{}: server pump failed: {}", self->tag(), ex.what());
            }
        }
        self->pump_alive_ = false;
        self->pump_running_ = false;
        self->pump_done_.cancel();
    });
    co_return true;
}

void client_session::stop_pump()
{
    pump_stop_ = true;
    pump_wake_.cancel();
}

awaitable<void> client_session::wait_for_pump()
{
    while (pump_running_)
        co_await pump_done_.async_wait(use_nothrow);
}

awaitable<void> client_session::server_pump()
{
    // One coroutine for the session (not one per server: a transaction would pay for its start):
    // it waits for link_server to give it a server, relays that server's bytes until the server
    // goes back to the pool or fails, and waits for the next one, until stop_pump.
    for (;;)
    {
        while (!pump_running_)
        {
            if (pump_stop_)
                co_return;
            pump_wake_.expires_at(asio::steady_timer::time_point::max());
            co_await pump_wake_.async_wait(use_nothrow);
        }
        co_await pump_from_server();
        // This server is done with (back in the pool, or failed): link_server may go on.
        pump_running_ = false;
        pump_done_.cancel();
    }
}

awaitable<void> client_session::pump_from_server()
{
    net::stream& srv = *server_->stream;
    s2c_.ensure();
    auto need = [this](char type, std::uint32_t total) -> std::size_t {
        if (sync_answers_pending_ > 0)
            return total;  // swallowed whole
        switch (type)
        {
        case be::ready_for_query:
        case be::parameter_status: return total;
        case be::parse_complete:
        case be::bind_complete:
        case be::close_complete:
        case be::no_data:
        case be::empty_query_response:
        case be::portal_suspended:
            return tracking_ ? total : 5;
        case be::command_complete: return tracking_ && total <= 64 ? total : 5;
        default: return 5;
        }
    };
    bool skip_read = false;
    for (;;)
    {
        kick_ = false;
        if (tracking_)
        {
            // Our own answers that are due (everything before them has been sent).
            std::string due = queue_.take_due();
            if (!due.empty())
            {
                if (auto wec = co_await client_.write_all(due))
                {
                    client_failed_ = true;
                    client_.cancel();
                    co_return;
                }
            }
        }
        error_code ec;
        std::size_t n = 0;
        if (!skip_read)
            std::tie(ec, n) = co_await srv.read_some(s2c_.tail(), s2c_.space());
        skip_read = false;
        if (ec == asio::error::operation_aborted && kick_)
            continue;  // woken by the client reader to send our answers
        if (ec)
        {
            if (ec != asio::error::operation_aborted)
            {
                server_failed_ = true;
                std::string why = ec == asio::error::eof ? "the server closed the connection" : ec.message();
                spdlog::warn("{}: {}: lost the upstream connection: {}", tag(), server_->tag(), why);
                server_failure_ = pg_error::fatal(
                    sqlstate::connection_failure,
                    "server connection lost: upstream " + server_->target->address() + ": " + why,
                    "The upstream server restarted or dropped the connection; reconnect to retry.");
                // Tell the client, unless it is in the middle of a message.
                if (server_scanner_.at_boundary() && s2c_.size() == 0)
                    co_await send_error(*server_failure_);
                client_.cancel();
            }
            co_return;
        }
        s2c_.grow(n);
        // Read what else is already there (TLS records decrypted in one go) before writing.
        while (s2c_.space() > 0 && srv.has_pending_input())
        {
            error_code ec2;
            std::size_t m = srv.read_now(s2c_.tail(), s2c_.space(), ec2);
            if (ec2 || m == 0)
                break;
            s2c_.grow(m);
        }
        s2c_patches_.clear();
        if (!pending_after_.empty() && server_scanner_.remaining() <= s2c_.size())
        {
            s2c_patches_.push_back({static_cast<std::size_t>(server_scanner_.remaining()), 0, std::move(pending_after_)});
            pending_after_.clear();
        }
        auto res = server_scanner_.scan(
            s2c_.view(), s2c_.capacity(), need,
            [this](char type, std::uint32_t total, std::string_view bytes) {
                if (spdlog::should_log(spdlog::level::trace))
                    spdlog::trace("{}: <- '{}' ({} bytes)", tag(), type, total);
                return on_server_message(type, total, bytes);
            });
        if (res.invalid)
        {
            server_failed_ = true;
            spdlog::error("{}: {}: invalid message from the upstream (type '{}', length {})", tag(), server_->tag(),
                          res.invalid_type, res.invalid_length);
            client_.cancel();
            co_return;
        }
        std::unique_ptr<pool::server_conn> released;
        if (release_after_pump_ && res.consumed == s2c_.size() && server_scanner_.at_boundary())
        {
            // Transaction over: the server goes back to the pool now, before we yield, so the client
            // reader cannot send it anything more.
            cancel_target_->unlink();
            released = std::move(server_);
        }
        else if (release_after_pump_)
        {
            release_after_pump_ = false;  // more bytes follow the ReadyForQuery: keep going
        }
        if (res.consumed > 0)
        {
            pool_->counters().bytes_sent.fetch_add(res.consumed, std::memory_order_relaxed);
            std::string_view bytes = apply_patches(std::string_view(s2c_.data(), res.consumed), s2c_patches_, s2c_out_);
            error_code wec;
            if (!client_.write_all_now(bytes, wec) && !wec)
                wec = co_await client_.write_all(bytes);  // the client is slow to read: wait for it
            if (wec)
            {
                client_failed_ = true;
                if (released)
                    pool_->release(std::move(released), true);
                client_.cancel();
                co_return;
            }
            s2c_.consume(res.consumed);
        }
        if (released)
        {
            if (spdlog::should_log(spdlog::level::trace))
                spdlog::trace("{}: transaction done; {} back to the pool", tag(), released->tag());
            s2c_.release_if_empty();
            pool_->release(std::move(released), true);
            if (shutdown_requested_)
                client_.cancel();  // wake the client reader so it can leave
            co_return;
        }
        // Stopped after a ReadyForQuery with more bytes behind it: scan those before reading.
        skip_read = res.stopped && s2c_.size() > 0;
    }
}

std::string_view client_session::apply_patches(std::string_view chunk, std::vector<patch>& patches,
                                               std::string& out)
{
    if (patches.empty())
        return chunk;
    // Kept between transactions (one allocation, not one per transaction), unless a big one.
    if (out.capacity() > 16 * 1024)
        out = std::string();
    out.clear();
    out.reserve(chunk.size() + 64);
    std::size_t pos = 0;
    for (auto& p : patches)
    {
        if (p.offset > chunk.size())
            break;
        out.append(chunk.substr(pos, p.offset - pos));
        out.append(p.insert);
        pos = std::min(chunk.size(), p.offset + p.cut);
    }
    out.append(chunk.substr(pos));
    patches.clear();
    return out;
}

awaitable<void> client_session::unlink_at_end()
{
    if (!server_)
    {
        co_await wait_for_pump();
        co_return;
    }
    if (pump_running_)
    {
        server_->stream->cancel();
        client_.cancel();
        co_await wait_for_pump();
    }
    cancel_target_->unlink();
    if (!server_)
        co_return;
    bool clean = server_clean();
    if (clean && !transaction_mode_)
    {
        // Session mode: reset the server before the next client gets it.
        std::string reset = pool_->limits().server_reset_query;
        if (!reset.empty())
        {
            auto r = co_await pool::pool::run_query(*server_, reset, nullptr);
            clean = r && !r->sql_error;
            if (!clean)
                spdlog::warn("{}: server_reset_query failed; closing the server connection", server_->tag());
        }
    }
    if (!clean)
        spdlog::debug("{}: {} not at a clean boundary (client left mid-transaction or mid-message); closing it",
                      tag(), server_->tag());
    else if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("{}: {} back to the pool", tag(), server_->tag());
    pool_->release(std::move(server_), clean);
}

void client_session::arm_idle_timer()
{
    const auto& s = *settings_;
    auto limit = txn_status_ == 'I' ? s.client_idle_timeout : s.idle_transaction_timeout;
    if (limit.count() <= 0)
        return;
    idle_timer_.expires_at(idle_since_ + limit);
    idle_timer_.async_wait([self = shared_from_this(), limit](error_code e) {
        // Still silent, nothing outstanding, for the whole limit (a handler that was already
        // queued when a new wait began sees the new idle_since_): the wait for the client ends.
        if (!e && self->reading_client_ && self->outstanding_ == 0 &&
            pool::clock::now() >= self->idle_since_ + limit)
        {
            self->idle_fired_ = true;
            self->client_.cancel();
        }
    });
}

awaitable<void> client_session::relay()
{
    // However relay() ends, the pump it started ends with it.
    struct pump_stopper
    {
        client_session* session;
        ~pump_stopper() { session->stop_pump(); }
    } stopper{this};
    c2s_.append(leftover_);
    leftover_.clear();
    end_reason reason = end_reason::client_left;
    const auto& s = *settings_;

    for (;;)
    {
        if (shutdown_requested_ && !server_)
        {
            reason = end_reason::shutdown;
            break;
        }
        if (c2s_.space() == 0 && !c2s_.enlarge(max_tracked_message))
        {
            reason = end_reason::client_error;  // cannot happen: messages are bounded by the scanner
            break;
        }
        c2s_.ensure();
        // client_idle_timeout / idle_transaction_timeout bound the wait for the client.
        reading_client_ = c2s_.size() == 0;
        if (reading_client_ && outstanding_ == 0)
        {
            idle_since_ = pool::clock::now();
            arm_idle_timer();
        }
        std::size_t space = c2s_.space();
        auto [ec, n] = co_await client_.read_some(c2s_.tail(), space);
        reading_client_ = false;
        idle_timer_.cancel();
        if (idle_fired_)
        {
            reason = end_reason::timeout;
            // PostgreSQL's own codes for its idle_session_timeout and idle_in_transaction_session_timeout.
            bool in_txn = txn_status_ != 'I';
            std::string which = in_txn ? "idle_transaction_timeout" : "client_idle_timeout";
            spdlog::info("{}: closing: idle longer than {}", tag(), which);
            if (!pump_running_ || outstanding_ == 0)
                co_await send_error(pg_error::fatal(
                    in_txn ? sqlstate::idle_in_transaction_session_timeout : sqlstate::idle_session_timeout,
                    "terminating connection: idle longer than " + which));
            break;
        }
        if (ec)
        {
            reason = ec == asio::error::eof ? end_reason::client_left
                     : server_failed_       ? end_reason::server_error
                     : shutdown_requested_  ? end_reason::shutdown
                                            : end_reason::client_error;
            break;
        }
        c2s_.grow(n);
        // A client that fills the buffer gets a bigger one (bulk COPY, big rows); idle ones keep it small.
        if (n == space && c2s_.capacity() < bulk_buffer)
            c2s_.enlarge(bulk_buffer);
        // With prepared-statement tracking, what is sent depends on the server: link it first
        // (unless the client is only saying goodbye).
        if (tracking_ && !server_ && c2s_.data()[0] != fe::terminate)
        {
            if (shutdown_requested_)
            {
                reason = end_reason::shutdown;
                break;
            }
            if (!co_await link_server())
            {
                reason = end_reason::server_error;
                break;
            }
        }
        c2s_patches_.clear();
        auto res = client_scanner_.scan(
            c2s_.view(), max_tracked_message,
            [this](char type, std::uint32_t total) -> std::size_t {
                return tracking_ ? protocol::statement_tracker::need(type, total) : 5;
            },
            [this](char type, std::uint32_t total, std::string_view bytes) {
                if (spdlog::should_log(spdlog::level::trace))
                    spdlog::trace("{}: -> '{}' ({} bytes)", tag(), type, total);
                auto act = on_client_message(type);
                if (tracking_ && server_ && act != protocol::scan_action::stop_before)
                {
                    auto plan = tracker_.on_client_message(type, total, bytes, server_->statements, queue_);
                    if (plan.cut > 0 || !plan.insert.empty())
                        c2s_patches_.push_back({static_cast<std::size_t>(bytes.data() - c2s_.data()), plan.cut,
                                                std::move(plan.insert) + plan.replacement});
                }
                return act;
            });
        if (res.consumed == 0 && !res.invalid && !res.stopped && c2s_.space() == 0)
        {
            // A message that must be seen whole (a long Parse) does not fit: make room for it.
            c2s_.enlarge(max_tracked_message);
            continue;
        }
        if (res.invalid)
        {
            spdlog::info("{}: invalid message from the client (type '{}', length {}); closing", tag(), res.invalid_type,
                         res.invalid_length);
            if (!server_ || outstanding_ == 0)
                co_await send_error(pg_error::fatal(
                    sqlstate::protocol_violation,
                    "invalid message length " + std::to_string(res.invalid_length) + " for message type '" +
                        std::string(1, res.invalid_type) + "' (max_packet_size is " +
                        std::to_string(s.max_packet_size) + ")"));
            reason = end_reason::client_error;
            break;
        }
        if (res.consumed > 0)
        {
            if (!server_)
            {
                if (shutdown_requested_)
                {
                    reason = end_reason::shutdown;
                    break;
                }
                if (!co_await link_server())
                {
                    reason = end_reason::server_error;
                    break;
                }
            }
            pool_->counters().bytes_received.fetch_add(res.consumed, std::memory_order_relaxed);
            if (!pipelined_sync_.empty())
            {
                c2s_patches_.insert(c2s_patches_.begin(), patch{0, 0, std::move(pipelined_sync_)});
                pipelined_sync_.clear();
                sync_answers_pending_ = 1;
            }
            std::string_view bytes = apply_patches(std::string_view(c2s_.data(), res.consumed), c2s_patches_, c2s_out_);
            error_code wec;
            if (!server_->stream->write_all_now(bytes, wec) && !wec)
                wec = co_await server_->stream->write_all(bytes);
            if (wec)
            {
                server_failed_ = true;
                spdlog::warn("{}: {}: lost the upstream connection while sending: {}", tag(), server_->tag(),
                             wec.message());
                if (!server_failure_)
                    server_failure_ = pg_error::fatal(sqlstate::connection_failure,
                                                      "server connection lost: upstream " +
                                                          server_->target->address() + ": " + wec.message());
                reason = end_reason::server_error;
                break;
            }
            c2s_.consume(res.consumed);
            // Answers of ours that nothing from the server will precede (e.g. Parse + Flush of a
            // statement the server has): wake the pump to send them.
            if (tracking_ && queue_.has_due() && pump_running_ && server_)
            {
                kick_ = true;
                server_->stream->cancel();
            }
        }
        if (client_terminated_)
        {
            reason = end_reason::client_left;
            break;
        }
    }

    bool server_was_lost = server_failed_;
    co_await unlink_at_end();
    if (reason == end_reason::shutdown)
    {
        co_await send_error(pg_error::fatal(sqlstate::admin_shutdown, "tokenbouncer is shutting down",
                                            "Reconnect to another instance, or when it is back."));
    }
    else if (server_was_lost && server_failure_ && !pump_running_)
    {
        // The pump already told the client when it could; nothing more to send.
    }
    spdlog::info("{}: closing: {}", tag(),
                 reason == end_reason::client_left    ? "client disconnected"
                 : reason == end_reason::client_error ? "client connection error"
                 : reason == end_reason::server_error ? "server connection failed"
                 : reason == end_reason::shutdown     ? "shutdown"
                                                      : "timeout");
}

}  // namespace tokenbouncer::session
