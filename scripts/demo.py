"""The demo behind scripts/demo.sh. See the README's quick start.

It stands up, on loopback:
  - a PostgreSQL 15 that behaves like Azure Database for PostgreSQL: TLS only, and it asks for a
    cleartext password over TLS; the role "my-managed-identity" accepts only a current token;
  - a fake Instance Metadata Service (IMDS) that issues tokens for a user-assigned managed identity
    (lifetime 16 s here, so a refresh happens during the demo) and makes each token the role's
    password, valid until it expires;
  - tokenbouncer, configured with the lines of Kong's pg_azure_auth documentation;
and shows psql connecting through tokenbouncer with no password, before and after a refresh.
"""

import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fake_azure"))

from fake_azure import FakeAzure, pg_role_syncer  # noqa: E402
from harness import Postgres, Tokenbouncer  # noqa: E402

CLIENT_ID = "00000000-0000-0000-0000-000000000001"
ROLE = "my-managed-identity"


def say(text=""):
    print(text, flush=True)


def psql(tb, sql):
    r = subprocess.run(["psql", "-X", tb.dsn(dbname="kong"), "-c", sql], capture_output=True, text=True)
    for line in (r.stdout or r.stderr).rstrip().splitlines():
        say("     " + line)
    return r.returncode == 0


def interesting(log):
    keep = ("authenticated to azure", "token fetched", "logged in to upstream", "ready", "listening")
    for line in log.splitlines():
        if any(k in line for k in keep):
            say("     " + re.sub(r"^\S+ ", "", line))


def main():
    say("1. PostgreSQL 15 like Azure: TLS only, password over TLS, role \"my-managed-identity\"...")
    pg = Postgres().start()
    fake = tb = None
    try:
        pg.sql(f'CREATE ROLE "{ROLE}" LOGIN')
        pg.sql(f'CREATE DATABASE kong OWNER "{ROLE}"')
        say(f"   localhost:{pg.port}")
        say("2. A local Instance Metadata Service for a user-assigned managed identity (tokens live 16 s)...")
        syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", {CLIENT_ID: ROLE})
        fake = FakeAzure(on_issue=syncer).start()
        fake.add_managed_identity(CLIENT_ID)
        fake.token_lifetime = 16
        say(f"   {fake.imds_endpoint}")
        say("3. tokenbouncer, configured with the lines of Kong's pg_azure_auth documentation:")
        seed = f"""pg_host = localhost
pg_port = {pg.port}
pg_database = kong
pg_user = {ROLE} # needs to be the name of the managed identity
pg_azure_auth = on
pg_azure_client_id = {CLIENT_ID} # the Client ID of the user assigned managed identity
"""
        for line in seed.splitlines():
            say("     " + line)
        say(f"     (plus, for this demo: pg_sslrootcert = the test CA, azure_imds_endpoint = {fake.imds_endpoint})")
        tb = Tokenbouncer(None, args=(), extra_text=seed, config={
            "pg_sslrootcert": pg.certs.ca, "azure_imds_endpoint": fake.imds_endpoint, "server_lifetime": 5})
        say(f"4. psql \"host=127.0.0.1 port={tb.port} dbname=kong user=kong\"  (no password):")
        ok = psql(tb, "SELECT current_user AS upstream_role, (SELECT ssl FROM pg_stat_ssl "
                      "WHERE pid = pg_backend_pid()) AS tls")
        say("5. Waiting for tokenbouncer to refresh the token before it expires...")
        deadline = time.monotonic() + 30
        while tb.log().count("token fetched") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5.5)  # the pooled server connection is retired (server_lifetime = 5 s)
        say("   and connecting again, with a new login that uses the new token:")
        ok = psql(tb, "SELECT current_user AS upstream_role, now()::time(0) AS at") and ok
        say("6. What tokenbouncer logged (tokens appear only as fingerprints):")
        tb.stop()
        interesting(tb.log())
        tokens = [i["token"] for i in fake.issued]
        leaked = any(t in tb.log() for t in tokens)
        say(f"   {len(tokens)} token(s) issued by the fake IMDS; in tokenbouncer's log: {'YES (bug!)' if leaked else 'none'}")
        say("Done: Kong-style clients log in with no password; tokenbouncer logs in with Entra tokens it "
            "fetches, caches and refreshes.")
        return 0 if ok and not leaked else 1
    finally:
        if tb:
            tb.cleanup()
        if fake:
            fake.stop()
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())
