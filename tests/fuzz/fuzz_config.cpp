// Fuzz target: the configuration file, as config::load reads it (parse_config_text, then
// TOKENBOUNCER_<KEY> variables, then build_settings), and the value parsers it uses.
//
// Input: the text of a config file. Its lines that start with "TOKENBOUNCER_" are also applied as
// environment variables.

#include "targets.hpp"

#include "tokenbouncer/config/loader.hpp"

#include <cctype>
#include <vector>

namespace tokenbouncer::fuzz {

void config(std::string_view input)
{
    namespace cfg = tokenbouncer::config;
    cfg::raw_config raw;
    std::vector<cfg::problem> problems;
    cfg::parse_config_text(input, raw, problems);

    std::size_t lines = 1;
    for (char c : input)
        lines += c == '\n';
    for (const auto& [key, entry] : raw)
    {
        // Keys are trimmed and lower case; each comes from a line of the file.
        TB_FUZZ_CHECK(!key.empty() && !std::isspace(static_cast<unsigned char>(key.front())) &&
                      !std::isspace(static_cast<unsigned char>(key.back())));
        for (char c : key)
            TB_FUZZ_CHECK(!std::isupper(static_cast<unsigned char>(c)));
        TB_FUZZ_CHECK(entry.where.rfind("line ", 0) == 0);
        TB_FUZZ_CHECK(std::stoul(entry.where.substr(5)) <= lines);
        // What build_settings does with values of each type must not trip on any of them.
        cfg::parse_duration(entry.value);
        cfg::parse_bool(entry.value);
        if (const cfg::key_info* k = cfg::find_key(key))
        {
            std::string shown = cfg::display_value(*k, entry.value);
            if (k->type == cfg::key_type::secret && !entry.value.empty())
                TB_FUZZ_CHECK(shown == "***");
        }
    }

    std::vector<std::string> environment;
    for (std::size_t pos = 0; pos < input.size();)
    {
        auto nl = input.find('\n', pos);
        auto line = input.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        if (line.rfind("TOKENBOUNCER_", 0) == 0)
            environment.emplace_back(line);
        pos = nl == std::string_view::npos ? input.size() : nl + 1;
    }
    cfg::apply_environment(environment, raw, problems);

    cfg::load_result res = cfg::build_settings(std::move(raw), std::move(problems));
    TB_FUZZ_CHECK(res.ok() == res.errors().empty());
    TB_FUZZ_CHECK(res.errors().size() + res.warnings().size() == res.problems.size());
    for (const auto& p : res.problems)
        TB_FUZZ_CHECK(!p.message.empty() && !p.to_string().empty());
    // Only known keys survive into the settings' raw view.
    for (const auto& [key, entry] : res.raw)
        TB_FUZZ_CHECK(cfg::find_key(key) != nullptr);
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::config)
