"""The demo behind scripts/demo.sh. See the README's quick start."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))

from harness import Postgres, Tokenbouncer  # noqa: E402


def say(text=""):
    print(text, flush=True)


def main():
    say("1. Starting a throwaway PostgreSQL 15 that behaves like Azure: TLS only, password over TLS...")
    pg = Postgres().start().setup_roles()
    tb = None
    try:
        say(f"   PostgreSQL on localhost:{pg.port}, certificate from a test CA, role \"app\"")
        say("2. Starting tokenbouncer in front of it (verify-full TLS, session pooling)...")
        tb = Tokenbouncer(pg, args=())
        say(f"   tokenbouncer listens on 127.0.0.1:{tb.port}; clients need no password")
        say(f"3. psql \"host=127.0.0.1 port={tb.port} dbname=appdb user=kong\"  (no password):")
        sql = ("SELECT current_user AS upstream_role, ssl AS tls, version AS tls_version "
               "FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        r = subprocess.run(["psql", "-X", tb.dsn(), "-c", sql], capture_output=True, text=True)
        for line in (r.stdout or r.stderr).rstrip().splitlines():
            say("   " + line)
        say("4. What tokenbouncer logged:")
        tb.stop()
        for line in tb.log().splitlines():
            say("   " + line)
        say("Done: the client logged in without a password; tokenbouncer logged in upstream over verified TLS.")
        return 0 if r.returncode == 0 else 1
    finally:
        if tb:
            tb.cleanup()
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
