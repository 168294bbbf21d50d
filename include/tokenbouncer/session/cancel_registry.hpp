#pragma once
// Maps the BackendKeyData tokenbouncer gave each client to the server connection that serves the
// client at this moment, so a CancelRequest reaches that server and nothing else.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "tokenbouncer/protocol/messages.hpp"
#include "tokenbouncer/upstream/target.hpp"

namespace tokenbouncer::session {

// What a cancel needs: where the linked server is and its real key. Updated by the session when
// it links and unlinks a server; read by whichever thread receives the CancelRequest.
class cancel_target
{
public:
    void link(std::shared_ptr<const upstream::target> t, protocol::backend_key_data key);
    void unlink();
    struct linked
    {
        std::shared_ptr<const upstream::target> target;
        protocol::backend_key_data key;
    };
    std::optional<linked> current() const;

private:
    mutable std::mutex mu_;
    std::optional<linked> current_;
};

class cancel_registry
{
public:
    // A fresh (pid, key) for a client, registered until forget().
    protocol::backend_key_data add(std::shared_ptr<cancel_target> target);
    void forget(std::uint32_t pid);
    // The client's cancel target if pid and key match (constant-time key comparison).
    std::shared_ptr<cancel_target> find(std::uint32_t pid, std::uint32_t key) const;

private:
    struct entry
    {
        std::uint32_t key;
        std::weak_ptr<cancel_target> target;
    };
    mutable std::mutex mu_;
    std::unordered_map<std::uint32_t, entry> entries_;
    std::uint32_t next_pid_ = 0;
};

}  // namespace tokenbouncer::session
