#include "tokenbouncer/auth/jwt.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstdio>
#include <stdexcept>

#include "tokenbouncer/util/crypto.hpp"

namespace tokenbouncer::auth {

void throw_exception_from_error(const load_error& e, const boost::source_location&)
{
    throw std::runtime_error(e.message);
}

namespace {

std::string digest_b64url(const EVP_MD* md, const unsigned char* der, int len, std::string* hex = nullptr)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(der, static_cast<std::size_t>(len), out, &n, md, nullptr);
    if (hex)
        *hex = to_hex(bytes(out, out + n));
    return base64url_encode(std::string_view(reinterpret_cast<const char*>(out), n));
}

}  // namespace

boost::system::result<client_certificate, load_error> load_client_certificate(const std::string& path)
{
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f)
        return load_error{"cannot read the certificate file \"" + path + "\""};
    X509* cert = PEM_read_X509(f.get(), nullptr, nullptr, nullptr);
    std::rewind(f.get());
    EVP_PKEY* key = PEM_read_PrivateKey(f.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
    ERR_clear_error();
    std::unique_ptr<X509, void (*)(X509*)> cert_guard(cert, &X509_free);
    std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key_guard(key, &EVP_PKEY_free);
    if (!cert)
        return load_error{"no certificate in \"" + path + "\" (expected a PEM file with the certificate and its key)"};
    if (!key)
        return load_error{"no usable private key in \"" + path +
                          "\" (expected an unencrypted PEM private key next to the certificate)"};
    client_certificate out;
    out.key.reset(key_guard.release(), &EVP_PKEY_free);
    if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA)
        return load_error{"the key in \"" + path + "\" is not an RSA key (Microsoft Entra needs RSA)"};
    if (X509_check_private_key(cert, key) != 1)
    {
        ERR_clear_error();
        return load_error{"the private key in \"" + path + "\" does not belong to its certificate"};
    }
    unsigned char* der = nullptr;
    int len = i2d_X509(cert, &der);
    if (len <= 0)
        return load_error{"cannot encode the certificate of \"" + path + "\""};
    out.x5t_s256 = digest_b64url(EVP_sha256(), der, len);
    out.x5t = digest_b64url(EVP_sha1(), der, len, &out.thumbprint_hex);
    OPENSSL_free(der);
    return out;
}

std::string random_uuid()
{
    bytes b = random_bytes(16);
    b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
    std::string h = to_hex(b);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20);
}

std::string build_client_assertion(const client_certificate& cert, const std::string& client_id,
                                   const std::string& audience, std::chrono::system_clock::time_point now, bool pss)
{
    namespace json = boost::json;
    long long t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    json::object header{{"alg", pss ? "PS256" : "RS256"}, {"typ", "JWT"}, {"x5t#S256", cert.x5t_s256}, {"x5t", cert.x5t}};
    json::object claims{{"aud", audience}, {"iss", client_id}, {"sub", client_id}, {"jti", random_uuid()},
                        {"nbf", t}, {"iat", t}, {"exp", t + 600}};
    std::string signing_input = base64url_encode(json::serialize(header)) + "." + base64url_encode(json::serialize(claims));

    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    if (EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, cert.key.get()) != 1)
        throw std::runtime_error("EVP_DigestSignInit failed");
    if (pss)
    {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    std::size_t len = 0;
    auto in = reinterpret_cast<const unsigned char*>(signing_input.data());
    if (EVP_DigestSign(ctx.get(), nullptr, &len, in, signing_input.size()) != 1)
        throw std::runtime_error("EVP_DigestSign failed");
    std::string sig(len, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, signing_input.size()) != 1)
        throw std::runtime_error("EVP_DigestSign failed");
    sig.resize(len);
    return signing_input + "." + base64url_encode(sig);
}

}  // namespace tokenbouncer::auth
