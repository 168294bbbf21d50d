"""The systemd notify protocol as a service manager sees it: a datagram socket as NOTIFY_SOCKET,
WATCHDOG_USEC/WATCHDOG_PID as systemd sets them for WatchdogSec=, then READY=1, STATUS=,
WATCHDOG=1 pings, RELOADING=1 + MONOTONIC_USEC on SIGHUP followed by READY=1, STOPPING=1 and
exit code 0 on SIGTERM."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import Postgres, binary, free_port


class Service:
    """tokenbouncer started like systemd starts a Type=notify service with WatchdogSec=2s."""

    def __init__(self, pg, watchdog_usec=2_000_000, watchdog_pid="self", port=None):
        self.dir = tempfile.mkdtemp(prefix="tb-systemd-")
        self.port = port or free_port()
        self.http_port = free_port()
        self.config = os.path.join(self.dir, "tokenbouncer.conf")
        with open(self.config, "w") as f:
            f.write(f"""listen_port = {self.port}
ro_listen_port = {free_port()}
http_port = {self.http_port}
workers = 1
pg_host = localhost
pg_port = {pg.port}
pg_database = appdb
pg_user = app
pg_password = {Postgres.PASSWORD}
pg_sslrootcert = {pg.certs.ca}
""")
        self.sock_path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TOKENBOUNCER_", "WATCHDOG_", "NOTIFY_"))}
        env["NOTIFY_SOCKET"] = self.sock_path
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = os.path.join(self.dir, "tokenbouncer.log")
        self._log = open(self.log_path, "wb")
        if watchdog_pid == "self":
            # systemd sets WATCHDOG_PID to the main process's pid: exec from a shell that exports
            # its own pid, so the pid is known before the binary runs.
            cmd = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"', binary(), self.config]
        else:
            if watchdog_pid is not None:
                env["WATCHDOG_PID"] = str(watchdog_pid)
            cmd = [binary(), self.config]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.messages = []  # every datagram, in order, with its CLOCK_MONOTONIC arrival time

    def next(self, timeout):
        """The next notification (a dict of its assignments), or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append((now, data.decode()))
        return fields

    def wait_for(self, key, value=None, timeout=30):
        """Reads notifications until one sets `key` (to `value`); returns it and those before it."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self._pending():
                break
            m = self.next(min(0.5, max(0.01, deadline - time.monotonic())))
            if m is None:
                continue
            seen.append(m)
            if key in m and (value is None or m[key] == value):
                return m, seen
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; received {self.messages}; "
                             f"exit code {self.proc.poll()}\n{self.log()}")

    def _pending(self):
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def service(pg):
    started = []

    def start(**kw):
        s = Service(pg, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.cleanup()


def can_connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def test_notify_sequence_ready_watchdog_reload_stop(service):
    svc = service()

    # READY=1 once the listener accepts: a client connects the moment it arrives.
    ready, before = svc.wait_for("READY", "1", timeout=60)
    assert can_connect(svc.port)
    assert ready.get("STATUS") == "serving"
    assert not any(m.get("STOPPING") for m in before)

    # WATCHDOG=1 keep-alives at about half of WATCHDOG_USEC (2 s): two within 4 s.
    t0 = time.monotonic()
    svc.wait_for("WATCHDOG", "1", timeout=4)
    svc.wait_for("WATCHDOG", "1", timeout=4)
    assert time.monotonic() - t0 < 4

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC, microseconds), then READY=1.
    sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    svc.proc.send_signal(signal.SIGHUP)
    reloading, _ = svc.wait_for("RELOADING", "1", timeout=10)
    received = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert "MONOTONIC_USEC" in reloading, reloading
    usec = int(reloading["MONOTONIC_USEC"])
    assert sent <= usec <= received, (sent, usec, received)
    again, between = svc.wait_for("READY", "1", timeout=10)
    assert again.get("STATUS") == "serving"
    assert not any(m.get("STOPPING") for m in between)
    assert can_connect(svc.port)

    # SIGTERM: STOPPING=1, then a clean exit.
    svc.proc.send_signal(signal.SIGTERM)
    stopping, _ = svc.wait_for("STOPPING", "1", timeout=10)
    assert "STATUS" in stopping
    assert svc.proc.wait(timeout=30) == 0, svc.log()


def test_status_lines_describe_each_state(service):
    svc = service(watchdog_usec=None)
    svc.wait_for("READY", "1", timeout=60)
    svc.proc.send_signal(signal.SIGHUP)
    svc.wait_for("READY", "1", timeout=10)
    svc.proc.send_signal(signal.SIGTERM)
    svc.wait_for("STOPPING", "1", timeout=10)
    assert svc.proc.wait(timeout=30) == 0
    statuses = [m.split("STATUS=", 1)[1].split("\n")[0] for _, m in svc.messages if "STATUS=" in m]
    assert statuses == ["serving", "reloading", "serving", "shutting down"], svc.messages
    # Without WATCHDOG_USEC there are no keep-alives.
    assert not any("WATCHDOG=1" in m for _, m in svc.messages)


def test_no_watchdog_pings_when_watchdog_pid_is_another_process(service):
    # systemd's rule: WATCHDOG_PID names the process the keep-alives are for; others stay quiet.
    svc = service(watchdog_pid=1)
    svc.wait_for("READY", "1", timeout=60)
    # Pings would come every 1 s: listen for 2.5 s (a negative result needs a window).
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        svc.next(max(0.01, deadline - time.monotonic()))
    assert not any("WATCHDOG=1" in m for _, m in svc.messages), svc.messages
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=30) == 0


def test_failed_start_reports_status_and_exits_non_zero(service):
    # The rw port is taken by another process: startup fails, and the manager learns why
    # (STATUS=failed to start: ...) before the exit, with no READY=1.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        svc = service(port=taken.getsockname()[1])
        code = svc.proc.wait(timeout=60)
    assert code != 0
    msgs = []
    while (m := svc.next(0.2)) is not None:
        msgs.append(m)
    assert any(m.get("STATUS", "").startswith("failed to start") for m in msgs), (msgs, svc.log())
    assert not any(m.get("READY") == "1" for m in msgs)
