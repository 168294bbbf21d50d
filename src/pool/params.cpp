#include "tokenbouncer/pool/params.hpp"

#include <algorithm>

#include "tokenbouncer/protocol/messages.hpp"

namespace tokenbouncer::pool {

namespace {

// Parameter names are ASCII; no locale lookup per character (this runs for every ParameterStatus).
char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

}  // namespace

std::optional<std::string_view> tracked_name(std::string_view name)
{
    for (auto t : tracked_parameters)
        if (iequals(t, name))
            return t;
    return std::nullopt;
}

client_parameters split_startup_parameters(const protocol::startup_parameters& params)
{
    client_parameters out;
    std::map<std::string, std::string> others;
    for (const auto& [k, v] : params.items)
    {
        if (k == "user" || k == "database" || k.rfind("_pq_.", 0) == 0)
            continue;
        if (auto t = tracked_name(k))
            out.tracked[std::string(*t)] = v;
        else
            others[k] = v;
    }
    for (const auto& [k, v] : others)
    {
        out.signature += k;
        out.signature.push_back('\0');
        out.signature += v;
        out.signature.push_back('\0');
        out.untracked.items.emplace_back(k, v);
    }
    return out;
}

std::string build_sync_query(const param_map& wanted, const param_map& current)
{
    std::string sql;
    for (const auto& [name, value] : wanted)
    {
        auto it = current.find(name);
        if (it != current.end() && it->second == value)
            continue;
        sql += "SET ";
        sql += protocol::quote_identifier(name);
        sql += " = ";
        sql += protocol::quote_literal(value);
        sql += ';';
    }
    return sql;
}

}  // namespace tokenbouncer::pool
