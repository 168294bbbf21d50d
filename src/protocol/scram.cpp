#include "tokenbouncer/protocol/scram.hpp"

#include <charconv>
#include <vector>

namespace tokenbouncer::protocol {

namespace {

// Splits "a=1,b=2" into attribute/value pairs; false on malformed input.
bool split_attributes(std::string_view msg, std::vector<std::pair<char, std::string_view>>& out)
{
    while (!msg.empty())
    {
        auto comma = msg.find(',');
        std::string_view item = msg.substr(0, comma);
        if (item.size() < 2 || item[1] != '=')
            return false;
        out.emplace_back(item[0], item.substr(2));
        if (comma == std::string_view::npos)
            break;
        msg.remove_prefix(comma + 1);
        if (msg.empty())
            return false;  // trailing comma
    }
    return true;
}

std::string make_nonce()
{
    // 18 random bytes, printable (base64 has no ',').
    return base64_encode(random_bytes(18));
}

bool printable_nonce(std::string_view n)
{
    if (n.empty())
        return false;
    for (char c : n)
        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    return true;
}

}  // namespace

std::optional<scram_verifier> scram_verifier::parse(std::string_view text)
{
    // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    constexpr std::string_view prefix = "SCRAM-SHA-256$";
    if (text.substr(0, prefix.size()) != prefix)
        return std::nullopt;
    text.remove_prefix(prefix.size());
    auto colon = text.find(':');
    auto dollar = text.find('$');
    if (colon == std::string_view::npos || dollar == std::string_view::npos || colon > dollar)
        return std::nullopt;
    scram_verifier v;
    auto iter_text = text.substr(0, colon);
    auto [p, ec] = std::from_chars(iter_text.data(), iter_text.data() + iter_text.size(), v.iterations);
    if (ec != std::errc() || p != iter_text.data() + iter_text.size() || v.iterations < 1 || v.iterations > 10'000'000)
        return std::nullopt;
    auto salt = base64_decode(text.substr(colon + 1, dollar - colon - 1));
    auto keys = text.substr(dollar + 1);
    auto colon2 = keys.find(':');
    if (!salt || salt->empty() || colon2 == std::string_view::npos)
        return std::nullopt;
    auto stored = base64_decode(keys.substr(0, colon2));
    auto server = base64_decode(keys.substr(colon2 + 1));
    if (!stored || !server || stored->size() != 32 || server->size() != 32)
        return std::nullopt;
    v.salt = std::move(*salt);
    v.stored_key = std::move(*stored);
    v.server_key = std::move(*server);
    return v;
}

scram_verifier scram_verifier::from_password(std::string_view password, int iterations)
{
    scram_verifier v;
    v.iterations = iterations;
    v.salt = random_bytes(16);
    bytes salted = pbkdf2_sha256(password, v.salt, iterations);
    v.stored_key = sha256(hmac_sha256(salted, "Client Key"));
    v.server_key = hmac_sha256(salted, "Server Key");
    return v;
}

std::string scram_verifier::to_string() const
{
    return "SCRAM-SHA-256$" + std::to_string(iterations) + ":" + base64_encode(salt) + "$" +
           base64_encode(stored_key) + ":" + base64_encode(server_key);
}

// --- client ---------------------------------------------------------------------------------

scram_client::scram_client(secret password, std::string nonce)
    : password_(std::move(password)), nonce_(nonce.empty() ? make_nonce() : std::move(nonce))
{
}

std::string scram_client::client_first()
{
    // PostgreSQL takes the user name from the startup packet and ignores the one here.
    client_first_bare_ = "n=,r=" + nonce_;
    return "n,," + client_first_bare_;
}

bool scram_client::handle_server_first(std::string_view server_first, std::string& client_final, std::string& error)
{
    std::vector<std::pair<char, std::string_view>> attrs;
    if (!split_attributes(server_first, attrs) || attrs.size() < 3 || attrs[0].first != 'r' ||
        attrs[1].first != 's' || attrs[2].first != 'i')
    {
        error = "malformed SCRAM server-first-message";
        return false;
    }
    std::string_view nonce = attrs[0].second;
    if (nonce.size() <= nonce_.size() || nonce.substr(0, nonce_.size()) != nonce_ || !printable_nonce(nonce))
    {
        error = "SCRAM server nonce does not extend the client nonce";
        return false;
    }
    auto salt = base64_decode(attrs[1].second);
    int iterations = 0;
    auto it = attrs[2].second;
    auto [p, ec] = std::from_chars(it.data(), it.data() + it.size(), iterations);
    // The upper bound keeps a hostile server from making us burn CPU (cf. CVE-2026-6664).
    if (!salt || salt->empty() || ec != std::errc() || p != it.data() + it.size() || iterations < 1 ||
        iterations > 1'000'000)
    {
        error = "invalid salt or iteration count in SCRAM server-first-message";
        return false;
    }
    bytes salted = pbkdf2_sha256(password_.reveal(), *salt, iterations);
    bytes client_key = hmac_sha256(salted, "Client Key");
    bytes stored_key = sha256(client_key);
    server_key_ = hmac_sha256(salted, "Server Key");

    std::string without_proof = "c=biws,r=" + std::string(nonce);  // biws = base64("n,,")
    auth_message_ = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
    bytes signature = hmac_sha256(stored_key, auth_message_);
    bytes proof = xor_bytes(client_key, signature);
    client_final = without_proof + ",p=" + base64_encode(proof);
    return true;
}

bool scram_client::verify_server_final(std::string_view server_final, std::string& error) const
{
    if (auth_message_.empty() || server_key_.empty())
    {
        error = "SCRAM server-final-message before server-first-message";
        return false;
    }
    if (server_final.substr(0, 2) == "e=")
    {
        error = "SCRAM authentication failed: " + std::string(server_final.substr(2));
        return false;
    }
    if (server_final.substr(0, 2) != "v=")
    {
        error = "malformed SCRAM server-final-message";
        return false;
    }
    auto sig = base64_decode(server_final.substr(2));
    bytes expected = hmac_sha256(server_key_, auth_message_);
    if (!sig || !equal_consttime(*sig, expected))
    {
        error = "the server's SCRAM signature is wrong: it does not know the password";
        return false;
    }
    return true;
}

// --- server ---------------------------------------------------------------------------------

scram_server::scram_server(scram_verifier verifier, std::string nonce)
    : verifier_(std::move(verifier)), server_nonce_(nonce.empty() ? make_nonce() : std::move(nonce))
{
}

bool scram_server::handle_client_first(std::string_view msg, std::string& server_first, std::string& error)
{
    // gs2-header: ("n" | "y" | "p=" cb-name) "," [authzid] ","
    if (msg.size() < 3)
    {
        error = "malformed SCRAM client-first-message";
        return false;
    }
    if (msg[0] == 'p')
    {
        error = "channel binding is not supported on this connection";
        return false;
    }
    if ((msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',')
    {
        error = "malformed SCRAM client-first-message: bad GS2 header";
        return false;
    }
    auto second_comma = msg.find(',', 2);
    if (second_comma == std::string_view::npos || second_comma != 2)
    {
        error = "SCRAM authorization identities are not supported";
        return false;
    }
    gs2_header_ = std::string(msg.substr(0, 3));
    client_first_bare_ = std::string(msg.substr(3));
    std::vector<std::pair<char, std::string_view>> attrs;
    if (!split_attributes(client_first_bare_, attrs) || attrs.size() < 2 || attrs[0].first != 'n' ||
        attrs[1].first != 'r' || !printable_nonce(attrs[1].second))
    {
        error = "malformed SCRAM client-first-message";
        return false;
    }
    full_nonce_ = std::string(attrs[1].second) + server_nonce_;
    server_first_ = "r=" + full_nonce_ + ",s=" + base64_encode(verifier_.salt) + ",i=" + std::to_string(verifier_.iterations);
    server_first = server_first_;
    return true;
}

bool scram_server::handle_client_final(std::string_view msg, std::string& server_final, std::string& error)
{
    std::vector<std::pair<char, std::string_view>> attrs;
    if (!split_attributes(msg, attrs) || attrs.size() < 3 || attrs[0].first != 'c' || attrs[1].first != 'r' ||
        attrs.back().first != 'p')
    {
        error = "malformed SCRAM client-final-message";
        return false;
    }
    if (attrs[0].second != base64_encode(gs2_header_))
    {
        error = "SCRAM channel binding data does not match";
        return false;
    }
    if (attrs[1].second != full_nonce_)
    {
        error = "SCRAM nonce mismatch";
        return false;
    }
    auto proof = base64_decode(attrs.back().second);
    auto p_pos = msg.rfind(",p=");
    if (!proof || proof->size() != 32 || p_pos == std::string_view::npos)
    {
        error = "malformed SCRAM client proof";
        return false;
    }
    std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(msg.substr(0, p_pos));
    bytes signature = hmac_sha256(verifier_.stored_key, auth_message);
    bytes client_key = xor_bytes(*proof, signature);
    if (!equal_consttime(sha256(client_key), verifier_.stored_key))
    {
        error = "password authentication failed";
        return false;
    }
    server_final = "v=" + base64_encode(hmac_sha256(verifier_.server_key, auth_message));
    return true;
}

}  // namespace tokenbouncer::protocol
