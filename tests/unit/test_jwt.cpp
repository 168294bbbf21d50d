// auth/jwt.hpp: loading a client certificate (PEM: certificate + unencrypted RSA key) and the signed
// client assertion Microsoft Entra accepts instead of a secret. The keys and certificates are made
// here with OpenSSL 3; the checks (thumbprints, base64url, signature) are computed independently.

#include <catch2/catch.hpp>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "tokenbouncer/auth/jwt.hpp"

using namespace tokenbouncer::auth;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

using pkey_ptr = std::shared_ptr<EVP_PKEY>;
using x509_ptr = std::shared_ptr<X509>;

pkey_ptr rsa_key(unsigned bits = 2048)
{
    EVP_PKEY* k = EVP_RSA_gen(bits);
    REQUIRE(k != nullptr);
    return pkey_ptr(k, &EVP_PKEY_free);
}

pkey_ptr ec_key()
{
    EVP_PKEY* k = EVP_EC_gen("P-256");
    REQUIRE(k != nullptr);
    return pkey_ptr(k, &EVP_PKEY_free);
}

// A self-signed certificate for `key`, signed with `key`.
x509_ptr self_signed(const pkey_ptr& key, const char* cn = "tokenbouncer-test")
{
    x509_ptr cert(X509_new(), &X509_free);
    REQUIRE(cert);
    REQUIRE(X509_set_version(cert.get(), 2) == 1);
    REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242) == 1);
    REQUIRE(X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) != nullptr);
    REQUIRE(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 365L * 86400) != nullptr);
    REQUIRE(X509_set_pubkey(cert.get(), key.get()) == 1);
    X509_NAME* name = X509_get_subject_name(cert.get());
    REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1,
                                       0) == 1);
    REQUIRE(X509_set_issuer_name(cert.get(), name) == 1);
    REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
    return cert;
}

// The shared material: made once (RSA key generation takes a moment).
struct material
{
    pkey_ptr key = rsa_key();
    x509_ptr cert = self_signed(key);
    pkey_ptr other_key = rsa_key();
    pkey_ptr ec = ec_key();
    x509_ptr ec_cert = self_signed(ec, "tokenbouncer-ec");

    static const material& get()
    {
        static const material m;
        return m;
    }
};

std::string pem_cert(const x509_ptr& c)
{
    std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    REQUIRE(PEM_write_bio_X509(bio.get(), c.get()) == 1);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

enum class key_format
{
    pkcs8,        // BEGIN PRIVATE KEY
    traditional,  // BEGIN RSA PRIVATE KEY
    encrypted,    // BEGIN ENCRYPTED PRIVATE KEY
};

std::string pem_key(const pkey_ptr& k, key_format f = key_format::pkcs8)
{
    std::unique_ptr<BIO, int (*)(BIO*)> bio(BIO_new(BIO_s_mem()), &BIO_free);
    int ok = 0;
    if (f == key_format::pkcs8)
        ok = PEM_write_bio_PrivateKey(bio.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr);
    else if (f == key_format::traditional)
        ok = PEM_write_bio_PrivateKey_traditional(bio.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr);
    else
    {
        static char pass[] = "correct horse";
        ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), k.get(), EVP_aes_256_cbc(), nullptr, 0, nullptr, pass);
    }
    REQUIRE(ok == 1);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

// A directory of its own, removed at the end of the test.
struct temp_dir
{
    fs::path path;
    temp_dir()
    {
        std::string tmpl = (fs::temp_directory_path() / "tb_jwt_XXXXXX").string();
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~temp_dir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string write(const std::string& name, const std::string& content) const
    {
        auto p = path / name;
        std::ofstream out(p, std::ios::binary);
        out << content;
        out.close();
        REQUIRE(out.good());
        return p.string();
    }
};

// --- independent helpers ----------------------------------------------------------------------------

std::string b64url(const unsigned char* p, std::size_t n)
{
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < n; i += 3)
    {
        unsigned v = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2];
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (n - i == 1)
    {
        unsigned v = p[i] << 16;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
    }
    else if (n - i == 2)
    {
        unsigned v = (p[i] << 16) | (p[i + 1] << 8);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
    }
    return out;
}

// base64url without padding; nullopt for any character outside the alphabet or a bad length.
std::optional<std::string> b64url_decode(const std::string& s)
{
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z')
            return c - 'A';
        if (c >= 'a' && c <= 'z')
            return c - 'a' + 26;
        if (c >= '0' && c <= '9')
            return c - '0' + 52;
        if (c == '-')
            return 62;
        if (c == '_')
            return 63;
        return -1;
    };
    if (s.size() % 4 == 1)
        return std::nullopt;
    std::string out;
    unsigned acc = 0;
    int bits = 0;
    for (char c : s)
    {
        int v = val(c);
        if (v < 0)
            return std::nullopt;
        acc = (acc << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8)
        {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return out;
}

std::string hex(const unsigned char* p, std::size_t n)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < n; ++i)
    {
        out += digits[p[i] >> 4];
        out += digits[p[i] & 15];
    }
    return out;
}

std::vector<unsigned char> der(const x509_ptr& c)
{
    unsigned char* p = nullptr;
    int len = i2d_X509(c.get(), &p);
    REQUIRE(len > 0);
    std::vector<unsigned char> out(p, p + len);
    OPENSSL_free(p);
    return out;
}

std::vector<unsigned char> digest(const EVP_MD* md, const std::vector<unsigned char>& data)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), out, &n, md, nullptr) == 1);
    return std::vector<unsigned char>(out, out + n);
}

std::vector<std::string> split(const std::string& s, char sep)
{
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;)
    {
        auto p = s.find(sep, start);
        parts.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
        if (p == std::string::npos)
            return parts;
        start = p + 1;
    }
}

// EVP_DigestVerify of `input` against `sig` with the certificate's public key.
bool verify(const x509_ptr& cert, const std::string& input, const std::string& sig, bool pss)
{
    pkey_ptr pub(X509_get_pubkey(cert.get()), &EVP_PKEY_free);
    REQUIRE(pub);
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    REQUIRE(EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pub.get()) == 1);
    if (pss)
    {
        REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
        REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1);  // salt length = SHA-256 length
    }
    else
    {
        REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1);
    }
    int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                              reinterpret_cast<const unsigned char*>(input.data()), input.size());
    ERR_clear_error();
    return rc == 1;
}

bool is_b64url(const std::string& s)
{
    return !s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
                             std::string::npos;
}

const std::regex uuid_v4("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");

}  // namespace

// --- the test's own helpers, checked against known answers ------------------------------------------

TEST_CASE("jwt test helpers: base64url known answers", "[token][jwt]")
{
    auto enc = [](const std::string& s) { return b64url(reinterpret_cast<const unsigned char*>(s.data()), s.size()); };
    CHECK(enc("") == "");
    CHECK(enc("f") == "Zg");
    CHECK(enc("fo") == "Zm8");
    CHECK(enc("foo") == "Zm9v");
    CHECK(enc("foob") == "Zm9vYg");
    CHECK(enc(std::string("\xfb\xff\xfe", 3)) == "-__-");
    CHECK(b64url_decode("Zm9vYg") == std::optional<std::string>("foob"));
    CHECK(b64url_decode("-__-") == std::optional<std::string>(std::string("\xfb\xff\xfe", 3)));
    CHECK_FALSE(b64url_decode("Zm9v+g").has_value());
    CHECK_FALSE(b64url_decode("Zm9vY").has_value());
}

// --- load_client_certificate -----------------------------------------------------------------------

TEST_CASE("load_client_certificate: a certificate with its key and its thumbprints", "[token][jwt]")
{
    const auto& m = material::get();
    temp_dir dir;
    auto d = der(m.cert);
    auto s256 = digest(EVP_sha256(), d);
    auto s1 = digest(EVP_sha1(), d);
    REQUIRE(s256.size() == 32);
    REQUIRE(s1.size() == 20);

    struct
    {
        const char* name;
        std::string content;
    } cases[] = {
        {"certificate then PKCS#8 key", pem_cert(m.cert) + pem_key(m.key)},
        {"key then certificate", pem_key(m.key) + pem_cert(m.cert)},
        {"traditional RSA PRIVATE KEY", pem_cert(m.cert) + pem_key(m.key, key_format::traditional)},
        {"with text around the blocks", "Bag Attributes\n    friendlyName: tb\n" + pem_cert(m.cert) + "\nsome text\n" +
                                            pem_key(m.key)},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            auto path = dir.write("client.pem", c.content);
            auto r = load_client_certificate(path);
            REQUIRE(r.has_value());
            REQUIRE(r->key != nullptr);
            CHECK(EVP_PKEY_base_id(r->key.get()) == EVP_PKEY_RSA);
            CHECK(EVP_PKEY_eq(r->key.get(), m.key.get()) == 1);
            CHECK(r->x5t_s256 == b64url(s256.data(), s256.size()));
            CHECK(r->x5t_s256.size() == 43);  // 32 bytes, no padding
            CHECK(r->x5t_s256.find('=') == std::string::npos);
            CHECK(r->x5t == b64url(s1.data(), s1.size()));
            CHECK(r->x5t.size() == 27);  // 20 bytes, no padding
            CHECK(r->thumbprint_hex == hex(s1.data(), s1.size()));
            CHECK(r->thumbprint_hex.size() == 40);
        }
    }
}

TEST_CASE("load_client_certificate: rejected files and why", "[token][jwt]")
{
    const auto& m = material::get();
    temp_dir dir;
    struct
    {
        const char* name;
        std::optional<std::string> content;  // nullopt: the file does not exist
        std::string message;                   // a substring of the error
    } cases[] = {
        {"missing file", std::nullopt, "cannot read the certificate file \""},
        {"empty file", "", "no certificate in \""},
        {"not PEM", "hello, world\n", "no certificate in \""},
        {"a certificate and no key", pem_cert(m.cert), "no usable private key in \""},
        {"an encrypted key", pem_cert(m.cert) + pem_key(m.key, key_format::encrypted), "no usable private key in \""},
        {"a truncated key", pem_cert(m.cert) + pem_key(m.key).substr(0, 200), "no usable private key in \""},
        {"an EC key and certificate", pem_cert(m.ec_cert) + pem_key(m.ec),
         "is not an RSA key (Microsoft Entra needs RSA)"},
        {"a key that is not the certificate's", pem_cert(m.cert) + pem_key(m.other_key),
         "does not belong to its certificate"},
        {"an RSA certificate with an EC key", pem_cert(m.cert) + pem_key(m.ec), "is not an RSA key"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            std::string path =
                c.content ? dir.write("client.pem", *c.content) : (dir.path / "does-not-exist.pem").string();
            auto r = load_client_certificate(path);
            REQUIRE_FALSE(r.has_value());
            INFO(r.error().message);
            CHECK(r.error().message.find(c.message) != std::string::npos);
            CHECK(r.error().message.find(path) != std::string::npos);
            CHECK(r.error().message.find("PRIVATE KEY") == std::string::npos);
        }
    }
    SECTION("result<> throws the message")
    {
        auto r = load_client_certificate((dir.path / "nope.pem").string());
        CHECK_THROWS_WITH(r.value(), Catch::Contains("cannot read the certificate file"));
    }
}

// Regression test (was a bug): load_client_certificate leaks the EVP_PKEY when the file holds a key but no
// certificate (it returns "no certificate" before the key is put in `out.key`); the assertions pass, but an
// AddressSanitizer build (-DTOKENBOUNCER_SANITIZE=ON) reports "LeakSanitizer: detected memory leaks"
// (EVP_PKEY_new from PEM_read_PrivateKey) at exit.
TEST_CASE("load_client_certificate: a key and no certificate", "[token][jwt]")
{
    const auto& m = material::get();
    temp_dir dir;
    auto path = dir.write("key-only.pem", pem_key(m.key));
    auto r = load_client_certificate(path);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "no certificate in \"" + path +
                                   "\" (expected a PEM file with the certificate and its key)");
}

// --- random_uuid -----------------------------------------------------------------------------------------

TEST_CASE("random_uuid: version 4, variant 10, lower-case hex, unique", "[token][jwt]")
{
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i)
    {
        auto u = random_uuid();
        INFO(u);
        REQUIRE(u.size() == 36);
        CHECK(std::regex_match(u, uuid_v4));
        seen.insert(u);
    }
    CHECK(seen.size() == 1000);
}

// --- build_client_assertion ------------------------------------------------------------------------------

TEST_CASE("build_client_assertion: header, claims and a signature that verifies", "[token][jwt]")
{
    const auto& m = material::get();
    temp_dir dir;
    auto path = dir.write("client.pem", pem_cert(m.cert) + pem_key(m.key));
    auto cert = load_client_certificate(path);
    REQUIRE(cert.has_value());

    const std::string client_id = "22222222-2222-2222-2222-222222222222";
    const std::string audience =
        "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/oauth2/v2.0/token";
    // Sub-second part: the claims are whole seconds.
    const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000)) +
                     std::chrono::milliseconds(750);
    auto d = der(m.cert);
    auto s256 = digest(EVP_sha256(), d);

    for (bool pss : {true, false})
    {
        SECTION(pss ? "PS256" : "RS256")
        {
            std::string jwt = build_client_assertion(*cert, client_id, audience, now, pss);
            auto parts = split(jwt, '.');
            REQUIRE(parts.size() == 3);
            for (const auto& p : parts)
                CHECK(is_b64url(p));

            auto header_text = b64url_decode(parts[0]);
            auto claims_text = b64url_decode(parts[1]);
            auto sig = b64url_decode(parts[2]);
            REQUIRE(header_text);
            REQUIRE(claims_text);
            REQUIRE(sig);
            CHECK(sig->size() == 256);  // RSA-2048

            json::value header = json::parse(*header_text);
            REQUIRE(header.is_object());
            const auto& h = header.as_object();
            CHECK(h.at("alg").as_string() == (pss ? "PS256" : "RS256"));
            CHECK(h.at("typ").as_string() == "JWT");
            CHECK(h.at("x5t#S256").as_string() == b64url(s256.data(), s256.size()));
            CHECK(h.at("x5t").as_string() == cert->x5t);

            json::value claims = json::parse(*claims_text);
            REQUIRE(claims.is_object());
            const auto& c = claims.as_object();
            CHECK(c.at("aud").as_string() == audience);
            CHECK(c.at("iss").as_string() == client_id);
            CHECK(c.at("sub").as_string() == client_id);
            std::string jti(c.at("jti").as_string().c_str());
            CHECK(std::regex_match(jti, uuid_v4));
            REQUIRE(c.at("nbf").is_int64());
            REQUIRE(c.at("iat").is_int64());
            REQUIRE(c.at("exp").is_int64());
            CHECK(c.at("nbf").as_int64() == 1700000000);
            CHECK(c.at("iat").as_int64() == 1700000000);
            CHECK(c.at("exp").as_int64() == 1700000000 + 600);

            const std::string input = parts[0] + "." + parts[1];
            CHECK(verify(m.cert, input, *sig, pss));
            // The other padding does not verify it.
            CHECK_FALSE(verify(m.cert, input, *sig, !pss));

            SECTION("one byte of the payload changed: the signature fails")
            {
                for (std::size_t pos : {parts[0].size() + 1, input.size() / 2 + parts[0].size() / 2, input.size() - 1})
                {
                    std::string tampered = input;
                    tampered[pos] = tampered[pos] == 'A' ? 'B' : 'A';
                    INFO("position " << pos);
                    CHECK_FALSE(verify(m.cert, tampered, *sig, pss));
                }
            }
            SECTION("one bit of the signature changed: the signature fails")
            {
                std::string bad = *sig;
                bad[100] = static_cast<char>(bad[100] ^ 0x01);
                CHECK_FALSE(verify(m.cert, input, bad, pss));
            }
            SECTION("another certificate's key does not verify it")
            {
                auto other = self_signed(m.other_key, "other");
                CHECK_FALSE(verify(other, input, *sig, pss));
            }
        }
    }
    SECTION("every assertion has its own jti")
    {
        std::set<std::string> jtis;
        for (int i = 0; i < 20; ++i)
        {
            auto parts = split(build_client_assertion(*cert, client_id, audience, now), '.');
            REQUIRE(parts.size() == 3);
            auto claims = json::parse(*b64url_decode(parts[1]));
            jtis.insert(std::string(claims.as_object().at("jti").as_string().c_str()));
        }
        CHECK(jtis.size() == 20);
    }
    SECTION("PS256 is the default")
    {
        auto parts = split(build_client_assertion(*cert, client_id, audience, now), '.');
        REQUIRE(parts.size() == 3);
        auto header = json::parse(*b64url_decode(parts[0]));
        CHECK(header.as_object().at("alg").as_string() == "PS256");
        CHECK(verify(m.cert, parts[0] + "." + parts[1], *b64url_decode(parts[2]), true));
    }
    SECTION("special characters in the audience are JSON-escaped")
    {
        std::string aud = "https://login.test/\"tenant\"\\/oauth2/v2.0/token";
        auto parts = split(build_client_assertion(*cert, client_id, aud, now), '.');
        REQUIRE(parts.size() == 3);
        auto claims = json::parse(*b64url_decode(parts[1]));
        CHECK(claims.as_object().at("aud").as_string() == aud);
    }
}
