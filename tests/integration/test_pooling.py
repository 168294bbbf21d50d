"""Pooling with real clients against a real PostgreSQL 15: session and transaction mode,
prepared statements, parameter tracking, limits, reload, graceful shutdown, upstream restarts."""

import asyncio
import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from harness import PG_BIN, first_error


def connect(tb, autocommit=True, **kw):
    return psycopg.connect(tb.dsn(**kw), autocommit=autocommit)


def run_clients(n, fn):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class BackendSampler:
    """Samples how many server connections (backends of role app) exist while a test runs."""

    def __init__(self, pg, user="app"):
        self.pg, self.user, self.max = pg, user, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        with psycopg.connect(f"host={self.pg.sockdir} port={self.pg.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            while not self._stop.is_set():
                n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND "
                              "backend_type = 'client backend'", (self.user,)).fetchone()[0]
                self.max = max(self.max, n)
                time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.max


def test_transaction_mode_50_clients_on_2_server_connections(tokenbouncer, pg):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})
    with connect(tb) as c:
        c.execute("CREATE TABLE IF NOT EXISTS txn_counter (client int, n int)")
        c.execute("TRUNCATE txn_counter")
    sampler = BackendSampler(pg)

    def client(i):
        with connect(tb, autocommit=False) as conn:
            for n in range(20):
                conn.execute("INSERT INTO txn_counter VALUES (%s, %s)", (i, n))
                conn.execute("SELECT pg_sleep(0.001)")
                conn.commit()

    errors = run_clients(50, client)
    peak = sampler.stop()
    assert errors == []
    assert 1 <= peak <= 2
    with connect(tb) as c:
        assert c.execute("SELECT count(*), count(DISTINCT client) FROM txn_counter").fetchone() == (1000, 50)


def test_pgbench_prepared_in_transaction_mode(tokenbouncer, pg):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 4})
    env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
    direct = f"host=localhost port={pg.port} dbname=appdb user=app sslmode=verify-full sslrootcert={pg.certs.ca}"
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", direct], check=True, capture_output=True, env=env)
    # One thread per client: pgbench prepares statements with a blocking PQprepare, so with fewer
    # threads than clients a client waiting for a server stalls the others of its thread, also
    # the one holding the server in a transaction (PgBouncer deadlocks the same way).
    for mode in ("prepared", "extended", "simple"):
        r = subprocess.run(["pgbench", "-n", "-M", mode, "-c", "12", "-j", "12", "-t", "300", tb.dsn()],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "number of failed transactions: 0" in r.stdout
        assert "number of transactions actually processed: 3600/3600" in r.stdout


def test_clients_that_leave_leave_nothing_behind(tokenbouncer, pg):
    # Each client's server side (its pump) lives from its first transaction until it leaves: after
    # thousands of clients have come and gone, the process holds the same descriptors as before.
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 4, "workers": 1})
    env = dict(os.environ, PGPASSWORD=pg.PASSWORD)
    direct = f"host=localhost port={pg.port} dbname=appdb user=app sslmode=verify-full sslrootcert={pg.certs.ca}"
    subprocess.run(["pgbench", "-i", "-q", "-s", "1", direct], check=True, capture_output=True, env=env)

    def run(*args):
        r = subprocess.run(["pgbench", "-n", "-S", *args, tb.dsn()], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    def descriptors():
        return len(os.listdir(f"/proc/{tb.proc.pid}/fd"))

    run("-c", "4", "-j", "4", "-t", "50")  # fills the pool: 4 server connections
    before = descriptors()
    run("-C", "-c", "4", "-j", "4", "-t", "500")  # 2,000 clients of one transaction each
    run("-M", "prepared", "-c", "8", "-j", "8", "-t", "200")
    deadline = time.monotonic() + 10
    while descriptors() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # the last clients' sockets close as their sessions end
    assert descriptors() <= before


def test_psycopg_prepared_statements_in_transaction_mode(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})

    def client(i):
        with connect(tb) as conn:
            conn.prepare_threshold = 0  # prepare every statement, server side
            for n in range(30):
                a, b = conn.execute("SELECT %s::int * 2, %s::text", (n, f"c{i}")).fetchone()
                assert (a, b) == (n * 2, f"c{i}")
                assert conn.execute("SELECT %s::int + 1", (n,)).fetchone() == (n + 1,)
            conn.execute("DEALLOCATE ALL")  # SQL-level: the server's statements are gone
            assert conn.execute("SELECT %s::int * 2", (5,)).fetchone() == (10,)

    assert run_clients(8, client) == []


def test_asyncpg_in_transaction_mode(tokenbouncer):
    asyncpg = pytest.importorskip("asyncpg")
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})

    async def client(i):
        conn = await asyncpg.connect(host="127.0.0.1", port=tb.port, user="kong", database="appdb", ssl=False)
        try:
            for n in range(20):
                assert await conn.fetchval("SELECT $1::int * $2::int", n, i) == n * i
                async with conn.transaction():
                    rows = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", n + 1)
                    assert len(rows) == n + 1
        finally:
            await conn.close()

    async def main():
        await asyncio.gather(*(client(i) for i in range(6)))

    asyncio.run(main())


def test_errors_inside_pipelines_keep_statements_in_sync(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1})
    with connect(tb) as conn:
        conn.prepare_threshold = 0
        assert conn.execute("SELECT %s::int", (1,)).fetchone() == (1,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("SELECT %s::int", (2,))
                conn.execute("SELECT 1 / %s::int", (0,))
                conn.execute("SELECT %s::int + 100", (3,))
        assert conn.execute("SELECT %s::int", (4,)).fetchone() == (4,)
        assert conn.execute("SELECT %s::int + 100", (5,)).fetchone() == (105,)


def test_session_state_does_not_leak_between_clients(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 1})
    with connect(tb) as a:
        backend = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        a.execute("SET TIME ZONE 'Asia/Tokyo'")
        a.execute("CREATE TEMP TABLE leak (x int)")
        a.execute("PREPARE leaky AS SELECT 1")
        a.execute("LISTEN leak_channel")
    with connect(tb) as b:
        assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == backend  # the same server connection
        assert b.execute("SHOW TimeZone").fetchone()[0] != "Asia/Tokyo"
        assert b.execute("SELECT count(*) FROM pg_class WHERE relname = 'leak' AND relpersistence = 't'"
                         ).fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)


def test_startup_parameters_reach_the_server(tokenbouncer):
    tb = tokenbouncer({"default_pool_size": 1})
    with psycopg.connect(tb.dsn(application_name="first-app", options="-c DateStyle=German")) as c:
        assert c.execute("SHOW application_name").fetchone() == ("first-app",)
        assert c.info.parameter_status("application_name") == "first-app"
        assert c.execute("SHOW DateStyle").fetchone()[0].startswith("German")
    with psycopg.connect(tb.dsn(application_name="second-app")) as c:
        assert c.execute("SHOW application_name").fetchone() == ("second-app",)
        assert not c.execute("SHOW DateStyle").fetchone()[0].startswith("German")


def test_transaction_mode_keeps_each_clients_settings(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1})
    with connect(tb) as a, connect(tb) as b:
        a.execute("SET TIME ZONE 'Asia/Tokyo'")
        b.execute("SET TIME ZONE 'America/Lima'")
        for _ in range(5):
            assert a.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
            assert b.execute("SHOW TimeZone").fetchone() == ("America/Lima",)
            assert a.execute("SELECT pg_backend_pid()").fetchone() == b.execute("SELECT pg_backend_pid()").fetchone()


def test_max_client_conn_gives_53300(tokenbouncer):
    tb = tokenbouncer({"max_client_conn": 3})
    held = [connect(tb) for _ in range(3)]
    try:
        err = first_error(tb.port)
        assert err["C"] == "53300"
        assert "max_client_conn (3)" in err["M"]
    finally:
        for c in held:
            c.close()
    with connect(tb) as c:  # room again
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_query_wait_timeout(tokenbouncer):
    tb = tokenbouncer({"default_pool_size": 1, "query_wait_timeout": 1})
    with connect(tb) as holder:
        holder.execute("SELECT 1")  # session mode: holds the only server connection
        started = time.monotonic()
        err = first_error(tb.port)
        waited = time.monotonic() - started
        assert err["C"] == "57014"
        assert "query_wait_timeout" in err["M"]
        assert 0.8 < waited < 5


def test_sighup_changes_the_pool_size(tokenbouncer, pg):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})
    hold = threading.Event()

    errors = []

    def busy(i):
        try:
            with connect(tb) as c:
                while not hold.is_set():
                    c.execute("SELECT pg_sleep(0.05)")
        except Exception as e:  # a client dropped by a reload fails the test below
            errors.append(repr(e))

    threads = [threading.Thread(target=busy, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    sampler = BackendSampler(pg)
    time.sleep(1)
    before = sampler.max
    with open(tb.config_path, "a") as f:
        f.write("default_pool_size = 5\n")
    tb.signal(signal.SIGHUP)
    assert "MONOTONIC_USEC=" in tb.wait_for("RELOADING=1")
    tb.wait_for("READY=1")
    deadline = time.monotonic() + 10
    while sampler.max < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = sampler.stop()

    # And smaller again, under the same load: connections beyond the new size close as they are
    # released, instead of serving waiting clients until server_idle_timeout.
    with open(tb.config_path, "a") as f:
        f.write("default_pool_size = 1\n")
    tb.signal(signal.SIGHUP)
    tb.wait_for("RELOADING=1")
    tb.wait_for("READY=1")
    deadline = time.monotonic() + 10
    while pg.backends() > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    shrunk = pg.backends()
    sampler = BackendSampler(pg)
    time.sleep(1)  # a second of load on the smaller pool
    hold.set()
    for t in threads:
        t.join()
    during = sampler.stop()
    assert errors == [], errors
    assert before <= 2
    assert after == 5
    assert shrunk == 1 and during == 1, (shrunk, during)
    assert tb.log().count("configuration reloaded") == 2


def test_bad_reload_keeps_the_running_configuration(tokenbouncer):
    tb = tokenbouncer()
    with open(tb.config_path, "a") as f:
        f.write("pg_port = 70000\n")
    tb.signal(signal.SIGHUP)
    tb.wait_for("READY=1")
    assert "configuration not reloaded" in tb.log()
    assert tb.psql("SELECT 1").stdout.strip() == "1"


def test_sigterm_lets_a_running_transaction_commit(tokenbouncer, pg):
    tb = tokenbouncer({"shutdown_timeout": 20})
    with connect(tb) as c:
        c.execute("CREATE TABLE IF NOT EXISTS shutdown_test (x int)")
    conn = connect(tb, autocommit=False)
    conn.execute("INSERT INTO shutdown_test VALUES (42)")
    tb.signal(signal.SIGTERM)
    tb.wait_for("STOPPING=1")
    # New clients are turned away...
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(tb.dsn(), connect_timeout=2)
    # ...the running transaction finishes.
    conn.execute("INSERT INTO shutdown_test VALUES (43)")
    conn.commit()
    conn.close()
    assert tb.proc.wait(10) == 0
    assert pg.sql("SELECT count(*) FROM shutdown_test WHERE x IN (42, 43)", db="appdb") == "2"


def test_sigterm_in_transaction_mode_closes_idle_clients(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "shutdown_timeout": 20})
    idle = connect(tb)
    idle.execute("SELECT 1")
    busy = connect(tb, autocommit=False)
    busy.execute("SELECT 1")  # in a transaction
    tb.signal(signal.SIGTERM)
    tb.wait_for("STOPPING=1")
    busy.execute("SELECT 2")
    busy.commit()
    busy.close()
    assert tb.proc.wait(10) == 0
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_exits_at_once(tokenbouncer, second):
    tb = tokenbouncer({"shutdown_timeout": 60})
    conn = connect(tb)
    conn.execute("SELECT 1")
    tb.signal(signal.SIGTERM)
    tb.wait_for("STOPPING=1")
    started = time.monotonic()
    tb.signal(second)
    tb.proc.wait(10)
    assert time.monotonic() - started < 5
    conn.close()


def test_sighup_changes_the_log_level(tokenbouncer):
    tb = tokenbouncer({"log_level": "warning"}, args=())
    tb.psql("SELECT 1")
    assert " info " not in tb.log() and " debug " not in tb.log()
    with open(tb.config_path, "a") as f:
        f.write("log_level = debug\n")
    tb.signal(signal.SIGHUP)
    tb.wait_for("RELOADING=1")
    tb.wait_for("READY=1")
    tb.psql("SELECT 1")
    assert " debug " in tb.log(), tb.log()


def test_upstream_restart(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 4})
    with connect(tb) as c:
        c.execute("SELECT 1")  # a pooled server connection now exists
    victim = connect(tb)
    victim.execute("SELECT 1")
    result = {}

    def long_query():
        try:
            victim.execute("SELECT pg_sleep(30)")
        except psycopg.OperationalError as e:
            result["error"] = str(e)

    t = threading.Thread(target=long_query)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    pg.restart()
    t.join(20)
    assert not t.is_alive()
    assert "terminating connection" in result["error"] or "server connection lost" in result["error"]
    assert time.monotonic() - started < 20
    # New clients succeed as soon as the upstream is back (dead pooled connections are replaced).
    for _ in range(3):
        with connect(tb) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)


def test_a_server_shutting_down_does_not_block_logins_once_it_is_back(tokenbouncer, pg):
    # During a restart the server answers 57P03 "the database system is shutting down"; that
    # must not keep new clients out for server_login_retry (15 s) once it is back.
    tb = tokenbouncer({"server_login_retry": 60})
    holder = psycopg.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres")
    stopper = subprocess.Popen(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", pg.data, "-m", "smart",
                                "-w", "-t", "60", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # a smart shutdown waits for `holder`, refusing new logins meanwhile
            r = tb.psql("SELECT 1", check=False)
            if "shutting down" in r.stderr:
                break
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.05)
    finally:
        holder.close()
        stopper.wait(60)
        pg.start()
    back = time.monotonic()
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    assert time.monotonic() - back < 5


def test_upstream_down_then_back(tokenbouncer, pg):
    tb = tokenbouncer()
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    pg.stop()
    try:
        r = tb.psql("SELECT 1", check=False)
        assert r.returncode != 0
        assert "could not connect to upstream server" in r.stderr or "server connection lost" in r.stderr
    finally:
        pg.start()
    assert tb.psql("SELECT 1").stdout.strip() == "1"


def test_exhausted_rw_pool_does_not_delay_the_ro_route(tokenbouncer):
    tb = tokenbouncer({"default_pool_size": 1, "pg_ro_host": "localhost", "query_wait_timeout": 30})
    with connect(tb) as holder:
        holder.execute("SELECT 1")  # the rw pool's only connection
        started = time.monotonic()
        assert tb.psql("SELECT 1", ro=True).stdout.strip() == "1"
        assert time.monotonic() - started < 3


def test_cancel_in_transaction_mode_hits_the_right_server(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})
    with connect(tb) as a, connect(tb) as b:
        done = {}

        def other():
            done["b"] = b.execute("SELECT pg_sleep(1.5), 'b'").fetchone()[1]

        t = threading.Thread(target=other)
        t.start()
        threading.Timer(0.5, a.cancel).start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            a.execute("SELECT pg_sleep(10)")
        t.join()
        assert done["b"] == "b"
        # A cancel for a client that holds no server connection is dropped.
        a.cancel()
        assert a.execute("SELECT 3").fetchone() == (3,)


def test_kong_migrations_style_in_transaction_mode(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction"})
    with connect(tb) as conn:
        conn.execute("SET SCHEMA 'public'; SET TIME ZONE 'UTC';")
        conn.execute("""BEGIN;
            CREATE TABLE IF NOT EXISTS kong_locks (key text PRIMARY KEY, owner text, ttl timestamptz);
            DELETE FROM kong_locks WHERE ttl < now();
            INSERT INTO kong_locks VALUES ('migrations', 'node-1', now() + interval '60 seconds') ON CONFLICT DO NOTHING;
            COMMIT;""")
        assert conn.execute("SELECT owner FROM kong_locks WHERE key = 'migrations'").fetchone() == ("node-1",)
        conn.execute("BEGIN; DROP TABLE kong_locks; COMMIT;")


# --- Pool sizing and timeout keys, one test each, observed from the client and from PostgreSQL ---

from harness import error_fields, raw_login, read_message  # noqa: E402


def _admin_value(pg, sql, params=None):
    """One value from PostgreSQL, asked as the superuser over the Unix socket (faster than psql)."""
    with psycopg.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", autocommit=True) as c:
        return c.execute(sql, params).fetchone()[0]


def _backends(pg, user="app"):
    return _admin_value(pg, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND "
                            "backend_type = 'client backend'", (user,))


def _backend_pids(pg, user="app"):
    with psycopg.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s AND "
                                        "backend_type = 'client backend'", (user,))}


def _poll(cond, timeout, interval=0.05):
    """Polls cond() until it is true or timeout seconds have passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def _settle(pg, *users):
    """Waits until the server connections of earlier tests' (killed) tokenbouncers are gone."""
    for user in users or ("app",):
        assert _poll(lambda: _backends(pg, user) == 0, 10), f"backends of {user} left over from an earlier test"


def test_min_pool_size_opens_and_keeps_server_connections(tokenbouncer, pg):
    _settle(pg)
    tb = tokenbouncer({"min_pool_size": 3, "server_idle_timeout": 1})
    # No client has connected: housekeeping alone opens min_pool_size connections.
    assert _poll(lambda: _backends(pg) == 3, 5), _backends(pg)
    prefilled = _backend_pids(pg)
    with connect(tb) as c:  # a client is served by one of them
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] in prefilled
    # More clients than min_pool_size at once, then all leave: server_idle_timeout closes the extra
    # connections but keeps min_pool_size of them.
    barrier = threading.Barrier(5, timeout=10)

    def client(i):
        with connect(tb) as conn:
            conn.execute("SELECT 1")
            barrier.wait()  # all five hold a server connection (session mode)

    assert run_clients(5, client) == []
    assert _poll(lambda: _backends(pg) == 3, 5), _backends(pg)
    # They stay for longer than server_idle_timeout (and min_pool_size does not open more).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert _backends(pg) == 3
        time.sleep(0.1)


def test_reserve_pool_after_reserve_pool_timeout(tokenbouncer, pg):
    _settle(pg)
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1, "reserve_pool_size": 1,
                       "reserve_pool_timeout": 1, "query_wait_timeout": 20})
    sampler = BackendSampler(pg)
    holder = connect(tb, autocommit=False)
    second = connect(tb, autocommit=False)
    try:
        holder_pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]  # holds the pool's only connection
        started = time.monotonic()
        second_pid = second.execute("SELECT pg_backend_pid()").fetchone()[0]  # served by the reserve...
        waited = time.monotonic() - started
        assert 0.9 <= waited < 3, waited  # ...after about reserve_pool_timeout
        assert second_pid != holder_pid
        # Pool and reserve are both in a transaction: a third client waits, with no third connection,
        # until one of them is released.
        result = {}

        def third():
            with connect(tb) as c:
                result["pid"] = c.execute("SELECT pg_backend_pid()").fetchone()[0]

        t = threading.Thread(target=third)
        t.start()
        time.sleep(1.75)  # longer than reserve_pool_timeout plus a housekeeping round
        assert t.is_alive() and "pid" not in result
        holder.commit()
        t.join(5)
        assert result.get("pid") in (holder_pid, second_pid)
        second.commit()
    finally:
        holder.close()
        second.close()
    assert sampler.stop() == 2


def test_max_db_connections_caps_pool_and_reserve(tokenbouncer, pg):
    _settle(pg)
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 5, "max_db_connections": 2,
                       "reserve_pool_size": 2, "reserve_pool_timeout": "100ms"})
    sampler = BackendSampler(pg)

    def client(i):
        with connect(tb, autocommit=False) as conn:
            for _ in range(8):
                conn.execute("SELECT pg_sleep(0.05)")
                conn.commit()

    errors = run_clients(6, client)
    peak = sampler.stop()
    assert errors == []
    assert peak == 2  # used, and never more (clients waited longer than reserve_pool_timeout)


def _raw_query(sock, sql):
    """Runs one simple query on a raw_login socket; returns the transaction status of its ReadyForQuery."""
    q = sql.encode() + b"\0"
    sock.sendall(b"Q" + (len(q) + 4).to_bytes(4, "big") + q)
    while True:
        kind, body = read_message(sock)
        assert kind != b"E", error_fields(body)
        if kind == b"Z":
            return body


def _raw_wait_error(sock):
    """Waits for the ErrorResponse tokenbouncer sends on its own; returns (its fields, seconds waited)."""
    started = time.monotonic()
    try:
        kind, body = read_message(sock)
    except TimeoutError:
        raise AssertionError(f"no error and no close within {time.monotonic() - started:.1f} s") from None
    assert kind == b"E", (kind, body)
    return error_fields(body), time.monotonic() - started


def test_client_idle_timeout_closes_idle_clients_only(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "client_idle_timeout": 1})
    idle, err = raw_login(tb.port, timeout=5)
    lazy = connect(tb)
    outcome = {}

    def active():
        # Queries every 0.2 s, and one running longer than the timeout: never idle for 1 s.
        try:
            with connect(tb) as c:
                until = time.monotonic() + 2.5
                while time.monotonic() < until:
                    c.execute("SELECT 1")
                    time.sleep(0.2)
                c.execute("SELECT pg_sleep(1.5)")
                outcome["active"] = c.execute("SELECT 'still here'").fetchone()[0]
        except Exception as e:  # noqa: BLE001
            outcome["active"] = repr(e)

    t = threading.Thread(target=active)
    t.start()
    try:
        assert err is None
        assert _raw_query(idle, "SELECT 1") == b"I"  # a client that has worked, then idles
        lazy.execute("SELECT 1")
        fields, waited = _raw_wait_error(idle)  # tokenbouncer speaks first: the error, then it closes
        assert fields["S"] == "FATAL" and fields["C"] == "57P05", fields  # PostgreSQL's idle_session_timeout
        assert "client_idle_timeout" in fields["M"], fields
        assert 0.9 <= waited < 3, waited
        assert idle.recv(1) == b""
        # A libpq client sees the message at its next query (libpq reads it as a connection
        # failure, so psycopg gives no sqlstate).
        assert _poll(lambda: tb.log().count("idle longer than client_idle_timeout") >= 2, 5)
        with pytest.raises(psycopg.OperationalError) as e:
            lazy.execute("SELECT 1")
        assert "idle longer than client_idle_timeout" in str(e.value)
    finally:
        idle.close()
        lazy.close()
        t.join(10)
    assert outcome.get("active") == "still here", outcome


def test_idle_transaction_timeout_rolls_back_and_returns_a_clean_server(tokenbouncer, pg):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1, "idle_transaction_timeout": 1})
    with connect(tb) as c:
        c.execute("CREATE TABLE IF NOT EXISTS idle_txn (x text)")
        c.execute("TRUNCATE idle_txn")

    def idle_in_transaction():
        return _admin_value(pg, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                                "AND state LIKE 'idle in transaction%%'")

    victim, err = raw_login(tb.port, timeout=5)
    try:
        assert err is None
        assert _raw_query(victim, "BEGIN; INSERT INTO idle_txn VALUES ('uncommitted')") == b"T"
        assert idle_in_transaction() == 1
        fields, waited = _raw_wait_error(victim)
        assert fields["S"] == "FATAL" and fields["C"] == "25P03", fields  # idle_in_transaction_session_timeout
        assert "idle_transaction_timeout" in fields["M"], fields
        assert 0.9 <= waited < 3, waited
        assert victim.recv(1) == b""
    finally:
        victim.close()
    assert _poll(lambda: idle_in_transaction() == 0, 5)
    with connect(tb) as c:
        assert c.execute("SELECT count(*) FROM idle_txn").fetchone() == (0,)  # rolled back
        # Not inside the old transaction: a fresh one per statement, no transaction id assigned.
        assert c.execute("SELECT now() = statement_timestamp(), pg_current_xact_id_if_assigned() IS NULL"
                         ).fetchone() == (True, True)
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # An idle client outside a transaction is left alone (client_idle_timeout is 0).
    with connect(tb) as c:
        c.execute("SELECT 1")
        time.sleep(1.5)
        assert c.execute("SELECT 2").fetchone() == (2,)


def test_server_idle_timeout_closes_unused_server_connections(tokenbouncer, pg):
    _settle(pg)
    tb = tokenbouncer({"server_idle_timeout": 1})
    staying = connect(tb)
    try:
        staying_pid = staying.execute("SELECT pg_backend_pid()").fetchone()[0]
        with connect(tb) as leaving:
            leaving.execute("SELECT 1")
        left = time.monotonic()
        assert _backends(pg) == 2
        assert _poll(lambda: _backends(pg) == 1, 5), _backends(pg)
        waited = time.monotonic() - left
        assert 0.9 <= waited < 3, waited
        # The connection of a client still connected (session mode) is in use, not idle: it stays.
        assert _backend_pids(pg) == {staying_pid}
        assert staying.execute("SELECT pg_backend_pid()").fetchone()[0] == staying_pid
    finally:
        staying.close()
    assert _poll(lambda: _backends(pg) == 0, 5), _backends(pg)


def test_server_lifetime_replaces_connections_in_transaction_mode(tokenbouncer, pg):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1, "server_lifetime": 1})
    seen = []  # (pid, first time seen)
    with connect(tb) as c:
        until = time.monotonic() + 3
        while time.monotonic() < until:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            if not seen or seen[-1][0] != pid:
                seen.append((pid, time.monotonic()))
            time.sleep(0.05)
    pids = [p for p, _ in seen]
    assert len(set(pids)) == len(pids)  # a replaced connection never comes back
    assert 2 <= len(pids) <= 4, seen  # about one per second of traffic
    spans = [b - a for (_, a), (_, b) in zip(seen, seen[1:])]
    assert all(0.5 < s < 2 for s in spans), spans
    # Replaced connections are closed, not leaked.
    assert _poll(lambda: not (_backend_pids(pg) & set(pids[:-1])), 5)


def test_pg_ro_pool_size_limits_the_ro_route_only(tokenbouncer, pg):
    # The ro route logs in as another role, so that its backends can be told from the rw route's.
    _settle(pg, "app", "scramuser")
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 4, "pg_ro_host": "localhost",
                       "pg_ro_pool_size": 1, "pg_ro_user": "scramuser", "pg_ro_password": "scram-secret"})
    ro_sampler = BackendSampler(pg, user="scramuser")
    rw_sampler = BackendSampler(pg, user="app")
    barrier = threading.Barrier(4, timeout=15)

    def ro_client(i):
        with psycopg.connect(tb.dsn(ro=True)) as conn:
            for _ in range(5):
                assert conn.execute("SELECT pg_sleep(0.05), current_user").fetchone()[1] == "scramuser"
                conn.commit()

    def rw_client(i):
        with psycopg.connect(tb.dsn()) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)  # in a transaction now
            barrier.wait()  # all four hold a server connection at once
            conn.commit()

    errors = []
    threads = [threading.Thread(target=lambda: errors.extend(run_clients(4, ro_client))),
               threading.Thread(target=lambda: errors.extend(run_clients(4, rw_client)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ro_peak, rw_peak = ro_sampler.stop(), rw_sampler.stop()
    assert errors == []
    assert ro_peak == 1
    assert rw_peak == 4


CHECK_COUNTER = ("SELECT set_config('tb.checks', (coalesce(nullif(current_setting('tb.checks', true), ''), '0')"
                 "::int + 1)::text, false)")


def test_server_check_query_runs_after_server_check_delay_of_idleness(tokenbouncer):
    # The check query counts its runs in a session variable of the server connection, which the
    # client reads (transaction mode: no server_reset_query clears it).
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 1, "server_check_delay": 1,
                       "server_check_query": CHECK_COUNTER})
    with connect(tb) as c:
        def checks():
            return int(c.execute("SELECT current_setting('tb.checks', true)").fetchone()[0] or 0)

        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert checks() == 0  # a fresh connection is not checked
        # Continuous traffic for longer than server_check_delay, from two clients sharing the one
        # connection (handed straight from one to the other): no check.
        stop = time.monotonic() + 1.5

        def other():
            with connect(tb) as d:
                while time.monotonic() < stop:
                    d.execute("SELECT 1")

        t = threading.Thread(target=other)
        t.start()
        while time.monotonic() < stop:
            c.execute("SELECT 1")
        t.join()
        # A transaction longer than the delay, then the next use at once: the delay counts from the
        # last use, not from when the connection was taken.
        c.execute("SELECT pg_sleep(1.2)")
        assert checks() == 0
        time.sleep(1.3)  # idle for longer than server_check_delay
        assert checks() == 1
        assert checks() == 1  # just used: no check
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
