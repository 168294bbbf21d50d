#include "tokenbouncer/protocol/md5.hpp"

#include <openssl/crypto.h>

#include "tokenbouncer/util/crypto.hpp"
#include "tokenbouncer/util/secret.hpp"

namespace tokenbouncer::protocol {

std::string md5_password_response(std::string_view password, std::string_view user, std::string_view salt)
{
    // password + user and its hash are as good as the password to PostgreSQL: wipe them.
    std::string joined;
    joined.reserve(password.size() + user.size());
    joined.append(password).append(user);
    bytes inner_hash = md5(joined);
    wipe_string(joined);
    std::string inner = to_hex(inner_hash);
    OPENSSL_cleanse(inner_hash.data(), inner_hash.size());
    inner.reserve(inner.size() + salt.size());
    inner.append(salt);
    std::string outer = to_hex(md5(inner));
    wipe_string(inner);
    return "md5" + outer;
}

}  // namespace tokenbouncer::protocol
