"""The relay end to end: real clients (psql, psycopg 3, asyncpg) through tokenbouncer to a real
PostgreSQL 15 that only accepts TLS with a password, like Azure."""

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import struct
import threading
import time

import psycopg
import pytest

from harness import Postgres, login_error, refused_port


def connect(tb, autocommit=True, **kw):
    return psycopg.connect(tb.dsn(**kw), autocommit=autocommit)


def test_simple_query_logs_in_upstream_as_pg_user(tokenbouncer, pg):
    tb = tokenbouncer()
    r = tb.psql("SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                user="kong")
    # The client said "kong"; upstream it is pg_user, over TLS.
    assert r.stdout.strip() == "app|appdb|t"


def test_extended_protocol_and_prepared_statements(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        for i in range(10):
            row = conn.execute("SELECT %s::int + %s::int, %s::text", (i, 1, "x" * i), prepare=True).fetchone()
            assert row == (i + 1, "x" * i)
        cur = conn.cursor()
        cur.executemany("SELECT %s", [(n,) for n in range(20)])


def test_pipeline_mode(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        assert [c.fetchone()[0] for c in cursors] == [i * 2 for i in range(50)]


def test_copy_in_and_out(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        conn.execute("CREATE TEMP TABLE t (id int, name text)")
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            for i in range(10000):
                copy.write_row((i, f"name-{i}"))
        assert conn.execute("SELECT count(*), sum(id) FROM t").fetchone() == (10000, sum(range(10000)))
        out = bytearray()
        with conn.cursor().copy("COPY t TO STDOUT") as copy:
            for chunk in copy:
                out += chunk
        assert out.count(b"\n") == 10000


def test_listen_notify(tokenbouncer):
    tb = tokenbouncer()
    got = []
    with connect(tb) as listener, connect(tb) as sender:
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("LISTEN tb_channel")
        sender.execute("NOTIFY tb_channel, 'hello'")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            listener.execute("SELECT 1")  # notifications are delivered with any result
            time.sleep(0.02)
    assert got == [("tb_channel", "hello")]


def test_notice_and_error_inside_transaction(tokenbouncer):
    tb = tokenbouncer()
    notices = []
    with connect(tb, autocommit=False) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello notice'; END $$")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 42").fetchone() == (42,)
    assert notices == ["hello notice"]


def test_cancel_stops_pg_sleep(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        t = threading.Timer(0.5, conn.cancel)
        t.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10
        # The session is still usable after the cancel.
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psql_ctrl_c_stops_pg_sleep(tokenbouncer):
    """psql's Ctrl-C: psql sends a CancelRequest to tokenbouncer, which sends it on upstream."""
    tb = tokenbouncer()
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    p = subprocess.Popen(["psql", "-X", "-v", "ON_ERROR_STOP=1", tb.dsn(), "-c", "SELECT pg_sleep(30)"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Wait until the query runs upstream, then press Ctrl-C.
    deadline = time.monotonic() + 10
    while "pg_sleep" not in tb.psql("SELECT string_agg(query, ';') FROM pg_stat_activity "
                                     "WHERE state = 'active' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()").stdout:
        assert time.monotonic() < deadline, "psql's query never reached the server"
        time.sleep(0.1)
    started = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert "canceling statement due to user request" in err, err
    assert p.returncode != 0


def test_cancel_with_wrong_key_is_ignored(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        pid = conn.info.backend_pid
        # A CancelRequest with our pid but a wrong key must not cancel anything.
        s = socket.create_connection(("127.0.0.1", tb.port))
        s.sendall(struct.pack("!iiii", 16, 80877102, pid, 12345))
        s.close()
        assert conn.execute("SELECT pg_sleep(0.3), 1").fetchone()[1] == 1


def test_64_mib_bytea_round_trip(tokenbouncer):
    tb = tokenbouncer()
    payload = os.urandom(64 * 1024 * 1024)
    with connect(tb) as conn:
        conn.execute("CREATE TEMP TABLE big (b bytea)")
        conn.execute("INSERT INTO big VALUES (%s)", (payload,))
        got = conn.execute("SELECT b FROM big").fetchone()[0]
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert conn.execute("SELECT length(b) FROM big").fetchone()[0] == len(payload)


def test_asyncpg_client(tokenbouncer):
    asyncpg = pytest.importorskip("asyncpg")
    tb = tokenbouncer()

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=tb.port, user="kong", database="appdb", ssl=False)
        try:
            stmt = await conn.prepare("SELECT $1::int * 3")
            assert [await stmt.fetchval(i) for i in range(5)] == [0, 3, 6, 9, 12]
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE a (x int)")
                await conn.executemany("INSERT INTO a VALUES ($1)", [(i,) for i in range(100)])
            assert await conn.fetchval("SELECT count(*) FROM a") == 100
        finally:
            await conn.close()

    asyncio.run(main())


def test_kong_style_multi_statement_transaction(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as conn:
        conn.execute("SET SCHEMA 'public'; SET TIME ZONE 'UTC';")
        conn.execute("BEGIN; CREATE TABLE IF NOT EXISTS locks_test (key text PRIMARY KEY, owner text); "
                     "INSERT INTO locks_test VALUES ('migrations', 'me') ON CONFLICT DO NOTHING; COMMIT;")
        assert conn.execute("SELECT owner FROM locks_test WHERE key = 'migrations'").fetchone() == ("me",)
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        conn.execute("DROP TABLE locks_test")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin to 1")
def test_workers_0_counts_the_cpus_it_may_use(tokenbouncer):
    # Pinned to one CPU (as taskset, CPUAffinity= or a pod's CPU limit do), workers = 0 starts one
    # worker, not one per CPU of the machine.
    tb = tokenbouncer({"workers": 0}, popen={"preexec_fn": lambda: os.sched_setaffinity(0, {0})})
    assert "; 1 worker(s)" in tb.log()
    assert tb.psql("SELECT 6 * 7").stdout.strip() == "42"
    expected = min(len(os.sched_getaffinity(0)), os.cpu_count())
    try:  # a CPU quota (cgroup v2, else v1) caps it too
        if os.path.exists("/sys/fs/cgroup/cpu.max"):
            with open("/sys/fs/cgroup/cpu.max") as f:
                quota, period = f.read().split()
        else:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
                quota, period = q.read().strip(), p.read().strip()
        if quota not in ("max", "-1"):
            expected = min(expected, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    unpinned = tokenbouncer({"workers": 0})
    assert f"; {expected} worker(s)" in unpinned.log()


def test_md5_and_scram_upstream_logins(tokenbouncer, pg):
    for user, password in (("md5user", "md5-secret"), ("scramuser", "scram-secret")):
        tb = tokenbouncer({"pg_user": user, "pg_password": password})
        assert tb.psql("SELECT current_user").stdout.strip() == user


def test_unix_socket(tokenbouncer):
    tb = tokenbouncer({"unix_socket_dir": "/tmp"})
    try:
        r = tb.psql("SELECT 1", host="/tmp")
        assert r.stdout.strip() == "1"
        mode = os.stat(f"/tmp/.s.PGSQL.{tb.port}").st_mode & 0o777
        assert mode == 0o700
    finally:
        tb.stop()
    assert not os.path.exists(f"/tmp/.s.PGSQL.{tb.port}")


def test_ssl_request_is_answered_n(tokenbouncer):
    tb = tokenbouncer()
    assert tb.psql("SELECT 1", sslmode="prefer").stdout.strip() == "1"
    r = tb.psql("SELECT 1", sslmode="require", check=False)
    assert r.returncode != 0
    assert "server does not support SSL" in r.stderr


def test_wrong_database_gives_3d000(tokenbouncer):
    tb = tokenbouncer()
    err = login_error(tb.port, database="otherdb")
    assert err["C"] == "3D000"
    assert 'database "otherdb" does not exist' in err["M"]
    assert 'serves database "appdb"' in err["M"]


def test_unsupported_protocol_version(tokenbouncer):
    tb = tokenbouncer()
    s = socket.create_connection(("127.0.0.1", tb.port))
    body = struct.pack("!i", 2 << 16) + b"user\0kong\0\0"
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    reply = s.recv(4096)
    s.close()
    assert reply[:1] == b"E"
    assert b"0A000" in reply and b"unsupported frontend protocol 2.0" in reply


def test_protocol_3_2_is_negotiated_down(tokenbouncer):
    tb = tokenbouncer()
    s = socket.create_connection(("127.0.0.1", tb.port))
    body = struct.pack("!i", (3 << 16) | 2) + b"user\0kong\0database\0appdb\0_pq_.foo\0bar\0\0"
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    reply = b""
    while b"Z\0\0\0\x05I" not in reply:
        chunk = s.recv(4096)
        assert chunk, reply
        reply += chunk
    s.close()
    assert reply[:1] == b"v"  # NegotiateProtocolVersion first
    assert struct.unpack("!i", reply[5:9])[0] == 3 << 16
    assert b"_pq_.foo" in reply


def test_verify_full_host_name_mismatch(tokenbouncer):
    # The certificate is for "localhost" only.
    tb = tokenbouncer({"pg_host": "127.0.0.1"})
    err = login_error(tb.port)
    assert err["C"] == "08006"
    msg = err["M"]
    assert "could not connect to upstream server 127.0.0.1:" in msg
    assert "not valid for host name \"127.0.0.1\"" in msg
    assert "verify-full" in msg


def test_unknown_ca(tokenbouncer, pg):
    tb = tokenbouncer({"pg_sslrootcert": pg.certs.other_ca()})
    err = login_error(tb.port)
    assert err["C"] == "08006"
    assert "unknown certificate authority" in err["M"]


def test_sslmode_require_skips_verification(tokenbouncer, pg):
    tb = tokenbouncer({"pg_host": "127.0.0.1", "pg_sslmode": "require", "pg_sslrootcert": pg.certs.other_ca()})
    assert tb.psql("SELECT 1").stdout.strip() == "1"


def test_wrong_password_gives_28p01(tokenbouncer):
    tb = tokenbouncer({"pg_password": "wrong-password-123"})
    err = login_error(tb.port)
    assert err["C"] == "28P01"
    assert err["M"] == 'password authentication failed for user "app"'
    assert "wrong-password-123" not in str(err)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(tb.dsn())
    assert "wrong-password-123" not in str(e.value)
    assert "wrong-password-123" not in tb.log()


def test_upstream_down_gives_08006(tokenbouncer):
    with refused_port() as port:
        tb = tokenbouncer({"pg_port": port})
        err = login_error(tb.port)
    assert err["C"] == "08006"
    assert f"localhost:{port}" in err["M"] and "Connection refused" in err["M"]


def test_plain_upstream_rejected(tokenbouncer):
    # pg_sslmode = disable against a server whose pg_hba rejects plain host connections.
    tb = tokenbouncer({"pg_sslmode": "disable"})
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(tb.dsn())
    assert "no pg_hba.conf entry" in str(e.value) or "rejects connection" in str(e.value)


def send_raw(port, data, read=True):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    try:
        s.sendall(data)
        return s.recv(4096) if read else b""
    except (ConnectionResetError, socket.timeout, BrokenPipeError):
        return b""
    finally:
        s.close()


def test_garbage_never_stops_it(tokenbouncer):
    tb = tokenbouncer()
    with connect(tb) as survivor:
        survivor.execute("BEGIN")
        cases = [
            struct.pack("!i", 100000) + b"x" * 20,             # startup length over 10000
            struct.pack("!i", -5) + b"abcd",                   # negative length
            struct.pack("!i", 3),                               # shorter than the minimum
            struct.pack("!ii", 16, 80877102),                   # truncated CancelRequest
            struct.pack("!ii", 12, 3 << 16) + b"us",            # truncated parameters
            os.urandom(300),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for c in cases:
            reply = send_raw(tb.port, c)
            assert reply == b"" or reply[:1] == b"E"
        # Garbage after a good login: an impossible message length.
        s = socket.create_connection(("127.0.0.1", tb.port))
        body = struct.pack("!i", 3 << 16) + b"user\0kong\0database\0appdb\0\0"
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        got = b""
        while b"Z\0\0\0\x05I" not in got:
            chunk = s.recv(4096)
            assert chunk
            got += chunk
        s.sendall(b"Q" + struct.pack("!i", -1))
        s.settimeout(5)
        rest = s.recv(4096)
        s.close()
        assert rest[:1] == b"E" and b"08P01" in rest
        # Many connections that send half a startup packet and vanish.
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", tb.port))
            s.sendall(struct.pack("!i", 50) + b"\0\3")
            s.close()
        assert survivor.execute("SELECT 7").fetchone() == (7,)
        survivor.execute("COMMIT")
    assert tb.psql("SELECT 8").stdout.strip() == "8"
    assert tb.proc.poll() is None


def test_client_vanishing_mid_copy_leaves_others_unharmed(tokenbouncer, pg):
    tb = tokenbouncer()
    with connect(tb) as other:
        s = socket.create_connection(("127.0.0.1", tb.port))
        body = struct.pack("!i", 3 << 16) + b"user\0kong\0database\0appdb\0\0"
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        got = b""
        while b"Z\0\0\0\x05I" not in got:
            got += s.recv(4096)
        q = b"CREATE TEMP TABLE c (x text); COPY c FROM STDIN\0"
        s.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)
        time.sleep(0.2)
        s.sendall(b"d" + struct.pack("!i", 4 + 6) + b"hello\n")
        s.close()
        assert other.execute("SELECT 1").fetchone() == (1,)
    assert tb.psql("SELECT 2").stdout.strip() == "2"


def test_no_secret_in_verbose_log(tokenbouncer, pg):
    tb = tokenbouncer(args=("-vv",))
    with connect(tb) as conn:
        conn.execute("SELECT 1")
    tb.psql("SELECT 1")
    bad = tokenbouncer({"pg_password": "another-Secret-xyz"}, args=("-vv",))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad.dsn())
    tb.stop()
    bad.stop()
    for t in (tb, bad):
        log = t.log()
        assert "trace" in log or "debug" in log  # it really ran at -vv
        assert Postgres.PASSWORD not in log
        assert "another-Secret-xyz" not in log
