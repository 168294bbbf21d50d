#include "tokenbouncer/util/pg_error.hpp"

#include <stdexcept>

namespace tokenbouncer {

std::string pg_error::to_string() const
{
    std::string s = severity + " " + code + ": " + message;
    if (!detail.empty())
        s += " (" + detail + ")";
    return s;
}

void throw_exception_from_error(const pg_error& e, const boost::source_location&)
{
    throw std::runtime_error(e.to_string());
}

}  // namespace tokenbouncer
