#pragma once
// Startup parameters that tokenbouncer tracks and sets on a server connection before a client uses
// it (PgBouncer's "varcache"), so a pooled connection looks to each client like its own login.
//
// These are the parameters the server reports with ParameterStatus (GUC_REPORT) that clients set.
// Any other startup parameter (options, search_path, extra_float_digits, ...) is sent in the
// server's StartupMessage instead, and a server connection is only reused for clients that sent
// the same ones (its "signature").

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "tokenbouncer/protocol/startup.hpp"

namespace tokenbouncer::pool {

inline constexpr std::array<std::string_view, 6> tracked_parameters = {
    "application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings",
};

// The canonical spelling of a tracked parameter (names are case-insensitive), or nullopt.
std::optional<std::string_view> tracked_name(std::string_view name);

using param_map = std::map<std::string, std::string, std::less<>>;

// The parameters of a client's StartupMessage, split.
struct client_parameters
{
    param_map tracked;      // canonical name -> value
    std::string signature;  // the others, canonically encoded ("" when none)
    protocol::startup_parameters untracked;
};

// `user`, `database` and protocol options (_pq_.*) are neither tracked nor part of the signature.
client_parameters split_startup_parameters(const protocol::startup_parameters& params);

// The SET statements that make `current` (a server's values) match `wanted`, in one string;
// empty when nothing differs.
std::string build_sync_query(const param_map& wanted, const param_map& current);

}  // namespace tokenbouncer::pool
