#include "tokenbouncer/util/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <string>
#include <unordered_map>

namespace tokenbouncer::log {

namespace {

std::atomic<bool> json_on{false};
thread_local const scoped_fields* current_fields = nullptr;

struct route_registry
{
    std::mutex mu;
    std::unordered_map<std::string, std::string> routes;
};
route_registry& registry()
{
    static route_registry r;
    return r;
}

spdlog::level::level_enum parse_level(std::string_view level)
{
    if (level == "trace")
        return spdlog::level::trace;
    if (level == "debug")
        return spdlog::level::debug;
    if (level == "warning")
        return spdlog::level::warn;
    if (level == "error")
        return spdlog::level::err;
    if (level == "off")
        return spdlog::level::off;
    return spdlog::level::info;
}

void append_json_string(spdlog::memory_buf_t& out, std::string_view s)
{
    out.push_back('"');
    for (unsigned char c : s)
    {
        switch (c)
        {
        case '"': out.append(std::string_view("\\\"")); break;
        case '\\': out.append(std::string_view("\\\\")); break;
        case '\n': out.append(std::string_view("\\n")); break;
        case '\r': out.append(std::string_view("\\r")); break;
        case '\t': out.append(std::string_view("\\t")); break;
        default:
            if (c < 0x20)
            {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out.append(std::string_view(buf));
            }
            else
            {
                out.push_back(static_cast<char>(c));
            }
        }
    }
    out.push_back('"');
}

// One JSON object per line: time, level, message, and the connection id when the message
// starts with one ("c12: ..." or "s7: ...").
class json_formatter final : public spdlog::formatter
{
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override
    {
        using namespace std::chrono;
        auto t = msg.time;
        auto secs = time_point_cast<seconds>(t);
        auto millis = duration_cast<milliseconds>(t - secs).count();
        std::time_t tt = system_clock::to_time_t(t);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        char ts[64];
        std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
        std::string_view text(msg.payload.data(), msg.payload.size());
        std::string_view conn;
        if (text.size() > 3 && (text[0] == 'c' || text[0] == 's'))
        {
            auto colon = text.find(": ");
            if (colon != std::string_view::npos && colon > 1 && colon < 12 &&
                text.substr(1, colon - 1).find_first_not_of("0123456789") == std::string_view::npos)
            {
                conn = text.substr(0, colon);
                text.remove_prefix(colon + 2);
            }
        }
        dest.append(std::string_view("{\"time\":\""));
        dest.append(std::string_view(ts));
        std::string route;
        if (!conn.empty())
        {
            auto& r = registry();
            std::lock_guard lock(r.mu);
            if (auto it = r.routes.find(std::string(conn)); it != r.routes.end())
                route = it->second;
        }
        else if (text.size() > 4 && (text.substr(0, 4) == "rw: " || text.substr(0, 4) == "ro: "))
        {
            route = std::string(text.substr(0, 2));
            text.remove_prefix(4);
        }
        dest.append(std::string_view("\",\"level\":"));
        auto lvl = spdlog::level::to_string_view(msg.level);
        append_json_string(dest, std::string_view(lvl.data(), lvl.size()));
        if (!conn.empty())
        {
            dest.append(std::string_view(",\"conn\":"));
            append_json_string(dest, conn);
        }
        if (!route.empty())
        {
            dest.append(std::string_view(",\"route\":"));
            append_json_string(dest, route);
        }
        for (const auto* f = current_fields; f; f = f->outer())
            for (const auto& [k, v] : f->fields())
            {
                dest.push_back(',');
                append_json_string(dest, k);
                dest.push_back(':');
                append_json_string(dest, v);
            }
        dest.append(std::string_view(",\"message\":"));
        append_json_string(dest, text);
        dest.append(std::string_view("}\n"));
    }

    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(); }
};

}  // namespace

bool json_enabled() noexcept { return json_on.load(std::memory_order_relaxed); }

void remember_route(const std::string& conn, std::string_view route)
{
    if (!json_enabled())
        return;
    auto& r = registry();
    std::lock_guard lock(r.mu);
    r.routes[conn] = std::string(route);
}

void forget_route(const std::string& conn)
{
    if (!json_enabled())
        return;
    auto& r = registry();
    std::lock_guard lock(r.mu);
    r.routes.erase(conn);
}

scoped_fields::scoped_fields(std::initializer_list<std::pair<std::string_view, std::string>> fields)
    : fields_(fields), outer_(current_fields)
{
    current_fields = this;
}

scoped_fields::~scoped_fields() { current_fields = outer_; }

void init(std::string_view level, bool json)
{
    json_on = json;
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>("tokenbouncer", sink);
    if (json)
        logger->set_formatter(std::make_unique<json_formatter>());
    else
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(logger);
    set_level(level);
}

void set_level(std::string_view level) { spdlog::set_level(parse_level(level)); }

}  // namespace tokenbouncer::log
