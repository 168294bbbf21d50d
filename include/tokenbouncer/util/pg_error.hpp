#pragma once
// An error as a PostgreSQL client sees it: the fields of an ErrorResponse.
//
// Every failure that reaches a client is one of these, with a SQLSTATE from
// https://www.postgresql.org/docs/current/errcodes-appendix.html and a message that says what to fix.

#include <string>
#include <utility>

#include <boost/system/result.hpp>

namespace tokenbouncer {

namespace sqlstate {
inline constexpr const char* connection_exception = "08000";
inline constexpr const char* connection_failure = "08006";
inline constexpr const char* sqlclient_unable_to_establish = "08001";
inline constexpr const char* protocol_violation = "08P01";
inline constexpr const char* feature_not_supported = "0A000";
inline constexpr const char* invalid_authorization = "28000";
inline constexpr const char* invalid_password = "28P01";
inline constexpr const char* invalid_catalog_name = "3D000";
inline constexpr const char* too_many_connections = "53300";
inline constexpr const char* query_canceled = "57014";
inline constexpr const char* admin_shutdown = "57P01";
inline constexpr const char* cannot_connect_now = "57P03";
inline constexpr const char* idle_session_timeout = "57P05";
inline constexpr const char* idle_in_transaction_session_timeout = "25P03";
inline constexpr const char* internal_error = "XX000";
inline constexpr const char* program_limit_exceeded = "54000";
inline constexpr const char* configuration_limit_exceeded = "53400";
inline constexpr const char* insufficient_privilege = "42501";
inline constexpr const char* syntax_error = "42601";
inline constexpr const char* object_not_in_prerequisite_state = "55000";
}  // namespace sqlstate

struct pg_error
{
    std::string severity = "FATAL";  // ERROR, FATAL (closes the connection), ...
    std::string code = sqlstate::internal_error;
    std::string message;
    std::string detail;
    std::string hint;

    static pg_error fatal(std::string code, std::string message, std::string hint = {})
    {
        return pg_error{"FATAL", std::move(code), std::move(message), {}, std::move(hint)};
    }
    static pg_error error(std::string code, std::string message, std::string hint = {})
    {
        return pg_error{"ERROR", std::move(code), std::move(message), {}, std::move(hint)};
    }

    // "FATAL 08006: message" for logs.
    std::string to_string() const;
};

// Lets boost::system::result<T, pg_error>::value() throw.
[[noreturn]] void throw_exception_from_error(const pg_error& e, const boost::source_location& loc);

template <class T>
using pg_result = boost::system::result<T, pg_error>;

}  // namespace tokenbouncer
