// tokenbouncer: command line.
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include "tokenbouncer/app/app.hpp"
#include "tokenbouncer/config/loader.hpp"
#include "tokenbouncer/config/reference.hpp"
#include "tokenbouncer/util/log.hpp"

namespace {

constexpr const char* usage = R"(Usage: tokenbouncer [options] [CONFIG_FILE]

A PostgreSQL connection pooler that logs in to Azure Database for PostgreSQL with
Microsoft Entra tokens, so local clients connect without a password.

CONFIG_FILE is kong.conf-style (key = value). Every key can also be set with the
environment variable TOKENBOUNCER_<KEY IN UPPER CASE>, which wins over the file.
Without CONFIG_FILE the configuration comes from the environment only.

Options:
  --check        check the configuration, print every problem, exit 0 (fine) or 1;
                 with -v also every key's value in effect (secrets as ***)
  -v             debug logging
  -vv, --vv      trace logging (every credential attempt, every server login)
  -V, --version  print the version
  -h, --help     print this help

Signals: SIGHUP reloads the configuration; SIGTERM stops gracefully (a second one
exits at once).
See docs/configuration.md for the keys and docs/troubleshooting.md for help.
)";

}  // namespace

int main(int argc, char** argv)
{
    using namespace tokenbouncer;
    app::options opts;
    bool check = false;
    for (int i = 1; i < argc; ++i)
    {
        std::string_view a = argv[i];
        if (a == "-h" || a == "--help")
        {
            std::fputs(usage, stdout);
            return 0;
        }
        if (a == "-V" || a == "--version")
        {
            std::printf("tokenbouncer %s\n", TOKENBOUNCER_VERSION);
            return 0;
        }
        // Hidden: prints the example configuration or the key reference (scripts/gen-docs.sh).
        if (a == "--print-keys=conf" || a == "--print-keys=markdown")
        {
            std::fputs((a == "--print-keys=conf" ? config::reference_conf() : config::reference_markdown()).c_str(),
                       stdout);
            return 0;
        }
        if (a == "--check")
            check = true;
        else if (a == "-v" || a == "--verbose")
            opts.verbosity += 1;
        else if (a == "-vv" || a == "--vv")
            opts.verbosity += 2;
        else if (!a.empty() && a[0] == '-')
        {
            std::fprintf(stderr, "tokenbouncer: unknown option %s (see --help)\n", argv[i]);
            return 2;
        }
        else if (opts.config_path.empty())
            opts.config_path = std::string(a);
        else
        {
            std::fprintf(stderr, "tokenbouncer: more than one configuration file given (see --help)\n");
            return 2;
        }
    }

    auto cfg = config::load(opts.config_path, config::process_environment());
    if (check)
    {
        for (const auto& p : cfg.problems)
            std::cout << p.to_string() << "\n";
        if (opts.verbosity > 0)
            for (const auto& e : config::effective_config(cfg.raw))
                std::cout << e.key << " = " << e.value << "    # " << e.source << "\n";
        if (cfg.ok())
            std::cout << "configuration OK" << (opts.config_path.empty() ? "" : ": " + opts.config_path) << "\n";
        return cfg.ok() ? 0 : 1;
    }

    std::string level = cfg.values.log_level;
    if (opts.verbosity >= 2)
        level = "trace";
    else if (opts.verbosity == 1 && level != "trace")
        level = "debug";
    log::init(level, cfg.values.log_format == "json");
    for (const auto& p : cfg.problems)
    {
        if (p.warning)
            spdlog::warn("{}", p.to_string());
        else
            spdlog::critical("{}", p.to_string());
    }
    if (!cfg.ok())
    {
        spdlog::critical("tokenbouncer not started: the configuration has errors (check it with --check)");
        return 1;
    }
    return app::run(opts, std::move(cfg));
}
