#pragma once
// The key table as documentation: the example config/tokenbouncer.conf and the key reference of
// docs/configuration.md are printed from key_table() (tokenbouncer --print-keys=conf|markdown,
// scripts/gen-docs.sh), and a test fails when the committed files differ from what it prints.

#include <string>
#include <string_view>

#include "tokenbouncer/config/settings.hpp"

namespace tokenbouncer::config {

// The section a key is documented in ("Upstream server (read-write route)", "Timeouts", ...).
std::string_view key_group(const key_info& key);

// TOKENBOUNCER_<KEY IN UPPER CASE>.
std::string environment_name(std::string_view key);

// A complete example configuration file in kong.conf style: a minimal working set for Azure with
// a user-assigned managed identity, then every key commented out with its description, default,
// environment variable and whether SIGHUP reloads it.
std::string reference_conf();

// The key reference of docs/configuration.md: one Markdown table per group.
std::string reference_markdown();

}  // namespace tokenbouncer::config
