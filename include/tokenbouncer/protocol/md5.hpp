#pragma once
// PostgreSQL's MD5 password response: "md5" + md5hex(md5hex(password + user) + salt).

#include <string>
#include <string_view>

namespace tokenbouncer::protocol {

std::string md5_password_response(std::string_view password, std::string_view user, std::string_view salt);

}  // namespace tokenbouncer::protocol
