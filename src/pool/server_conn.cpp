#include "tokenbouncer/pool/server_conn.hpp"

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
    params[std::string(name)] = std::string(value);
}

}  // namespace tokenbouncer::pool
