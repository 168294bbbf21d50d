#include "tokenbouncer/app/app.hpp"

#include <malloc.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "tokenbouncer/admin/console.hpp"
#include "tokenbouncer/config/auth_file.hpp"
#include "tokenbouncer/admin/endpoints.hpp"
#include "tokenbouncer/auth/token_cache.hpp"
#include "tokenbouncer/http/server.hpp"
#include "tokenbouncer/net/listener.hpp"
#include "tokenbouncer/session/client_session.hpp"
#include "tokenbouncer/session/context.hpp"
#include "tokenbouncer/upstream/credential.hpp"
#include "tokenbouncer/util/cpus.hpp"
#include "tokenbouncer/util/log.hpp"
#include "tokenbouncer/util/secret.hpp"
#include "tokenbouncer/util/sd_notify.hpp"

namespace tokenbouncer::app {

namespace {

struct worker
{
    asio::io_context ctx{1};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard{ctx.get_executor()};
    session::login_watch watch{ctx.get_executor()};
    std::thread thread;
};

// A listening socket and where its connections go.
struct listening
{
    std::unique_ptr<net::listener> socket;
    asio::io_context* ctx;  // the io_context that accepts (a worker's, for per-worker TCP sockets)
    worker* owner;          // null: connections are spread over the workers
    session::listener_info info;
};

// Asio's reactor keeps the state of every descriptor it has seen (about 170 bytes each) for
// reuse and never frees it. Allocated one by one as clients arrive, these end up scattered
// between the sessions' memory, and after a crowd of clients leaves they pin the pages around
// them, so malloc_trim gives little back. Registering as many descriptors as this worker may
// serve before it accepts anything puts them side by side, and a crowd's memory can return.
void reserve_descriptor_states(asio::io_context& ctx, std::size_t n)
{
    struct rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY)
        n = std::min<std::size_t>(n, files.rlim_cur / 2);
    std::vector<asio::posix::stream_descriptor> held;
    held.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0)
            break;
        boost::system::error_code ec;
        held.emplace_back(ctx).assign(fd, ec);
        if (ec)
        {
            ::close(fd);
            break;
        }
    }
}  // closed here; their states stay in the reactor's free list

long resident_kib()
{
    long pages = 0, resident = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r"))
    {
        if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        std::fclose(f);
    }
    return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

std::string effective_log_level(const config::settings& s, int verbosity)
{
    if (verbosity >= 2)
        return "trace";
    if (verbosity == 1)
        return s.log_level == "trace" ? "trace" : "debug";
    return s.log_level;
}

// PgBouncer's auth_file (config/auth_file.hpp).
std::shared_ptr<session::auth_users> load_auth_file(const std::string& path, std::string& error)
{
    if (path.empty())
        return std::make_shared<session::auth_users>();
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        error = "cannot read auth_file \"" + path + "\"";
        return nullptr;
    }
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    auto users = config::parse_auth_file(text);
    wipe_string(text);  // clear-text passwords may be in it
    if (!users)
    {
        error = "auth_file \"" + path + "\" " + users.error();
        return nullptr;
    }
    return std::make_shared<session::auth_users>(std::move(*users));
}

class application
{
public:
    application(const options& opts, config::load_result cfg)
        : opts_(opts), raw_(std::move(cfg.raw)), settings_(std::make_shared<config::settings>(std::move(cfg.values)))
    {
    }

    int run();

private:
    bool setup(std::string& error);
    awaitable<void> startup();
    // The connection target of a route; for pg_azure_auth routes this resolves the credential
    // chain and fetches the first token. Null with `error` set on failure.
    awaitable<std::shared_ptr<const upstream::target>> build_target(const config::settings& s,
                                                                    const config::route_settings& r, std::string& error);
    bool open_listeners(std::string& error);
    awaitable<void> accept_loop(listening* l);
    awaitable<void> signal_loop();
    awaitable<void> housekeeping_loop();
    awaitable<void> reload();
    void retain_used_tokens();
    void begin_shutdown();
    void finish();
    worker& next_worker();

    options opts_;
    config::raw_config raw_;
    std::shared_ptr<const config::settings> settings_;
    asio::io_context control_{1};
    std::vector<std::unique_ptr<worker>> workers_;
    std::size_t next_worker_ = 0;
    session::shared_state state_;
    std::vector<std::unique_ptr<listening>> listeners_;
    std::atomic<bool> stopping_{false};
    int exit_code_ = 0;
    std::unique_ptr<asio::steady_timer> shutdown_deadline_;
    auth::token_cache tokens_{control_.get_executor()};

    bool reloading_ = false;
    std::atomic<bool> serving_{false};  // listeners up, first tokens held
    mutable std::mutex raw_mu_;         // raw_ is read by the admin console on worker threads
    std::shared_ptr<admin::endpoints> endpoints_;
    std::unique_ptr<http::server> http_;
};

awaitable<std::shared_ptr<const upstream::target>> application::build_target(const config::settings& s,
                                                                             const config::route_settings& r,
                                                                             std::string& error)
{
    auto t = std::make_shared<upstream::target>();
    t->settings = r;
    if (r.sslmode != config::sslmode::disable)
    {
        t->tls = net::make_upstream_tls_context(r.sslmode, r.sslrootcert, error);
        if (!t->tls)
            co_return nullptr;
    }
    std::string prefix = r.name == "ro" ? "pg_ro_" : "pg_";
    if (!r.azure_auth)
    {
        t->credential = std::make_shared<upstream::static_password>(r.password, prefix + "password");
        co_return t;
    }
    auto id = auth::resolve_identity(r, s, auth::azure_environment::from_process());
    auto resolved = co_await auth::resolve_chain(auth::build_chain(id), r.name);
    if (!resolved)
    {
        error = "failed to initialize Azure client: no authentication mechanism worked for azure";
        co_return nullptr;
    }
    auto entry = tokens_.entry_for(std::move(resolved->cred), std::move(resolved->first), resolved->fetched_at, r.name,
                                   auth::refresh_policy{s.azure_refresh_margin});
    t->credential = std::make_shared<auth::token_source>(entry, r.user, s.server_connect_timeout);
    co_return t;
}

bool application::setup(std::string& error)
{
    const auto& s = *settings_;
    // 0: one per CPU this process may use (affinity mask, cgroup quota: a pod's CPU limit).
    int n = s.workers > 0 ? s.workers : usable_cpus();
    for (int i = 0; i < n; ++i)
        workers_.push_back(std::make_unique<worker>());

    std::string e;
    auto users = load_auth_file(s.auth_file, e);
    if (!users)
    {
        error = e;
        return false;
    }
    net::ssl_ctx_ptr client_tls;
    if (s.client_tls_sslmode != config::client_tls_mode::disable)
    {
        bool require_cert = s.client_tls_sslmode == config::client_tls_mode::verify_ca ||
                            s.client_tls_sslmode == config::client_tls_mode::verify_full;
        client_tls = net::make_client_facing_tls_context(s.client_tls_cert_file, s.client_tls_key_file,
                                                         s.client_tls_ca_file, require_cert, e);
        if (!client_tls)
        {
            error = e;
            return false;
        }
    }
    state_.set(settings_, users, client_tls);

    admin::app_hooks hooks;
    hooks.reload = [this] { asio::post(control_, [this] { asio::co_spawn(control_, reload(), asio::detached); }); };
    hooks.shutdown = [this] { asio::post(control_, [this] { begin_shutdown(); }); };
    hooks.raw_config = [this] {
        std::lock_guard lock(raw_mu_);
        return raw_;
    };
    hooks.tokens = [this] { return tokens_.status(); };
    hooks.serving = [this] { return serving_.load(); };
    for (auto& w : workers_)
        hooks.workers.push_back(w->ctx.get_executor());
    state_.admin = std::make_shared<admin::console>(state_, hooks);
    endpoints_ = std::make_shared<admin::endpoints>(state_, hooks);
    if (s.http_port != 0)
    {
        // Up before the first tokens are fetched: /startupz and /readyz answer 503 meanwhile.
        http_ = http::server::open(control_, s.http_addr, s.http_port,
                                   [ep = endpoints_](http::server_request r) { return ep->handle(std::move(r)); }, e);
        if (!http_)
        {
            error = e;
            return false;
        }
        http_->start();
        spdlog::info("HTTP endpoints (/metrics /livez /readyz /startupz /quitquitquit) on {}", http_->describe());
    }
    return true;
}

awaitable<void> application::startup()
{
    const auto& s = *settings_;
    std::string error;
    auto rw = co_await build_target(s, s.rw, error);
    std::shared_ptr<const upstream::target> ro;
    if (rw && s.ro_enabled)
        ro = co_await build_target(s, s.ro, error);
    if (!rw || (s.ro_enabled && !ro) || !open_listeners(error))
    {
        spdlog::critical("{}", error);
        if (error.find("failed to initialize Azure client") != std::string::npos)
            spdlog::critical("run with -vv (or --vv) to see why each Azure credential did not work");
        sd::notify("STATUS=failed to start: " + error);
        exit_code_ = 1;
        tokens_.stop();
        control_.stop();
        co_return;
    }
    state_.rw_pool = std::make_shared<pool::pool>("rw", rw, pool::pool_limits::from(s, s.rw), control_.get_executor());
    if (ro)
        state_.ro_pool = std::make_shared<pool::pool>("ro", ro, pool::pool_limits::from(s, s.ro), control_.get_executor());
    for (auto& l : listeners_)
        asio::co_spawn(*l->ctx, accept_loop(l.get()), asio::detached);
    asio::co_spawn(control_, housekeeping_loop(), asio::detached);

    std::set<std::string> described;
    for (const auto& l : listeners_)
        if (described.insert(l->socket->describe()).second)
            spdlog::info("listening on {}", l->socket->describe());
    spdlog::info("tokenbouncer {} ready: rw route -> {}:{} database \"{}\" as \"{}\" ({}, {}, pg_sslmode {}){}; {} worker(s)",
                 TOKENBOUNCER_VERSION, s.rw.host, s.rw.port, s.rw.database, s.rw.user,
                 rw->credential->describe(), to_string(s.rw.pool_mode), to_string(s.rw.sslmode),
                 ro ? "; ro route -> " + s.ro.host + ":" + std::to_string(s.ro.port) + " as \"" + s.ro.user + "\" (" +
                          ro->credential->describe() + ")"
                    : std::string(),
                 workers_.size());
    serving_ = true;
    sd::notify("READY=1\nSTATUS=serving");
}

bool application::open_listeners(std::string& error)
{
    const auto& s = *settings_;
    std::vector<const config::route_settings*> routes{&s.rw};
    if (s.ro_enabled)
        routes.push_back(&s.ro);
    for (const auto* r : routes)
    {
        bool ro = r == &s.ro;
        for (const auto& addr : s.listen_addr)
        {
            // One listening socket per worker (SO_REUSEPORT): a connection is accepted on the thread
            // that serves it.
            if (!net::listener::probe_tcp(addr, r->listen_port, error))
                return false;
            for (auto& w : workers_)
            {
                auto l = net::listener::open_tcp(w->ctx, addr, r->listen_port, true, error,
                                                 static_cast<int>((s.client_login_timeout.count() + 999) / 1000));
                if (!l)
                    return false;
                session::listener_info info{ro, false, l->is_loopback(), &w->watch, l->protocol()};
                listeners_.push_back(std::make_unique<listening>(listening{std::move(l), &w->ctx, w.get(), info}));
            }
        }
        if (!s.unix_socket_dir.empty())
        {
            std::string path = s.unix_socket_dir + "/.s.PGSQL." + std::to_string(r->listen_port);
            auto l = net::listener::open_unix(control_, path, s.unix_socket_mode, s.unix_socket_group, error);
            if (!l)
                return false;
            session::listener_info info{ro, true, false, nullptr, l->protocol()};
            listeners_.push_back(std::make_unique<listening>(listening{std::move(l), &control_, nullptr, info}));
        }
    }
    return true;
}

worker& application::next_worker()
{
    auto& w = *workers_[next_worker_];
    next_worker_ = (next_worker_ + 1) % workers_.size();
    return w;
}

awaitable<void> application::accept_loop(listening* l)
{
    for (;;)
    {
        worker& target = l->owner ? *l->owner : next_worker();
        auto [ec, sock] = co_await l->socket->accept(target.ctx);
        if (ec == asio::error::operation_aborted || stopping_)
            co_return;
        if (ec)
        {
            // Out of file descriptors (EMFILE/ENFILE) and the like: say so, pause, go on.
            spdlog::error("accept on {} failed: {}; pausing accepts for 100 ms (raise LimitNOFILE / ulimit -n, "
                          "or lower max_client_conn)",
                          l->socket->describe(), ec.message());
            asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
            co_await t.async_wait(use_nothrow);
            continue;
        }
        session::listener_info info = l->info;
        info.watch = &target.watch;
        auto session = std::make_shared<session::client_session>(state_, std::move(sock), info);
        state_.add_session(session);
        asio::co_spawn(target.ctx, session->run(), [this, session](std::exception_ptr e) {
            if (e)
            {
                try
                {
                    std::rethrow_exception(e);
                }
                catch (const std::exception& ex)
                {
                    spdlog::error("{}: session ended with an unexpected error: {}", session->tag(), ex.what());
                }
            }
            state_.remove_session(session.get());
        });
    }
}

// The token entries the pools' targets use now; an identity that a reload left behind stops.
void application::retain_used_tokens()
{
    std::vector<std::pair<std::string, std::shared_ptr<auth::token_entry>>> in_use;
    for (auto* p : {state_.rw_pool.get(), state_.ro_pool.get()})
    {
        if (!p)
            continue;
        if (auto* src = dynamic_cast<const auth::token_source*>(p->target()->credential.get()))
            in_use.emplace_back(p->name(), src->entry());
    }
    tokens_.retain(in_use);
}

awaitable<void> application::reload()
{
    if (reloading_ || stopping_)
        co_return;
    reloading_ = true;
    struct done_guard
    {
        bool& flag;
        ~done_guard() { flag = false; }
    } guard{reloading_};
    sd::notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(sd::monotonic_usec()) + "\nSTATUS=reloading");
    auto res = config::load(opts_.config_path, config::process_environment());
    for (const auto& p : res.problems)
        (p.warning ? spdlog::warn("reload: {}", p.to_string()) : spdlog::error("reload: {}", p.to_string()));
    if (!res.ok())
    {
        spdlog::error("configuration not reloaded: fix the errors above and send SIGHUP again");
        sd::notify("READY=1\nSTATUS=serving (reload failed: configuration has errors)");
        co_return;
    }
    // Keys that need a restart.
    for (const auto& k : config::key_table())
    {
        if (k.reloadable || k.status != config::key_status::supported)
            continue;
        auto a = raw_.find(k.name);
        auto b = res.raw.find(k.name);
        std::string va = a == raw_.end() ? "" : a->second.value;
        std::string vb = b == res.raw.end() ? "" : b->second.value;
        if (va != vb)
            spdlog::warn("reload: {} changed, but takes effect only after a restart", k.name);
    }
    auto s = std::make_shared<config::settings>(std::move(res.values));
    std::string error;
    auto rw = co_await build_target(*s, s->rw, error);
    std::shared_ptr<const upstream::target> ro;
    if (rw && state_.ro_pool && s->ro_enabled)
        ro = co_await build_target(*s, s->ro, error);
    auto users = rw ? load_auth_file(s->auth_file, error) : nullptr;
    if (!rw || (state_.ro_pool && s->ro_enabled && !ro) || !users)
    {
        spdlog::error("configuration not reloaded: {}", error);
        retain_used_tokens();
        sd::notify("READY=1\nSTATUS=serving (reload failed)");
        co_return;
    }
    log::set_level(effective_log_level(*s, opts_.verbosity));
    state_.rw_pool->reconfigure(rw, pool::pool_limits::from(*s, s->rw));
    if (ro)
        state_.ro_pool->reconfigure(ro, pool::pool_limits::from(*s, s->ro));
    retain_used_tokens();
    state_.set(s, users, state_.client_tls());
    settings_ = s;
    {
        std::lock_guard lock(raw_mu_);
        raw_ = std::move(res.raw);
    }
    spdlog::info("configuration reloaded");
    sd::notify("READY=1\nSTATUS=serving");
}

void application::begin_shutdown()
{
    if (stopping_)
        return;
    stopping_ = true;
    state_.shutting_down = true;
    sd::notify("STOPPING=1\nSTATUS=shutting down");
    for (auto& l : listeners_)
        asio::post(*l->ctx, [sock = l->socket.get()] { sock->close(); });
    auto sessions = state_.sessions();
    spdlog::info("shutting down: stopped accepting; waiting for {} client(s) to finish (shutdown_timeout {} s)",
                 sessions.size(), settings_->shutdown_timeout.count() / 1000.0);
    for (auto& s : sessions)
        asio::post(s->executor(), [s] { s->request_shutdown(); });
    state_.on_idle = [this] { asio::post(control_, [this] { finish(); }); };
    if (state_.sessions().empty())
    {
        asio::post(control_, [this] { finish(); });
        return;
    }
    shutdown_deadline_ = std::make_unique<asio::steady_timer>(control_, settings_->shutdown_timeout);
    shutdown_deadline_->async_wait([this](error_code ec) {
        if (ec)
            return;
        auto left = state_.sessions().size();
        spdlog::warn("shutdown_timeout reached with {} client(s) still connected; closing them", left);
        finish();
    });
}

void application::finish()
{
    static bool done = false;
    if (done)
        return;
    done = true;
    if (shutdown_deadline_)
        shutdown_deadline_->cancel();
    pg_error why = pg_error::fatal(sqlstate::admin_shutdown, "tokenbouncer is shutting down");
    if (state_.rw_pool)
        state_.rw_pool->close_all(why);
    if (state_.ro_pool)
        state_.ro_pool->close_all(why);
    tokens_.stop();
    if (http_)
        http_->close();
    // Give posted closes a moment on the workers, then stop.
    for (auto& w : workers_)
        w->guard.reset();
    auto t = std::make_shared<asio::steady_timer>(control_, std::chrono::milliseconds(50));
    t->async_wait([this, t](error_code) {
        for (auto& w : workers_)
            w->ctx.stop();
        control_.stop();
    });
}

awaitable<void> application::signal_loop()
{
    asio::signal_set signals(control_, SIGHUP, SIGTERM, SIGINT);
    // PgBouncer's SIGUSR1 (PAUSE) and SIGUSR2 (RESUME), for every pool.
    signals.add(SIGUSR1);
    signals.add(SIGUSR2);
    for (;;)
    {
        auto [ec, sig] = co_await signals.async_wait(use_nothrow);
        if (ec)
            co_return;
        if (sig == SIGHUP)
        {
            spdlog::info("SIGHUP: reloading the configuration");
            asio::co_spawn(control_, reload(), asio::detached);
            continue;
        }
        if (sig == SIGUSR1 || sig == SIGUSR2)
        {
            spdlog::info("{}: {} every pool", sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2",
                         sig == SIGUSR1 ? "pausing" : "resuming");
            for (auto* p : {state_.rw_pool.get(), state_.ro_pool.get()})
                if (p)
                    (sig == SIGUSR1 ? p->pause() : p->resume());
            continue;
        }
        if (stopping_)
        {
            spdlog::warn("second {}: exiting at once", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            finish();
            co_return;
        }
        spdlog::info("{}: graceful shutdown", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        begin_shutdown();
    }
}

awaitable<void> application::housekeeping_loop()
{
    asio::steady_timer t(control_);
    auto watchdog = sd::watchdog_interval();
    auto last_ping = std::chrono::steady_clock::now();
    int client_peak = 0;
    int client_last = 0;
    int trim_ticks_left = 0;  // housekeeping ticks (250 ms) in which to trim on every 4th
    while (!stopping_)
    {
        t.expires_after(std::chrono::milliseconds(250));
        co_await t.async_wait(use_nothrow);
        // After a crowd of clients has left, give their memory back to the system: glibc keeps
        // freed memory in its arenas, so the resident size would stay at the peak.
        // Trim once the count has stopped falling, so that the last of the crowd is gone too.
        int clients = state_.clients.load(std::memory_order_relaxed);
        client_peak = std::max(client_peak, clients);
        if (client_peak - clients >= 1000 && clients < client_peak / 2 && clients >= client_last)
        {
            spdlog::debug("{} clients left (from {} to {}): returning memory to the system",
                          client_peak - clients, client_peak, clients);
            client_peak = clients;
            // Once a second for 3 s: the last sessions' memory is freed a little after they are counted out.
            trim_ticks_left = 12;
        }
        if (trim_ticks_left > 0 && --trim_ticks_left % 4 == 0)
        {
            bool show = spdlog::should_log(spdlog::level::debug);  // reading /proc only when it is logged
            long before = show ? resident_kib() : 0;
            ::malloc_trim(0);
            if (show)
                spdlog::debug("malloc_trim: resident {} -> {} KiB", before, resident_kib());
        }
        client_last = clients;
        state_.rw_pool->housekeeping();
        if (state_.ro_pool)
            state_.ro_pool->housekeeping();
        if (watchdog && std::chrono::steady_clock::now() - last_ping >= *watchdog / 2)
        {
            sd::notify("WATCHDOG=1");
            last_ping = std::chrono::steady_clock::now();
        }
    }
}

int application::run()
{
    std::string error;
    if (!setup(error))
    {
        spdlog::critical("{}", error);
        sd::notify("STATUS=failed to start: " + error);
        return 1;
    }
    // Each worker serves about its share of max_client_conn clients and some server connections.
    std::size_t share = static_cast<std::size_t>(settings_->max_client_conn) / workers_.size() + 64;
    for (auto& w : workers_)
        w->thread = std::thread([ctx = &w->ctx, share] {
            reserve_descriptor_states(*ctx, share + share / 4);
            ctx->run();
        });
    asio::co_spawn(control_, signal_loop(), asio::detached);
    asio::co_spawn(control_, startup(), asio::detached);

    control_.run();
    for (auto& w : workers_)
    {
        w->guard.reset();
        w->ctx.stop();
        if (w->thread.joinable())
            w->thread.join();
    }
    // Sessions still suspended in an io_context are destroyed with it and use the shared state:
    // tear the io_contexts down while everything else is alive.
    listeners_.clear();
    state_.admin.reset();
    workers_.clear();
    http_.reset();
    if (exit_code_ == 0)
        spdlog::info("tokenbouncer stopped");
    return exit_code_;
}

}  // namespace

int run(const options& opts, config::load_result cfg)
{
    // No core dump may hold a token or a password; writes to closed sockets are errors, not signals.
    ::prctl(PR_SET_DUMPABLE, 0);
    struct rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(SIGPIPE, SIG_IGN);
    // Block the signals we handle in every thread; the control thread's signal_set takes them.
    application a(opts, std::move(cfg));
    return a.run();
}

}  // namespace tokenbouncer::app
