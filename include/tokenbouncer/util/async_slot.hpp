#pragma once
// A one-shot result that a coroutine on one thread waits for and another thread delivers.
//
// The waiter owns a timer on its own executor and sleeps on it; the deliverer stores the value
// (under the owner's mutex) and posts a cancel of that timer to the waiter's executor, so the
// waiter always resumes on its own thread. The timer's expiry doubles as the wait's deadline.
//
//     auto slot = std::make_shared<async_slot<T>>(ex, deadline);   // waiter, under the owner's lock:
//     queue.push_back(slot);                                        //   publish it
//     co_await slot->wait();                                        // outside the lock
//     lock; if (slot->value) ... else timed out                      // check under the lock
//
//     async_slot<T>::deliver(slot, value);                          // deliverer, under the owner's lock

#include <chrono>
#include <memory>
#include <optional>

#include "tokenbouncer/net/asio.hpp"

namespace tokenbouncer {

template <class T>
class async_slot
{
public:
    using time_point = asio::steady_timer::time_point;

    explicit async_slot(const asio::any_io_executor& ex, time_point deadline = time_point::max()) : timer_(ex)
    {
        timer_.expires_at(deadline);
    }

    // Suspends until delivered or until the deadline; then check value() under the owner's lock.
    awaitable<void> wait() { co_await timer_.async_wait(use_nothrow); }

    std::optional<T>& value() noexcept { return value_; }
    // The waiter's executor (its thread).
    asio::any_io_executor executor() { return timer_.get_executor(); }

    // Call under the owner's lock.
    static void deliver(const std::shared_ptr<async_slot>& slot, T v)
    {
        slot->value_ = std::move(v);
        asio::post(slot->timer_.get_executor(), [slot] { slot->timer_.cancel(); });
    }

private:
    asio::steady_timer timer_;
    std::optional<T> value_;
};

}  // namespace tokenbouncer
