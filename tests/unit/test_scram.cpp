// SCRAM-SHA-256 (client and server side, verifiers) and the MD5 password response.
//
// Expected values were computed independently with Python's hashlib/hmac (see the comments), and
// the server side is checked against the RFC 7677 section 3 example exactly.

#include <catch2/catch.hpp>

#include <openssl/evp.h>

#include <string>

#include "tokenbouncer/protocol/md5.hpp"
#include "tokenbouncer/protocol/scram.hpp"
#include "tokenbouncer/util/crypto.hpp"

using namespace tokenbouncer;
using namespace tokenbouncer::protocol;

namespace {

// RFC 7677, section 3.
constexpr const char* rfc_client_nonce = "rOprNGfwEbeRWgbNEkqO";
constexpr const char* rfc_server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr const char* rfc_client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr const char* rfc_server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr const char* rfc_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr const char* rfc_server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// The verifier PostgreSQL would store for "pencil" with that salt and iteration count:
//   salted = pbkdf2_hmac("sha256", b"pencil", b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
//   StoredKey = sha256(hmac(salted, "Client Key")), ServerKey = hmac(salted, "Server Key")
constexpr const char* rfc_verifier =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
// The same exchange with the empty user name tokenbouncer sends ("n=,r=..."), computed with the
// RFC's formulas in Python: the auth message starts "n=,r=rOprNGfwEbeRWgbNEkqO,".
constexpr const char* empty_user_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=";
constexpr const char* empty_user_server_final = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";

struct exchange
{
    bool ok = false;
    std::string stage;  // where it failed
    std::string error;
    std::string server_final;
};

// A full exchange between a scram_client and a scram_server.
exchange run_exchange(scram_client& client, scram_server& server)
{
    exchange x;
    std::string client_first = client.client_first();
    std::string server_first, client_final;
    if (!server.handle_client_first(client_first, server_first, x.error))
        x.stage = "handle_client_first";
    else if (!client.handle_server_first(server_first, client_final, x.error))
        x.stage = "handle_server_first";
    else if (!server.handle_client_final(client_final, x.server_final, x.error))
        x.stage = "handle_client_final";
    else if (!client.verify_server_final(x.server_final, x.error))
        x.stage = "verify_server_final";
    else
        x.ok = true;
    return x;
}

std::string md5hex_evp(const std::string& data)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), out, &n, EVP_md5(), nullptr) == 1);
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < n; ++i)
    {
        hex.push_back(digits[out[i] >> 4]);
        hex.push_back(digits[out[i] & 0xf]);
    }
    return hex;
}

}  // namespace

// --- Exchanges ------------------------------------------------------------------------------------

TEST_CASE("SCRAM: client and server with the same password succeed both ways", "[scram]")
{
    struct
    {
        const char* name;
        const char* password;
        int iterations;
    } cases[] = {
        {"ASCII password", "correct horse battery staple", 4096},
        {"UTF-8 password", "p\xc3\xa4ssw\xc3\xb6rd", 4096},
        {"one iteration", "x", 1},
        {"password with commas and equals signs", "a,b=c,,=", 4096},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            scram_verifier v = scram_verifier::from_password(c.password, c.iterations);
            CHECK(v.iterations == c.iterations);
            scram_server server(v);
            scram_client client{secret(std::string(c.password))};
            exchange x = run_exchange(client, server);
            INFO("failed at " << x.stage << ": " << x.error);
            CHECK(x.ok);
            CHECK(x.error.empty());
            CHECK(x.server_final.rfind("v=", 0) == 0);
        }
    }
}

TEST_CASE("SCRAM: client_first has an empty user name and a fresh nonce", "[scram]")
{
    scram_client a{secret(std::string("pw"))};
    scram_client b{secret(std::string("pw"))};
    std::string fa = a.client_first();
    std::string fb = b.client_first();
    CHECK(fa.rfind("n,,n=,r=", 0) == 0);
    CHECK(fa.size() > std::string("n,,n=,r=").size() + 16);
    CHECK(fa != fb);
    CHECK(fa.find(',', 8) == std::string::npos);  // the nonce has no comma

    scram_client fixed{secret(std::string("pw")), "fixednonce"};
    CHECK(fixed.client_first() == "n,,n=,r=fixednonce");
}

TEST_CASE("SCRAM: a wrong password fails at handle_client_final", "[scram]")
{
    scram_server server(scram_verifier::from_password("right password"));
    scram_client client{secret(std::string("wrong password"))};
    exchange x = run_exchange(client, server);
    CHECK_FALSE(x.ok);
    CHECK(x.stage == "handle_client_final");
    CHECK(x.error == "password authentication failed");
}

TEST_CASE("SCRAM: the client rejects a server that does not know the verifier", "[scram]")
{
    // A server with the right StoredKey but a wrong ServerKey accepts the proof, but its signature
    // is wrong.
    scram_verifier v = scram_verifier::from_password("pw");
    v.server_key[0] ^= 0x01;
    scram_server server(v);
    scram_client client{secret(std::string("pw"))};
    exchange x = run_exchange(client, server);
    CHECK_FALSE(x.ok);
    CHECK(x.stage == "verify_server_final");
    CHECK_THAT(x.error, Catch::Contains("signature"));
}

TEST_CASE("SCRAM: verify_server_final rejects malformed and error messages", "[scram]")
{
    scram_server server(scram_verifier::from_password("pw"));
    scram_client client{secret(std::string("pw"))};
    std::string sf, cf, sfinal, err;
    REQUIRE(server.handle_client_first(client.client_first(), sf, err));
    REQUIRE(client.handle_server_first(sf, cf, err));
    REQUIRE(server.handle_client_final(cf, sfinal, err));

    struct
    {
        const char* name;
        std::string message;
        const char* error_part;
    } cases[] = {
        {"e= error from the server", "e=invalid-proof", "invalid-proof"},
        {"neither v= nor e=", "x=abc", "malformed"},
        {"empty", "", "malformed"},
        {"bad base64", "v=!!!!", "signature"},
        {"signature of 32 zero bytes", "v=" + base64_encode(bytes(32, 0)), "signature"},
        {"truncated signature", sfinal.substr(0, sfinal.size() - 4), "signature"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            std::string e;
            CHECK_FALSE(client.verify_server_final(c.message, e));
            CHECK_THAT(e, Catch::Contains(c.error_part));
        }
    }
    SECTION("the real one passes")
    {
        std::string e;
        CHECK(client.verify_server_final(sfinal, e));
    }
}

TEST_CASE("SCRAM: verify_server_final before handle_server_first must fail", "[scram]")
{
    // Regression: before handle_server_first, server_key_ and auth_message_ are empty, and the
    // expected signature was HMAC-SHA-256(key "", message ""), which anyone can compute: a hostile
    // upstream could skip straight to AuthenticationSASLFinal.
    scram_client client{secret(std::string("pw"))};
    client.client_first();
    std::string forged = "v=" + base64_encode(hmac_sha256(bytes{}, ""));
    std::string err;
    CHECK_FALSE(client.verify_server_final(forged, err));
    CHECK_FALSE(err.empty());
}

// --- RFC 7677 test vector ---------------------------------------------------------------------------

TEST_CASE("SCRAM: RFC 7677 test vector", "[scram][rfc7677]")
{
    auto v = scram_verifier::parse(rfc_verifier);
    REQUIRE(v.has_value());
    CHECK(v->iterations == 4096);
    CHECK(base64_encode(v->salt) == "W22ZaJ0SNY7soEsUEjb6gQ==");
    CHECK(v->stored_key.size() == 32);
    CHECK(v->server_key.size() == 32);
    CHECK(v->to_string() == rfc_verifier);

    SECTION("server side, with the RFC's client messages (user name ignored)")
    {
        scram_server server(*v, rfc_server_nonce);
        std::string server_first, server_final, err;
        REQUIRE(server.handle_client_first(rfc_client_first, server_first, err));
        CHECK(server_first == rfc_server_first);
        REQUIRE(server.handle_client_final(rfc_client_final, server_final, err));
        CHECK(server_final == rfc_server_final);
    }
    SECTION("server side rejects the RFC proof with one bit changed")
    {
        scram_server server(*v, rfc_server_nonce);
        std::string server_first, server_final, err;
        REQUIRE(server.handle_client_first(rfc_client_first, server_first, err));
        std::string tampered = rfc_client_final;
        tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'Q' ? 'R' : 'Q';
        CHECK_FALSE(server.handle_client_final(tampered, server_final, err));
        CHECK(err == "password authentication failed");
    }
    SECTION("client side: tokenbouncer sends n=, so the proof differs from the RFC's")
    {
        scram_client client{secret(std::string("pencil")), rfc_client_nonce};
        CHECK(client.client_first() == "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        std::string client_final, err;
        REQUIRE(client.handle_server_first(rfc_server_first, client_final, err));
        CHECK(client_final == empty_user_client_final);

        // The proof validates on a server built from the same verifier.
        scram_server server(*v, rfc_server_nonce);
        std::string server_first, server_final;
        REQUIRE(server.handle_client_first("n,,n=,r=rOprNGfwEbeRWgbNEkqO", server_first, err));
        CHECK(server_first == rfc_server_first);
        INFO(err);
        REQUIRE(server.handle_client_final(client_final, server_final, err));
        CHECK(server_final == empty_user_server_final);
        CHECK(client.verify_server_final(server_final, err));

        // The RFC's server-final (for "n=user") belongs to another auth message.
        std::string err2;
        CHECK_FALSE(client.verify_server_final(rfc_server_final, err2));
        CHECK_FALSE(err2.empty());
    }
}

// --- Malformed messages ---------------------------------------------------------------------------

TEST_CASE("SCRAM: malformed server-first messages are rejected", "[scram]")
{
    const std::string cn = "clientnonce";
    const std::string salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    struct
    {
        const char* name;
        std::string server_first;
        const char* error_part;
    } cases[] = {
        {"empty", "", "malformed"},
        {"missing i", "r=" + cn + "srv,s=" + salt, "malformed"},
        {"missing s", "r=" + cn + "srv,i=4096", "malformed"},
        {"missing r", "s=" + salt + ",i=4096", "malformed"},
        {"attributes out of order", "s=" + salt + ",r=" + cn + "srv,i=4096", "malformed"},
        {"attribute without '='", "r" + cn + "srv,s=" + salt + ",i=4096", "malformed"},
        {"trailing comma", "r=" + cn + "srv,s=" + salt + ",i=4096,", "malformed"},
        {"nonce equal to the client nonce", "r=" + cn + ",s=" + salt + ",i=4096", "nonce"},
        {"nonce not extending the client nonce", "r=otherclientnoncesrv,s=" + salt + ",i=4096", "nonce"},
        {"nonce shorter than the client nonce", "r=client,s=" + salt + ",i=4096", "nonce"},
        {"nonce with a non-printable character", "r=" + cn + "sr\x01v,s=" + salt + ",i=4096", "nonce"},
        {"nonce with a space", "r=" + cn + "sr v,s=" + salt + ",i=4096", "nonce"},
        {"iteration count 0", "r=" + cn + "srv,s=" + salt + ",i=0", "iteration"},
        {"iteration count 1000001", "r=" + cn + "srv,s=" + salt + ",i=1000001", "iteration"},
        {"iteration count 2^31", "r=" + cn + "srv,s=" + salt + ",i=2147483648", "iteration"},
        {"negative iteration count", "r=" + cn + "srv,s=" + salt + ",i=-1", "iteration"},
        {"iteration count not a number", "r=" + cn + "srv,s=" + salt + ",i=many", "iteration"},
        {"iteration count with junk", "r=" + cn + "srv,s=" + salt + ",i=4096x", "iteration"},
        {"empty iteration count", "r=" + cn + "srv,s=" + salt + ",i=", "iteration"},
        {"salt not base64", "r=" + cn + "srv,s=!!!!,i=4096", "salt"},
        {"salt with bad padding", "r=" + cn + "srv,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "salt"},
        {"empty salt", "r=" + cn + "srv,s=,i=4096", "salt"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            scram_client client{secret(std::string("pw")), cn};
            client.client_first();
            std::string client_final = "untouched", err;
            CHECK_FALSE(client.handle_server_first(c.server_first, client_final, err));
            CHECK_FALSE(err.empty());
            CHECK_THAT(err, Catch::Contains(c.error_part));
            CHECK(client_final == "untouched");
        }
    }
    SECTION("extensions after i= are accepted")
    {
        scram_client client{secret(std::string("pw")), cn};
        client.client_first();
        std::string client_final, err;
        CHECK(client.handle_server_first("r=" + cn + "srv,s=" + salt + ",i=1,x=ext", client_final, err));
        CHECK(client_final.rfind("c=biws,r=" + cn + "srv,p=", 0) == 0);
    }
}

TEST_CASE("SCRAM: malformed client-first messages are rejected by the server", "[scram]")
{
    struct
    {
        const char* name;
        std::string client_first;
        const char* error_part;
    } cases[] = {
        {"empty", "", "malformed"},
        {"too short", "n,", "malformed"},
        {"channel binding requested", "p=tls-server-end-point,,n=,r=abc", "channel binding"},
        {"bad GS2 flag", "x,,n=,r=abc", "GS2"},
        {"GS2 flag without comma", "nn,n=,r=abc", "GS2"},
        {"authorization identity", "n,a=admin,n=,r=abc", "authorization"},
        {"missing n=", "n,,r=abc", "malformed"},
        {"missing r=", "n,,n=", "malformed"},
        {"empty nonce", "n,,n=,r=", "malformed"},
        {"nonce with a control character", "n,,n=,r=a\x01" "b", "malformed"},
        {"attributes out of order", "n,,r=abc,n=", "malformed"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            scram_server server(scram_verifier::from_password("pw", 1));
            std::string server_first = "untouched", err;
            CHECK_FALSE(server.handle_client_first(c.client_first, server_first, err));
            CHECK_THAT(err, Catch::Contains(c.error_part));
            CHECK(server_first == "untouched");
        }
    }
    SECTION("y,, (client supports channel binding, server does not offer it) is accepted")
    {
        scram_verifier v = scram_verifier::from_password("pw", 1);
        scram_server server(v, "SRV");
        std::string server_first, err;
        REQUIRE(server.handle_client_first("y,,n=,r=abc", server_first, err));
        CHECK(server_first == "r=abcSRV,s=" + base64_encode(v.salt) + ",i=1");
    }
}

TEST_CASE("SCRAM: malformed client-final messages are rejected by the server", "[scram]")
{
    scram_verifier v = scram_verifier::from_password("pw", 1);
    // A good client-final to derive the bad ones from.
    std::string good;
    {
        scram_server server(v, "SRV");
        scram_client client{secret(std::string("pw")), "cli"};
        std::string sf, err;
        REQUIRE(server.handle_client_first(client.client_first(), sf, err));
        REQUIRE(client.handle_server_first(sf, good, err));
    }
    auto proof_at = good.rfind(",p=");
    REQUIRE(proof_at != std::string::npos);
    std::string without_proof = good.substr(0, proof_at);

    struct
    {
        const char* name;
        std::string client_final;
        const char* error_part;
    } cases[] = {
        {"empty", "", "malformed"},
        {"missing proof", without_proof, "malformed"},
        {"missing c=", good.substr(good.find(',') + 1), "malformed"},
        {"channel binding data of y,,", "c=eSws,r=cliSRV" + good.substr(proof_at), "channel binding"},
        {"wrong nonce", "c=biws,r=cliXXX" + good.substr(proof_at), "nonce"},
        {"client nonce only", "c=biws,r=cli" + good.substr(proof_at), "nonce"},
        {"proof not base64", without_proof + ",p=!!!!", "proof"},
        {"proof of 31 bytes", without_proof + ",p=" + base64_encode(bytes(31, 1)), "proof"},
        {"proof of 32 zero bytes", without_proof + ",p=" + base64_encode(bytes(32, 0)), "password authentication failed"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            scram_server server(v, "SRV");
            std::string sf, server_final = "untouched", err;
            REQUIRE(server.handle_client_first("n,,n=,r=cli", sf, err));
            CHECK_FALSE(server.handle_client_final(c.client_final, server_final, err));
            CHECK_THAT(err, Catch::Contains(c.error_part));
            CHECK(server_final == "untouched");
        }
    }
    SECTION("the good one passes")
    {
        scram_server server(v, "SRV");
        std::string sf, server_final, err;
        REQUIRE(server.handle_client_first("n,,n=,r=cli", sf, err));
        INFO(err);
        CHECK(server.handle_client_final(good, server_final, err));
    }
}

// --- Verifiers ------------------------------------------------------------------------------------

TEST_CASE("scram_verifier: from_password, to_string and parse round trip", "[scram][verifier]")
{
    scram_verifier v = scram_verifier::from_password("secret", 4096);
    CHECK(v.iterations == 4096);
    CHECK(v.salt.size() == 16);
    CHECK(v.stored_key.size() == 32);
    CHECK(v.server_key.size() == 32);
    std::string text = v.to_string();
    CHECK(text.rfind("SCRAM-SHA-256$4096:", 0) == 0);
    auto p = scram_verifier::parse(text);
    REQUIRE(p.has_value());
    CHECK(p->iterations == v.iterations);
    CHECK(p->salt == v.salt);
    CHECK(p->stored_key == v.stored_key);
    CHECK(p->server_key == v.server_key);
    CHECK(p->to_string() == text);

    // Two verifiers of the same password differ (random salt).
    scram_verifier w = scram_verifier::from_password("secret", 4096);
    CHECK(w.salt != v.salt);
    CHECK(w.stored_key != v.stored_key);

    // The keys follow RFC 5802 from the salt.
    bytes salted = pbkdf2_sha256("secret", v.salt, 4096);
    CHECK(v.stored_key == sha256(hmac_sha256(salted, "Client Key")));
    CHECK(v.server_key == hmac_sha256(salted, "Server Key"));
}

TEST_CASE("scram_verifier::parse rejects malformed strings", "[scram][verifier]")
{
    const std::string key32 = base64_encode(bytes(32, 7));
    const std::string salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    struct
    {
        const char* name;
        std::string text;
    } cases[] = {
        {"empty", ""},
        {"clear-text password", "pencil"},
        {"md5 hash", "md5d621238dc9a10c6c869b264c13379ee7"},
        {"prefix only", "SCRAM-SHA-256$"},
        {"lower-case prefix", "scram-sha-256$4096:" + salt + "$" + key32 + ":" + key32},
        {"SCRAM-SHA-1", "SCRAM-SHA-1$4096:" + salt + "$" + key32 + ":" + key32},
        {"no keys part", "SCRAM-SHA-256$4096:" + salt},
        {"no iteration separator", "SCRAM-SHA-256$4096" + salt + "$" + key32 + ":" + key32},
        {"iterations 0", "SCRAM-SHA-256$0:" + salt + "$" + key32 + ":" + key32},
        {"iterations negative", "SCRAM-SHA-256$-1:" + salt + "$" + key32 + ":" + key32},
        {"iterations not a number", "SCRAM-SHA-256$abc:" + salt + "$" + key32 + ":" + key32},
        {"iterations with junk", "SCRAM-SHA-256$4096x:" + salt + "$" + key32 + ":" + key32},
        {"iterations empty", "SCRAM-SHA-256$:" + salt + "$" + key32 + ":" + key32},
        {"iterations too many", "SCRAM-SHA-256$10000001:" + salt + "$" + key32 + ":" + key32},
        {"salt not base64", "SCRAM-SHA-256$4096:!!!!$" + key32 + ":" + key32},
        {"empty salt", "SCRAM-SHA-256$4096:$" + key32 + ":" + key32},
        {"missing ServerKey separator", "SCRAM-SHA-256$4096:" + salt + "$" + key32 + key32},
        {"StoredKey of 31 bytes", "SCRAM-SHA-256$4096:" + salt + "$" + base64_encode(bytes(31, 7)) + ":" + key32},
        {"ServerKey of 33 bytes", "SCRAM-SHA-256$4096:" + salt + "$" + key32 + ":" + base64_encode(bytes(33, 7))},
        {"StoredKey not base64", "SCRAM-SHA-256$4096:" + salt + "$" + std::string(44, '*') + ":" + key32},
        {"empty ServerKey", "SCRAM-SHA-256$4096:" + salt + "$" + key32 + ":"},
        {"extra key", "SCRAM-SHA-256$4096:" + salt + "$" + key32 + ":" + key32 + ":" + key32},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            INFO(c.text);
            CHECK_FALSE(scram_verifier::parse(c.text).has_value());
        }
    }
    SECTION("a well-formed one parses")
    {
        auto v = scram_verifier::parse("SCRAM-SHA-256$1:" + salt + "$" + key32 + ":" + key32);
        REQUIRE(v.has_value());
        CHECK(v->iterations == 1);
        CHECK(v->stored_key == bytes(32, 7));
    }
}

// --- MD5 ------------------------------------------------------------------------------------------

TEST_CASE("md5_password_response", "[md5]")
{
    // python3 -c 'import hashlib; h=lambda b: hashlib.md5(b).hexdigest();
    //             print("md5"+h(h(b"secretpw"+b"alice").encode()+b"\x01\x02\x03\x04"))'
    CHECK(md5_password_response("secretpw", "alice", std::string("\x01\x02\x03\x04", 4)) ==
          "md51c32133f2811b9ed4ec031ea397ba262");
    // ... and h(h(b"pencil"+b"user").encode()+b"abcd")
    CHECK(md5_password_response("pencil", "user", "abcd") == "md5d621238dc9a10c6c869b264c13379ee7");

    struct
    {
        const char* name;
        std::string password;
        std::string user;
        std::string salt;
    } cases[] = {
        {"ordinary", "hunter2", "kong", "abcd"},
        {"salt with NUL and high bytes", "pw", "u", std::string("\x00\xff\x80\x01", 4)},
        {"empty password", "", "kong", "wxyz"},
        {"UTF-8", "p\xc3\xa4ss", "\xc3\xbcser", "1234"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            // Computed independently with OpenSSL's EVP API.
            std::string expected = "md5" + md5hex_evp(md5hex_evp(c.password + c.user) + c.salt);
            std::string got = md5_password_response(c.password, c.user, c.salt);
            CHECK(got == expected);
            CHECK(got.size() == 35);
        }
    }
    SECTION("user and password are not interchangeable with the salt")
    {
        CHECK(md5_password_response("a", "b", "salt") != md5_password_response("a", "b", "tlas"));
        CHECK(md5_password_response("a", "b", "salt") != md5_password_response("b", "a", "salt"));
    }
}
