// Fuzz target: the startup packet a client sends first (SSLRequest, GSSENCRequest, CancelRequest,
// StartupMessage), read the way client_session::read_startup reads it: in pieces, framing after
// each piece, then parsing the framed packet.
//
// Input: control byte (piece sizes), then the bytes the client sends.

#include "targets.hpp"

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/startup.hpp"

#include <vector>

namespace tokenbouncer::fuzz {

namespace proto = tokenbouncer::protocol;

void startup(std::string_view input)
{
    std::uint8_t control = control_byte(input);
    chunker pieces(input, control);

    // As read_startup: read at most what the framer says is missing, frame again.
    std::string buf;
    proto::startup_frame f;
    for (;;)
    {
        f = proto::frame_startup_packet(buf);
        if (f.state != proto::startup_frame::status::need_more || pieces.done())
            break;
        std::size_t want = f.length > buf.size() ? f.length - buf.size() : 4 - buf.size();
        std::string_view piece = pieces.next(want);
        TB_FUZZ_CHECK(!piece.empty() && piece.size() <= want);
        buf.append(piece);
    }

    // Reading in pieces must not change what is framed.
    proto::startup_frame whole = proto::frame_startup_packet(input);
    TB_FUZZ_CHECK(whole.state == f.state);
    if (f.state == proto::startup_frame::status::need_more)
        return;
    TB_FUZZ_CHECK(whole.length == f.length);
    if (f.state == proto::startup_frame::status::invalid)
    {
        TB_FUZZ_CHECK(!f.error.message.empty());
        return;
    }
    TB_FUZZ_CHECK(f.length >= 8 && f.length <= proto::max_startup_packet_length);
    // Never read past the packet: the bytes after it belong to the next phase.
    TB_FUZZ_CHECK(buf.size() == f.length);
    TB_FUZZ_CHECK(buf == input.substr(0, f.length));

    auto pkt = proto::parse_startup_packet(std::string_view(buf).substr(0, f.length));
    if (!pkt)
    {
        TB_FUZZ_CHECK(!pkt.error().message.empty() && pkt.error().code.size() == 5);
        return;
    }

    // A parsed packet re-encodes to the same bytes.
    switch (pkt->type)
    {
    case proto::startup_packet::kind::ssl_request:
        TB_FUZZ_CHECK(buf == proto::build_ssl_request());
        break;
    case proto::startup_packet::kind::gssenc_request:
        TB_FUZZ_CHECK(buf.size() == 8);
        break;
    case proto::startup_packet::kind::cancel_request:
        TB_FUZZ_CHECK(buf == proto::build_cancel_request(pkt->cancel_pid, pkt->cancel_key));
        break;
    case proto::startup_packet::kind::startup: {
        TB_FUZZ_CHECK(pkt->major == 3);
        const std::string* user = pkt->params.find("user");
        TB_FUZZ_CHECK(user && !user->empty());
        // The builder always writes 3.0; put the client's minor version back before comparing.
        std::string rebuilt = proto::build_startup_message(pkt->params);
        TB_FUZZ_CHECK(rebuilt.size() == buf.size());
        proto::store_be32(rebuilt.data() + 4, proto::load_be32(buf.data() + 4));
        TB_FUZZ_CHECK(rebuilt == buf);
        // What handle_startup does with the parameters: look up and overwrite.
        for (const auto& [k, v] : std::vector(pkt->params.items))
        {
            TB_FUZZ_CHECK(!k.empty());
            pkt->params.set(k, v + "x");
            const std::string* now = pkt->params.find(k);
            TB_FUZZ_CHECK(now && *now == v + "x");
        }
        TB_FUZZ_CHECK(pkt->params.items.size() == proto::parse_startup_packet(buf)->params.items.size());
        break;
    }
    }
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::startup)
