"""Test harness: a real PostgreSQL 15 that behaves like Azure (TLS only, cleartext password over
TLS), a test CA made at test time, and the real tokenbouncer binary.

Everything runs on loopback with free ports, so test files run in parallel. Readiness is
signalled, never slept for: PostgreSQL through pg_ctl -w, tokenbouncer through sd_notify
(READY=1 on a datagram socket given as NOTIFY_SOCKET).
"""

import contextlib
import os
import pwd
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def binary():
    path = os.environ.get("TB_TEST_BINARY", os.path.join(ROOT, "build", "tokenbouncer"))
    if not os.path.exists(path):
        raise RuntimeError(f"tokenbouncer binary not found at {path}: build first (scripts/test.sh)")
    return path


_sanitized = None


def sanitized():
    """True for an AddressSanitizer build: its memory figures are not tokenbouncer's own (shadow
    memory, quarantine), so tests that measure memory only check behaviour then."""
    global _sanitized
    if _sanitized is None:
        out = subprocess.run(["ldd", binary()], capture_output=True, text=True).stdout
        _sanitized = "libasan" in out
    return _sanitized


_next_port = [0]


def free_port():
    """A port nothing listens on now. Under ctest each suite takes its ports in turn from its own
    range (TB_TEST_PORT_BASE .. +2000, below the ephemeral ports), so that parallel suites never
    pick the same one; run by hand, any free port."""
    base = os.environ.get("TB_TEST_PORT_BASE")
    if not base:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(2000):
        port = int(base) + _next_port[0] % 2000
        _next_port[0] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {base}..{int(base) + 1999}")


@contextlib.contextmanager
def refused_port():
    """A port where connections are refused for as long as the block runs: bound on 127.0.0.1
    (and ::1) but not listening, so no other process (a parallel suite) can take it, as it can
    take a port that free_port() found free a moment ago."""
    held = []
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
    port = s.getsockname()[1]
    with contextlib.suppress(OSError):
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        held.append(s6)
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.bind(("::1", port))
    try:
        yield port
    finally:
        for h in held:
            h.close()


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def make_tempdir(prefix):
    """A directory the postgres user can use (PostgreSQL refuses to run as root)."""
    d = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TB_TEST_TMP", "/tmp"))
    pg = pwd.getpwnam("postgres")
    os.chown(d, pg.pw_uid, pg.pw_gid)
    os.chmod(d, 0o755)
    return d


class Certs:
    """A throwaway CA and a server certificate for DNS:localhost (not for 127.0.0.1, so that
    connecting to 127.0.0.1 with verify-full fails the host-name check)."""

    def __init__(self, directory, names=("localhost",)):
        self.dir = directory
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca = os.path.join(directory, "ca.crt")
        self.key = os.path.join(directory, "server.key")
        self.cert = os.path.join(directory, "server.crt")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509", *ec, "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
             "-subj", "/CN=tokenbouncer test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        csr = os.path.join(directory, "server.csr")
        run(["openssl", "req", *ec, "-keyout", self.key, "-out", csr, "-subj", f"/CN={names[0]}"])
        ext = os.path.join(directory, "server.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
            f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-out", self.cert, "-days", "2", "-extfile", ext])
        pg = pwd.getpwnam("postgres")
        for p in (self.key, self.cert, self.ca):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        os.chmod(self.key, 0o600)

    def other_ca(self):
        """A second, unrelated CA (for 'unknown CA' tests)."""
        d = os.path.join(self.dir, "other")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "ca.crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", os.path.join(d, "ca.key"), "-out", path, "-days", "2", "-subj", "/CN=other CA"])
        return path


class Postgres:
    """PostgreSQL 15 in a temp dir, TLS only for TCP like Azure: 'hostssl ... password' (the server
    asks for a cleartext password over TLS), plain 'host' rejected. Roles:
    app/app-secret (password), md5user (md5), scramuser (scram-sha-256)."""

    PASSWORD = "app-secret-p4ss"

    def __init__(self, base=None, max_connections=100, extra_conf=""):
        self.base = base or make_tempdir("tb-pg-")
        self.data = os.path.join(self.base, "data")
        self.sockdir = self.base
        self.port = free_port()
        self.certs = Certs(self.base)
        self.max_connections = max_connections
        self.extra_conf = extra_conf
        self.log = os.path.join(self.base, "postgres.log")
        self._initdb()

    def _as_postgres(self, cmd, **kw):
        return run(["runuser", "-u", "postgres", "--", *cmd], **kw)

    def _initdb(self):
        self._as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                           "--no-sync", "-E", "UTF8", "--locale=C"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.sockdir}'
ssl = on
ssl_cert_file = '{self.certs.cert}'
ssl_key_file = '{self.certs.key}'
max_connections = {self.max_connections}
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
log_connections = on
{self.extra_conf}
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("""
local   all all                      trust
hostssl all md5user   127.0.0.1/32   md5
hostssl all scramuser 127.0.0.1/32   scram-sha-256
hostssl all all       127.0.0.1/32   password
host    all all       127.0.0.1/32   reject
""")

    def start(self):
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"])
        return self

    def stop(self, mode="fast"):
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def restart(self):
        self.stop()
        self.start()

    def sql(self, query, db="postgres"):
        """Runs SQL as the superuser over the Unix socket; returns stdout."""
        r = run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir, "-p", str(self.port),
                 "-U", "postgres", "-d", db, "-c", query])
        return r.stdout.strip()

    def setup_roles(self):
        self.sql(f"CREATE ROLE app LOGIN PASSWORD '{self.PASSWORD}'")
        self.sql("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-secret'")
        self.sql("CREATE ROLE scramuser LOGIN PASSWORD 'scram-secret'")
        self.sql("CREATE DATABASE appdb OWNER app")
        self.sql("GRANT ALL ON DATABASE appdb TO md5user, scramuser")
        return self

    def backends(self, user="app"):
        """Client backends of `user` (server connections tokenbouncer holds)."""
        return int(self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' "
                            "AND backend_type = 'client backend'"))

    def cleanup(self):
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


class Tokenbouncer:
    """The real binary, with a config written from a dict, started and stopped like systemd would."""

    def __init__(self, pg=None, config=None, args=("-v",), env=None, workdir=None, wait_ready=True, extra_text="",
                 popen=None, executable=None):
        # popen: extra subprocess.Popen arguments (another user, resource limits).
        # executable: another copy of the binary (one another user can reach).
        self.popen = popen or {}
        self.executable = executable or binary()
        self.workdir = workdir or tempfile.mkdtemp(prefix="tb-")
        self.port = free_port()
        self.ro_port = free_port()
        self.http_port = free_port()
        cfg = {
            "listen_port": self.port,
            "ro_listen_port": self.ro_port,
            "http_port": self.http_port,
            "workers": 2,
        }
        if pg is not None:
            cfg.update({
                "pg_host": "localhost",
                "pg_port": pg.port,
                "pg_database": "appdb",
                "pg_user": "app",
                "pg_password": Postgres.PASSWORD,
                "pg_sslmode": "verify-full",
                "pg_sslrootcert": pg.certs.ca,
            })
        cfg.update(config or {})
        self.config = cfg
        self.config_path = os.path.join(self.workdir, "tokenbouncer.conf")
        with open(self.config_path, "w") as f:
            for k, v in cfg.items():
                if v is None:
                    continue
                f.write(f"{k} = {v}\n")
            f.write(extra_text)
        self.log_path = os.path.join(self.workdir, "tokenbouncer.log")
        self.args = list(args)
        # The child sees only the TOKENBOUNCER_* variables a test sets (an unknown one is an error).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBOUNCER_")}
        self.env.update(env or {})
        self.proc = None
        self.notifications = []
        self._notify = None
        self.start(wait_ready=wait_ready)

    def start(self, wait_ready=True):
        notify_path = os.path.join(self.workdir, "notify.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        os.chmod(notify_path, 0o777)  # READY=1 may come from another user (popen={"user": ...})
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = notify_path
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.executable, *self.args, self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, **self.popen)
        if wait_ready:
            self.wait_for("READY=1", timeout=60)

    def wait_for(self, what, timeout=30):
        """Waits for an sd_notify message containing `what`; returns it."""
        deadline = time.monotonic() + timeout
        for m in self.notifications:
            if what in m:
                self.notifications.remove(m)
                return m
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tokenbouncer exited with {self.proc.returncode} before '{what}':\n{self.log()}")
            self._notify.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                msg = self._notify.recv(4096).decode()
            except socket.timeout:
                continue
            if what in msg:
                return msg
            self.notifications.append(msg)
        raise TimeoutError(f"no '{what}' from tokenbouncer within {timeout} s:\n{self.log()}")

    def dsn(self, ro=False, dbname="appdb", user="kong", **kw):
        parts = {"host": "127.0.0.1", "port": self.ro_port if ro else self.port, "dbname": dbname, "user": user,
                 "sslmode": "disable", "connect_timeout": 10}
        parts.update(kw)

        def quote(v):
            v = str(v)
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" if (" " in v or "'" in v) else v

        return " ".join(f"{k}={quote(v)}" for k, v in parts.items())

    def psql(self, sql, ro=False, check=True, **kw):
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.dsn(ro=ro, **kw), "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"psql failed ({r.returncode}): {r.stderr}")
        return r

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=_signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._notify:
            self._notify.close()
            self._notify = None
        return self.proc.returncode

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cleanup(self):
        # SIGTERM, then a second SIGTERM (exit at once), and SIGKILL only for a process that hangs:
        # a process that exits normally runs LeakSanitizer in the sanitizer build.
        if self.proc and self.proc.poll() is None:
            for sig, wait in ((_signal.SIGTERM, 1), (_signal.SIGTERM, 10), (_signal.SIGKILL, 10)):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.stop(_signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def read_message(sock):
    """One typed message from a raw protocol socket: (type, body)."""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf
    header = exactly(5)
    length = int.from_bytes(header[1:5], "big")
    return header[:1], exactly(length - 4)


def error_fields(body):
    """The fields of an ErrorResponse/NoticeResponse body, keyed by their letter."""
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[part[:1].decode()] = part[1:].decode(errors="replace")
    return out


def raw_login(port, user="kong", database="appdb", host="127.0.0.1", timeout=30):
    """Logs in with a hand-made StartupMessage; returns (socket, error fields or None)."""
    s = socket.create_connection((host, port), timeout=timeout)
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    body = (3 << 16).to_bytes(4, "big") + params
    s.sendall((len(body) + 4).to_bytes(4, "big") + body)
    while True:
        t, body = read_message(s)
        if t == b"E":
            return s, error_fields(body)
        if t == b"Z":
            return s, None


def login_error(port, **kw):
    """The ErrorResponse fields a login gets (asserts that it fails)."""
    s, err = raw_login(port, **kw)
    s.close()
    assert err is not None, "the login succeeded"
    return err


def first_error(port, sql="SELECT 1", **kw):
    """The first ErrorResponse a client gets when it logs in and runs one query (tokenbouncer
    answers a login from its cache and may need a server only for the query)."""
    s, err = raw_login(port, **kw)
    try:
        if err is not None:
            return err
        q = sql.encode() + b"\0"
        s.sendall(b"Q" + (len(q) + 4).to_bytes(4, "big") + q)
        while True:
            t, body = read_message(s)
            if t == b"E":
                return error_fields(body)
            assert t != b"Z", "the query succeeded"
    finally:
        s.close()
