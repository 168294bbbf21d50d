// pool::release hands a server connection to the waiters in FIFO order, except that a waiter on
// the connection's own thread may go ahead of the first if it queued within 1 ms of it and is
// among the next 8. Two io_contexts stand for two worker threads; the connections are one end of
// a socket pair, so nothing logs in anywhere.

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "test_helpers.hpp"
#include "tokenbouncer/pool/pool.hpp"

using namespace tokenbouncer;
using namespace std::chrono_literals;

namespace {

struct fixture
{
    asio::io_context a;  // worker A
    asio::io_context b;  // worker B
    std::shared_ptr<upstream::target> target = std::make_shared<upstream::target>();
    std::shared_ptr<pool::pool> p;
    std::vector<std::string> served;  // waiters in the order they got a connection
    std::vector<std::unique_ptr<pool::server_conn>> held;
    std::vector<int> peers;  // the other ends of the socket pairs

    // slack: pool_limits::handover_slack (1 ms in tokenbouncer); longer where a slow machine
    // (a sanitizer build) must not turn "queued just after" into "queued too late".
    explicit fixture(std::chrono::microseconds slack = 10s)
    {
        pool::pool_limits limits;
        limits.pool_size = 0;  // nobody logs in: every acquire waits for a release
        limits.query_wait_timeout = 60s;
        limits.server_check_delay = 3600s;
        limits.handover_slack = slack;
        p = std::make_shared<pool::pool>("rw", target, limits, a.get_executor());
    }

    ~fixture()
    {
        held.clear();
        for (int fd : peers)
            ::close(fd);
    }

    void wait_on(asio::io_context& ctx, std::string name)
    {
        asio::co_spawn(
            ctx,
            [this, name]() -> awaitable<void> {
                pool::client_parameters none;
                auto s = co_await p->acquire(none, name);
                if (s)
                {
                    served.push_back(name);
                    held.push_back(std::move(*s));
                }
            },
            asio::detached);
        ctx.poll();  // runs until it waits in the queue
        ctx.restart();
    }

    // A connection whose stream belongs to ctx, released into the pool.
    void release_on(asio::io_context& ctx)
    {
        int fds[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
        peers.push_back(fds[1]);
        asio::generic::stream_protocol proto(AF_UNIX, 0);
        auto s = std::make_unique<pool::server_conn>();
        s->stream = std::make_unique<net::stream>(net::socket_type(ctx, proto, fds[0]), proto);
        s->target = target;
        p->release(std::move(s), true);
        for (auto* c : {&a, &b})
        {
            c->poll();
            c->restart();
        }
    }
};

}  // namespace

TEST_CASE("pool handover: a waiter on the connection's thread that queued just after the first goes ahead",
          "[pool][handover]")
{
    fixture f;
    f.wait_on(f.b, "b1");
    f.wait_on(f.a, "a1");
    f.release_on(f.a);
    CHECK(f.served == std::vector<std::string>{"a1"});
    f.release_on(f.a);  // the only waiter left is on the other thread: it gets this one
    CHECK(f.served == std::vector<std::string>{"a1", "b1"});
}

TEST_CASE("pool handover: first come, first served when the next local waiter queued after the slack",
          "[pool][handover]")
{
    fixture f(1ms);  // the real slack
    f.wait_on(f.b, "b1");
    std::this_thread::sleep_for(5ms);
    f.wait_on(f.a, "a1");
    f.release_on(f.a);
    CHECK(f.served == std::vector<std::string>{"b1"});
    f.release_on(f.b);
    CHECK(f.served == std::vector<std::string>{"b1", "a1"});
}

TEST_CASE("pool handover: only the next 8 waiters are looked at", "[pool][handover]")
{
    fixture f;
    for (int i = 1; i <= 8; ++i)
        f.wait_on(f.b, "b" + std::to_string(i));
    f.wait_on(f.a, "a1");  // ninth in line
    f.release_on(f.a);
    CHECK(f.served == std::vector<std::string>{"b1"});
    // Now a1 is eighth: within the window.
    f.release_on(f.a);
    CHECK(f.served == std::vector<std::string>{"b1", "a1"});
}

TEST_CASE("pool handover: on one thread, strictly first come, first served", "[pool][handover]")
{
    fixture f;
    for (int i = 1; i <= 4; ++i)
        f.wait_on(f.a, "a" + std::to_string(i));
    for (int i = 0; i < 4; ++i)
        f.release_on(f.a);
    CHECK(f.served == std::vector<std::string>{"a1", "a2", "a3", "a4"});
}

TEST_CASE("pool intern: equal parameter sets share one copy; a changed server value forgets the match",
          "[pool][params]")
{
    fixture f;
    pool::param_map utc{{"TimeZone", "UTC"}, {"application_name", "kong"}};
    auto one = f.p->intern(utc);
    auto two = f.p->intern(utc);
    CHECK(one == two);
    auto other = f.p->intern({{"TimeZone", "Europe/Paris"}, {"application_name", "kong"}});
    CHECK(other != one);
    CHECK(*other != *one);

    // A set nobody holds any more is not kept alive: the next equal set is a new copy.
    other.reset();
    auto again = f.p->intern({{"TimeZone", "Europe/Paris"}, {"application_name", "kong"}});
    CHECK(again.use_count() == 1);

    pool::server_conn s;
    s.params = utc;
    s.in_sync_with = one;
    s.apply_parameter_status("TimeZone", "UTC");  // the same value: still in sync
    CHECK(s.in_sync_with == one);
    s.apply_parameter_status("TimeZone", "Asia/Tokyo");
    CHECK(s.in_sync_with == nullptr);
    CHECK(s.params.at("TimeZone") == "Asia/Tokyo");
    s.in_sync_with = one;
    s.apply_parameter_status("DateStyle", "ISO, MDY");  // a value it did not have
    CHECK(s.in_sync_with == nullptr);
}

TEST_CASE("pool login_view_for: the server's parameters with the client's own tracked values",
          "[pool][params]")
{
    fixture f;
    auto welcome = std::make_shared<const pool::param_map>(pool::param_map{
        {"TimeZone", "UTC"}, {"application_name", ""}, {"server_version", "15.4"}});
    pool::param_map client{{"application_name", "kong"}, {"DateStyle", "ISO, DMY"}};
    auto view = f.p->login_view_for(welcome, client);

    // The welcome's order, the client's values in place of the server's, then what only the
    // client set; ParameterStatus messages written by hand.
    auto status = [](std::string name, std::string value) { return tb_test::typed_raw('S', tb_test::cstrs({name, value})); };
    CHECK(view->parameter_status == status("TimeZone", "UTC") + status("application_name", "kong") +
                                        status("server_version", "15.4") + status("DateStyle", "ISO, DMY"));
    CHECK(*view->wanted == pool::param_map{{"TimeZone", "UTC"}, {"application_name", "kong"}, {"DateStyle", "ISO, DMY"}});
    // Another client with the same values wants the same (one shared set).
    CHECK(f.p->login_view_for(welcome, client)->wanted == view->wanted);
}
