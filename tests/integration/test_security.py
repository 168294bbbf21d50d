"""Who gets in, and what never leaks: trust only on loopback, SCRAM client authentication with an
auth_file, client TLS, unix socket permissions and SO_PEERCRED, secrets masked everywhere."""

import base64
import hashlib
import hmac
import os
import pwd
import resource
import shutil
import socket
import subprocess
import time

import psycopg
import pytest

from harness import Certs, Postgres, binary, login_error, make_tempdir, read_message

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


def client_cert(certs, cn, directory):
    """A client certificate for `cn` signed by the CA of `certs`: (certificate, key) paths, owned
    by root with a 0600 key as libpq wants."""
    key = os.path.join(directory, f"{cn}.key")
    csr = os.path.join(directory, f"{cn}.csr")
    crt = os.path.join(directory, f"{cn}.crt")
    ext = os.path.join(directory, f"{cn}.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey", certs.ca_key,
                    "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return crt, key


def test_allowed_users_per_route(tokenbouncer):
    tb = tokenbouncer({"allowed_users": "kong, ops", "ro_allowed_users": "reporter", "pg_ro_host": "localhost"})
    # Listed users get in, on their own route.
    assert psql(tb, "SELECT current_user").stdout.strip() == "app"
    assert psql(tb, "SELECT current_user", user="ops").stdout.strip() == "app"
    assert psql(tb, "SELECT 1", user="reporter", port=tb.ro_port).stdout.strip() == "1"
    # Everyone else is refused at login, with SQLSTATE 28000 and a message naming the route.
    for user, port, route in (("mallory", tb.port, "read-write"), ("reporter", tb.port, "read-write"),
                              ("kong", tb.ro_port, "read-only"), ("mallory", tb.ro_port, "read-only")):
        err = login_error(port, user=user)
        assert (err["S"], err["C"]) == ("FATAL", "28000"), err
        assert err["M"] == f'user "{user}" may not use the {route} route of tokenbouncer', err
    # psql shows the same text.
    r = psql(tb, user="mallory")
    assert r.returncode != 0
    assert 'FATAL:  user "mallory" may not use the read-write route of tokenbouncer' in r.stderr


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_client_certificates(tokenbouncer, mode):
    d = make_tempdir("tb-client-cert-")
    certs = Certs(d)
    cert, key = client_cert(certs, "kong", d)
    other = Certs(make_tempdir("tb-other-ca-"))  # an unrelated CA
    other_cert, other_key = client_cert(other, "kong", other.dir)
    tb = tokenbouncer({"client_tls_sslmode": mode, "client_tls_cert_file": certs.cert,
                       "client_tls_key_file": certs.key, "client_tls_ca_file": certs.ca})
    tls = {"sslmode": "verify-full", "sslrootcert": certs.ca, "host": "localhost"}
    ok = psql(tb, "SELECT current_user", sslcert=cert, sslkey=key, **tls)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "app"
    # No client certificate: the TLS handshake is refused.
    none = psql(tb, "SELECT 1", sslcert="/nonexistent/none.crt", sslkey="/nonexistent/none.key", **tls)
    assert none.returncode != 0
    assert "certificate required" in none.stderr, none.stderr
    # A certificate from another CA: refused too.
    stranger = psql(tb, "SELECT 1", sslcert=other_cert, sslkey=other_key, **tls)
    assert stranger.returncode != 0
    assert "unknown ca" in stranger.stderr, stranger.stderr
    # No TLS at all.
    plain = psql(tb, "SELECT 1", sslmode="disable")
    assert plain.returncode != 0 and "TLS is required" in plain.stderr


def test_the_process_is_not_dumpable(tokenbouncer):
    """Started as an unprivileged user (as systemd runs it), tokenbouncer's /proc files belong to
    root: that same user cannot read its environment or memory (prctl(PR_SET_DUMPABLE, 0))."""
    d = make_tempdir("tb-dump-")
    postgres = pwd.getpwnam("postgres")
    # A copy the postgres user can execute: the build tree may sit in a directory only root can
    # enter (a clone in `mktemp -d`).
    exe = shutil.copy2(binary(), os.path.join(d, "tokenbouncer"))
    tb = tokenbouncer(workdir=d, env={"TB_TEST_MARKER": "marker-5c1f"}, executable=exe,
                      popen={"user": postgres.pw_uid, "group": postgres.pw_gid, "extra_groups": []})
    pid = tb.proc.pid
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) == postgres.pw_uid  # it does run as postgres
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    for name in ("environ", "mem", "maps"):
        st = os.stat(f"/proc/{pid}/{name}")
        assert (st.st_uid, st.st_gid) == (0, 0), f"/proc/{pid}/{name} belongs to {st.st_uid}:{st.st_gid}"
    r = subprocess.run(["runuser", "-u", "postgres", "--", "cat", f"/proc/{pid}/environ"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    assert b"marker-5c1f" not in r.stdout


def test_running_out_of_file_descriptors(tokenbouncer):
    """With 64 file descriptors and 100 clients that hold a connection: the log says what is wrong and how to fix it, the
    client left waiting is served once descriptors are free again, and so are new clients."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    tb = tokenbouncer(popen={"preexec_fn": limit})
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    held = []
    for _ in range(100):
        # A few bytes of a startup packet: the listener defers accepting until data arrives.
        held.append(socket.create_connection(("127.0.0.1", tb.port), timeout=10))
        held[-1].sendall(b"\0\0")
    late = None
    try:
        deadline = time.monotonic() + 20
        while "Too many open files" not in tb.log():
            assert time.monotonic() < deadline, "no 'Too many open files' in the log:\n" + tb.log()
            time.sleep(0.1)
        # A client that comes now gets no answer while descriptors are out...
        late = socket.create_connection(("127.0.0.1", tb.port), timeout=10)
        params = b"user\0kong\0database\0appdb\0\0"
        body = (3 << 16).to_bytes(4, "big") + params
        late.sendall((len(body) + 4).to_bytes(4, "big") + body)
        late.settimeout(1)
        with pytest.raises(socket.timeout):
            late.recv(1)
    finally:
        for s in held:
            s.close()
    # ...and is served once they are back.
    late.settimeout(30)
    try:
        while True:
            t, body = read_message(late)
            assert t != b"E", body
            if t == b"Z":
                break
    finally:
        late.close()
    assert tb.psql("SELECT 2").stdout.strip() == "2"
    log = tb.log()
    assert f"accept on 127.0.0.1:{tb.port} failed: Too many open files; pausing accepts for 100 ms " \
           "(raise LimitNOFILE / ulimit -n, or lower max_client_conn)" in log, log
    assert tb.proc.poll() is None
