#pragma once
// systemd's readiness protocol (sd_notify(3)) without libsystemd: datagrams to $NOTIFY_SOCKET.
// Does nothing when NOTIFY_SOCKET is unset. Tests use it as tokenbouncer's readiness signal too.

#include <chrono>
#include <optional>
#include <string_view>

namespace tokenbouncer::sd {

// Sends one notification, e.g. "READY=1\nSTATUS=serving". Errors are ignored, as systemd asks.
void notify(std::string_view state);

// CLOCK_MONOTONIC in microseconds, for RELOADING=1 + MONOTONIC_USEC=.
unsigned long long monotonic_usec();

// WATCHDOG_USEC, when the service manager wants keep-alives (WatchdogSec=).
std::optional<std::chrono::microseconds> watchdog_interval();

}  // namespace tokenbouncer::sd
