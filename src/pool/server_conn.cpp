#include "tokenbouncer/pool/server_conn.hpp"

#include "tokenbouncer/util/log.hpp"

#include <atomic>

namespace tokenbouncer::pool {

std::uint64_t next_server_id()
{
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}

void server_conn::terminate() noexcept
{
    if (!stream || !stream->is_open())
        return;
    static const std::string terminate_msg = protocol::build_terminate();
    error_code ec;
    stream->write_now(terminate_msg.data(), terminate_msg.size(), ec);
    stream->close();
}

void server_conn::apply_parameter_status(std::string_view name, std::string_view value)
{
    auto it = params.find(name);
    if (it != params.end() && it->second == value)
        return;
    if (it != params.end())
        it->second = std::string(value);
    else
        params.emplace(std::string(name), std::string(value));
    in_sync_with.reset();
}

server_conn::~server_conn()
{
    if (log::json_enabled())
        log::forget_route(tag());
}

server_info server_conn::info(std::string_view state, std::uint64_t client_id) const
{
    server_info i;
    i.id = id;
    if (target)
    {
        i.route = target->settings.name;
        i.host = target->settings.host;
        i.port = target->settings.port;
        i.user = target->settings.user;
        i.database = target->settings.database;
    }
    i.state = std::string(state);
    i.connect_time = connected_at;
    i.remote_pid = key.pid;
    i.tls = stream && stream->is_tls();
    if (auto it = params.find("application_name"); it != params.end())
        i.application_name = it->second;
    i.prepared_statements = statements.size();
    i.client_id = client_id;
    return i;
}

}  // namespace tokenbouncer::pool
