// Fuzz target: authentication messages. SCRAM-SHA-256 on both sides (client_session checks a
// client's SASLInitialResponse and SASLResponse; upstream::connector answers a server's
// AuthenticationSASLContinue and checks its AuthenticationSASLFinal), SCRAM verifiers as written
// in an auth_file, and the MD5 password response.
//
// Input: control byte, then parts separated by NUL (SCRAM messages never hold one):
//   0 SASLInitialResponse body (mechanism NUL int32 length data), or its client-first-message
//   1 client-final-message
//   2 server-first-message   3 server-final-message
//   4 a client nonce         5 an auth_file verifier     6 MD5 salt

#include "targets.hpp"

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/md5.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/protocol/scram.hpp"

#include <charconv>
#include <vector>

namespace tokenbouncer::fuzz {

namespace proto = tokenbouncer::protocol;

namespace {

// One PBKDF2 iteration keeps the honest exchanges cheap.
const proto::scram_verifier& pencil_verifier()
{
    static const proto::scram_verifier v = proto::scram_verifier::from_password("pencil", 1);
    return v;
}

// The iteration count a server-first-message asks for, so the target can skip the slow ones
// (the client accepts up to 1,000,000: seconds per input).
long requested_iterations(std::string_view server_first)
{
    auto at = server_first.find(",i=");
    if (at == std::string_view::npos)
        return 0;
    long n = 0;
    auto digits = server_first.substr(at + 3);
    std::from_chars(digits.data(), digits.data() + digits.size(), n);
    return n;
}

}  // namespace

void scram(std::string_view input)
{
    std::uint8_t control = control_byte(input);
    std::vector<std::string_view> parts;
    for (;;)
    {
        auto nul = input.find('\0');
        parts.push_back(input.substr(0, nul));
        if (nul == std::string_view::npos)
            break;
        input.remove_prefix(nul + 1);
    }
    parts.resize(7);

    // --- Server side, as client_session::authenticate_client reads the client's messages.
    {
        proto::scram_server server(pencil_verifier(), "c2VydmVybm9uY2U");
        std::string reply, err;
        // SASLInitialResponse: mechanism, int32 length, client-first. Control bit 0: part 0 is
        // the client-first-message, wrapped by the builder; else part 0 is the whole body.
        std::string body = (control & 1) ? proto::build_sasl_initial_response(proto::scram_sha_256, parts[0]).substr(5)
                                         : std::string(parts[0]);
        proto::reader r(body);
        auto mech = r.cstring();
        auto len = r.i32();
        if (mech && *mech == proto::scram_sha_256 && len && *len >= 0 &&
            static_cast<std::size_t>(*len) == r.remaining())
        {
            if (server.handle_client_first(r.rest(), reply, err))
            {
                TB_FUZZ_CHECK(reply.rfind("r=", 0) == 0);
                bool ok = server.handle_client_final(parts[1], reply, err);
                TB_FUZZ_CHECK(ok ? reply.rfind("v=", 0) == 0 : !err.empty());
            }
            else
            {
                TB_FUZZ_CHECK(!err.empty());
            }
        }
        // The client-first-message on its own, and a final without a first.
        proto::scram_server other(pencil_verifier(), "c2VydmVybm9uY2U");
        if (!other.handle_client_first(parts[0], reply, err))
            TB_FUZZ_CHECK(!err.empty());
        proto::scram_server fresh(pencil_verifier(), "c2VydmVybm9uY2U");
        TB_FUZZ_CHECK(!fresh.handle_client_final(parts[1], reply, err));
    }

    // --- Client side, as upstream::connector answers the server.
    {
        proto::scram_client client(secret(std::string("pencil")), "cmFuZG9tbm9uY2U");
        std::string first = client.client_first();
        std::string final_msg, err;
        if (requested_iterations(parts[2]) <= 4096)
        {
            if (client.handle_server_first(parts[2], final_msg, err))
            {
                TB_FUZZ_CHECK(final_msg.rfind("c=biws,r=", 0) == 0);
                if (!client.verify_server_final(parts[3], err))
                    TB_FUZZ_CHECK(!err.empty());
            }
            else
            {
                TB_FUZZ_CHECK(!err.empty());
            }
        }
        proto::scram_client early(secret(std::string("pencil")), "cmFuZG9tbm9uY2U");
        TB_FUZZ_CHECK(!early.verify_server_final(parts[3], err));
    }

    // --- An honest exchange with the input's nonce succeeds; the wrong password fails.
    bool printable = !parts[4].empty();
    for (char c : parts[4])
        printable = printable && c >= 0x21 && c <= 0x7e && c != ',';
    for (std::string_view password : {std::string_view("pencil"), std::string_view("pencil2")})
    {
        proto::scram_client client(secret(password), printable ? std::string(parts[4]) : std::string());
        proto::scram_server server(pencil_verifier(), "c2VydmVybm9uY2U");
        std::string server_first, client_final, server_final, err;
        TB_FUZZ_CHECK(server.handle_client_first(client.client_first(), server_first, err));
        TB_FUZZ_CHECK(client.handle_server_first(server_first, client_final, err));
        bool ok = server.handle_client_final(client_final, server_final, err);
        TB_FUZZ_CHECK(ok == (password == "pencil"));
        if (ok)
            TB_FUZZ_CHECK(client.verify_server_final(server_final, err));
    }

    // --- auth_file verifiers.
    if (auto v = proto::scram_verifier::parse(parts[5]))
    {
        auto again = proto::scram_verifier::parse(v->to_string());
        TB_FUZZ_CHECK(again && again->iterations == v->iterations && again->salt == v->salt &&
                      again->stored_key == v->stored_key && again->server_key == v->server_key);
    }

    // --- MD5.
    std::string md5 = proto::md5_password_response(parts[0], parts[1], parts[6]);
    TB_FUZZ_CHECK(md5.size() == 35 && md5.rfind("md5", 0) == 0);
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::scram)
