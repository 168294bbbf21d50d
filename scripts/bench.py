"""Benchmark behind scripts/bench.sh: pgbench directly against a TLS-only PostgreSQL 15, through
PgBouncer (Debian's, trust for clients, verify-full TLS upstream) and through tokenbouncer, in one
run, alternating, and prints ratios. Absolute numbers drift on shared machines; ratios do not.

Proxy CPU is utime+stime of the proxy process (from /proc) divided by the transactions it served.
"""

import argparse
import os
import resource
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))

from harness import Postgres, Tokenbouncer, free_port, make_tempdir  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PgBouncer:
    def __init__(self, pg, pool_mode="session", pool_size=20):
        self.dir = make_tempdir("tb-pgbouncer-")
        self.port = free_port()
        pw = pwd.getpwnam("postgres")
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write('"kong" ""\n')
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write(f"""[databases]
appdb = host=localhost port={pg.port} dbname=appdb user=app password={Postgres.PASSWORD}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 10000
server_tls_sslmode = verify-full
server_tls_ca_file = {pg.certs.ca}
logfile = {self.dir}/pgbouncer.log
log_connections = 0
log_disconnections = 0
""")
        for name in os.listdir(self.dir):
            os.chown(os.path.join(self.dir, name), pw.pw_uid, pw.pw_gid)
        # runuser starts a PAM session, which resets the descriptor limit: raise it again inside.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", "sh", "-c",
                                      f"ulimit -n {nofile}; exec pgbouncer {ini}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        # runuser forks: find pgbouncer itself for CPU accounting.
        self.pid = None
        for _ in range(100):
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
            if out:
                self.pid = int(out[0])
                break
            time.sleep(0.05)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} dbname=appdb user=kong sslmode=disable"

    def stop(self):
        if self.pid:
            os.kill(self.pid, signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbench(dsn, args, seconds, env=None):
    cmd = ["pgbench", "-n", "-T", str(seconds), *args, dsn]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = r.stdout + r.stderr
    tps = re.search(r"tps = ([\d.]+)", out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    tx = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if r.returncode != 0 or not tps:
        raise RuntimeError(f"pgbench failed: {' '.join(cmd)}\n{out[-2000:]}")
    return {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1)) if lat else 0.0,
            "tx": int(tx.group(1)) if tx else 0, "failed": int(failed.group(1)) if failed else 0}


def measure(target, args, seconds):
    name, dsn, pid = target
    before = cpu_seconds(pid)
    r = pgbench(dsn, args, seconds)
    r["cpu_us_per_tx"] = (cpu_seconds(pid) - before) * 1e6 / max(1, r["tx"]) if pid else None
    return r


def run_scenario(title, targets, args, seconds, rounds):
    print(f"\n== {title}: pgbench {' '.join(args)}, {rounds} x {seconds} s each, alternating", flush=True)
    results = {t[0]: [] for t in targets}
    for _ in range(rounds):
        for t in targets:
            results[t[0]].append(measure(t, args, seconds))
    summary = {}
    print(f"   {'target':<14}{'tps':>10}{'latency ms':>12}{'proxy cpu us/tx':>17}")
    for name, rs in results.items():
        tps = statistics.median(r["tps"] for r in rs)
        lat = statistics.median(r["latency_ms"] for r in rs)
        cpus = [r["cpu_us_per_tx"] for r in rs if r["cpu_us_per_tx"] is not None]
        cpu = statistics.median(cpus) if cpus else None
        summary[name] = {"tps": tps, "lat": lat, "cpu": cpu}
        cpu_text = f"{cpu:.1f}" if cpu is not None else "-"
        print(f"   {name:<14}{tps:>10.0f}{lat:>12.3f}{cpu_text:>17}", flush=True)
    return summary


def ratio_line(summary, a, b, what="tps"):
    if a in summary and b in summary and summary[b][what]:
        return summary[a][what] / summary[b][what]
    return None


def idle_clients_rss(port, pid, n, batch=200):
    """Opens n idle logged-in clients, `batch` at a time (a burst of thousands of connects would
    measure the listen backlog, not memory); returns (RSS at rest, growth) in KiB."""
    base = rss_kib(pid)
    socks = []
    body = (3 << 16).to_bytes(4, "big") + b"user\0kong\0database\0appdb\0\0"
    packet = (len(body) + 4).to_bytes(4, "big") + body
    try:
        for start in range(0, n, batch):
            group = []
            for _ in range(min(batch, n - start)):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.sendall(packet)
                group.append(s)
            for s in group:
                got = b""
                while b"Z\0\0\0\x05I" not in got:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise RuntimeError(f"a client was closed during login (after {len(socks)} clients)")
                    got += chunk
            socks.extend(group)
        grown = rss_kib(pid) - base
    finally:
        for s in socks:
            s.close()
    return base, grown


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 10)))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    ap.add_argument("--scale", type=int, default=10)
    # The test harness starts tokenbouncer with 2 workers (cross-thread paths get exercised); the
    # benchmark measures tokenbouncer's own default unless told otherwise.
    ap.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", 1)),
                    help="tokenbouncer's workers (default 1, as tokenbouncer's own default; 0: one per CPU)")
    ap.add_argument("--only", default="", help="comma-separated scenarios: select,connect,txn200,prepared,memory")
    opts = ap.parse_args()
    # 5,000 idle clients need more descriptors than the usual 1024 (the proxies inherit this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    only = set(filter(None, opts.only.split(",")))

    def wanted(name):
        return not only or name in only

    pg = Postgres(max_connections=300, extra_conf="shared_buffers = 256MB\nmax_prepared_transactions = 0\n")
    pg.start().setup_roles()
    procs = []
    try:
        direct = f"host=localhost port={pg.port} dbname=appdb user=app sslmode=verify-full sslrootcert={pg.certs.ca}"
        os.environ["PGPASSWORD"] = Postgres.PASSWORD
        subprocess.run(["pgbench", "-i", "-q", "-s", str(opts.scale), direct], check=True, capture_output=True)
        print(f"PostgreSQL 15 with TLS on localhost:{pg.port}, pgbench scale {opts.scale}; "
              f"{os.cpu_count()} CPU(s); PgBouncer {subprocess.run(['pgbouncer', '--version'], capture_output=True, text=True).stdout.split()[1]}")

        results = {}
        if wanted("select") or wanted("connect") or wanted("memory"):
            bouncer = PgBouncer(pg)
            procs.append(bouncer)
            tb = Tokenbouncer(pg, args=(), config={"log_level": "warning", "max_client_conn": 10000,
                                                   "workers": opts.workers})
            procs.append(tb)
            targets = [("direct", direct, None), ("pgbouncer", bouncer.dsn(), bouncer.pid),
                       ("tokenbouncer", tb.dsn(), tb.proc.pid)]
            if wanted("select"):
                results["select"] = run_scenario("SELECT-only, 16 clients, session mode", targets,
                                                 ["-S", "-c", "16", "-j", "2"], opts.seconds, opts.rounds)
            if wanted("connect"):
                results["connect"] = run_scenario("a new connection per transaction, 8 clients", targets,
                                                  ["-S", "-C", "-c", "8", "-j", "2"], opts.seconds, opts.rounds)
            if wanted("memory"):
                for name, port, pid in (("pgbouncer", bouncer.port, bouncer.pid), ("tokenbouncer", tb.port, tb.proc.pid)):
                    base, grown = idle_clients_rss(port, pid, 5000)
                    print(f"   memory {name}: {base} KiB at rest, +{grown} KiB with 5000 idle clients "
                          f"({grown * 1024 / 5000:.0f} bytes per client)")
            bouncer.stop()
            procs.remove(bouncer)
            tb.cleanup()
            procs.remove(tb)

        if wanted("txn200") or wanted("prepared"):
            bouncer = PgBouncer(pg, pool_mode="transaction")
            procs.append(bouncer)
            tb = Tokenbouncer(pg, args=(), config={"log_level": "warning", "pool_mode": "transaction",
                                                   "max_client_conn": 10000, "workers": opts.workers})
            procs.append(tb)
            targets = [("pgbouncer", bouncer.dsn(), bouncer.pid), ("tokenbouncer", tb.dsn(), tb.proc.pid)]
            if wanted("txn200"):
                results["txn200"] = run_scenario("200 clients on a pool of 20, transaction mode", targets,
                                                 ["-S", "-c", "200", "-j", "2"], opts.seconds, opts.rounds)
            if wanted("prepared"):
                # PgBouncer before 1.21 cannot run -M prepared in transaction mode: it is measured in
                # session mode instead (its best case).
                sess = PgBouncer(pg, pool_mode="session")
                procs.append(sess)
                targets = [("pgbouncer(s)", sess.dsn(), sess.pid), ("tokenbouncer", tb.dsn(), tb.proc.pid)]
                results["prepared"] = run_scenario("-M prepared, 16 clients, tokenbouncer in transaction mode",
                                                   targets, ["-S", "-M", "prepared", "-c", "16", "-j", "2"],
                                                   opts.seconds, opts.rounds)
                sess.stop()
                procs.remove(sess)

        print("\n== ratios (tokenbouncer / reference, TPS), against the bars of the pooling issue")
        missed = []
        for name, ref, bar in (("select", "pgbouncer", 1.0), ("connect", "pgbouncer", 1.0), ("connect", "direct", 10.0),
                               ("txn200", "pgbouncer", 1.0), ("prepared", "pgbouncer(s)", 1.0)):
            if name in results:
                r = ratio_line(results[name], "tokenbouncer", ref)
                if r is not None:
                    verdict = "ok" if r >= bar else "BELOW"
                    if r < bar:
                        missed.append(name)
                    print(f"   {name:<10} vs {ref:<13} {r:6.2f}x   (bar {bar:.1f}x: {verdict})")
        for name in ("select", "connect"):
            if name in results and results[name].get("pgbouncer", {}).get("cpu"):
                c = ratio_line(results[name], "tokenbouncer", "pgbouncer", "cpu")
                print(f"   {name:<10} proxy CPU per transaction, tokenbouncer / pgbouncer: {c:.2f}x")
        if missed:
            print(f"   below the bar: {', '.join(missed)} (shared machines drift: rerun before concluding)")
    finally:
        for p in procs:
            (p.stop() if isinstance(p, PgBouncer) else p.cleanup())
        pg.cleanup()


if __name__ == "__main__":
    main()
