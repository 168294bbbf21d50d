"""Microsoft Entra tokens end to end: every credential type against the fake token service, and a
real PostgreSQL 15 that accepts a login only with a currently valid token (the fake service sets
the role's password to each token it issues, VALID UNTIL its expiry)."""

import os
import re
import signal
import subprocess
import threading
import time

import psycopg
import pytest

from harness import Certs, Postgres, Tokenbouncer, binary, first_error, run

sys_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_azure")
import sys  # noqa: E402

sys.path.insert(0, sys_path)
from fake_azure import FakeAzure, pg_role_syncer, token_fingerprint  # noqa: E402

MI = "11111111-1111-1111-1111-111111111111"        # user-assigned managed identity -> role app
SP = "22222222-2222-2222-2222-222222222222"        # service principal with a secret -> sp_role
CERT = "33333333-3333-3333-3333-333333333333"      # service principal with a certificate -> cert_role
WI = "44444444-4444-4444-4444-444444444444"        # workload identity -> wi_role
RO = "55555555-5555-5555-5555-555555555555"        # the read-only route's identity -> ro_role
SYSTEM = "66666666-6666-6666-6666-666666666666"    # system-assigned identity -> sys_role
SP_SECRET = "s3cr&t=+%/ value"                     # needs URL-encoding


@pytest.fixture(scope="module")
def azure(pg):
    for role in ("sp_role", "cert_role", "wi_role", "ro_role", "sys_role"):
        pg.sql(f"CREATE ROLE {role} LOGIN")
        pg.sql(f"GRANT ALL ON DATABASE appdb TO {role}")
    roles = {MI: "app", SP: "sp_role", CERT: "cert_role", WI: "wi_role", RO: "ro_role", SYSTEM: "sys_role"}
    syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", roles)
    fake = FakeAzure(on_issue=syncer).start()
    fake.add_managed_identity(MI)
    fake.add_managed_identity(RO)
    fake.add_managed_identity(SYSTEM, system_assigned=True)
    fake.add_app(SP, secret=SP_SECRET)
    yield fake
    fake.stop()
    syncer.close()


@pytest.fixture(autouse=True)
def clean_fake(azure):
    azure.clear_misbehaviour()
    azure.token_lifetime = 3600
    azure.token_length = 1500
    azure.requests.clear()
    yield


def mi_config(azure, **extra):
    cfg = {"pg_azure_auth": "on", "pg_azure_client_id": MI, "azure_imds_endpoint": azure.imds_endpoint,
           "pg_password": None}
    cfg.update(extra)
    return cfg


def no_tokens_in(text, azure):
    for issued in azure.issued:
        assert issued["token"] not in text
        assert issued["token"][:40] not in text


def test_managed_identity_through_imds(tokenbouncer, azure):
    tb = tokenbouncer(mi_config(azure))
    assert tb.psql("SELECT current_user").stdout.strip() == "app"
    imds = [r for r in azure.requests if r["endpoint"] == "imds"]
    assert len(imds) == 1
    q = imds[0]["query"]
    assert imds[0]["headers"]["Metadata"] == "true"
    assert q["api-version"] == "2018-02-01"
    assert q["resource"] == "https://ossrdbms-aad.database.windows.net"
    assert q["client_id"] == MI
    log = tb.log()
    fp = token_fingerprint(azure.issued[-1]["token"])
    assert fp in log
    no_tokens_in(log, azure)


def test_the_seed_configuration_pasted_as_is(tokenbouncer, azure, pg):
    # Kong's documentation, lines as they are (plus where our test servers are).
    seed = f"""# Basic database configuration
database = postgres
pg_host = localhost
pg_port = {pg.port}
pg_database = appdb
pg_user = app # needs to be the name of the managed identity

pg_azure_auth = on
pg_azure_client_id = {MI} # the Client ID of the user assigned managed identity
"""
    tb = tokenbouncer({"pg_host": None, "pg_port": None, "pg_database": None, "pg_user": None, "pg_password": None,
                       "azure_imds_endpoint": azure.imds_endpoint}, extra_text=seed)
    assert tb.psql("SELECT current_user").stdout.strip() == "app"


def test_system_assigned_identity(tokenbouncer, azure):
    tb = tokenbouncer(mi_config(azure, pg_user="sys_role", pg_azure_client_id=None))
    assert tb.psql("SELECT current_user").stdout.strip() == "sys_role"
    assert "client_id" not in [r for r in azure.requests if r["endpoint"] == "imds"][-1]["query"]


def test_service_principal_with_secret(tokenbouncer, azure):
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_user": "sp_role", "pg_azure_tenant_id": azure.tenant,
                       "pg_azure_client_id": SP, "pg_azure_client_secret": SP_SECRET.replace("#", "\\#"),
                       "azure_authority_host": azure.authority, "azure_imds_endpoint": azure.imds_endpoint},
                      args=("-vv",))
    assert tb.psql("SELECT current_user").stdout.strip() == "sp_role"
    entra = [r for r in azure.requests if r["endpoint"] == "entra"]
    assert len(entra) == 1
    form = entra[0]["form"]
    assert form["grant_type"] == "client_credentials"
    assert form["client_secret"] == SP_SECRET
    assert form["scope"] == "https://ossrdbms-aad.database.windows.net/.default"
    assert entra[0]["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    tb.stop()
    assert SP_SECRET not in tb.log()
    no_tokens_in(tb.log(), azure)


def test_environment_variables_as_fallback(tokenbouncer, azure):
    env = {"AZURE_TENANT_ID": azure.tenant, "AZURE_CLIENT_ID": SP, "AZURE_CLIENT_SECRET": SP_SECRET,
           "AZURE_AUTHORITY_HOST": azure.authority}
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_user": "sp_role", "azure_imds_endpoint": azure.imds_endpoint},
                      env=env)
    assert tb.psql("SELECT current_user").stdout.strip() == "sp_role"
    assert azure.count("entra") == 1


def make_certificate(directory):
    key = os.path.join(directory, "app.key")
    crt = os.path.join(directory, "app.crt")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt, "-days", "2",
         "-subj", "/CN=tokenbouncer-test-app"])
    pem = os.path.join(directory, "app.pem")
    with open(pem, "w") as out:
        out.write(open(crt).read() + open(key).read())
    return pem, open(crt).read()


def test_service_principal_with_certificate(tokenbouncer, azure, tmp_path):
    pem, cert = make_certificate(str(tmp_path))
    azure.add_app(CERT, certificate_pem=cert)
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_user": "cert_role", "pg_azure_tenant_id": azure.tenant,
                       "pg_azure_client_id": CERT, "pg_azure_client_certificate_path": pem,
                       "azure_authority_host": azure.authority, "azure_imds_endpoint": azure.imds_endpoint})
    assert tb.psql("SELECT current_user").stdout.strip() == "cert_role"
    form = [r for r in azure.requests if r["endpoint"] == "entra"][-1]["form"]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form


def test_workload_identity_rereads_the_token_file(tokenbouncer, azure, tmp_path):
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("first-federated-token")
    azure.add_app(WI, federated_token=["first-federated-token", "second-federated-token"])
    azure.token_lifetime = 8  # refreshed every 4 s
    env = {"AZURE_FEDERATED_TOKEN_FILE": str(token_file), "AZURE_TENANT_ID": azure.tenant, "AZURE_CLIENT_ID": WI,
           "AZURE_AUTHORITY_HOST": azure.authority}
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_user": "wi_role", "azure_imds_endpoint": azure.imds_endpoint,
                       "server_lifetime": 1}, env=env)
    assert tb.psql("SELECT current_user").stdout.strip() == "wi_role"
    token_file.write_text("second-federated-token\n")  # the kubelet rotated it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        forms = [r["form"] for r in azure.requests if r["endpoint"] == "entra"]
        if forms and forms[-1]["client_assertion"] == "second-federated-token":
            break
        time.sleep(0.2)
    assert forms[0]["client_assertion"] == "first-federated-token"
    assert forms[-1]["client_assertion"] == "second-federated-token"
    assert tb.psql("SELECT current_user").stdout.strip() == "wi_role"


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_a_bad_federated_token_file_falls_through_to_managed_identity(tokenbouncer, azure, tmp_path, problem):
    token_file = tmp_path / "azure-identity-token"
    if problem == "empty":
        token_file.write_text("")
    azure.add_managed_identity(WI)  # the same client id is also a managed identity of this "VM"
    env = {"AZURE_FEDERATED_TOKEN_FILE": str(token_file), "AZURE_TENANT_ID": azure.tenant, "AZURE_CLIENT_ID": WI,
           "AZURE_AUTHORITY_HOST": azure.authority}
    tb = tokenbouncer({"pg_azure_auth": "on", "pg_user": "wi_role", "azure_imds_endpoint": azure.imds_endpoint},
                      env=env, args=("-vv",))
    assert tb.psql("SELECT current_user").stdout.strip() == "wi_role"
    assert azure.count("entra") == 0 and azure.count("imds") == 1
    reason = "cannot read the federated token file" if problem == "missing" else "is empty"
    lines = [line for line in tb.log().splitlines()
             if "could not authenticate to azure with WorkloadIdentityCredentials class, error:" in line]
    assert len(lines) == 1 and reason in lines[0] and str(token_file) in lines[0], lines


def test_no_http_proxy_is_used(tokenbouncer, azure):
    # IMDS must never be reached through a proxy; a proxy that is not there must not matter.
    dead = "http://127.0.0.1:9"
    env = {name: dead for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")}
    tb = tokenbouncer(mi_config(azure), env=env)
    assert tb.psql("SELECT current_user").stdout.strip() == "app"
    assert azure.count("imds") == 1


def test_app_service_managed_identity(tokenbouncer, azure):
    env = {"IDENTITY_ENDPOINT": azure.identity_endpoint, "IDENTITY_HEADER": azure.identity_header}
    tb = tokenbouncer(mi_config(azure), env=env)
    assert tb.psql("SELECT current_user").stdout.strip() == "app"
    req = [r for r in azure.requests if r["endpoint"] == "appservice"]
    assert len(req) == 1 and azure.count("imds") == 0
    assert req[0]["query"]["api-version"] == "2019-08-01"
    assert req[0]["headers"]["X-IDENTITY-HEADER"] == azure.identity_header
    assert azure.identity_header not in tb.log()


def test_rw_and_ro_routes_use_their_own_identities(tokenbouncer, azure, pg):
    tb = tokenbouncer(mi_config(azure, pg_ro_host="localhost", pg_ro_user="ro_role", pg_ro_azure_client_id=RO))
    assert tb.psql("SELECT current_user").stdout.strip() == "app"
    assert tb.psql("SELECT current_user", ro=True).stdout.strip() == "ro_role"
    ids = {r["query"].get("client_id") for r in azure.requests if r["endpoint"] == "imds"}
    assert ids == {MI, RO}


def test_no_credential_works(azure, pg, tmp_path):
    # An unknown managed identity: IMDS says "Identity not found"; nothing else is configured.
    tb = Tokenbouncer(pg, config={"pg_azure_auth": "on", "pg_azure_client_id": "99999999-0000-0000-0000-000000000000",
                                  "azure_imds_endpoint": azure.imds_endpoint, "pg_password": None},
                      args=("--vv",), wait_ready=False, env={"AZURE_CLIENT_SECRET": "", "AZURE_TENANT_ID": ""})
    try:
        assert tb.proc.wait(30) == 1
        log = tb.log()
        assert "failed to initialize Azure client: no authentication mechanism worked for azure" in log
        # The seed's three lines, word for word (its configuration: a client id only).
        assert ("could not authenticate to azure with ClientCredentials class, error: "
                "Couldn't find AZURE_CLIENT_SECRET env variable") in log
        assert ("could not authenticate to azure with WorkloadIdentityCredentials class, error: "
                "Couldn't find AZURE_FEDERATED_TOKEN_FILE env variable") in log
        assert ("could not authenticate to azure with ManagedIdentityCredentials class, error: managed identity credentials "
                'request failed, status: 400, body: {"error":"invalid_request","error_description":'
                '"Identity not found"}') in log
    finally:
        tb.cleanup()


def test_client_secret_missing_message(azure, pg):
    tb = Tokenbouncer(pg, config={"pg_azure_auth": "on", "pg_azure_tenant_id": azure.tenant,
                                  "pg_azure_client_id": "99999999-0000-0000-0000-000000000000",
                                  "azure_imds_endpoint": azure.imds_endpoint, "pg_password": None},
                      args=("-vv",), wait_ready=False)
    try:
        assert tb.proc.wait(30) == 1
        assert ("could not authenticate to azure with ClientCredentials class, error: "
                "Couldn't find AZURE_CLIENT_SECRET env variable") in tb.log()
    finally:
        tb.cleanup()


def test_short_lived_tokens_under_continuous_connections(tokenbouncer, azure, pg):
    """Tokens that live 20 s, new client connections for a minute, server connections replaced
    every second (server_lifetime = 1): zero failed connections."""
    azure.token_lifetime = 20
    tb = tokenbouncer(mi_config(azure, server_lifetime=1, server_idle_timeout=1))
    failures = []
    done = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(tb.dsn()) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("app",)
            done += 1
        except Exception as e:  # noqa: BLE001
            failures.append(str(e))
        time.sleep(0.05)
    assert failures == []
    assert done > 300
    imds = azure.count("imds")
    assert 4 <= imds <= 10, imds  # refreshed about every 10 s, not per connection
    logins = set(re.findall(r"logged in to upstream .* \(token ([0-9a-f]{8})", tb.log()))
    assert len(logins) >= 4  # new server logins really used the new tokens
    no_tokens_in(tb.log(), azure)


def test_imds_down_while_the_cached_token_is_valid(tokenbouncer, azure):
    azure.token_lifetime = 30  # refresh due at 15 s, usable until 22.5 s
    tb = tokenbouncer(mi_config(azure, server_lifetime=1, server_idle_timeout=1))
    azure.misbehave("imds", "status", count=None, code=500, body={"error": "server_error"})
    failures = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            tb.psql("SELECT 1")
        except AssertionError:
            failures += 1
        time.sleep(0.1)
    assert failures == 0
    assert azure.count("imds") >= 3  # it kept trying in the background
    assert "the current token" in tb.log() and "stays in use until" in tb.log()
    azure.clear_misbehaviour()


def test_many_simultaneous_connects_share_one_token_request(tokenbouncer, azure, pg):
    tb = tokenbouncer(mi_config(azure, default_pool_size=40, max_client_conn=500))
    assert azure.count("imds") == 1  # at startup
    # Behind tokenbouncer's back the server stops accepting that token: 40 logins at once are
    # refused, and the token they all hold must be fetched again once, not 40 times.
    pg.sql("ALTER ROLE app PASSWORD 'no-longer-the-token'")
    start = threading.Barrier(200)
    errors = []

    def client():
        try:
            start.wait()
            with psycopg.connect(tb.dsn(), connect_timeout=60) as conn:
                conn.execute("SELECT pg_sleep(0.2)")
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert azure.count("imds") == 2
    assert tb.log().count("the upstream rejected token") == 1


def test_rejected_token_is_fetched_again(tokenbouncer, azure, pg):
    tb = tokenbouncer(mi_config(azure, server_lifetime=1, server_idle_timeout=1))
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    # The upstream stops accepting the cached token (as if it were revoked).
    pg.sql("ALTER ROLE app PASSWORD 'revoked'")
    deadline = time.monotonic() + 10
    while pg.backends("app") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # wait for the pooled connection to be retired (server_lifetime)
    before = azure.count("imds")
    r = tb.psql("SELECT current_user", check=False)
    assert r.stdout.strip() == "app", tb.log()
    assert azure.count("imds") == before + 1
    assert "rejected token" in tb.log()


def test_large_tokens(tokenbouncer, azure):
    azure.token_length = 20000
    tb = tokenbouncer(mi_config(azure))
    assert tb.psql("SELECT current_user").stdout.strip() == "app"
    assert len(azure.issued[-1]["token"]) >= 20000


def test_retries_429_with_retry_after_at_startup(tokenbouncer, azure):
    # Retry-After 3 s, longer than the backoff (about 1 s, then 2 s): the gaps show it is honoured.
    azure.misbehave("imds", "status", count=2, code=429, body={"error": "too_many_requests"},
                    headers={"Retry-After": "3"})
    tb = tokenbouncer(mi_config(azure), args=("-vv",))
    assert tb.psql("SELECT 1").stdout.strip() == "1"
    assert azure.count("imds") == 3
    times = [r["time"] for r in azure.requests if r["endpoint"] == "imds"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 2.9 for g in gaps), gaps


def test_bad_token_service_gives_a_postgres_error(tokenbouncer, azure):
    azure.token_lifetime = 12  # becomes unusable 3 s before it expires
    tb = tokenbouncer(mi_config(azure, server_lifetime=1, server_idle_timeout=1, azure_request_timeout=2))
    with psycopg.connect(tb.dsn()) as survivor:
        survivor.execute("BEGIN")  # holds its server connection
        azure.misbehave("imds", "garbage", count=None)
        time.sleep(10)  # let the token become unusable while every refresh gets garbage
        err = first_error(tb.port)
        assert err["C"] == "28000"
        assert "could not obtain a Microsoft Entra access token" in err["M"]
        assert "not JSON" in err["M"]
        azure.clear_misbehaviour()
        azure.misbehave("imds", "hang", count=None, seconds=30)
        time.sleep(1.5)  # past the 1 s in which a failed request's error is answered without retrying
        err = first_error(tb.port)
        assert err["C"] == "28000"
        assert "no reply" in err["M"] or "no token" in err["M"]
        # The established session is not touched.
        assert survivor.execute("SELECT 5").fetchone() == (5,)
        survivor.execute("COMMIT")
    azure.clear_misbehaviour()


def test_azure_auth_requires_tls():
    r = subprocess.run([binary(), "--check", "/dev/null"], capture_output=True, text=True,
                       env={"TOKENBOUNCER_PG_HOST": "db.example", "TOKENBOUNCER_PG_AZURE_AUTH": "on",
                            "TOKENBOUNCER_PG_SSLMODE": "disable"})
    assert r.returncode == 1
    assert "pg_azure_auth = on requires TLS" in r.stdout


def test_sovereign_cloud_scope(azure, pg):
    # Only the request matters here: the fake IMDS is told to refuse it.
    azure.misbehave("imds", "status", count=None, code=400, body={"error": "invalid_resource"})
    tb = Tokenbouncer(pg, config=mi_config(azure, azure_cloud="AzureUSGovernment"), wait_ready=False)
    try:
        assert tb.proc.wait(30) == 1
        q = [r for r in azure.requests if r["endpoint"] == "imds"][-1]["query"]
        assert q["resource"] == "https://ossrdbms-aad.database.usgovcloudapi.net"
    finally:
        tb.cleanup()


# --- HTTPS to the authority host --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_azure(azure, pg, tmp_path_factory):
    """A second fake token service serving HTTPS with a certificate for DNS:localhost from a test CA
    made now (the harness's Certs). `azure` made sp_role; this one issues its tokens."""
    certs = Certs(str(tmp_path_factory.mktemp("tls-azure")))
    syncer = pg_role_syncer(f"host={pg.sockdir} port={pg.port} user=postgres dbname=postgres", {SP: "sp_role"})
    fake = FakeAzure(on_issue=syncer, tls_cert=certs.cert, tls_key=certs.key).start()
    fake.add_app(SP, secret=SP_SECRET)
    fake.certs = certs
    yield fake
    fake.stop()
    syncer.close()


def https_sp_config(tls_azure, azure, host="localhost"):
    # IMDS (the chain's last resort) is the plain fake, which does not know SP: "Identity not found".
    return {"pg_azure_auth": "on", "pg_user": "sp_role", "pg_password": None, "pg_azure_tenant_id": tls_azure.tenant,
            "pg_azure_client_id": SP, "pg_azure_client_secret": SP_SECRET,
            "azure_authority_host": f"https://{host}:{tls_azure.port}", "azure_imds_endpoint": azure.imds_endpoint}


@pytest.mark.parametrize("case", ["untrusted CA", "host name mismatch"])
def test_https_authority_that_fails_verification_stops_startup(azure, tls_azure, pg, case):
    tls_azure.requests.clear()
    tls_azure.tls_errors.clear()
    if case == "untrusted CA":
        # The system store plus an unrelated CA: the test CA that signed the certificate is in neither.
        host, trust, reason = "localhost", tls_azure.certs.other_ca(), "unable to get local issuer certificate"
    else:
        # The right CA, but the certificate names localhost, not 127.0.0.1.
        host, trust, reason = "127.0.0.1", tls_azure.certs.ca, "hostname mismatch"
    tb = Tokenbouncer(pg, config=https_sp_config(tls_azure, azure, host), args=("-vv",), wait_ready=False,
                      env={"SSL_CERT_FILE": trust})
    try:
        assert tb.proc.wait(60) == 1
        log = tb.log()
        assert "failed to initialize Azure client: no authentication mechanism worked for azure" in log
        lines = [line for line in log.splitlines()
                 if "could not authenticate to azure with ClientCredentials class, error:" in line]
        assert len(lines) == 1, log
        assert (f"token request failed: https://{host}:{tls_azure.port}: TLS handshake failed: "
                f"certificate verification failed: {reason}") in lines[0], lines[0]
        # The handshake was abandoned: no request (and so no secret) reached the service.
        assert tls_azure.count("entra") == 0
        assert tls_azure.tls_errors, "the fake saw no failed handshake"
        assert SP_SECRET not in log
    finally:
        tb.cleanup()


def test_https_authority_trusted_through_ssl_cert_file(tokenbouncer, azure, tls_azure):
    # tokenbouncer trusts OpenSSL's default verify paths, which SSL_CERT_FILE overrides.
    tls_azure.requests.clear()
    tb = tokenbouncer(https_sp_config(tls_azure, azure), args=("-vv",), env={"SSL_CERT_FILE": tls_azure.certs.ca})
    assert tb.psql("SELECT current_user").stdout.strip() == "sp_role"
    entra = [r for r in tls_azure.requests if r["endpoint"] == "entra"]
    assert len(entra) == 1
    assert entra[0]["form"]["client_secret"] == SP_SECRET
    assert azure.count("imds") == 0  # the first credential worked
    fp = token_fingerprint(tls_azure.issued[-1]["token"])
    assert "authenticated to azure with ClientCredentials" in tb.log() and fp in tb.log()
    tb.stop()
    no_tokens_in(tb.log(), tls_azure)
