#pragma once
// Protocol-level prepared statements in transaction mode, with no I/O (PgBouncer 1.21's
// max_prepared_statements, done the same way).
//
// In transaction mode a client's transactions run on whichever server connection is free, but a
// named prepared statement lives on the connection that parsed it. So:
//   - a client's Parse of statement "s1" is sent as "tb_<hash of query and parameter types>",
//     and remembered: s1 -> (tb_..., the rewritten Parse message);
//   - Bind, Describe and Close that name "s1" are rewritten to "tb_...";
//   - when the server serving the client has not parsed "tb_..." yet, the remembered Parse is sent
//     first and its ParseComplete is swallowed;
//   - a Parse the server already has is not sent again: tokenbouncer answers ParseComplete itself,
//     and a client's Close of a statement is answered with CloseComplete (the server keeps it for
//     other clients with the same query);
//   - each server connection holds at most max_prepared_statements; the oldest is closed.
//
// The response_queue pairs every request sent with its response, so swallowed responses are
// dropped and tokenbouncer's own answers reach the client in the right place, also when an error
// makes the server skip messages until Sync.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tokenbouncer::protocol {

// What a request sent to the server is answered with.
enum class expect : std::uint8_t
{
    parse,               // ParseComplete '1'
    bind,                // BindComplete '2'
    describe_statement,  // ParameterDescription 't', then RowDescription 'T' or NoData 'n'
    describe_portal,     // RowDescription 'T' or NoData 'n'
    execute,             // ... CommandComplete 'C', EmptyQueryResponse 'I' or PortalSuspended 's'
    close,               // CloseComplete '3'
    sync,                // ReadyForQuery 'Z'
    query,               // ... ReadyForQuery 'Z' (simple query, function call)
};

class response_queue
{
public:
    // A request was sent to the server. drop: its answer is not for the client (a Parse or Close
    // tokenbouncer sent itself). undo: the server statement to forget if it is never parsed.
    // Returns false when the server will skip it (an error happened and no Sync was sent since).
    bool sent(expect e, bool drop = false, std::string undo = {});
    // A request tokenbouncer answers itself with `response`, in order with the server's answers.
    void answered(std::string response);

    struct decision
    {
        bool forward = true;
        std::string after;              // tokenbouncer's own answers that are due after this message
        std::vector<std::string> undo;  // server statements that were not parsed after all
        bool ends_request = false;      // the message completed a request
    };
    // What to do with one message from the server (only its type is needed).
    decision on_server_message(char type);

    // Our own answers at the front of the queue: due now.
    std::string take_due();
    bool has_due() const;
    // Nothing outstanding: every request has been answered.
    bool idle() const { return entries_.empty() && !discarding_; }
    void clear();

private:
    struct entry
    {
        expect kind;
        bool drop = false;
        bool ours = false;  // answered by tokenbouncer
        std::string response;
        std::string undo;
    };
    void discard_until_sync(decision& d);

    std::deque<entry> entries_;
    bool discarding_ = false;  // the server skips messages until the next Sync
};

// The statements one server connection has parsed, oldest first.
class server_statements
{
public:
    bool has(const std::string& name) const { return names_.count(name) > 0; }
    void add(const std::string& name);
    void remove(const std::string& name);
    void clear();
    std::size_t size() const { return names_.size(); }
    // The oldest statement, to close when over the limit (never one of `keep`).
    std::string oldest_except(const std::string& keep) const;

private:
    std::unordered_set<std::string> names_;
    std::deque<std::string> order_;
};

struct prepared_statement
{
    std::string server_name;
    std::string parse_message;  // the client's Parse, renamed to server_name (type byte included)
};

// A client's prepared statements and how to send its messages in transaction mode.
class statement_tracker
{
public:
    explicit statement_tracker(std::size_t max_per_server) : max_per_server_(max_per_server) {}

    // How many bytes of a message (from its type byte) must be at hand to decide about it.
    static std::size_t need(char type, std::uint32_t total);

    // What to send for one client message. `bytes` holds min(total, need()) bytes or more.
    // The plan: send `insert`, then `replacement` instead of the first `cut` bytes of the message,
    // then the rest of the message unchanged (cut == 0 and replacement empty: unchanged).
    struct plan
    {
        std::string insert;
        std::size_t cut = 0;
        std::string replacement;
    };
    plan on_client_message(char type, std::uint32_t total, std::string_view bytes, server_statements& server,
                           response_queue& queue);

    std::size_t size() const { return statements_.size(); }
    bool enabled() const { return max_per_server_ > 0; }

    // "tb_" + 32 hex digits of SHA-256(query, parameter types).
    static std::string server_name(std::string_view query, std::string_view param_types);

private:
    void make_room(server_statements& server, const std::string& keep, response_queue& queue, std::string& insert);

    std::size_t max_per_server_;
    std::unordered_map<std::string, std::shared_ptr<const prepared_statement>> statements_;
};

}  // namespace tokenbouncer::protocol
