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

from harness import first_error, free_port


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

    def busy(i):
        with connect(tb) as c:
            while not hold.is_set():
                c.execute("SELECT pg_sleep(0.05)")

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


def test_second_sigterm_exits_at_once(tokenbouncer):
    tb = tokenbouncer({"shutdown_timeout": 60})
    conn = connect(tb)
    conn.execute("SELECT 1")
    tb.signal(signal.SIGTERM)
    tb.wait_for("STOPPING=1")
    started = time.monotonic()
    tb.signal(signal.SIGTERM)
    tb.proc.wait(10)
    assert time.monotonic() - started < 5
    conn.close()


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
