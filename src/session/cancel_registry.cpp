#include "tokenbouncer/session/cancel_registry.hpp"

#include <openssl/crypto.h>

#include "tokenbouncer/util/crypto.hpp"

namespace tokenbouncer::session {

void cancel_target::link(std::shared_ptr<const upstream::target> t, protocol::backend_key_data key)
{
    std::lock_guard lock(mu_);
    current_ = linked{std::move(t), key};
}

void cancel_target::unlink()
{
    std::lock_guard lock(mu_);
    current_.reset();
}

std::optional<cancel_target::linked> cancel_target::current() const
{
    std::lock_guard lock(mu_);
    return current_;
}

protocol::backend_key_data cancel_registry::add(std::shared_ptr<cancel_target> target)
{
    std::lock_guard lock(mu_);
    if (next_pid_ == 0)
        next_pid_ = 100000 + (random_u32() % 1000000);  // looks like a pid, not guessable from 0
    std::uint32_t pid;
    do
    {
        pid = next_pid_++;
        if (next_pid_ > 0x7fffffff)
            next_pid_ = 100000;
    } while (entries_.count(pid));
    std::uint32_t key = random_u32();
    entries_[pid] = entry{key, std::move(target)};
    return {pid, key};
}

void cancel_registry::forget(std::uint32_t pid)
{
    std::lock_guard lock(mu_);
    entries_.erase(pid);
}

std::shared_ptr<cancel_target> cancel_registry::find(std::uint32_t pid, std::uint32_t key) const
{
    std::lock_guard lock(mu_);
    auto it = entries_.find(pid);
    if (it == entries_.end())
        return nullptr;
    if (CRYPTO_memcmp(&it->second.key, &key, sizeof key) != 0)
        return nullptr;
    return it->second.target.lock();
}

}  // namespace tokenbouncer::session
