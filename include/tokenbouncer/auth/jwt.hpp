#pragma once
// The signed JWT a service principal presents instead of a secret (certificate credentials).
// https://learn.microsoft.com/entra/identity-platform/certificate-credentials
//
//   header  {"alg":"PS256","typ":"JWT","x5t#S256":<base64url SHA-256 of the cert DER>,"x5t":<SHA-1>}
//   claims  {"aud":<token URL>,"iss":<client id>,"sub":<client id>,"jti":<uuid>,"nbf":now,"iat":now,
//            "exp":now+600}
//   signed with the certificate's RSA key (PS256: RSA-PSS SHA-256; RS256: PKCS#1 v1.5 SHA-256)

#include <chrono>
#include <memory>
#include <string>

#include <boost/system/result.hpp>
#include <openssl/evp.h>

namespace tokenbouncer::auth {

struct client_certificate
{
    std::shared_ptr<EVP_PKEY> key;
    std::string x5t_s256;  // base64url SHA-256 thumbprint
    std::string x5t;       // base64url SHA-1 thumbprint
    std::string thumbprint_hex;  // SHA-1, for logs (as the Azure portal shows it)
};

struct load_error
{
    std::string message;
};
[[noreturn]] void throw_exception_from_error(const load_error& e, const boost::source_location& loc);

// A PEM file holding the certificate and its (unencrypted) RSA private key.
boost::system::result<client_certificate, load_error> load_client_certificate(const std::string& path);

std::string build_client_assertion(const client_certificate& cert, const std::string& client_id,
                                   const std::string& audience, std::chrono::system_clock::time_point now,
                                   bool pss = true);

// A random (version 4) UUID.
std::string random_uuid();

}  // namespace tokenbouncer::auth
