#pragma once
// Logging: spdlog, one logger for the process, text or JSON lines.
//
// Lines about a connection start with its id ("c12" for client 12, "s7" for server connection 7),
// so `grep c12` follows one client. Nothing secret is ever passed to a log call: secrets are
// tokenbouncer::secret, which formats as "***".

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace tokenbouncer::log {

// Sets up the process logger. `level` is a log_level value (trace ... off); json selects JSON lines.
void init(std::string_view level, bool json);
void set_level(std::string_view level);

// JSON lines carry the route of the connection a line is about ("c12" -> "rw"). Sessions and
// server connections tell it here; both calls do nothing unless log_format = json.
bool json_enabled() noexcept;
void remember_route(const std::string& conn, std::string_view route);
void forget_route(const std::string& conn);

// Extra fields for the JSON lines logged on this thread while it lives (token events: identity
// and fingerprint). Text lines are unchanged.
class scoped_fields
{
public:
    scoped_fields(std::initializer_list<std::pair<std::string_view, std::string>> fields);
    ~scoped_fields();
    scoped_fields(const scoped_fields&) = delete;
    const std::vector<std::pair<std::string_view, std::string>>& fields() const noexcept { return fields_; }
    const scoped_fields* outer() const noexcept { return outer_; }
    scoped_fields& operator=(const scoped_fields&) = delete;

private:
    std::vector<std::pair<std::string_view, std::string>> fields_;
    const scoped_fields* outer_;
};

}  // namespace tokenbouncer::log
