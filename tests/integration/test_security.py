"""Who gets in, and what never leaks: trust only on loopback, SCRAM client authentication with an
auth_file, client TLS, unix socket permissions and SO_PEERCRED, secrets masked everywhere."""

import base64
import hashlib
import hmac
import os
import pwd
import subprocess

import psycopg
import pytest

from harness import Certs, Postgres, binary, make_tempdir

CLIENT_PASSWORD = "kong-client-pw-7731"
CLIENT_SECRET = "azure-client-secret-Xq9"


def scram_verifier(password, salt=b"tokenbouncer-salt", iterations=4096):
    """A SCRAM-SHA-256 verifier as PostgreSQL stores it (and PgBouncer's auth_file accepts)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def psql(tb, sql="SELECT 1", password=None, user="kong", **kw):
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(["psql", "-X", "-A", "-t", tb.dsn(user=user, **kw), "-c", sql], capture_output=True,
                          text=True, env=env, timeout=30)


def check(*lines, env=None):
    """tokenbouncer --check -v on a config made of `lines`."""
    d = make_tempdir("tb-check-")
    path = os.path.join(d, "tb.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBOUNCER_")}
    e.update(env or {})
    return subprocess.run([binary(), "--check", "-v", path], capture_output=True, text=True, env=e, timeout=30)


def test_trust_is_refused_on_a_non_loopback_address():
    r = check("pg_host = db.example.com", "listen_addr = 0.0.0.0")
    assert r.returncode == 1
    assert '"0.0.0.0" is not a loopback address' in r.stdout
    assert "auth_type = scram-sha-256" in r.stdout  # says how to fix it
    ok = check("pg_host = db.example.com", "listen_addr = 0.0.0.0", "auth_type = scram-sha-256",
               "auth_file = /dev/null")
    assert ok.returncode == 0, ok.stdout


def test_check_prints_secrets_masked():
    r = check("pg_host = db.example.com", f"pg_password = {Postgres.PASSWORD}", "pg_sslmode = maybe",
              env={"TOKENBOUNCER_PG_AZURE_CLIENT_SECRET": CLIENT_SECRET})
    assert r.returncode == 1
    assert "pg_sslmode" in r.stdout and "line 3" in r.stdout
    assert "pg_password = ***" in r.stdout
    assert "pg_azure_client_secret = ***    # TOKENBOUNCER_PG_AZURE_CLIENT_SECRET" in r.stdout
    assert Postgres.PASSWORD not in r.stdout + r.stderr and CLIENT_SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("secret", ["verifier", "clear"])
def test_scram_client_authentication_with_an_auth_file(tokenbouncer, secret):
    d = make_tempdir("tb-auth-")
    path = os.path.join(d, "userlist.txt")
    with open(path, "w") as f:
        value = scram_verifier(CLIENT_PASSWORD) if secret == "verifier" else CLIENT_PASSWORD
        f.write(f'; PgBouncer format\n"kong" "{value}"\n')
    tb = tokenbouncer({"auth_type": "scram-sha-256", "auth_file": path})
    r = psql(tb, "SELECT current_user", password=CLIENT_PASSWORD)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "app"
    wrong = psql(tb, password="not-it")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    stranger = psql(tb, password=CLIENT_PASSWORD, user="mallory")
    assert stranger.returncode != 0 and "password authentication failed" in stranger.stderr
    assert CLIENT_PASSWORD not in tb.log()


def test_client_tls(tokenbouncer):
    certs = Certs(make_tempdir("tb-client-tls-"))
    tb = tokenbouncer({"client_tls_sslmode": "require", "client_tls_cert_file": certs.cert,
                       "client_tls_key_file": certs.key})
    r = psql(tb, "SELECT 1", sslmode="verify-full", sslrootcert=certs.ca, host="localhost")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(tb.dsn(sslmode="require")) as c:
        assert c.pgconn.ssl_in_use
    plain = psql(tb, "SELECT 1", sslmode="disable")
    assert plain.returncode != 0 and "TLS is required" in plain.stderr


def test_unix_socket_permissions_and_peer_uids(tokenbouncer):
    d = make_tempdir("tb-sock-")
    os.chmod(d, 0o755)
    tb = tokenbouncer({"unix_socket_dir": d, "unix_socket_mode": "0777", "allowed_peer_uids": "0"})
    sock = os.path.join(d, f".s.PGSQL.{tb.port}")
    assert os.stat(sock).st_mode & 0o777 == 0o777
    assert psql(tb, host=d).stdout.strip() == "1"  # root: allowed
    postgres = pwd.getpwnam("postgres")
    r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t",
                        f"host={d} port={tb.port} dbname=appdb user=kong", "-c", "SELECT 1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"connections from user ID {postgres.pw_uid} are not allowed on this unix socket" in r.stderr
    # The default mode keeps other users out at the file system.
    tb2 = tokenbouncer({"unix_socket_dir": d})
    assert os.stat(os.path.join(d, f".s.PGSQL.{tb2.port}")).st_mode & 0o777 == 0o700


def test_no_secret_anywhere(tokenbouncer, pg):
    """Every log level, every error a client sees and SHOW CONFIG, for the secrets configured."""
    d = make_tempdir("tb-auth-")
    path = os.path.join(d, "userlist.txt")
    with open(path, "w") as f:
        f.write(f'"kong" "{scram_verifier(CLIENT_PASSWORD)}"\n"ops" "{CLIENT_PASSWORD}"\n')
    tb = tokenbouncer({"auth_type": "scram-sha-256", "auth_file": path, "admin_users": "ops"},
                      args=("-vv",), env={"TOKENBOUNCER_PG_AZURE_CLIENT_SECRET": CLIENT_SECRET})
    seen = []
    seen.append(psql(tb, "SELECT 1", password=CLIENT_PASSWORD).stdout)
    seen.append(psql(tb, "SELECT 1", password="wrong").stderr)
    seen.append(psql(tb, "SELECT nosuchcolumn", password=CLIENT_PASSWORD).stderr)
    seen.append(psql(tb, "SELECT 1", password=CLIENT_PASSWORD, dbname="nosuchdb").stderr)
    seen.append(psql(tb, "SHOW CONFIG", password=CLIENT_PASSWORD, user="ops", dbname="tokenbouncer").stdout)
    assert "pg_password|***" in seen[-1]
    # The upstream password changes: logins fail with the old one, and the error says so.
    pg.sql("ALTER ROLE app PASSWORD 'changed-for-a-moment'")
    try:
        seen.append(psql(tb, "SELECT 1", password=CLIENT_PASSWORD).stderr)
        tb.signal(1)  # SIGHUP
        tb.wait_for("READY=1")
    finally:
        pg.sql(f"ALTER ROLE app PASSWORD '{Postgres.PASSWORD}'")
    assert tb.stop() == 0
    text = tb.log() + "".join(seen)
    for secret in (Postgres.PASSWORD, CLIENT_PASSWORD, CLIENT_SECRET):
        assert secret not in text, f"a secret leaked: {secret}"
