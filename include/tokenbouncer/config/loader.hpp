#pragma once
// Reads the configuration: a kong.conf-style file, then TOKENBOUNCER_<KEY> environment variables
// on top, then the key table's defaults; checks every value and the rules between keys.
//
// File format (Kong's, so lines of kong.conf can be pasted as they are):
//     # a comment
//     pg_user = my-managed-identity # an inline comment
//     pg_password = abc\#def          # "\#" is a literal '#'
//
// Problems are collected, not thrown: each names the key and where its value came from
// ("line 12", "TOKENBOUNCER_PG_PORT"), and --check prints them all at once.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenbouncer/config/settings.hpp"

namespace tokenbouncer::config {

struct problem
{
    std::string key;
    std::string where;  // "line 12", "TOKENBOUNCER_PG_PORT", or "" for a rule between keys
    std::string message;
    bool warning = false;

    std::string to_string() const;
};

struct raw_entry
{
    std::string value;
    std::string where;  // "line 12", "TOKENBOUNCER_PG_PORT", "default"
};

using raw_config = std::map<std::string, raw_entry, std::less<>>;

struct load_result
{
    settings values;
    raw_config raw;  // what was set, for SHOW CONFIG
    std::vector<problem> problems;

    bool ok() const;
    std::vector<problem> errors() const;
    std::vector<problem> warnings() const;
};

// Parses the text of a config file into raw entries (no file system, no environment).
void parse_config_text(std::string_view text, raw_config& raw, std::vector<problem>& problems);

// Applies TOKENBOUNCER_<KEY> entries from an environment ("NAME=VALUE" strings).
void apply_environment(const std::vector<std::string>& environment, raw_config& raw, std::vector<problem>& problems);

// Checks each value against the key table and the rules between keys, and builds the settings.
load_result build_settings(raw_config raw, std::vector<problem> problems);

// All of the above. `path` may be empty (configuration from the environment only).
load_result load(const std::string& path, const std::vector<std::string>& environment);

// The process environment as "NAME=VALUE" strings.
std::vector<std::string> process_environment();

// A value as it may be shown (SHOW CONFIG, --check): secrets become "***".
std::string display_value(const key_info& key, std::string_view value);

// Every supported key with the value in effect and where it came from, secrets as "***"
// (SHOW CONFIG, --check -v).
struct effective_entry
{
    std::string key;
    std::string value;
    std::string default_value;
    bool reloadable = false;
    std::string source;  // "line 12", "TOKENBOUNCER_PG_PORT", "default", "inherited from pg_host"
};
std::vector<effective_entry> effective_config(const raw_config& raw);

// "15" -> 15 s, "500ms", "2.5s", "10min", "1h"; nullopt when malformed.
std::optional<duration> parse_duration(std::string_view text);
std::optional<bool> parse_bool(std::string_view text);

}  // namespace tokenbouncer::config
