"""Operating tokenbouncer: the admin console (through psql), the HTTP endpoints (/metrics parsed as
Prometheus text, /livez, /readyz, /startupz, /quitquitquit) and JSON logs."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from harness import Postgres

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_azure"))
from fake_azure import FakeAzure, pg_role_syncer, token_fingerprint  # noqa: E402

ADMIN = {"admin_users": "ops", "stats_users": "watcher"}

POOLS_COLUMNS = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
                 "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                 "maxwait", "maxwait_us", "pool_mode"]
STATS_COLUMNS = ["database", "total_server_assignment_count", "total_xact_count", "total_query_count",
                 "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time"]
CONN_COLUMNS = ["type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
                "connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid",
                "tls", "application_name", "prepared_statements", "id"]
DATABASES_COLUMNS = ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                     "reserve_pool_size", "server_lifetime", "pool_mode"]


def admin(tb, sql, user="ops", check=True):
    """Runs one admin command with psql; returns (columns, rows as dicts) or the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    r = subprocess.run(["psql", "-X", "-A", "-F", "\t", "--pset", "footer=off", "-v", "ON_ERROR_STOP=1",
                        tb.dsn(dbname="tokenbouncer", user=user), "-c", sql],
                       capture_output=True, text=True, env=env, timeout=30)
    if not check:
        return r
    assert r.returncode == 0, f"{sql}: {r.stderr}"
    lines = r.stdout.splitlines()
    if not lines:
        return [], []
    cols = lines[0].split("\t")
    return cols, [dict(zip(cols, line.split("\t"))) for line in lines[1:]]


def http(tb, path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{tb.http_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- a small parser of the Prometheus text format (0.0.4) ------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_prometheus(text):
    """{family: {"type": t, "samples": [(name, labels, value)]}}; asserts the format is right."""
    families = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"family {name} declared twice"
            families[name] = {"type": None, "samples": []}
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert name == current, f"TYPE {name} without its HELP"
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = typ
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, labeltext, value = m.groups()
        labels = {}
        pos = 0
        while labeltext and pos < len(labeltext):
            lm = LABEL.match(labeltext, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        v = float(value)
        family = current
        assert name == family or (families[family]["type"] == "histogram" and
                                  name in (family + "_bucket", family + "_sum", family + "_count")), \
            f"sample {name} outside its family {family}"
        families[family]["samples"].append((name, labels, v))
    for name, f in families.items():
        assert f["type"], f"{name} has no TYPE"
        if f["type"] == "counter":
            assert name.endswith("_total"), name
            assert all(v >= 0 for _, _, v in f["samples"])
        if f["type"] == "histogram":
            series = {}
            for n, labels, v in f["samples"]:
                key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "count": None})
                if n.endswith("_bucket"):
                    series[key]["buckets"].append((float(labels["le"]), v))
                elif n.endswith("_count"):
                    series[key]["count"] = v
            for s in series.values():
                les = [le for le, _ in s["buckets"]]
                assert les == sorted(les) and math.isinf(les[-1])
                counts = [c for _, c in s["buckets"]]
                assert counts == sorted(counts), "buckets are not cumulative"
                assert counts[-1] == s["count"]
    return families


def value(families, name, **labels):
    family = name if name in families else re.sub(r"_(bucket|sum|count)$", "", name)
    for n, l, v in families[family]["samples"]:
        if n == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    raise KeyError(f"{name} {labels}")


# --- admin console ----------------------------------------------------------------------------------

def test_every_show_command_answers_with_pgbouncer_columns(tokenbouncer):
    tb = tokenbouncer(dict(ADMIN, default_pool_size=3))
    with psycopg.connect(tb.dsn(application_name="checkout-api"), autocommit=True) as c:
        c.execute("SELECT 1")
        cols, rows = admin(tb, "SHOW POOLS")
        assert cols[:len(POOLS_COLUMNS)] == POOLS_COLUMNS
        rw = [r for r in rows if r["route"] == "rw"][0]
        assert rw["database"] == "appdb" and rw["user"] == "app" and rw["pool_mode"] == "session"
        assert rw["cl_active"] == "1" and rw["sv_active"] == "1" and rw["cl_waiting"] == "0"

        cols, rows = admin(tb, "SHOW CLIENTS;")
        assert cols[:len(CONN_COLUMNS)] == CONN_COLUMNS
        client = [r for r in rows if r["application_name"] == "checkout-api"][0]
        # The console's own session is a client too, as in PgBouncer.
        assert [(r["user"], r["state"]) for r in rows if r["database"] == "tokenbouncer"] == [("ops", "idle")]
        assert client["type"] == "C" and client["user"] == "kong" and client["database"] == "appdb"
        assert client["state"] == "active" and client["addr"] == "127.0.0.1" and client["link"].startswith("s")

        cols, rows = admin(tb, "show servers")
        assert cols[:len(CONN_COLUMNS)] == CONN_COLUMNS
        server = [r for r in rows if r["state"] == "active"][0]
        assert server["type"] == "S" and server["user"] == "app" and server["tls"] == "TLS"
        backend_pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert server["remote_pid"] == str(backend_pid)
        assert server["link"] == "c" + client["id"]

    cols, rows = admin(tb, "SHOW STATS")
    assert cols[:len(STATS_COLUMNS)] == STATS_COLUMNS
    rw = [r for r in rows if r["route"] == "rw"][0]
    assert int(rw["total_xact_count"]) >= 2 and int(rw["total_query_count"]) >= 2
    assert int(rw["total_received"]) > 0 and int(rw["total_sent"]) > 0

    cols, rows = admin(tb, "SHOW DATABASES")
    assert cols[:len(DATABASES_COLUMNS)] == DATABASES_COLUMNS
    assert {r["name"] for r in rows} == {"appdb", "tokenbouncer"}
    assert [r for r in rows if r["name"] == "appdb"][0]["pool_size"] == "3"

    cols, rows = admin(tb, "SHOW CONFIG")
    assert cols[:4] == ["key", "value", "default", "changeable"]
    config = {r["key"]: r for r in rows}
    assert config["default_pool_size"]["value"] == "3" and config["default_pool_size"]["changeable"] == "yes"
    assert config["pg_password"]["value"] == "***"
    assert config["pg_ro_host"]["value"] == "localhost"  # inherited

    assert admin(tb, "SHOW VERSION")[1][0]["version"].startswith("tokenbouncer ")
    cols, rows = admin(tb, "SHOW LISTS")
    assert cols == ["list", "items"] and {r["list"] for r in rows} >= {"pools", "used_clients", "free_servers"}
    cols, rows = admin(tb, "SHOW TOKENS")
    assert rows == []  # static password: no tokens
    assert admin(tb, "SHOW STATE")[1][0] == {"key": "active", "value": "yes"}

    out = admin(tb, "SHOW STATS", user="watcher")  # stats_users may SHOW
    assert out[1]
    whole = tb.log() + json.dumps(admin(tb, "SHOW CONFIG")[1])
    assert Postgres.PASSWORD not in whole


def test_the_console_refuses_who_it_should(tokenbouncer):
    tb = tokenbouncer(ADMIN)
    r = admin(tb, "SHOW POOLS", user="kong", check=False)
    assert r.returncode != 0 and 'user "kong" may not use the admin console' in r.stderr
    r = admin(tb, "RELOAD", user="watcher", check=False)
    assert r.returncode != 0 and "RELOAD is for admin_users only" in r.stderr
    r = admin(tb, "SHOW NONSENSE", check=False)
    assert r.returncode != 0 and 'unknown SHOW object "NONSENSE"' in r.stderr
    r = admin(tb, "DROP TABLE x", check=False)
    assert r.returncode != 0 and 'unknown admin command "DROP"' in r.stderr
    # The extended protocol is refused with a clear error.
    with pytest.raises(psycopg.Error, match="only the simple query protocol"):
        with psycopg.connect(tb.dsn(dbname="tokenbouncer", user="ops"), autocommit=True) as c:
            c.execute("SHOW POOLS", prepare=True)
    # Without admin_users the console is closed to everyone.
    tb2 = tokenbouncer()
    r = admin(tb2, "SHOW POOLS", user="ops", check=False)
    assert r.returncode != 0 and "may not use the admin console" in r.stderr
    assert tb.psql("SELECT 1").stdout.strip() == "1"


def test_pause_resume_reconnect_reload(tokenbouncer):
    tb = tokenbouncer(dict(ADMIN, default_pool_size=2, pool_mode="transaction"))
    first_pid = tb.psql("SELECT pg_backend_pid()").stdout.strip()

    admin(tb, "PAUSE appdb")
    assert admin(tb, "SHOW POOLS")[1][0]["paused"] == "yes"
    result = {}

    def query():
        result["out"] = tb.psql("SELECT 42").stdout.strip()

    t = threading.Thread(target=query)
    t.start()
    deadline = time.monotonic() + 10
    while admin(tb, "SHOW POOLS")[1][0]["cl_waiting"] != "1":
        assert time.monotonic() < deadline, "the client did not wait while paused"
    assert "out" not in result
    admin(tb, "RESUME")
    t.join(10)
    assert result["out"] == "42"

    # PgBouncer's signals for the same.
    tb.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while admin(tb, "SHOW POOLS")[1][0]["paused"] != "yes":
        assert time.monotonic() < deadline, "SIGUSR1 did not pause the pool"
    tb.signal(signal.SIGUSR2)
    while admin(tb, "SHOW POOLS")[1][0]["paused"] != "no":
        assert time.monotonic() < deadline, "SIGUSR2 did not resume the pool"
    assert tb.psql("SELECT 7").stdout.strip() == "7"

    admin(tb, "RECONNECT rw")
    deadline = time.monotonic() + 10
    while tb.psql("SELECT pg_backend_pid()").stdout.strip() == first_pid:
        assert time.monotonic() < deadline, "RECONNECT did not replace the server connection"

    with open(tb.config_path, "a") as f:
        f.write("default_pool_size = 7\n")
    admin(tb, "RELOAD")
    deadline = time.monotonic() + 10
    while [r for r in admin(tb, "SHOW DATABASES")[1] if r["name"] == "appdb"][0]["pool_size"] != "7":
        assert time.monotonic() < deadline, "RELOAD did not apply the new pool size"
    r = admin(tb, "PAUSE nosuchdb", check=False)
    assert 'no such database or route: "nosuchdb"' in r.stderr


def test_rw_and_ro_rows_are_unique_by_database_name(tokenbouncer):
    # pgbouncer exporters label by database (and user): two rows named "appdb" would collide.
    tb = tokenbouncer(dict(ADMIN, pg_ro_host="localhost"))
    assert tb.psql("SELECT 1", ro=True).stdout.strip() == "1"
    for command, column in (("SHOW POOLS", "database"), ("SHOW STATS", "database"), ("SHOW DATABASES", "name")):
        rows = admin(tb, command)[1]
        names = {r["route"]: r[column] for r in rows if r["route"]}
        assert names == {"rw": "appdb", "ro": "appdb_ro"}, (command, rows)
    assert [r["database"] for r in admin(tb, "SHOW DATABASES")[1] if r["route"] == "ro"] == ["appdb"]
    admin(tb, "PAUSE appdb_ro")
    paused = {r["route"]: r["paused"] for r in admin(tb, "SHOW POOLS")[1]}
    assert paused == {"rw": "no", "ro": "yes"}
    admin(tb, "RESUME appdb_ro")
    assert tb.psql("SELECT 1", ro=True).stdout.strip() == "1"


def test_shutdown_command_exits_cleanly(tokenbouncer):
    tb = tokenbouncer(ADMIN)
    admin(tb, "SHUTDOWN")
    assert tb.proc.wait(30) == 0


# --- HTTP endpoints ---------------------------------------------------------------------------------

def test_metrics_parse_and_move_with_traffic(tokenbouncer):
    tb = tokenbouncer({"pool_mode": "transaction", "default_pool_size": 2})
    before = parse_prometheus(http(tb, "/metrics")[1])
    assert value(before, "tokenbouncer_ready") == 1
    with psycopg.connect(tb.dsn(), autocommit=True) as c:
        for _ in range(10):
            c.execute("SELECT 1", prepare=False)  # psycopg would prepare (one more round trip) at the 5th
        with c.transaction():
            c.execute("SELECT 1")
            c.execute("SELECT 2")
        status, text = http(tb, "/metrics")
        assert status == 200
        after = parse_prometheus(text)
        assert value(after, "tokenbouncer_client_connections", route="rw", state="idle") == 1
    assert value(after, "tokenbouncer_transactions_total", route="rw") - \
        value(before, "tokenbouncer_transactions_total", route="rw") == 11
    assert value(after, "tokenbouncer_queries_total", route="rw") - \
        value(before, "tokenbouncer_queries_total", route="rw") >= 12
    assert value(after, "tokenbouncer_transaction_duration_seconds_count", route="rw") >= 11
    assert value(after, "tokenbouncer_query_duration_seconds_count", route="rw") >= 12
    assert value(after, "tokenbouncer_received_bytes_total", route="rw") > \
        value(before, "tokenbouncer_received_bytes_total", route="rw")
    # Upstream logins are labelled with what the route logs in with: here pg_password.
    assert value(after, "tokenbouncer_server_logins_total", route="rw", credential="password") >= 1
    assert value(after, "tokenbouncer_server_login_errors_total", route="rw", credential="password") == 0
    assert value(after, "tokenbouncer_pool_wait_seconds_count", route="rw") >= 11
    assert value(after, "tokenbouncer_server_connections", route="rw", state="idle") >= 1


def test_health_endpoints_and_quitquitquit(tokenbouncer):
    tb = tokenbouncer()
    assert http(tb, "/livez") == (200, "ok\n")
    assert http(tb, "/startupz") == (200, "started\n")
    assert http(tb, "/readyz") == (200, "ready\n")
    assert http(tb, "/nope")[0] == 404
    assert http(tb, "/quitquitquit")[0] == 405  # GET
    with psycopg.connect(tb.dsn(), autocommit=True) as c:
        c.execute("BEGIN")
        assert http(tb, "/quitquitquit", method="POST") == (200, "shutting down\n")
        # Draining: not ready, still alive, the open transaction may finish.
        deadline = time.monotonic() + 10
        while http(tb, "/readyz") != (503, "shutting down\n"):
            assert time.monotonic() < deadline
        assert http(tb, "/livez")[0] == 200
        c.execute("COMMIT")
    assert tb.proc.wait(30) == 0


# --- tokens: SHOW TOKENS and /readyz ----------------------------------------------------------------

MI = "11111111-1111-1111-1111-111111111111"
SP = "22222222-2222-2222-2222-222222222222"


@pytest.fixture(scope="module")
def azure(pg):
    for role in ("mi_role", "sp_role"):
        pg.sql(f"CREATE ROLE {role} LOGIN")
        pg.sql(f"GRANT ALL ON DATABASE appdb TO {role}")
    # Roles of their own: the syncer sets the role's password to each token, and other tests log in as app.
    syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres",
                            {MI: "mi_role", SP: "sp_role"})
    fake = FakeAzure(on_issue=syncer).start()
    fake.add_managed_identity(MI)
    yield fake
    fake.stop()
    syncer.close()


def test_readyz_follows_the_tokens_and_show_tokens_never_shows_one(tokenbouncer, azure):
    azure.clear_misbehaviour()
    azure.token_lifetime = 8  # usable until 2 s before expiry; refreshed 4 s before
    tb = tokenbouncer(dict(ADMIN, pg_azure_auth="on", pg_azure_client_id=MI, pg_password=None, pg_user="mi_role",
                           azure_imds_endpoint=azure.imds_endpoint))
    assert http(tb, "/readyz") == (200, "ready\n")
    cols, rows = admin(tb, "SHOW TOKENS")
    assert cols[:8] == ["route", "credential", "tenant_id", "client_id", "fingerprint", "fetched_at", "expires_at",
                        "expires_in"]
    assert rows[0]["route"] == "rw"
    assert rows[0]["client_id"] == MI and rows[0]["valid"] == "yes"
    assert rows[0]["fingerprint"] == token_fingerprint(azure.issued[-1]["token"])
    metrics = parse_prometheus(http(tb, "/metrics")[1])
    credential = rows[0]["credential"]
    assert value(metrics, "tokenbouncer_token_fetches_total", credential=credential) >= 1
    assert 0 < value(metrics, "tokenbouncer_token_expiry_seconds", credential=credential) <= 8

    azure.misbehave("imds", "status", count=None, code=500, body={"error": "server_error"})
    deadline = time.monotonic() + 30
    while True:
        status, body = http(tb, "/readyz")
        if status == 503:
            break
        assert time.monotonic() < deadline, "/readyz stayed 200 without a usable token"
    assert body.startswith("no valid Microsoft Entra token for route rw")
    assert "500" in body
    assert admin(tb, "SHOW TOKENS")[1][0]["valid"] == "no"

    azure.clear_misbehaviour()
    azure.token_lifetime = 3600
    deadline = time.monotonic() + 60
    while http(tb, "/readyz") != (200, "ready\n"):
        assert time.monotonic() < deadline, "/readyz did not recover when tokens could be had again"
    assert tb.psql("SELECT current_user").stdout.strip() == "mi_role"
    # Upstream logins made with the token carry the token's credential type, as SHOW TOKENS names it.
    metrics = parse_prometheus(http(tb, "/metrics")[1])
    assert value(metrics, "tokenbouncer_server_logins_total", route="rw", credential=credential) >= 1
    assert value(metrics, "tokenbouncer_server_login_errors_total", route="rw", credential=credential) >= 0
    text = tb.log() + json.dumps(admin(tb, "SHOW TOKENS")[1]) + http(tb, "/metrics")[1]
    for issued in azure.issued:
        assert issued["token"] not in text


def test_sighup_takes_a_rotated_client_secret(tokenbouncer, azure):
    azure.clear_misbehaviour()
    azure.token_lifetime = 3600
    azure.add_app(SP, secret="first-secret")
    tb = tokenbouncer(dict(ADMIN, pg_azure_auth="on", pg_user="sp_role", pg_password=None,
                           pg_azure_tenant_id=azure.tenant, pg_azure_client_id=SP,
                           pg_azure_client_secret="first-secret", azure_authority_host=azure.authority,
                           azure_imds_endpoint=azure.imds_endpoint))
    assert tb.psql("SELECT current_user").stdout.strip() == "sp_role"
    first_fingerprint = admin(tb, "SHOW TOKENS")[1][0]["fingerprint"]

    azure.add_app(SP, secret="second-secret")  # rotated in Entra: the first secret stops working
    with open(tb.config_path) as f:
        text = f.read()
    with open(tb.config_path, "w") as f:
        f.write(text.replace("first-secret", "second-secret"))
    tb.signal(1)  # SIGHUP
    tb.wait_for("RELOADING=1")
    assert tb.wait_for("READY=1").endswith("STATUS=serving")  # not "(reload failed)"
    entra = [r for r in azure.requests if r["endpoint"] == "entra"]
    assert entra[-1]["form"]["client_secret"] == "second-secret"
    token = admin(tb, "SHOW TOKENS")[1][0]
    assert token["fingerprint"] != first_fingerprint and token["valid"] == "yes" and token["last_error"] == ""
    assert tb.psql("SELECT current_user").stdout.strip() == "sp_role"

    # Then the route moves to a managed identity: the service principal leaves SHOW TOKENS.
    with open(tb.config_path) as f:
        lines = [line for line in f if not line.startswith("pg_azure_client_secret")]
    with open(tb.config_path, "w") as f:
        f.write("".join(lines).replace(SP, MI))
    tb.signal(1)
    tb.wait_for("RELOADING=1")
    assert tb.wait_for("READY=1").endswith("STATUS=serving")  # not "(reload failed)"
    rows = admin(tb, "SHOW TOKENS")[1]
    assert [(r["route"], r["client_id"], r["credential"]) for r in rows] == [("rw", MI, "managed_identity_imds")]
    assert "second-secret" not in tb.log() and "first-secret" not in tb.log()


# --- JSON logs --------------------------------------------------------------------------------------

def test_json_logs_parse_line_by_line(tokenbouncer):
    tb = tokenbouncer({"log_format": "json"}, args=("-vv",))
    tb.psql("SELECT 1")
    tb.psql("SELECT 1", dbname="nosuchdb", check=False)
    assert tb.stop() == 0
    lines = [line for line in tb.log().splitlines() if line.strip()]
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]
    for r in records:
        assert {"time", "level", "message"} <= r.keys()
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["time"])
    conn_lines = [r for r in records if r.get("conn", "").startswith("c")]
    assert conn_lines, "no line carries a connection id"
    refused = [r for r in records if "nosuchdb" in r["message"]]
    assert refused and refused[0]["conn"].startswith("c")
    assert any(r.get("route") in ("rw", "ro") for r in records), "no line carries its route"


def test_json_logs_of_token_events_carry_identity_and_fingerprint(tokenbouncer, azure):
    azure.clear_misbehaviour()
    azure.token_lifetime = 3600
    tb = tokenbouncer(dict(pg_azure_auth="on", pg_azure_client_id=MI, pg_password=None, pg_user="mi_role",
                           azure_imds_endpoint=azure.imds_endpoint, log_format="json"))
    assert tb.psql("SELECT current_user").stdout.strip() == "mi_role"
    records = [json.loads(line) for line in tb.log().splitlines() if line.strip()]
    events = [r for r in records if "authenticated to azure" in r["message"]]
    assert len(events) == 1, records
    assert events[0]["identity"] == f"managed identity (IMDS), client_id {MI}"
    assert events[0]["fingerprint"] == token_fingerprint(azure.issued[-1]["token"])
    assert azure.issued[-1]["token"] not in tb.log()
