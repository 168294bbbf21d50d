#include "tokenbouncer/config/auth_file.hpp"

namespace tokenbouncer::config {

namespace {

// A `"..."` string at `i` (after blanks), with `""` for a quote; false when there is none.
bool quoted(std::string_view line, std::size_t& i, std::string& out)
{
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
        ++i;
    if (i >= line.size() || line[i] != '"')
        return false;
    for (++i; i < line.size(); ++i)
    {
        if (line[i] != '"')
        {
            out.push_back(line[i]);
            continue;
        }
        if (i + 1 < line.size() && line[i + 1] == '"')
        {
            out.push_back('"');
            ++i;
            continue;
        }
        ++i;
        return true;
    }
    return false;
}

}  // namespace

boost::system::result<auth_file_users, std::string> parse_auth_file(std::string_view text)
{
    auth_file_users users;
    int n = 0;
    for (std::size_t pos = 0; pos < text.size();)
    {
        auto nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        ++n;
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        std::size_t i = line.find_first_not_of(" \t");
        if (i == std::string_view::npos || line[i] == ';' || line[i] == '#')
            continue;
        std::string user, secret_text;
        secret_text.reserve(line.size());  // no reallocation leaves a copy behind
        if (!quoted(line, i, user) || !quoted(line, i, secret_text))
        {
            wipe_string(secret_text);
            return boost::system::result<auth_file_users, std::string>(
                boost::system::in_place_error, "line " + std::to_string(n) + ": expected \"user\" \"password\"");
        }
        users[user] = secret(secret_text);  // replacing a value wipes the old one
        wipe_string(secret_text);
    }
    return users;
}

}  // namespace tokenbouncer::config
