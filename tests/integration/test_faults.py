"""Fault injection ("Hardening"): upstreams that die, stall or never answer, a token service that
hangs or throttles, clients that vanish mid-transaction, 10,000 idle clients, slowloris floods,
oversized packets. Every test asserts on what a client sees, and after each fault that
tokenbouncer is alive and serves a new client."""

import contextlib
import os
import resource
import selectors
import socket
import ssl
import struct
import sys
import threading
import time

import psycopg
import pytest

from harness import error_fields, first_error, free_port, raw_login, read_message, sanitized

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_azure"))
from fake_azure import FakeAzure, pg_role_syncer  # noqa: E402

MI = "77777777-7777-7777-7777-777777777777"  # managed identity -> role az_role


# --------------------------------------------------------------------------------------------
# helpers

def connect(tb, autocommit=True, **kw):
    return psycopg.connect(tb.dsn(**kw), autocommit=autocommit)


def direct(pg, db="appdb"):
    """A superuser connection straight to PostgreSQL (Unix socket), not through tokenbouncer."""
    return psycopg.connect(f"host={pg.sockdir} port={pg.port} user=postgres dbname={db}", autocommit=True)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def assert_serves(tb, timeout=10, psql=False):
    """The process is alive and a brand-new client runs SELECT 1 (retried until `timeout`, for
    upstreams that are coming back). psql=True: with psql, for when this process has so many
    sockets open that psycopg's select() cannot wait on a new one."""
    assert tb.proc.poll() is None, f"tokenbouncer exited with {tb.proc.returncode}:\n{tb.log()[-4000:]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psql:
                assert tb.psql("SELECT 1", check=False, connect_timeout=5).stdout.strip() == "1"
            else:
                with connect(tb, connect_timeout=5) as c:
                    assert c.execute("SELECT 1").fetchone() == (1,)
            break
        except (psycopg.Error, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert tb.proc.poll() is None


def backend_pids(pg, query_like=None, state=None, user="app"):
    sql = ("SELECT pid FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'")
    args = [user]
    if query_like:
        sql += " AND query LIKE %s"
        args.append(query_like)
    if state:
        sql += " AND state = %s"
        args.append(state)
    with direct(pg) as d:
        return [r[0] for r in d.execute(sql, args).fetchall()]


def send_query(sock, sql):
    q = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)


def run_query(sock, sql):
    """Simple query on a raw socket; returns (error fields or None, transaction status)."""
    send_query(sock, sql)
    err = None
    while True:
        t, body = read_message(sock)
        if t == b"E":
            err = error_fields(body)
        if t == b"Z":
            return err, body.decode()


def abort(sock):
    """Close with RST (SO_LINGER 0): the client vanishes without a Terminate."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def startup_packet(user="kong", database="appdb"):
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!I", len(body) + 4) + body


class Sleeper(threading.Thread):
    """Runs one statement on a psycopg connection in a thread and records how it ended."""

    def __init__(self, conn, sql):
        super().__init__(daemon=True)
        self.conn, self.sql = conn, sql
        self.error = None
        self.ended = None

    def run(self):
        try:
            self.conn.execute(self.sql)
        except psycopg.Error as e:
            self.error = e
        self.ended = time.monotonic()


def wait_active(pg, pid, fragment, timeout=10):
    wait_until(lambda: pid in backend_pids(pg, query_like=f"%{fragment}%", state="active"), timeout,
               what=f"backend {pid} running {fragment}")


def raise_nofile(want, need):
    """Raises this process's open-file limit (which tokenbouncer inherits) towards `want`; without
    CAP_SYS_RESOURCE only up to the hard limit. Skips the test below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < need:
        pytest.skip(f"RLIMIT_NOFILE is only {soft} (hard limit {hard}); this test needs {need}")
    return soft


# --------------------------------------------------------------------------------------------
# 1. upstream killed in the middle of a query

def errors_until_eof(sock, timeout):
    """Reads a raw socket until the connection ends; returns the ErrorResponses it got. Fails
    if the connection stays open longer than `timeout`."""
    sock.settimeout(timeout)
    errors = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            t, body = read_message(sock)
        except (ConnectionError, OSError) as e:
            assert not isinstance(e, socket.timeout), f"no end of the connection within {timeout} s: {errors}"
            return errors
        if t == b"E":
            errors.append(error_fields(body))
        assert time.monotonic() < deadline, f"no end of the connection within {timeout} s: {errors}"


def start_victim(tb, pg, sql="SELECT pg_sleep(30)"):
    """A raw client whose server is busy running `sql`; returns (socket, backend pid)."""
    s, err = raw_login(tb.port, timeout=10)
    assert err is None
    send_query(s, "SELECT pg_backend_pid()")
    pid = None
    while True:
        t, body = read_message(s)
        if t == b"D":
            n = struct.unpack("!I", body[2:6])[0]
            pid = int(body[6:6 + n])
        if t == b"Z":
            break
    send_query(s, sql)
    wait_active(pg, pid, sql)
    return s, pid


def test_backend_terminated_mid_query(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 2})
    s, pid = start_victim(tb, pg)
    killed = time.monotonic()
    with direct(pg) as d:
        assert d.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    errors = errors_until_eof(s, 5)
    s.close()
    assert time.monotonic() - killed < 3
    assert errors, "the connection ended without an error"
    # The server's own FATAL is passed on (tokenbouncer may add its 08006 after it).
    assert errors[0]["C"] == "57P01", errors
    assert all(e["C"] in ("57P01", "08006") for e in errors), errors
    assert_serves(tb)


def test_upstream_stopped_immediately_mid_query(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 2, "server_login_retry": 0, "server_connect_timeout": 2})
    s, pid = start_victim(tb, pg)
    stopped = time.monotonic()
    pg.stop("immediate")
    try:
        errors = errors_until_eof(s, 5)
        s.close()
        assert time.monotonic() - stopped < 5
        assert errors, "the connection ended without an error"
        assert all(e["C"] in ("57P01", "08006") for e in errors), errors
        # While the server is down a new client is told so, promptly.
        started = time.monotonic()
        err = first_error(tb.port, timeout=10)
        assert err["C"] == "08006", err
        assert time.monotonic() - started < 5
        assert tb.proc.poll() is None
    finally:
        pg.start()
    assert_serves(tb, timeout=15)


# --------------------------------------------------------------------------------------------
# 2. upstream killed in the middle of COPY

def test_backend_terminated_mid_copy_from_stdin(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 2})
    with direct(pg) as d:
        d.execute("DROP TABLE IF EXISTS copy_in_target")
        d.execute("CREATE TABLE copy_in_target (n int, pad text)")
        d.execute("GRANT ALL ON copy_in_target TO app")
    victim = connect(tb)
    pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    outcome = {}

    def copy_in():
        row = "x" * 200
        try:
            with victim.cursor().copy("COPY copy_in_target (n, pad) FROM STDIN") as cp:
                n = 0
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    for _ in range(200):
                        cp.write_row((n, row))
                        n += 1
                    if outcome.get("killed") and time.monotonic() - outcome["killed"] > 5:
                        break  # stop feeding: the error must come at the end at the latest
        except psycopg.Error as e:
            outcome["error"] = e
        outcome["ended"] = time.monotonic()

    t = threading.Thread(target=copy_in, daemon=True)
    t.start()

    def copying():
        with direct(pg) as d:
            r = d.execute("SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = %s", (pid,)).fetchone()
        return r is not None and r[0] > 1000

    wait_until(copying, 15, what="COPY FROM STDIN under way")
    outcome["killed"] = time.monotonic()
    with direct(pg) as d:
        d.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(30)
    assert not t.is_alive(), "the COPY client hangs after its server was terminated"
    assert "error" in outcome, "the COPY seemed to succeed"
    assert outcome["error"].sqlstate in ("57P01", "08006", None), outcome["error"]
    assert outcome["ended"] - outcome["killed"] < 10
    victim.close()
    with direct(pg) as d:
        assert d.execute("SELECT count(*) FROM copy_in_target").fetchone() == (0,)  # nothing half-committed
    assert_serves(tb)


def test_backend_terminated_mid_copy_to_stdout(tokenbouncer, pg):
    tb = tokenbouncer({"default_pool_size": 2})
    victim = connect(tb)
    pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
    outcome = {"rows": 0}

    def copy_out():
        try:
            with victim.cursor().copy(
                    "COPY (SELECT g, repeat('y', 200) FROM generate_series(1, 50000000) g) TO STDOUT") as cp:
                for _ in cp:
                    outcome["rows"] += 1
                    if outcome.get("killed") is None and outcome["rows"] == 20000:
                        outcome["ready"] = True
                    if outcome["rows"] % 1000 == 0 and outcome.get("killed") is None:
                        time.sleep(0.001)  # slow reader: the server stays in the middle of the COPY
        except psycopg.Error as e:
            outcome["error"] = e
        outcome["ended"] = time.monotonic()

    t = threading.Thread(target=copy_out, daemon=True)
    t.start()
    wait_until(lambda: outcome.get("ready"), 15, what="COPY TO STDOUT under way")
    outcome["killed"] = time.monotonic()
    with direct(pg) as d:
        d.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(30)
    assert not t.is_alive(), "the COPY TO client hangs after its server was terminated"
    assert "error" in outcome, f"the COPY seemed to succeed after {outcome['rows']} rows"
    assert outcome["error"].sqlstate in ("57P01", "08006", None), outcome["error"]
    assert outcome["rows"] < 50000000
    assert outcome["ended"] - outcome["killed"] < 10
    victim.close()
    assert_serves(tb)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_slow_reader_gets_back_pressure_not_buffering(tokenbouncer, pg, mode):
    """A client that asks for a 1 GB result and reads none of it: tokenbouncer stops reading from
    that server (which then waits in ClientWrite) instead of buffering, and on one worker thread
    other clients are served meanwhile."""
    tb = tokenbouncer({"workers": 1, "pool_mode": mode, "default_pool_size": 3})
    assert_serves(tb)
    baseline = tb.rss_kib()
    slow, err = raw_login(tb.port)
    assert err is None
    send_query(slow, "SELECT repeat('x', 1000) FROM generate_series(1, 1000000)")  # about 1 GB

    def server_blocked_on_client():
        with direct(pg) as d:
            return d.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'ClientWrite' "
                             "AND query LIKE '%generate_series(1, 1000000)%'").fetchall()

    wait_until(server_blocked_on_client, 15, what="the server to wait for tokenbouncer to read")
    time.sleep(1)  # were tokenbouncer buffering, it would keep reading (at hundreds of MB/s)
    grown = tb.rss_kib() - baseline
    for _ in range(3):
        t0 = time.monotonic()
        with connect(tb, connect_timeout=5) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - t0 < 1
    assert server_blocked_on_client(), "the slow reader's query ended or stopped waiting on the client"
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB for a client that reads nothing"
    abort(slow)
    # The server connection in the middle of the result is closed, not handed to another client.
    wait_until(lambda: not server_blocked_on_client(), 10, what="the slow reader's server to go")
    assert_serves(tb)


# --------------------------------------------------------------------------------------------
# 3. upstream that accepts TCP (or TLS) and then never answers

class BlackHole:
    """A server on a free loopback port that accepts connections and never answers. mode:
    tcp: reads forever; ssl_yes: answers the SSLRequest with 'S' and then stalls the handshake;
    tls: completes TLS with `certs` and then never answers the startup packet."""

    def __init__(self, mode="tcp", certs=None):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.ctx = None
        if mode == "tls":
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certs.cert, certs.key)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with contextlib.suppress(OSError, ssl.SSLError):
            if self.mode in ("ssl_yes", "tls"):
                if len(c.recv(8)) == 8:
                    c.sendall(b"S")
                if self.mode == "tls":
                    c = self.ctx.wrap_socket(c, server_side=True)
                    self.conns.append(c)
            while c.recv(65536):
                pass

    def close(self):
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@pytest.mark.parametrize("mode", ["tcp", "ssl_yes", "tls"])
def test_upstream_that_never_answers(tokenbouncer, pg, mode):
    hole = BlackHole(mode, pg.certs)
    try:
        # The rw route points at the black hole, the ro route at the real server.
        tb = tokenbouncer({"pg_host": "127.0.0.1", "pg_port": hole.port, "pg_sslmode": "verify-ca",
                           "server_connect_timeout": 2, "server_login_retry": 1,
                           "pg_ro_host": "localhost", "pg_ro_port": pg.port, "pg_ro_sslmode": "verify-full"})
        result = {}

        def stuck_client():
            started = time.monotonic()
            result["err"] = first_error(tb.port, timeout=20)
            result["took"] = time.monotonic() - started

        t = threading.Thread(target=stuck_client, daemon=True)
        t.start()
        wait_until(lambda: hole.accepted >= 1, 5, what="tokenbouncer connecting to the black hole")
        # While that client waits, the process serves the other route at once.
        started = time.monotonic()
        assert tb.psql("SELECT 1", ro=True).stdout.strip() == "1"
        assert time.monotonic() - started < 1.5
        t.join(15)
        assert not t.is_alive(), "the client hangs on an upstream that never answers"
        err, took = result["err"], result["took"]
        assert err["C"] == "08006", err
        assert f"127.0.0.1:{hole.port}" in err["M"], err
        assert "server_connect_timeout" in err["M"] and "2 s" in err["M"], err
        assert 1.5 < took < 4, took
        # server_login_retry: the next client is told at once, not after another 2 s.
        started = time.monotonic()
        assert first_error(tb.port, timeout=10)["C"] == "08006"
        assert time.monotonic() - started < 1
        assert tb.proc.poll() is None
        started = time.monotonic()
        assert tb.psql("SELECT 1", ro=True).stdout.strip() == "1"
        assert time.monotonic() - started < 1.5
    finally:
        hole.close()


# --------------------------------------------------------------------------------------------
# 4. token service that hangs, throttles or answers garbage

@pytest.fixture(scope="module")
def azure(pg):
    pg.sql("CREATE ROLE az_role LOGIN")
    pg.sql("GRANT ALL ON DATABASE appdb TO az_role")
    syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", {MI: "az_role"})
    fake = FakeAzure(on_issue=syncer).start()
    fake.add_managed_identity(MI)
    yield fake
    fake.stop()
    syncer.close()


# name -> (misbehave() arguments, a fragment the client's error message must contain)
TOKEN_FAULTS = {
    "hang": (("hang",), {"seconds": 60}, ("no reply", "no token", "timed out", "timeout")),
    "429": (("status",), {"code": 429, "body": {"error": "too_many_requests"}, "headers": {"Retry-After": "1"}},
            ("429",)),
    "500": (("status",), {"code": 500, "body": {"error": "server_error"}}, ("500",)),
    "garbage": (("garbage",), {}, ("not JSON",)),
}


@pytest.mark.parametrize("fault", list(TOKEN_FAULTS))
def test_token_service_faults(tokenbouncer, azure, fault):
    """Tokens live 10 s: refreshed at 5 s, unusable from 7.5 s. The service fails from the start:
    the cached token serves every client while it is usable, then clients get a clear error in
    bounded time, and new clients succeed once the service recovers."""
    args, params, fragments = TOKEN_FAULTS[fault]
    azure.clear_misbehaviour()
    azure.token_lifetime = 10
    started = time.monotonic()
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_azure_client_id": MI, "azure_imds_endpoint": azure.imds_endpoint,
                       "pg_password": None, "pg_user": "az_role", "azure_request_timeout": 1,
                       "server_lifetime": 0.5, "server_idle_timeout": 0.5, "server_login_retry": 0})
    issued = azure.issued[-1]
    expires = issued["expires_on"]  # wall clock, whole seconds
    azure.misbehave("imds", *args, count=None, **params)
    before = azure.count("imds")
    try:
        # Window 1: the cached token is still usable (until expires - 2.5 s): zero failures.
        # (tokenbouncer counts the lifetime from when it got the token, at most 1 s after the
        # whole-second issue time: unusable from somewhere in [expires - 2.5, expires - 2.25).)
        window_end = time.monotonic() + (expires - 3.5 - time.time())
        failures, done = [], 0
        while time.monotonic() < window_end:
            try:
                with connect(tb, connect_timeout=5) as c:
                    assert c.execute("SELECT current_user").fetchone() == ("az_role",)
                done += 1
            except psycopg.Error as e:
                failures.append(f"{time.monotonic() - started:.2f}: {e}")
            time.sleep(0.05)
        assert failures == []
        assert done > 20
        assert azure.count("imds") > before, "no refresh was attempted while the service misbehaved"
        # Window 2: the token is no longer usable: a clear error, in bounded time.
        wait_until(lambda: time.time() > expires - 2.2, 10, what="the token to become unusable")

        def token_error():
            t0 = time.monotonic()
            err = first_error(tb.port, timeout=15)
            return err, time.monotonic() - t0

        err, took = token_error()
        assert err["C"] in ("28000", "08006"), err
        assert "could not obtain a Microsoft Entra access token" in err["M"], err
        assert any(f in err["M"] for f in fragments), err
        assert took < 4, took
        assert tb.proc.poll() is None
    finally:
        azure.clear_misbehaviour()
        azure.token_lifetime = 3600
    # Recovery: new clients succeed once the service answers again.
    recovered = time.monotonic()
    assert_serves(tb, timeout=15)
    assert time.monotonic() - recovered < 6


def test_token_service_429_then_recovery_before_first_use(tokenbouncer, azure):
    """429 with Retry-After while the token is unusable (clients fail quickly with the reason), then
    the service recovers: the clients that come after succeed."""
    azure.clear_misbehaviour()
    azure.token_lifetime = 4  # refreshed at 2 s; unusable from somewhere in [expires - 1, expires - 0.75)
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_azure_client_id": MI, "azure_imds_endpoint": azure.imds_endpoint,
                       "pg_password": None, "pg_user": "az_role", "azure_request_timeout": 1,
                       "server_lifetime": 0.5, "server_idle_timeout": 0.5, "server_login_retry": 0})
    expires = azure.issued[-1]["expires_on"]
    azure.misbehave("imds", "status", count=None, code=429, body={"error": "too_many_requests"},
                    headers={"Retry-After": "1"})
    try:
        wait_until(lambda: time.time() > expires - 0.7, 10, what="the token to become unusable")
        errors = []
        for _ in range(5):
            t0 = time.monotonic()
            err = first_error(tb.port, timeout=15)
            errors.append(err)
            assert time.monotonic() - t0 < 3
        assert all(e["C"] in ("28000", "08006") for e in errors), errors
        assert all("429" in e["M"] for e in errors), errors
    finally:
        azure.clear_misbehaviour()
        azure.token_lifetime = 3600
    ok = 0
    recovered = time.monotonic()
    assert_serves(tb, timeout=10)
    assert time.monotonic() - recovered < 5
    for _ in range(10):
        with connect(tb) as c:
            assert c.execute("SELECT current_user").fetchone() == ("az_role",)
            ok += 1
    assert ok == 10


# --------------------------------------------------------------------------------------------
# 5. clients that vanish mid-transaction or mid-query

@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_vanishes_mid_transaction(tokenbouncer, pg, mode):
    tb = tokenbouncer({"pool_mode": mode, "default_pool_size": 1, "query_wait_timeout": 10})
    table = f"vanish_{mode}"
    with direct(pg) as d:
        d.execute(f"DROP TABLE IF EXISTS {table}")
        d.execute(f"CREATE TABLE {table} (who text)")
        d.execute(f"GRANT ALL ON {table} TO app")
    s, err = raw_login(tb.port)
    assert err is None
    assert run_query(s, "SET statement_timeout = '123s'") == (None, "I")
    assert run_query(s, "BEGIN") == (None, "T")
    assert run_query(s, f"INSERT INTO {table} VALUES ('vanished')") == (None, "T")
    abort(s)
    started = time.monotonic()
    with connect(tb, autocommit=False) as c:
        assert c.execute("SELECT txid_current_if_assigned()").fetchone() == (None,)
        if mode == "session":
            assert c.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        c.execute(f"INSERT INTO {table} VALUES ('next')")
        c.commit()
    assert time.monotonic() - started < 5
    with direct(pg) as d:
        assert d.execute(f"SELECT who FROM {table}").fetchall() == [("next",)]
    # No backend is left inside the abandoned transaction.
    wait_until(lambda: not backend_pids(pg, state="idle in transaction"), 5, what="no idle-in-transaction backend")
    assert_serves(tb)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_client_vanishes_mid_query(tokenbouncer, pg, mode):
    tb = tokenbouncer({"pool_mode": mode, "default_pool_size": 1, "query_wait_timeout": 10})
    s, err = raw_login(tb.port)
    assert err is None
    send_query(s, "SELECT pg_sleep(5) AS vanishing")
    wait_until(lambda: backend_pids(pg, query_like="%vanishing%", state="active"), 5, what="the query running")
    abort(s)
    closed = time.monotonic()
    # The next client is not handed the busy server connection: its query runs promptly.
    with connect(tb) as c:
        assert c.execute("SELECT 42").fetchone() == (42,)
        assert c.execute("SELECT txid_current_if_assigned()").fetchone() == (None,)
    took = time.monotonic() - closed
    assert took < 5, f"the next client waited {took:.1f} s for the server the vanished client kept busy"
    # No backend keeps running the abandoned query for long.
    wait_until(lambda: not backend_pids(pg, query_like="%vanishing%", state="active"), 8,
               what="the abandoned query to end")
    assert_serves(tb)


# --------------------------------------------------------------------------------------------
# 6. 10,000 idle clients

def open_idle_clients(port, n, batch=250, timeout=60):
    """n raw clients that complete the startup (read until ReadyForQuery); returns the sockets."""
    socks = []
    pkt = startup_packet()
    deadline = time.monotonic() + timeout
    while len(socks) < n:
        group = []
        for _ in range(min(batch, n - len(socks))):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(pkt)
            group.append(s)
        for s in group:
            while True:
                t, body = read_message(s)
                assert t != b"E", error_fields(body)
                if t == b"Z":
                    break
        socks.extend(group)
        assert time.monotonic() < deadline, f"only {len(socks)} clients logged in within {timeout} s"
    return socks


def report(capsys, text):
    with capsys.disabled():
        print("\n" + text)
    path = os.environ.get("TB_FAULTS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def idle_round(tb, pg, n):
    """n idle clients: all log in, hold no server connection, a normal client is served meanwhile
    and a few of the idle ones can still run a query. Returns (seconds to log in, peak RSS KiB)."""
    base_backends = pg.backends()
    started = time.monotonic()
    socks = open_idle_clients(tb.port, n)
    took = time.monotonic() - started
    try:
        assert pg.backends() == base_backends, "idle clients took server connections"
        assert tb.proc.poll() is None
        peak = tb.rss_kib()
        t0 = time.monotonic()
        assert_serves(tb, psql=True, timeout=2)
        assert time.monotonic() - t0 < 2
        for s in socks[:: n // 5]:
            assert run_query(s, "SELECT 1") == (None, "I")
    finally:
        for s in socks:
            s.close()
    return took, peak


def test_ten_thousand_idle_clients(tokenbouncer, pg, capsys):
    """Two rounds of 10,000 idle clients (session mode, pool of 5): no server connections for
    idle clients, and the second round costs no more memory than the first (nothing of the
    first round is kept)."""
    n = 10000
    raise_nofile(30000, n + 1000)  # inherited by tokenbouncer
    tb = tokenbouncer({"pool_mode": "session", "default_pool_size": 5, "max_client_conn": 11000})
    assert_serves(tb)
    wait_until(lambda: pg.backends() <= 1, 5, what="one pooled server connection")
    baseline = tb.rss_kib()
    took1, peak1 = idle_round(tb, pg, n)
    wait_until(lambda: tb.psql("SELECT 1", check=False).stdout.strip() == "1", 5, what="a client")
    after1 = tb.rss_kib()
    took2, peak2 = idle_round(tb, pg, n)
    after2 = tb.rss_kib()
    per_client = (peak1 - baseline) * 1024 / n
    report(capsys, f"10k idle clients: logins took {took1:.1f} s / {took2:.1f} s; RSS baseline {baseline} KiB, "
                   f"round 1 peak {peak1} KiB ({per_client:.0f} bytes per idle client), after {after1} KiB; "
                   f"round 2 peak {peak2} KiB, after {after2} KiB")
    if sanitized():
        return  # ASan's shadow memory and quarantine are not tokenbouncer's
    assert per_client < 16384, per_client
    assert peak2 <= peak1 + 3072, f"round 2 grew RSS from {peak1} to {peak2} KiB: memory of round 1 is kept"
    assert_serves(tb)


def test_memory_returns_after_idle_clients_leave(tokenbouncer, pg, capsys):
    """After 10,000 idle clients leave, the resident size returns to within 8 MiB of what it was
    before they came (the peak is about 90 MiB above it)."""
    if sanitized():
        pytest.skip("ASan's shadow memory and quarantine are not tokenbouncer's")
    n = 10000
    raise_nofile(30000, n + 1000)
    tb = tokenbouncer({"pool_mode": "session", "default_pool_size": 5, "max_client_conn": 11000,
                       "client_login_timeout": 2})
    assert_serves(tb)
    baseline = tb.rss_kib()
    _, peak = idle_round(tb, pg, n)

    def settled():
        return tb.rss_kib() <= baseline + 8192

    try:
        wait_until(settled, 10, interval=0.2, what="RSS to return near the baseline")
    finally:
        report(capsys, f"10k idle clients, return of memory: baseline {baseline} KiB, peak {peak} KiB, "
                       f"10 s after closing them {tb.rss_kib()} KiB")
    assert_serves(tb)


# --------------------------------------------------------------------------------------------
# 7. slowloris

def test_slowloris_flood(tokenbouncer, capsys):
    raise_nofile(30000, 3000)
    tb = tokenbouncer({"client_login_timeout": 2, "max_client_conn": 5000})
    assert_serves(tb)
    half = startup_packet()[:11]
    silent, partial = [], []
    flood_start = time.monotonic()
    for i in range(2500):
        s = socket.socket()
        s.setblocking(True)
        s.connect(("127.0.0.1", tb.port))
        if i % 5 == 4:
            s.sendall(half)
            partial.append(s)
        else:
            silent.append(s)
    assert len(silent) == 2000 and len(partial) == 500
    # A normal client is served during the flood.
    t0 = time.monotonic()
    assert_serves(tb, psql=True, timeout=2)
    assert time.monotonic() - t0 < 2
    sel = selectors.DefaultSelector()
    for s in silent + partial:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = {s.fileno(): s for s in silent + partial}
    closed_at = {}
    deadline = time.monotonic() + 30
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BlockingIOError) as e:
                if isinstance(e, BlockingIOError):
                    continue
                data = b""
            if not data:
                sel.unregister(s)
                closed_at[s.fileno()] = time.monotonic() - flood_start
                del open_[s.fileno()]
    silent_left = sum(1 for s in silent if s.fileno() in open_)
    partial_left = sum(1 for s in partial if s.fileno() in open_)
    latest = max(closed_at.values()) if closed_at else None
    report(capsys, f"slowloris: {len(closed_at)} of 2500 closed by tokenbouncer, last after "
                   f"{latest if latest is None else round(latest, 1)} s; still open: {silent_left} silent, "
                   f"{partial_left} half-startup")
    for s in silent + partial:
        s.close()
    assert partial_left == 0
    assert silent_left == 0, "connections that never sent a byte outlive client_login_timeout"
    assert latest < 15
    assert_serves(tb)


# --------------------------------------------------------------------------------------------
# 8. oversized packets

def test_oversized_startup_packet(tokenbouncer):
    tb = tokenbouncer()
    s = socket.create_connection(("127.0.0.1", tb.port), timeout=10)
    params = b"user\0kong\0database\0appdb\0options\0" + b"x" * 12000 + b"\0\0"
    body = struct.pack("!I", 196608) + params
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    t, body = read_message(s)
    assert t == b"E"
    assert error_fields(body)["C"] == "08P01"
    s.close()
    assert_serves(tb)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_message_length_0x7fffffff(tokenbouncer, mode):
    tb = tokenbouncer({"pool_mode": mode})
    s, err = raw_login(tb.port, timeout=10)
    assert err is None
    s.sendall(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"SELECT 1")
    t, body = read_message(s)
    assert t == b"E", (t, body)
    assert error_fields(body)["C"] == "08P01", error_fields(body)
    s.close()
    assert_serves(tb)


@pytest.mark.parametrize("length", [0, 3])
def test_message_length_too_small(tokenbouncer, length):
    tb = tokenbouncer()
    s, err = raw_login(tb.port, timeout=10)
    assert err is None
    s.sendall(b"Q" + struct.pack("!I", length) + b"SELECT 1\0")
    t, body = read_message(s)
    assert t == b"E", (t, body)
    assert error_fields(body)["C"] == "08P01", error_fields(body)
    s.close()
    assert_serves(tb)


# --------------------------------------------------------------------------------------------
# 9. memory after many faults

def test_memory_after_repeated_faults(tokenbouncer, pg, capsys):
    tb = tokenbouncer({"default_pool_size": 3, "client_login_timeout": 1, "query_wait_timeout": 5})

    def round_of_faults(i):
        # Oversized startup packet.
        s = socket.create_connection(("127.0.0.1", tb.port), timeout=10)
        s.sendall(struct.pack("!I", 20000) + b"\0" * 100)
        with contextlib.suppress(ConnectionError, OSError):
            read_message(s)
        s.close()
        # Bad message length after login.
        s, err = raw_login(tb.port, timeout=10)
        assert err is None, err
        s.sendall(b"Q" + struct.pack("!I", 2))
        with contextlib.suppress(ConnectionError, OSError):
            read_message(s)
        s.close()
        # Vanishing mid-transaction.
        s, err = raw_login(tb.port, timeout=10)
        assert err is None, err
        run_query(s, "BEGIN")
        run_query(s, "SELECT repeat('z', 10000)")
        abort(s)
        # Half a startup packet, then gone.
        s = socket.create_connection(("127.0.0.1", tb.port), timeout=10)
        s.sendall(startup_packet()[:9])
        abort(s)
        # A normal client.
        with connect(tb) as c:
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)

    for i in range(30):  # warm-up: pools, buffers, allocator arenas
        round_of_faults(i)
    baseline = tb.rss_kib()
    for i in range(300):
        round_of_faults(i)
        if i % 100 == 50:  # a server connection dies under an idle pool
            with direct(pg) as d:
                d.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'")
    assert_serves(tb)
    after = tb.rss_kib()
    report(capsys, f"memory after 300 rounds of faults: baseline {baseline} KiB, after {after} KiB")
    if not sanitized():  # ASan's quarantine holds freed memory on purpose
        assert after <= baseline + 4096, (baseline, after)
