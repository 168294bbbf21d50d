#include "tokenbouncer/protocol/statements.hpp"

#include <algorithm>

#include "tokenbouncer/protocol/bytes.hpp"
#include "tokenbouncer/util/crypto.hpp"

namespace tokenbouncer::protocol {

namespace {

const std::string parse_complete = std::string("1\0\0\0\4", 5);
const std::string close_complete = std::string("3\0\0\0\4", 5);

// Longest statement/portal name looked at; longer names are passed through untouched.
constexpr std::size_t max_name = 256;

std::string close_statement_message(const std::string& name)
{
    message_builder b('C');
    b.u8('S').cstring(name);
    return b.finish();
}

}  // namespace

// --- response_queue -------------------------------------------------------------------------------

bool response_queue::sent(expect e, bool drop, std::string undo)
{
    if (discarding_)
    {
        if (e != expect::sync)
            return false;
        discarding_ = false;
    }
    entries_.push_back(entry{e, drop, false, {}, std::move(undo)});
    return true;
}

void response_queue::answered(std::string response)
{
    if (discarding_)
        return;  // the server would have skipped the request: so do we
    entries_.push_back(entry{expect::sync, false, true, std::move(response), {}});
}

std::string response_queue::take_due()
{
    std::string out;
    while (!entries_.empty() && entries_.front().ours)
    {
        out += entries_.front().response;
        entries_.pop_front();
    }
    return out;
}

bool response_queue::has_due() const { return !entries_.empty() && entries_.front().ours; }

void response_queue::clear()
{
    entries_.clear();
    discarding_ = false;
}

void response_queue::discard_until_sync(decision& d)
{
    // After an error in the extended protocol the server skips everything up to Sync.
    while (!entries_.empty() && !(entries_.front().kind == expect::sync && !entries_.front().ours))
    {
        if (!entries_.front().undo.empty())
            d.undo.push_back(std::move(entries_.front().undo));
        entries_.pop_front();
    }
    if (entries_.empty())
        discarding_ = true;
}

response_queue::decision response_queue::on_server_message(char type)
{
    decision d;
    std::string before = take_due();
    if (type == 'N' || type == 'A' || type == 'S' || entries_.empty())
    {
        // Notices, notifications and parameter changes come at any time and answer nothing.
        d.after = std::move(before);  // cannot happen with an empty `before` in practice
        return d;
    }
    entry& h = entries_.front();
    bool complete = false;
    bool error = false;
    switch (h.kind)
    {
    case expect::parse: complete = type == '1'; error = type == 'E'; break;
    case expect::bind: complete = type == '2'; error = type == 'E'; break;
    case expect::describe_statement:
    case expect::describe_portal: complete = type == 'T' || type == 'n'; error = type == 'E'; break;
    case expect::execute: complete = type == 'C' || type == 'I' || type == 's'; error = type == 'E'; break;
    case expect::close: complete = type == '3'; error = type == 'E'; break;
    case expect::sync:
    case expect::query: complete = type == 'Z'; break;
    }
    if (type == 'Z' && !complete)
    {
        // ReadyForQuery answers a Sync: whatever was before it got no answer (resynchronise).
        discard_until_sync(d);
        discarding_ = false;
        if (!entries_.empty())
            entries_.pop_front();
        d.ends_request = true;
        d.after = take_due();
        return d;
    }
    d.forward = !h.drop || error;  // an error is always the client's business
    if (complete)
    {
        entries_.pop_front();
        d.ends_request = true;
        d.after = take_due();
    }
    else if (error)
    {
        if (!h.undo.empty())
            d.undo.push_back(std::move(h.undo));
        entries_.pop_front();
        discard_until_sync(d);
        d.ends_request = true;
    }
    if (!before.empty())
        d.after = before + d.after;  // defensive: due answers are normally taken before this point
    return d;
}

// --- server_statements ----------------------------------------------------------------------------

void server_statements::add(const std::string& name)
{
    if (names_.insert(name).second)
        order_.push_back(name);
}

void server_statements::remove(const std::string& name)
{
    if (names_.erase(name))
        order_.erase(std::find(order_.begin(), order_.end(), name));
}

void server_statements::clear()
{
    names_.clear();
    order_.clear();
}

std::string server_statements::oldest_except(const std::string& keep) const
{
    for (const auto& n : order_)
        if (n != keep)
            return n;
    return {};
}

// --- statement_tracker ----------------------------------------------------------------------------

std::size_t statement_tracker::need(char type, std::uint32_t total)
{
    switch (type)
    {
    case 'P': return total;
    case 'B': return std::min<std::size_t>(total, 5 + 2 * (max_name + 1));
    case 'D':
    case 'C': return std::min<std::size_t>(total, 6 + max_name + 1);
    default: return 5;
    }
}

std::string statement_tracker::server_name(std::string_view query, std::string_view param_types)
{
    std::string input(query);
    input.push_back('\0');
    input.append(param_types);
    return "tb_" + to_hex(sha256(input)).substr(0, 32);
}

void statement_tracker::make_room(server_statements& server, const std::string& keep, response_queue& queue,
                                  std::string& insert)
{
    while (server.size() >= max_per_server_)
    {
        std::string old = server.oldest_except(keep);
        if (old.empty())
            break;
        insert += close_statement_message(old);
        queue.sent(expect::close, true);
        server.remove(old);
    }
}

statement_tracker::plan statement_tracker::on_client_message(char type, std::uint32_t total, std::string_view bytes,
                                                             server_statements& server, response_queue& queue)
{
    plan p;
    switch (type)
    {
    case 'P': {
        if (bytes.size() < total)
        {
            queue.sent(expect::parse);  // too long to track: it works on this server only
            return p;
        }
        reader r(bytes.substr(5, total - 5));
        auto name = r.cstring();
        auto query = r.cstring();
        if (!name || !query || name->empty() || !enabled())
        {
            queue.sent(expect::parse);
            return p;
        }
        std::string_view types = r.rest();
        auto stmt = std::make_shared<prepared_statement>();
        stmt->server_name = server_name(*query, types);
        message_builder b('P');
        b.cstring(stmt->server_name).cstring(*query).raw(types);
        stmt->parse_message = b.finish();
        statements_[std::string(*name)] = stmt;
        p.cut = total;
        if (server.has(stmt->server_name))
        {
            queue.answered(parse_complete);  // the server has it already
        }
        else
        {
            make_room(server, stmt->server_name, queue, p.insert);
            server.add(stmt->server_name);
            if (!queue.sent(expect::parse, false, stmt->server_name))
                server.remove(stmt->server_name);
            p.replacement = stmt->parse_message;
        }
        return p;
    }
    case 'B':
    case 'D': {
        reader r(bytes.substr(5));
        std::optional<std::string_view> portal;
        expect kind = expect::bind;
        if (type == 'B')
        {
            portal = r.cstring();
        }
        else
        {
            auto what = r.u8();
            if (!what || *what != 'S')
            {
                queue.sent(expect::describe_portal);
                return p;
            }
            kind = expect::describe_statement;
        }
        auto name = r.cstring();
        auto it = (name && !name->empty() && (type == 'D' || portal)) ? statements_.find(std::string(*name))
                                                                      : statements_.end();
        if (it == statements_.end())
        {
            queue.sent(kind);  // unnamed or unknown: as it is (the server reports unknown names)
            return p;
        }
        const prepared_statement& stmt = *it->second;
        if (!server.has(stmt.server_name))
        {
            make_room(server, stmt.server_name, queue, p.insert);
            p.insert += stmt.parse_message;
            server.add(stmt.server_name);
            if (!queue.sent(expect::parse, true, stmt.server_name))
                server.remove(stmt.server_name);
        }
        std::size_t old_prefix = r.position() + 5;  // header + portal/kind + name with its NUL
        std::uint32_t new_total = static_cast<std::uint32_t>(total - name->size() + stmt.server_name.size());
        std::string prefix;
        prefix.push_back(type);
        char len[4];
        store_be32(len, new_total - 1);
        prefix.append(len, 4);
        if (type == 'B')
            prefix.append(*portal).push_back('\0');
        else
            prefix.push_back('S');
        prefix.append(stmt.server_name).push_back('\0');
        p.cut = old_prefix;
        p.replacement = std::move(prefix);
        queue.sent(kind);
        return p;
    }
    case 'C': {
        reader r(bytes.substr(5));
        auto what = r.u8();
        auto name = r.cstring();
        // Only a Close that ends with the name is answered here: the bytes after it may not all be
        // at hand, so they could not be cut (fuzz_frontend's framing check). The server rejects such a Close.
        if (!what || *what != 'S' || !name || name->empty() || 5 + r.position() != total)
        {
            queue.sent(expect::close);
            return p;
        }
        // The server keeps the statement (other clients may use the same query); the client's
        // name is forgotten. Closing an unknown statement is not an error in PostgreSQL either.
        statements_.erase(std::string(*name));
        queue.answered(close_complete);
        p.cut = total;
        return p;
    }
    case 'E': queue.sent(expect::execute); return p;
    case 'S': queue.sent(expect::sync); return p;
    case 'Q':
    case 'F': queue.sent(expect::query); return p;
    default: return p;  // Flush, CopyData/Done/Fail: no answer of their own
    }
}

}  // namespace tokenbouncer::protocol
