"""Soak test behind scripts/soak.sh (see there for usage): mixed pgbench load through tokenbouncer
with short-lived Entra tokens from the fake token service and periodic upstream restarts; checks
that no transaction fails outside the restart windows, that RSS shows no growth trend and that
tokens were refreshed (and used by new upstream logins).
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fake_azure"))

from harness import Postgres, Tokenbouncer, sanitized  # noqa: E402
from fake_azure import FakeAzure, pg_role_syncer  # noqa: E402

RW_ID = "11111111-1111-1111-1111-111111111111"  # managed identity of the read-write route -> role app
RO_ID = "55555555-5555-5555-5555-555555555555"  # managed identity of the read-only route -> role ro_role
SERVER_LIFETIME = 30
# While PostgreSQL restarts it answers 57P03 ("shutting down" / "starting up"); tokenbouncer does
# not hold that against the next logins (server_login_retry applies to other refusals), so the
# restart window lasts until --grace seconds after PostgreSQL is back.
LOGIN_RETRY = 15

# name, read-only port?, pgbench options (besides -n -T), clients
LOADS = [
    ("tpcb", False, ["-c", "8", "-j", "2"], 8),
    ("select", True, ["-S", "-M", "prepared", "-c", "4", "-j", "1"], 4),
    ("connect", False, ["-S", "-C", "-c", "2", "-j", "1", "-R", "100"], 2),  # 100 logins/s: the log stays small
]


def clock(t, t0):
    s = int(round(t - t0))
    return f"{s // 60:d}:{s % 60:02d}"


class Restarter(threading.Thread):
    """Restarts PostgreSQL every `every` seconds from t0; records [begin, back] windows."""

    def __init__(self, pg, t0, every):
        super().__init__(daemon=True)
        self.pg, self.t0, self.every = pg, t0, every
        self.lock = threading.Lock()
        self.windows = []
        self.errors = []
        self.done = threading.Event()

    def run(self):
        k = 1
        while not self.done.wait(max(0.0, self.t0 + k * self.every - time.monotonic())):
            begin = time.monotonic()
            with self.lock:
                self.windows.append([begin, None])
            try:
                self.pg.restart()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"restart at {clock(begin, self.t0)}: {e}")
                try:
                    self.pg.start()
                except Exception as e2:  # noqa: BLE001
                    self.errors.append(f"start after a failed restart: {e2}")
            with self.lock:
                self.windows[-1][1] = time.monotonic()
            k += 1

    def overlaps(self, start, end, grace):
        """The restart windows [begin, back + grace] that overlap [start, end]."""
        now = time.monotonic()
        with self.lock:
            spans = [(b, (e if e is not None else now) + grace) for b, e in self.windows]
        return [(b, e) for b, e in spans if b < end and e > start]


def parse_pgbench(out, rc, clients, hung):
    tx = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    aborted = len(re.findall(r"client \d+ (?:script \d+ )?aborted", out))
    r = {"tx": int(tx.group(1)) if tx else 0, "failed": int(failed.group(1)) if failed else 0,
         "aborted": aborted, "rc": rc, "hung": hung, "broken": False,
         "errors": [line for line in out.splitlines() if "error" in line.lower() or "fatal" in line.lower()]}
    if hung or (rc != 0 and not tx):
        # pgbench hung, or gave up before reporting (an initial connection failed): every client failed.
        r["broken"] = True
        r["aborted"] = max(aborted, clients)
    return r


def run_chunk(tb, seconds, rate):
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    procs = []
    for name, ro, args, clients in LOADS:
        cmd = ["pgbench", "-n", "-T", str(seconds), "--max-tries=1", *args]
        if rate and "-R" not in args:
            cmd += ["-R", str(rate)]
        cmd.append(tb.dsn(ro=ro))
        procs.append((name, clients, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env)))
    results = {}
    deadline = time.monotonic() + seconds + 90
    for name, clients, p in procs:
        hung = False
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
            p.kill()
            out, _ = p.communicate()
        results[name] = parse_pgbench(out, p.returncode, clients, hung)
    return results


def slope_kib_per_min(samples):
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main():
    ap = argparse.ArgumentParser(description="tokenbouncer soak test (see scripts/soak.sh)")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--token-lifetime", type=int, default=120, help="lifetime of issued tokens, seconds")
    ap.add_argument("--restart-every", type=int, default=600, help="upstream restart interval, seconds (0: never)")
    ap.add_argument("--chunk", type=int, default=20, help="length of one pgbench chunk, seconds")
    ap.add_argument("--grace", type=int, default=5, help="seconds after PostgreSQL is back still in the restart window")
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale factor")
    ap.add_argument("--rate", type=int, default=0,
                    help="pgbench -R of the tpcb and select loads (0: as fast as they go)")
    opts = ap.parse_args()
    if opts.token_lifetime < 8 or opts.chunk < 5 or opts.minutes * 60 < opts.chunk:
        ap.error("need --token-lifetime >= 8, --chunk >= 5 and --minutes covering at least one chunk")

    pg = Postgres(max_connections=150)
    pg.start().setup_roles()
    fake = syncer = tb = restarter = None
    try:
        direct = f"host=localhost port={pg.port} dbname=appdb user=app sslmode=verify-full sslrootcert={pg.certs.ca}"
        subprocess.run(["pgbench", "-i", "-q", "-s", str(opts.scale), direct], check=True, capture_output=True,
                       env=dict(os.environ, PGPASSWORD=Postgres.PASSWORD))
        pg.sql("CREATE ROLE ro_role LOGIN")
        pg.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ro_role", db="appdb")

        syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres",
                                {RW_ID: "app", RO_ID: "ro_role"})
        fake = FakeAzure(on_issue=syncer).start()
        fake.token_lifetime = opts.token_lifetime
        fake.add_managed_identity(RW_ID)
        fake.add_managed_identity(RO_ID)

        tb = Tokenbouncer(pg, args=(), config={
            "pg_azure_auth": "on", "pg_azure_client_id": RW_ID, "azure_imds_endpoint": fake.imds_endpoint,
            "pg_password": None, "pg_ro_host": "localhost", "pg_ro_user": "ro_role", "pg_ro_azure_client_id": RO_ID,
            "pool_mode": "transaction", "server_lifetime": SERVER_LIFETIME, "server_login_retry": LOGIN_RETRY,
            "log_level": "info"})
        pid = tb.proc.pid

        seconds = int(opts.minutes * 60)
        print(f"soak: {opts.minutes:g} min of mixed pgbench load through tokenbouncer (pid {pid}), tokens living "
              f"{opts.token_lifetime} s, PostgreSQL 15 restarted every {opts.restart_every} s, chunks of "
              f"{opts.chunk} s; restart window = from the restart until {opts.grace} s after PostgreSQL is back; "
              f"{os.cpu_count()} CPU(s)")
        print("load per chunk: " + "; ".join(f"{n} pgbench {' '.join(a)}{' (ro port)' if ro else ''}"
                                            for n, ro, a, _ in LOADS))
        rss_start = tb.rss_kib()
        print(f"tokenbouncer VmRSS at start: {rss_start} KiB", flush=True)

        t0 = time.monotonic()
        end = t0 + seconds
        if opts.restart_every > 0:
            restarter = Restarter(pg, t0, opts.restart_every)
            restarter.start()
        chunks = []
        rss = []  # (seconds since t0, KiB) after each chunk
        died = None
        print(f"\n   {'window':<13}{'tx':>9}{'failed':>8}{'aborted':>9}{'rss KiB':>10}   (tpcb/select/connect tx)")
        while end - time.monotonic() >= 5:
            length = int(min(opts.chunk, end - time.monotonic()))
            start = time.monotonic()
            res = run_chunk(tb, length, opts.rate)
            # pgbench gives up at once when its first connection fails: keep the chunks' rhythm.
            time.sleep(max(0.0, start + length - time.monotonic()))
            stop = time.monotonic()
            windows = restarter.overlaps(start, stop, opts.grace) if restarter else []
            if tb.proc.poll() is not None:
                died = f"tokenbouncer exited with {tb.proc.returncode} during {clock(start, t0)}-{clock(stop, t0)}"
            sample = tb.rss_kib() if died is None else 0
            rss.append((stop - t0, sample))
            chunk = {"start": start, "stop": stop, "res": res, "restart": bool(windows)}
            chunks.append(chunk)
            tx = sum(r["tx"] for r in res.values())
            failed = sum(r["failed"] for r in res.values())
            aborted = sum(r["aborted"] for r in res.values())
            notes = []
            if windows:
                notes.append("RESTART " + ", ".join(clock(b, t0) for b, _ in windows))
            for name, r in res.items():
                if r["hung"]:
                    notes.append(f"{name} HUNG (killed)")
                elif r["broken"]:
                    notes.append(f"{name} gave up (rc {r['rc']})")
                elif r["tx"] == 0:
                    notes.append(f"{name} did no transaction")
            print(f"   {clock(start, t0) + '-' + clock(stop, t0):<13}{tx:>9}{failed:>8}{aborted:>9}{sample:>10}   "
                  f"({'/'.join(str(r['tx']) for r in res.values())}){'  ' + '; '.join(notes) if notes else ''}",
                  flush=True)
            if not windows:
                for name, r in res.items():
                    if r["failed"] or r["aborted"] or r["broken"] or r["tx"] == 0:
                        for line in list(dict.fromkeys(r["errors"]))[:3]:
                            print(f"      {name}: {line}")
            if died:
                print(f"   {died}")
                break
        if restarter:
            restarter.done.set()
            restarter.join(120)
        elapsed = time.monotonic() - t0

        # ---- summary
        fails = []
        print("\n== summary")
        totals = {name: sum(c["res"][name]["tx"] for c in chunks) for name, *_ in LOADS}
        print(f"transactions: {sum(totals.values())} in {elapsed:.0f} s ("
              + ", ".join(f"{n} {v}" for n, v in totals.items()) + ")")
        for label, inside in (("outside restart windows", False), ("inside restart windows ", True)):
            cs = [c for c in chunks if c["restart"] == inside]
            f = sum(r["failed"] for c in cs for r in c["res"].values())
            a = sum(r["aborted"] for c in cs for r in c["res"].values())
            tx = sum(r["tx"] for c in cs for r in c["res"].values())
            bad = sum(1 for c in cs for r in c["res"].values() if r["hung"] or r["broken"] or r["tx"] == 0)
            print(f"{label}: {len(cs)} chunk(s), {tx} transactions, {f} failed transactions, {a} aborted clients"
                  + (f", {bad} hung/stalled pgbench run(s)" if bad else ""))
            if not inside and (f or a or bad):
                fails.append(f"{f} failed transactions, {a} aborted clients, {bad} hung/stalled runs "
                             "outside restart windows")
        if restarter:
            downs = [e - b for b, e in restarter.windows if e is not None]
            print(f"upstream restarts: {len(restarter.windows)}"
                  + (f", each {min(downs):.1f}-{max(downs):.1f} s" if downs else ""))
            for e in restarter.errors:
                print(f"   {e}")
                fails.append(e)
        if died:
            fails.append(died)

        # RSS: the first chunk warms up (pools, buffers); a trend shows when the last third sits
        # above everything the first half saw.
        print(f"tokenbouncer VmRSS KiB: start {rss_start}, end {rss[-1][1] if rss else '-'}; after each chunk: "
              + " ".join(str(v) for _, v in rss))
        warm = rss[1:] if len(rss) > 2 else rss
        if len(warm) >= 4 and not died:
            first = [v for _, v in warm[:len(warm) // 2]]
            last = [v for _, v in warm[-max(1, len(warm) // 3):]]
            slope = slope_kib_per_min(warm)
            limit = max(first) + max(1024, max(first) // 20)
            print(f"   after warm-up: first half max {max(first)}, last third min {min(last)} (limit {limit}), "
                  f"slope {slope:+.1f} KiB/min")
            if min(last) > limit and not sanitized():
                fails.append(f"RSS grows: last third of the run at least {min(last)} KiB, "
                             f"first half at most {max(first)} KiB")
        else:
            print("   too few samples for a trend")

        # Tokens: refreshed `life - min(300, life / 2)` after each fetch (life = expires_in).
        life = opts.token_lifetime - 1
        interval = life - min(300, life / 2)
        expected = 1 + elapsed / interval
        log = tb.log()
        for ident, user in ((RW_ID, "app"), (RO_ID, "ro_role")):
            n = sum(1 for r in fake.requests if r["endpoint"] == "imds" and r["query"].get("client_id") == ident)
            used = set(re.findall(rf'logged in to upstream \S+ as "{user}" .*?\(token ([0-9a-f]{{8}})', log))
            logins = len(re.findall(rf'logged in to upstream \S+ as "{user}" ', log))
            print(f"token fetches for {user}: {n} (about {expected:.0f} expected); {logins} upstream logins used "
                  f"{len(used)} distinct tokens")
            if expected >= 3 and n < max(2, expected / 2):
                fails.append(f"tokens of {user} not refreshed: {n} fetches, about {expected:.0f} expected")
            if expected >= 3 and len(used) < 2:
                fails.append(f"upstream logins as {user} used {len(used)} distinct token(s)")
        if fake.errors:
            print(f"fake token service errors (expected while PostgreSQL restarts): {len(fake.errors)}")
        levels = re.findall(r"^\S+ \S+ (warning|error|critical) ", log, re.M)
        if levels:
            print(f"tokenbouncer log: {levels.count('warning')} warnings, "
                  f"{levels.count('error') + levels.count('critical')} errors (SOAK_KEEP_LOG=1 keeps it)")

        if fails:
            print("\nFAIL: " + "; ".join(fails))
            return 1
        print("\nPASS")
        return 0
    finally:
        if restarter:
            restarter.done.set()
        if tb:
            tb.stop(signal.SIGTERM)
            if os.environ.get("SOAK_KEEP_LOG"):
                print(f"tokenbouncer log kept in {tb.workdir}")
            else:
                tb.cleanup()
        if fake:
            fake.stop()
        if syncer:
            syncer.close()
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
