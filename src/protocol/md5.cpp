#include "tokenbouncer/protocol/md5.hpp"

#include "tokenbouncer/util/crypto.hpp"

namespace tokenbouncer::protocol {

std::string md5_password_response(std::string_view password, std::string_view user, std::string_view salt)
{
    std::string inner = to_hex(md5(std::string(password) + std::string(user)));
    std::string outer = to_hex(md5(inner + std::string(salt)));
    return "md5" + outer;
}

}  // namespace tokenbouncer::protocol
