#pragma once
// Logging: spdlog, one logger for the process, text or JSON lines.
//
// Lines about a connection start with its id ("c12" for client 12, "s7" for server connection 7),
// so `grep c12` follows one client. Nothing secret is ever passed to a log call: secrets are
// tokenbouncer::secret, which formats as "***".

#include <string_view>

#include <spdlog/spdlog.h>

namespace tokenbouncer::log {

// Sets up the process logger. `level` is a log_level value (trace ... off); json selects JSON lines.
void init(std::string_view level, bool json);
void set_level(std::string_view level);

}  // namespace tokenbouncer::log
