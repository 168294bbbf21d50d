// Fuzz target: the frontend message stream after login, relayed the way client_session's client
// reader relays it in transaction mode: read in pieces, message_scanner with the statement
// tracker's need(), the tracker's plans applied as patches (as send_patched does), and a small
// model of PostgreSQL answering what was sent, its answers going through the response_queue.
//
// Invariants:
//   - the scanner reports the same messages as framing the whole stream at once;
//   - what is sent upstream is a well-framed message stream (rewritten lengths are right);
//   - when the client's stream gets no error from a server it talks to directly, it gets the same
//     answers through the tracker (renamed, re-prepared and self-answered statements included).
//
// Input: control byte (piece sizes, max_packet_size, max_prepared_statements), then the stream.

#include "targets.hpp"

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/protocol/scanner.hpp"
#include "tokenbouncer/protocol/statements.hpp"

#include <set>
#include <vector>

namespace tokenbouncer::fuzz {

namespace proto = tokenbouncer::protocol;

namespace {

// client_session's max_tracked_message: the capacity the client scanner is given.
constexpr std::size_t max_tracked_message = 1 << 20;

// Just enough of PostgreSQL's extended query protocol to answer a stream: named statements,
// errors, and skipping to Sync after an error. Returns the types of the answers.
class server_model
{
public:
    std::string answer(char type, std::string_view body)
    {
        if (skipping_ && type != 'S')
            return {};
        proto::reader r(body);
        switch (type)
        {
        case 'P': {
            auto name = r.cstring();
            auto query = r.cstring();
            if (!name || !query || (!name->empty() && statements_.count(std::string(*name))))
                return fail();
            statements_.insert(std::string(*name));
            return "1";
        }
        case 'B': {
            auto portal = r.cstring();
            auto name = r.cstring();
            if (!portal || !name || !statements_.count(std::string(*name)))
                return fail();
            return "2";
        }
        case 'D': {
            auto what = r.u8();
            auto name = r.cstring();
            if (!what || !name)
                return fail();
            if (*what == 'S')
                return statements_.count(std::string(*name)) ? "tn" : fail();
            return "n";
        }
        case 'C': {
            auto what = r.u8();
            auto name = r.cstring();
            if (!what || !name)
                return fail();
            if (*what == 'S')
                statements_.erase(std::string(*name));
            return "3";
        }
        case 'E': return "C";
        case 'S': skipping_ = false; return "Z";
        case 'Q': return "CZ";
        case 'F': return "VZ";
        default: return {};  // Flush, copy messages, unknown types: no answer
        }
    }
    bool failed() const { return failed_; }

private:
    std::string fail()
    {
        skipping_ = true;
        failed_ = true;
        return "E";
    }

    std::set<std::string> statements_;
    bool skipping_ = false;
    bool failed_ = false;
};

// Frames a stream of typed messages; false when a length field is impossible.
bool split_messages(std::string_view stream, std::uint32_t max_length, std::vector<proto::message_view>& out,
                    std::size_t& complete_bytes)
{
    complete_bytes = 0;
    for (;;)
    {
        auto f = proto::frame_message(stream.substr(complete_bytes), max_length);
        if (f.state == proto::frame::status::invalid)
            return false;
        if (f.state == proto::frame::status::need_more)
            return true;
        out.push_back({f.type, stream.substr(complete_bytes + 5, f.total - 5)});
        complete_bytes += f.total;
    }
}

struct patch
{
    std::size_t offset;
    std::size_t cut;
    std::string insert;
};

// client_session::send_patched.
std::string apply_patches(std::string_view chunk, const std::vector<patch>& patches)
{
    std::string out;
    std::size_t pos = 0;
    for (const auto& p : patches)
    {
        TB_FUZZ_CHECK(p.offset >= pos);  // patches are in stream order and do not overlap
        if (p.offset > chunk.size())
            break;
        out.append(chunk.substr(pos, p.offset - pos));
        out.append(p.insert);
        pos = std::min(chunk.size(), p.offset + p.cut);
    }
    out.append(chunk.substr(pos));
    return out;
}

}  // namespace

void frontend(std::string_view input)
{
    std::uint8_t control = control_byte(input);
    chunker pieces(input, control);
    std::uint32_t max_length = (control & 8) ? 8192 : proto::max_message_length;
    std::size_t max_per_server = (control >> 4) & 3;  // 0: prepared statements not tracked

    // The reference: the whole stream framed at once, up to a Terminate or a bad length.
    struct framed
    {
        char type;
        std::uint32_t total;
        std::string_view body;  // partial for a last message cut short
    };
    std::vector<framed> reference;
    bool reference_invalid = false;
    bool reference_terminated = false;
    std::size_t reference_end = 0;  // bytes of complete messages before Terminate/invalid/the end
    {
        std::size_t pos = 0;
        for (;;)
        {
            auto f = proto::frame_message(input.substr(pos), max_length);
            if (f.state == proto::frame::status::invalid)
            {
                reference_invalid = true;
                break;
            }
            if (f.state == proto::frame::status::need_more && input.size() - pos < 5)
                break;
            if (f.type == proto::frontend::terminate)
            {
                reference_terminated = true;
                break;
            }
            reference.push_back(
                {f.type, f.total, input.substr(pos + 5, std::min<std::size_t>(f.total, input.size() - pos) - 5)});
            if (f.state == proto::frame::status::need_more)
                break;
            pos += f.total;
            reference_end = pos;
        }
    }
    bool stream_complete = reference_invalid || reference_terminated || reference_end == input.size();

    proto::message_scanner scanner(max_length);
    proto::statement_tracker tracker(max_per_server);
    proto::server_statements server_stmts;
    proto::response_queue queue;
    server_model tracked_server;
    std::string buf;       // the relay's client buffer
    std::string sent;      // what the server received
    std::size_t answered_upto = 0;
    std::string client_saw;  // answer types as the client sees them through the queue
    std::vector<std::pair<char, std::uint32_t>> scanned;
    bool invalid = false;
    bool terminated = false;

    auto deliver = [&](std::string_view messages) {
        std::vector<proto::message_view> ours;
        std::size_t n = 0;
        TB_FUZZ_CHECK(split_messages(messages, proto::max_message_length, ours, n) && n == messages.size());
        for (const auto& m : ours)
            client_saw.push_back(m.type);
    };

    while (!pieces.done() && !invalid && !terminated)
    {
        buf.append(pieces.next());
        std::vector<patch> patches;
        auto res = scanner.scan(
            buf, max_tracked_message, [](char type, std::uint32_t total) { return proto::statement_tracker::need(type, total); },
            [&](char type, std::uint32_t total, std::string_view bytes) {
                TB_FUZZ_CHECK(bytes.data() >= buf.data() && bytes.data() + bytes.size() <= buf.data() + buf.size());
                std::size_t wanted = std::min<std::size_t>(total, proto::statement_tracker::need(type, total));
                if (wanted > max_tracked_message)
                    wanted = 5;  // too big to see whole: header only
                TB_FUZZ_CHECK(bytes.size() >= wanted);
                TB_FUZZ_CHECK(bytes.size() <= total && bytes[0] == type && proto::load_be32(bytes.data() + 1) + 1 == total);
                if (type == proto::frontend::terminate)
                {
                    terminated = true;
                    return proto::scan_action::stop_before;
                }
                scanned.emplace_back(type, total);
                auto plan = tracker.on_client_message(type, total, bytes, server_stmts, queue);
                TB_FUZZ_CHECK(plan.cut <= total);
                if (plan.cut > 0 || !plan.insert.empty())
                    patches.push_back({static_cast<std::size_t>(bytes.data() - buf.data()), plan.cut,
                                       std::move(plan.insert) + plan.replacement});
                if (max_per_server > 0)
                    TB_FUZZ_CHECK(server_stmts.size() <= max_per_server);
                return proto::scan_action::next;
            });
        TB_FUZZ_CHECK(res.consumed <= buf.size());
        if (res.invalid)
            invalid = true;
        sent += apply_patches(std::string_view(buf).substr(0, res.consumed), patches);
        buf.erase(0, res.consumed);

        // The server answers what it has received in full; the pump relays its answers.
        deliver(queue.take_due());
        std::vector<proto::message_view> arrived;
        std::size_t n = 0;
        TB_FUZZ_CHECK(split_messages(std::string_view(sent).substr(answered_upto), proto::max_message_length,
                                     arrived, n));
        answered_upto += n;
        for (const auto& m : arrived)
        {
            for (char answer : tracked_server.answer(m.type, m.body))
            {
                auto d = queue.on_server_message(answer);
                for (const auto& name : d.undo)
                    server_stmts.remove(name);
                if (d.forward)
                    client_saw.push_back(answer);
                deliver(d.after);
            }
            deliver(queue.take_due());
        }
    }

    // The scanner saw what framing the whole stream sees.
    TB_FUZZ_CHECK(scanned.size() <= reference.size());
    for (std::size_t i = 0; i < scanned.size(); ++i)
        TB_FUZZ_CHECK(scanned[i].first == reference[i].type && scanned[i].second == reference[i].total);
    if (stream_complete)
    {
        TB_FUZZ_CHECK(scanned.size() == reference.size());
        TB_FUZZ_CHECK(invalid == reference_invalid && terminated == reference_terminated);
        // Everything sent upstream is complete, well-framed messages.
        TB_FUZZ_CHECK(answered_upto == sent.size());
    }

    // The same stream straight to a server, without tracking: same answers when nothing fails.
    if (stream_complete)
    {
        server_model direct_server;
        std::string direct;
        for (const auto& m : reference)
            direct += direct_server.answer(m.type, m.body);
        if (!direct_server.failed())
        {
            TB_FUZZ_CHECK(client_saw == direct);
            TB_FUZZ_CHECK(queue.idle() && !queue.has_due());
        }
    }
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::frontend)
