// util/crypto.hpp (hashes, HMAC, PBKDF2, base64, hex) and util/secret.hpp.

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tokenbouncer/util/crypto.hpp"
#include "tokenbouncer/util/secret.hpp"

using namespace tokenbouncer;

namespace {

bytes to_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

}  // namespace

TEST_CASE("hashes: known answers", "[crypto]")
{
    // FIPS 180-2 / RFC 1321 / RFC 4231 / RFC 7914 vectors.
    CHECK(to_hex(sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(to_hex(sha256(to_bytes("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(to_hex(sha256("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(sha256("abc").size() == 32);
    CHECK(to_hex(md5("")) == "d41d8cd98f00b204e9800998ecf8427e");
    CHECK(to_hex(md5("abc")) == "900150983cd24fb0d6963f7d28e17f72");
    CHECK(to_hex(hmac_sha256(to_bytes("Jefe"), "what do ya want for nothing?")) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    // An empty key (python3: hmac.new(b"", b"", hashlib.sha256).hexdigest()).
    CHECK(to_hex(hmac_sha256(bytes{}, "")) == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    CHECK(to_hex(pbkdf2_sha256("password", to_bytes("salt"), 1)) ==
          "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b");
    CHECK(to_hex(pbkdf2_sha256("password", to_bytes("salt"), 4096)) ==
          "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a");
}

TEST_CASE("to_hex", "[crypto]")
{
    CHECK(to_hex(bytes{}) == "");
    CHECK(to_hex(bytes{0x00, 0x0f, 0xa5, 0xff}) == "000fa5ff");
    CHECK(to_hex(bytes{0x10}) == "10");
}

TEST_CASE("base64_encode: RFC 4648 vectors and padding", "[crypto][base64]")
{
    struct
    {
        const char* name;
        std::string in;
        std::string out;
    } cases[] = {
        {"empty", "", ""},        {"1 byte, two pads", "f", "Zg=="}, {"2 bytes, one pad", "fo", "Zm8="},
        {"3 bytes", "foo", "Zm9v"}, {"4 bytes", "foob", "Zm9vYg=="},  {"5 bytes", "fooba", "Zm9vYmE="},
        {"6 bytes", "foobar", "Zm9vYmFy"},
        {"+ and / in the output", std::string("\xfb\xff\xfe\x3e\x3f", 5), "+//+Pj8="},
        {"NUL bytes", std::string(3, '\0'), "AAAA"},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK(base64_encode(c.in) == c.out);
            CHECK(base64_encode(to_bytes(c.in)) == c.out);
            auto back = base64_decode(c.out);
            REQUIRE(back.has_value());
            CHECK(*back == to_bytes(c.in));
        }
    }
}

TEST_CASE("base64_encode: long input has no line breaks", "[crypto][base64]")
{
    std::string in(200, 'a');
    std::string out = base64_encode(in);
    CHECK(out.size() == 268);
    CHECK(out.find('\n') == std::string::npos);
    auto back = base64_decode(out);
    REQUIRE(back.has_value());
    CHECK(*back == to_bytes(in));
}

TEST_CASE("base64_decode: round trip of all byte values and lengths", "[crypto][base64]")
{
    bytes all;
    for (int i = 0; i < 256; ++i)
        all.push_back(static_cast<std::uint8_t>(i));
    for (std::size_t len = 0; len <= all.size(); ++len)
    {
        bytes in(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(len));
        std::string enc = base64_encode(in);
        auto dec = base64_decode(enc);
        INFO("length " << len << ": " << enc);
        REQUIRE(dec.has_value());
        CHECK(dec->size() == len);
        CHECK(*dec == in);
    }
}

TEST_CASE("base64_decode: malformed input is rejected", "[crypto][base64]")
{
    struct
    {
        const char* name;
        std::string text;
    } cases[] = {
        {"length not a multiple of 4", "Zm9"},
        {"missing padding", "Zg"},
        {"one pad missing", "Zg="},
        {"too much padding", "Zg==="},
        {"invalid character !", "Zm9!"},
        {"invalid character space", "Zm 9"},
        {"newline", "Zm9v\nZm9v"},
        {"base64url alphabet '-'", "-_8="},
        {"base64url alphabet '_'", "ab_c"},
        {"'=' in the middle", "Zg==Zm9v"},
        {"'=' in the middle of a quantum", "Z=9v"},
        {"'=' then data then '='", "Zm=v"},
        {"three pads", "Z==="},
        {"only padding", "===="},
        {"NUL byte", std::string("Zm9\0", 4)},
        {"high byte", std::string("Zm9\xc3", 4)},
    };
    for (const auto& c : cases)
    {
        SECTION(c.name)
        {
            CHECK_FALSE(base64_decode(c.text).has_value());
        }
    }
    SECTION("empty input decodes to nothing")
    {
        auto r = base64_decode("");
        REQUIRE(r.has_value());
        CHECK(r->empty());
    }
}

TEST_CASE("base64url_encode: URL alphabet, no padding", "[crypto][base64]")
{
    CHECK(base64url_encode(std::string("\xfb\xff\xfe\x3e\x3f", 5)) == "-__-Pj8");
    CHECK(base64url_encode("f") == "Zg");
    CHECK(base64url_encode("fo") == "Zm8");
    CHECK(base64url_encode("foo") == "Zm9v");
    CHECK(base64url_encode("") == "");
    CHECK(base64url_encode(R"({"alg":"RS256","typ":"JWT"})") == "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9");
}

TEST_CASE("xor_bytes and equal_consttime", "[crypto]")
{
    CHECK(xor_bytes(bytes{0xff, 0x00, 0xaa}, bytes{0x0f, 0xf0, 0xaa}) == bytes{0xf0, 0xf0, 0x00});
    CHECK(equal_consttime(bytes{1, 2, 3}, bytes{1, 2, 3}));
    CHECK_FALSE(equal_consttime(bytes{1, 2, 3}, bytes{1, 2, 4}));
    CHECK_FALSE(equal_consttime(bytes{1, 2, 3}, bytes{1, 2}));
    CHECK_FALSE(equal_consttime(bytes{}, bytes{0}));
    CHECK(equal_consttime(bytes{}, bytes{}));
}

TEST_CASE("random_bytes and random_u32", "[crypto]")
{
    CHECK(random_bytes(0).empty());
    bytes a = random_bytes(32);
    bytes b = random_bytes(32);
    CHECK(a.size() == 32);
    CHECK(a != b);
    // 16 draws of 32 bits all equal would be a broken generator.
    std::uint32_t first = random_u32();
    bool differs = false;
    for (int i = 0; i < 16; ++i)
        differs = differs || random_u32() != first;
    CHECK(differs);
}

TEST_CASE("random_u32: values drawn in batches do not repeat across a refill, nor between threads",
          "[crypto]")
{
    // random_u32 takes 64 values per RAND_bytes call: 1000 draws cross 15 refills. 32-bit values
    // from a sound generator collide among 1000 with probability about 1e-4.
    std::set<std::uint32_t> seen;
    for (int i = 0; i < 1000; ++i)
        seen.insert(random_u32());
    CHECK(seen.size() >= 999);
    std::vector<std::uint32_t> other;
    std::thread t([&] {
        for (int i = 0; i < 100; ++i)
            other.push_back(random_u32());
    });
    t.join();
    int shared = 0;
    for (auto v : other)
        shared += seen.count(v) ? 1 : 0;
    CHECK(shared <= 1);
}

// --- secret ---------------------------------------------------------------------------------------

TEST_CASE("secret: fingerprint", "[secret]")
{
    // python3 -c 'import hashlib; print(hashlib.sha256(b"hunter2").hexdigest()[:8])'
    CHECK(secret(std::string("hunter2")).fingerprint() == "f52fbd32");
    CHECK(secret(std::string("abc")).fingerprint() == "ba7816bf");
    CHECK(secret().fingerprint() == "none");
    CHECK(secret(std::string()).fingerprint() == "none");
    std::string fp = secret(std::string("some token")).fingerprint();
    CHECK(fp.size() == 8);
    CHECK(fp.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(fp == to_hex(sha256("some token")).substr(0, 8));
    CHECK(secret(std::string("token a")).fingerprint() != secret(std::string("token b")).fingerprint());
}

TEST_CASE("secret: equality", "[secret]")
{
    CHECK(secret(std::string("abc")) == secret(std::string("abc")));
    CHECK_FALSE(secret(std::string("abc")) == secret(std::string("abd")));
    CHECK_FALSE(secret(std::string("abc")) == secret(std::string("abcd")));
    CHECK_FALSE(secret(std::string("")) == secret(std::string("a")));
    CHECK(secret() == secret(std::string()));
    CHECK(secret(std::string_view("xyz")) == secret(std::string("xyz")));
}

TEST_CASE("secret: copy and move", "[secret]")
{
    SECTION("copy keeps both")
    {
        secret a(std::string("pw"));
        secret b(a);
        CHECK(a.reveal() == "pw");
        CHECK(b.reveal() == "pw");
        secret c;
        c = a;
        CHECK(c.reveal() == "pw");
        CHECK(a.reveal() == "pw");
    }
    SECTION("move construction leaves the source empty")
    {
        secret a(std::string("a long enough password to defeat the small string optimisation"));
        secret b(std::move(a));
        CHECK(b.reveal() == "a long enough password to defeat the small string optimisation");
        CHECK(a.empty());  // NOLINT(bugprone-use-after-move): the documented state
        CHECK(a.size() == 0);
        CHECK(a.reveal().empty());
    }
    SECTION("move construction of a short value leaves the source empty")
    {
        secret a(std::string("pw"));
        secret b(std::move(a));
        CHECK(b.reveal() == "pw");
        CHECK(a.empty());  // NOLINT(bugprone-use-after-move)
    }
    SECTION("move assignment leaves the source empty and replaces the target")
    {
        secret a(std::string("new value"));
        secret b(std::string("old value"));
        b = std::move(a);
        CHECK(b.reveal() == "new value");
        CHECK(a.empty());  // NOLINT(bugprone-use-after-move)
    }
    SECTION("self-assignment keeps the value")
    {
        secret a(std::string("pw"));
        secret& ref = a;
        a = ref;
        CHECK(a.reveal() == "pw");
        a = std::move(ref);
        CHECK(a.reveal() == "pw");
    }
    SECTION("size and empty")
    {
        secret a(std::string("12345"));
        CHECK(a.size() == 5);
        CHECK_FALSE(a.empty());
    }
}

TEST_CASE("wipe_string clears the string", "[secret]")
{
    std::string s = "a secret that is longer than the small string buffer";
    wipe_string(s);
    CHECK(s.empty());
    std::string empty;
    wipe_string(empty);
    CHECK(empty.empty());
}
