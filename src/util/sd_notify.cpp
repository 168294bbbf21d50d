#include "tokenbouncer/util/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace tokenbouncer::sd {

void notify(std::string_view state)
{
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    std::size_t len = std::strlen(path);
    sockaddr_un addr{};
    if (len >= sizeof(addr.sun_path))
        return;
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path, len);
    if (addr.sun_path[0] == '@')
        addr.sun_path[0] = '\0';  // abstract namespace
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    (void)::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), alen);
    ::close(fd);
}

unsigned long long monotonic_usec()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL + static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
}

std::optional<std::chrono::microseconds> watchdog_interval()
{
    const char* usec = std::getenv("WATCHDOG_USEC");
    if (!usec || !*usec)
        return std::nullopt;
    const char* pid = std::getenv("WATCHDOG_PID");
    if (pid && *pid && std::strtol(pid, nullptr, 10) != static_cast<long>(getpid()))
        return std::nullopt;
    long long v = std::strtoll(usec, nullptr, 10);
    if (v <= 0)
        return std::nullopt;
    return std::chrono::microseconds(v);
}

}  // namespace tokenbouncer::sd
