#pragma once
// The running process: worker threads (one io_context each), the control thread (signals,
// listeners, housekeeping, reloads), the routes' pools, and the lifecycle
// (start -> READY -> reload on SIGHUP -> graceful stop on SIGTERM).

#include <string>

#include "tokenbouncer/config/loader.hpp"

namespace tokenbouncer::app {

struct options
{
    std::string config_path;
    int verbosity = 0;  // -v: 1, -vv: 2
};

// Runs until shutdown; returns the process exit code.
int run(const options& opts, config::load_result cfg);

}  // namespace tokenbouncer::app
