// Fuzz target: the backend message stream, both ways tokenbouncer reads it.
//   - Login (upstream::connector, the pool's checks): whole messages framed with
//     max_login_message_length and parsed: authentication requests, SASL mechanism lists,
//     ParameterStatus, BackendKeyData, ReadyForQuery, ErrorResponse/NoticeResponse.
//   - Relay (client_session::server_pump): read in pieces into a buffer of limited capacity,
//     message_scanner with the pump's need(), ParameterStatus and ReadyForQuery looked at, every
//     message's type through a response_queue.
//
// Invariants: parsed messages re-encode to the same bytes; the scanner always makes progress in
// a full buffer; it reports the messages framing sees.
//
// Input: control byte (piece sizes, buffer capacity, queue contents), then the stream.

#include "targets.hpp"

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/protocol/constants.hpp"
#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/protocol/scanner.hpp"
#include "tokenbouncer/protocol/statements.hpp"

#include <vector>

namespace tokenbouncer::fuzz {

namespace proto = tokenbouncer::protocol;

namespace {

bool same_error(const pg_error& a, const pg_error& b)
{
    return a.severity == b.severity && a.code == b.code && a.message == b.message && a.detail == b.detail &&
           a.hint == b.hint;
}

// One whole message as the connector parses it; `whole` is the message with its header.
void parse_login_message(char type, std::string_view body, std::string_view whole)
{
    switch (type)
    {
    case proto::backend::authentication: {
        auto req = proto::parse_auth_request(body);
        if (!req)
            return;
        TB_FUZZ_CHECK(proto::build_auth_request(req->code, req->data) == whole);
        if (req->code == proto::auth_code::md5_password)
            TB_FUZZ_CHECK(req->data.size() == 4);
        if (req->code == proto::auth_code::sasl)
        {
            auto mechs = proto::parse_sasl_mechanisms(req->data);
            if (!mechs)
                return;
            std::string rebuilt;
            for (auto m : *mechs)
            {
                TB_FUZZ_CHECK(!m.empty());
                rebuilt.append(m).push_back('\0');
            }
            rebuilt.push_back('\0');
            TB_FUZZ_CHECK(rebuilt == req->data);
        }
        return;
    }
    case proto::backend::parameter_status: {
        auto ps = proto::parse_parameter_status(body);
        if (ps)
            TB_FUZZ_CHECK(proto::build_parameter_status(ps->name, ps->value) == whole);
        return;
    }
    case proto::backend::backend_key_data: {
        auto k = proto::parse_backend_key_data(body);
        if (k)
            TB_FUZZ_CHECK(proto::build_backend_key_data(k->pid, k->key) == whole);
        return;
    }
    case proto::backend::ready_for_query: {
        auto st = proto::parse_ready_for_query(body);
        if (st)
            TB_FUZZ_CHECK(proto::build_ready_for_query(*st) == whole);
        return;
    }
    case proto::backend::error_response:
    case proto::backend::notice_response: {
        auto fields = proto::parse_error_fields(body);
        if (!fields)
            return;
        pg_error e = proto::to_pg_error(*fields);
        TB_FUZZ_CHECK(e.code.size() == 5 && !e.severity.empty() && !e.message.empty());
        // What tokenbouncer passes on to a client reads back as the same error.
        std::string rebuilt = proto::build_error_response(e);
        auto again = proto::parse_error_fields(std::string_view(rebuilt).substr(5));
        TB_FUZZ_CHECK(again && same_error(proto::to_pg_error(*again), e));
        return;
    }
    default: return;
    }
}

}  // namespace

void backend(std::string_view input)
{
    std::uint8_t control = control_byte(input);

    // --- Login: net::message_reader frames whole messages at the front of its buffer.
    std::vector<std::pair<char, std::uint32_t>> framed;
    bool framed_invalid = false;
    for (std::size_t pos = 0;;)
    {
        auto f = proto::frame_message(input.substr(pos), proto::max_login_message_length);
        if (f.state == proto::frame::status::invalid)
        {
            framed_invalid = true;
            TB_FUZZ_CHECK(!f.error.message.empty());
            break;
        }
        if (f.state == proto::frame::status::need_more)
        {
            if (input.size() - pos >= 5)
                framed.emplace_back(f.type, f.total);
            break;
        }
        TB_FUZZ_CHECK(f.total >= 5 && f.total <= input.size() - pos);
        std::string_view whole = input.substr(pos, f.total);
        parse_login_message(f.type, whole.substr(5), whole);
        framed.emplace_back(f.type, f.total);
        pos += f.total;
    }

    // --- Relay: the server pump with prepared-statement tracking on.
    static constexpr std::size_t capacities[] = {16, 64, 4096, 65536};  // the pump's is 64 KiB
    std::size_t capacity = capacities[(control >> 3) & 3];
    chunker pieces(input, control);
    proto::message_scanner scanner(proto::max_login_message_length);
    proto::response_queue queue;
    // Requests the answers may be for (answers to nothing are passed on too).
    for (int i = 0; i < 8; ++i)
    {
        switch (pieces.next_random() % 5)
        {
        case 0: queue.sent(proto::expect::parse, pieces.next_random() % 2 == 0, "tb_x"); break;
        case 1: queue.sent(proto::expect::bind); break;
        case 2: queue.sent(proto::expect::execute); break;
        case 3: queue.answered(std::string("3\0\0\0\4", 5)); break;
        default: queue.sent(proto::expect::sync); break;
        }
    }
    auto need = [](char type, std::uint32_t total) -> std::size_t {
        switch (type)
        {
        case proto::backend::ready_for_query:
        case proto::backend::parameter_status:
        case proto::backend::parse_complete:
        case proto::backend::bind_complete:
        case proto::backend::close_complete:
        case proto::backend::no_data:
        case proto::backend::empty_query_response:
        case proto::backend::portal_suspended: return total;
        case proto::backend::command_complete: return total <= 64 ? total : 5;
        default: return 5;
        }
    };
    std::string buf;
    std::vector<std::pair<char, std::uint32_t>> scanned;
    bool invalid = false;
    while (!invalid)
    {
        if (buf.size() < capacity && !pieces.done())
            buf.append(pieces.next(capacity - buf.size()));
        else if (pieces.done())
            break;
        auto res = scanner.scan(buf, capacity, need, [&](char type, std::uint32_t total, std::string_view bytes) {
            std::size_t wanted = std::min<std::size_t>(need(type, total), total);
            if (wanted > capacity)
                wanted = 5;
            TB_FUZZ_CHECK(bytes.size() >= wanted && bytes.size() <= total && bytes[0] == type);
            TB_FUZZ_CHECK(proto::load_be32(bytes.data() + 1) + 1 == total);
            scanned.emplace_back(type, total);
            if (type == proto::backend::parameter_status && bytes.size() >= total)
            {
                auto ps = proto::parse_parameter_status(bytes.substr(5));
                if (ps)
                    TB_FUZZ_CHECK(proto::build_parameter_status(ps->name, ps->value) == bytes);
            }
            if (type == proto::backend::ready_for_query && total == 6)
                TB_FUZZ_CHECK(bytes.size() == 6);
            auto d = queue.on_server_message(type);
            for (std::size_t pos = 0; pos < d.after.size();)
            {
                auto f = proto::frame_message(std::string_view(d.after).substr(pos), proto::max_message_length);
                TB_FUZZ_CHECK(f.state == proto::frame::status::complete);
                pos += f.total;
            }
            return proto::scan_action::next;
        });
        TB_FUZZ_CHECK(res.consumed <= buf.size());
        // A full buffer always moves: the pump would otherwise wait forever.
        if (buf.size() == capacity)
            TB_FUZZ_CHECK(res.consumed > 0 || res.invalid);
        invalid = res.invalid;
        buf.erase(0, res.consumed);
    }
    TB_FUZZ_CHECK(scanned.size() <= framed.size());
    for (std::size_t i = 0; i < scanned.size(); ++i)
        TB_FUZZ_CHECK(scanned[i] == framed[i]);
    TB_FUZZ_CHECK(invalid == framed_invalid);
    if (invalid)
        TB_FUZZ_CHECK(scanned.size() == framed.size());
}

}  // namespace tokenbouncer::fuzz

TB_FUZZ_ENTRY_POINT(tokenbouncer::fuzz::backend)
