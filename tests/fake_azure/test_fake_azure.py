"""Self-tests for the fake Entra ID token service.

Run: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/fake_azure/test_fake_azure.py
"""

import base64
import datetime
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_azure  # noqa: E402
from fake_azure import FakeAzure, token_fingerprint  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

MI = "11111111-aaaa-4bbb-8ccc-000000000001"
MI2 = "11111111-aaaa-4bbb-8ccc-000000000002"
SYS = "11111111-aaaa-4bbb-8ccc-0000000000ff"
APP = "22222222-aaaa-4bbb-8ccc-000000000001"
CERT_APP = "22222222-aaaa-4bbb-8ccc-000000000002"
WI_APP = "22222222-aaaa-4bbb-8ccc-000000000003"
SECRET = "s3cr3t~with+special&chars="
RESOURCE = "https://ossrdbms-aad.database.windows.net"
SCOPE = RESOURCE + "/.default"
FEDERATED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp0YiJ9.c2ln"

# urllib must never go through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(url, method="GET", headers=None, data=None, timeout=10):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return Resp(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        return Resp(e.code, e.headers, e.read().decode())


def imds(fake, headers=None, **query):
    q = {"api-version": "2018-02-01", "resource": RESOURCE}
    q.update(query)
    q = {k: v for k, v in q.items() if v is not None}
    h = {"Metadata": "true"} if headers is None else headers
    return call(fake.imds_endpoint + "?" + urllib.parse.urlencode(q), headers=h)


def appsvc(fake, header=True, **query):
    q = {"api-version": "2019-08-01", "resource": RESOURCE}
    q.update(query)
    q = {k: v for k, v in q.items() if v is not None}
    h = {"X-IDENTITY-HEADER": fake.identity_header} if header is True else (header or {})
    return call(fake.identity_endpoint + "?" + urllib.parse.urlencode(q), headers=h)


def entra(fake, tenant=None, ctype="application/x-www-form-urlencoded", headers=None, timeout=10, **form):
    f = {"grant_type": "client_credentials", "scope": SCOPE}
    f.update(form)
    f = {k: v for k, v in f.items() if v is not None}
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return call(fake.token_url(tenant), method="POST", headers=h, data=urllib.parse.urlencode(f).encode(),
                timeout=timeout)


def jwt_claims(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_entra_error(resp, status, error, code):
    assert resp.status == status, resp.body
    body = resp.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith("AADSTS%d:" % code)
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert isinstance(body[key], str) and body[key]
    return body


# ------------------------------------------------------------------------------ fixtures

def make_cert(cn="tokenbouncer-test"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def keys():
    good_key, good_cert = make_cert()
    other_key, other_cert = make_cert("other")
    return {"key": good_key, "cert": good_cert, "other_key": other_key, "other_cert": other_cert}


@pytest.fixture
def issued_log():
    return []


@pytest.fixture
def fake(keys, issued_log):
    f = FakeAzure(on_issue=lambda cid, tok, exp: issued_log.append((cid, tok, exp)))
    f.add_managed_identity(MI)
    f.add_managed_identity(MI2)
    f.add_app(APP, secret=SECRET)
    f.add_app(CERT_APP, certificate_pem=keys["cert"].public_bytes(serialization.Encoding.PEM).decode())
    f.add_app(WI_APP, federated_token=FEDERATED)
    f.start()
    yield f
    f.stop()


def make_assertion(key, cert, fake, client_id=CERT_APP, alg="PS256", thumb="x5t#S256", aud=None,
                   nbf=None, exp=None, iss=None, sub=None, jti="auto", typ="JWT", salt=None):
    der = cert.public_bytes(serialization.Encoding.DER)
    header = {"alg": alg}
    if typ is not None:
        header["typ"] = typ
    if thumb == "x5t#S256":
        header["x5t#S256"] = b64url(hashlib.sha256(der).digest())
    elif thumb == "x5t":
        header["x5t"] = b64url(hashlib.sha1(der).digest())
        header["kid"] = hashlib.sha1(der).hexdigest().upper()
    now = int(time.time())
    claims = {"aud": fake.token_url() if aud is None else aud, "iss": iss or client_id, "sub": sub or client_id,
              "nbf": now if nbf is None else nbf, "exp": now + 600 if exp is None else exp, "iat": now}
    if jti == "auto":
        claims["jti"] = str(uuid.uuid4())
    elif jti is not None:
        claims["jti"] = jti
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32 if salt is None else salt)
        sig = key.sign(signing_input, pad, hashes.SHA256())
    return signing_input.decode() + "." + b64url(sig)


def cert_request(fake, assertion, **extra):
    form = {"client_id": CERT_APP, "client_assertion_type": fake_azure.JWT_BEARER, "client_assertion": assertion}
    form.update(extra)
    return entra(fake, **form)


# ------------------------------------------------------------------------------ basics

def test_urls(fake):
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.imds_endpoint == fake.url + "/metadata/identity/oauth2/token"
    assert fake.identity_endpoint == fake.url + "/msi/token"
    assert fake.authority == fake.url + "/"
    assert fake.token_url() == fake.url + "/" + fake.tenant + "/oauth2/v2.0/token"
    assert fake.token_url("other") == fake.url + "/other/oauth2/v2.0/token"
    assert len(fake.identity_header) >= 16


def test_unknown_path_is_404_and_recorded(fake):
    r = call(fake.url + "/nope")
    assert r.status == 404
    assert fake.requests[-1]["path"] == "/nope"
    assert fake.requests[-1]["endpoint"] == "unknown"


# ------------------------------------------------------------------------------ IMDS

def test_imds_success_all_strings(fake, issued_log):
    before = int(time.time())
    r = imds(fake, client_id=MI)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in", "expires_on", "ext_expires_in",
                         "not_before", "resource", "token_type", "client_id"}
    assert all(isinstance(v, str) for v in body.values()), body
    assert body["refresh_token"] == ""
    assert body["expires_in"] == "3599"
    assert before + 3600 <= int(body["expires_on"]) <= int(time.time()) + 3600
    assert body["resource"] == RESOURCE and body["token_type"] == "Bearer" and body["client_id"] == MI
    claims = jwt_claims(body["access_token"])
    assert claims["aud"] == RESOURCE and claims["appid"] == MI and claims["tid"] == fake.tenant
    assert claims["exp"] == int(body["expires_on"])
    assert {"oid", "iat", "nbf"} <= set(claims)
    assert fake.is_valid(body["access_token"])
    assert issued_log == [(MI, body["access_token"], int(body["expires_on"]))]
    assert fake.issued[-1]["endpoint"] == "imds" and fake.issued[-1]["client_id"] == MI


def test_imds_request_recorded(fake):
    imds(fake, client_id=MI)
    rec = fake.requests[-1]
    assert rec["endpoint"] == "imds" and rec["method"] == "GET"
    assert rec["path"] == "/metadata/identity/oauth2/token"
    assert rec["query"] == {"api-version": "2018-02-01", "resource": RESOURCE, "client_id": MI}
    assert rec["headers"]["Metadata"] == "true" and rec["headers"]["metadata"] == "true"
    assert rec["form"] == {}
    assert isinstance(rec["time"], float)
    assert fake.count("imds") == 1 and fake.count() == 1 and fake.count("entra") == 0


def test_imds_client_id_case_insensitive_and_newer_api_version(fake):
    r = imds(fake, client_id=MI.upper(), **{"api-version": "2023-07-01"})
    assert r.status == 200 and r.json()["client_id"] == MI


def test_imds_system_assigned(fake):
    r = imds(fake)
    assert r.status == 400
    assert r.json() == {"error": "invalid_request", "error_description": "Identity not found"}
    fake.add_managed_identity(SYS, system_assigned=True)
    r = imds(fake)
    assert r.status == 200 and r.json()["client_id"] == SYS


@pytest.mark.parametrize("headers", [{}, {"Metadata": "false"}, {"Metadata": "True"}])
def test_imds_requires_metadata_header(fake, headers):
    r = imds(fake, headers=headers, client_id=MI)
    assert r.status == 400
    assert r.json() == {"error": "invalid_request", "error_description": "Required metadata header not specified"}


def test_imds_rejects_x_forwarded_for(fake):
    r = imds(fake, headers={"Metadata": "true", "X-Forwarded-For": "10.0.0.1"}, client_id=MI)
    assert r.status == 400 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("version", [None, "2017-12-01", "garbage"])
def test_imds_api_version(fake, version):
    r = imds(fake, client_id=MI, **{"api-version": version})
    assert r.status == 400 and "error" in r.json()


def test_imds_resource_rules(fake):
    r = imds(fake, client_id=MI, resource=None)
    assert r.status == 400 and r.json()["error"] == "invalid_request"
    r = imds(fake, client_id=MI, resource=SCOPE)
    assert r.status == 400
    assert r.json()["error"] == "invalid_resource"
    assert r.json()["error_description"].startswith("AADSTS500011")


def test_imds_unknown_identity(fake):
    r = imds(fake, client_id="99999999-0000-0000-0000-000000000000")
    assert r.status == 400
    assert r.json() == {"error": "invalid_request", "error_description": "Identity not found"}


def test_imds_object_id_and_repeated_params(fake):
    ident = fake.add_managed_identity("33333333-0000-0000-0000-000000000003", object_id="obj-1",
                                      resource_id="/subscriptions/x/rg/y/mi")
    assert imds(fake, object_id="obj-1").json()["client_id"] == ident["client_id"]
    assert imds(fake, msi_res_id="/subscriptions/x/rg/y/mi").json()["client_id"] == ident["client_id"]
    url = fake.imds_endpoint + "?api-version=2018-02-01&resource=%s&client_id=%s&client_id=%s" % (
        urllib.parse.quote(RESOURCE, safe=""), MI, MI2)
    assert call(url, headers={"Metadata": "true"}).status == 400


def test_imds_get_only(fake):
    r = call(fake.imds_endpoint + "?api-version=2018-02-01&resource=x", method="POST",
             headers={"Metadata": "true"}, data=b"")
    assert r.status == 405


# ------------------------------------------------------------------------------ App Service

def test_appservice_success_no_expires_in(fake, issued_log):
    r = appsvc(fake, client_id=MI2)
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert "expires_in" not in body
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) > time.time() + 3500
    assert body["token_type"] == "Bearer" and body["client_id"] == MI2 and body["resource"] == RESOURCE
    assert fake.is_valid(body["access_token"])
    assert issued_log[-1][0] == MI2
    assert fake.issued[-1]["endpoint"] == "appservice"


def test_appservice_header_name_case_insensitive_and_path_case(fake):
    url = fake.url + "/MSI/token?api-version=2019-08-01&resource=" + urllib.parse.quote(RESOURCE, safe="")
    r = call(url + "&client_id=" + MI, headers={"x-identity-header": fake.identity_header})
    assert r.status == 200, r.body


def test_appservice_rejections(fake):
    r = appsvc(fake, header=None, client_id=MI)
    assert r.status in (400, 401) and "error" in r.json()
    r = appsvc(fake, header={"X-IDENTITY-HEADER": "wrong"}, client_id=MI)
    assert r.status in (400, 401) and "error" in r.json()
    r = appsvc(fake, client_id=MI, **{"api-version": "2017-09-01"})
    assert r.status == 400
    r = appsvc(fake, client_id=MI, resource=None)
    assert r.status == 400
    r = appsvc(fake, client_id="99999999-0000-0000-0000-000000000000")
    assert r.status == 400 and r.json()["error_description"] == "Identity not found"
    r = appsvc(fake)  # no system-assigned identity
    assert r.status == 400
    fake.add_managed_identity(SYS, system_assigned=True)
    assert appsvc(fake).json()["client_id"] == SYS
    assert fake.count("appservice") == 7


# ------------------------------------------------------------------------------ Entra: secrets

def test_entra_secret_success_number_expires_in(fake, issued_log):
    r = entra(fake, client_id=APP, client_secret=SECRET)
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599 and type(body["expires_in"]) is int
    assert body["ext_expires_in"] == 3599
    assert r.headers["Cache-Control"].startswith("no-store")
    claims = jwt_claims(body["access_token"])
    assert claims["aud"] == RESOURCE and claims["appid"] == APP and claims["tid"] == fake.tenant
    assert fake.is_valid(body["access_token"])
    assert issued_log[-1][:2] == (APP, body["access_token"])
    rec = fake.requests[-1]
    assert rec["method"] == "POST" and rec["form"]["client_secret"] == SECRET  # form values URL-decoded


def test_entra_basic_auth(fake):
    cred = base64.b64encode(("%s:%s" % (APP, urllib.parse.quote_plus(SECRET))).encode()).decode()
    r = entra(fake, headers={"Authorization": "Basic " + cred})
    assert r.status == 200, r.body


def test_entra_unknown_tenant(fake):
    r = entra(fake, tenant="00000000-dead-beef-0000-000000000000", client_id=APP, client_secret=SECRET)
    body = assert_entra_error(r, 400, "invalid_request", 90002)
    assert "Tenant '00000000-dead-beef-0000-000000000000' not found" in body["error_description"]


def test_entra_grant_type_and_scope(fake):
    assert_entra_error(entra(fake, client_id=APP, client_secret=SECRET, grant_type="password"),
                       400, "unsupported_grant_type", 70003)
    assert_entra_error(entra(fake, client_id=APP, client_secret=SECRET, grant_type=None),
                       400, "invalid_request", 900144)
    assert_entra_error(entra(fake, client_id=APP, client_secret=SECRET, scope=RESOURCE), 400, "invalid_scope", 1002012)
    assert_entra_error(entra(fake, client_id=APP, client_secret=SECRET, scope=None), 400, "invalid_request", 900144)


def test_entra_unknown_client_and_bad_secret(fake):
    assert_entra_error(entra(fake, client_id="99999999-0000-0000-0000-000000000000", client_secret="x"),
                       400, "unauthorized_client", 700016)
    assert_entra_error(entra(fake, client_id=APP, client_secret="wrong"), 401, "invalid_client", 7000215)
    assert_entra_error(entra(fake, client_id=APP), 401, "invalid_client", 7000218)


def test_entra_requires_post_and_form(fake):
    r = call(fake.token_url(), method="GET")
    assert_entra_error(r, 400, "invalid_request", 900561)
    r = call(fake.token_url(), method="POST", headers={"Content-Type": "application/json"},
             data=json.dumps({"grant_type": "client_credentials"}).encode())
    assert r.status == 400


def test_entra_assertion_type_required(fake, keys):
    assertion = make_assertion(keys["key"], keys["cert"], fake)
    r = entra(fake, client_id=CERT_APP, client_assertion=assertion)
    assert r.status == 400 and r.json()["error"] == "invalid_request"
    r = entra(fake, client_id=CERT_APP, client_assertion=assertion, client_assertion_type="urn:wrong")
    assert r.status == 400 and r.json()["error"] == "invalid_request"


# ------------------------------------------------------------------------------ Entra: certificates

def test_cert_ps256_x5t_s256(fake, keys):
    r = cert_request(fake, make_assertion(keys["key"], keys["cert"], fake))
    assert r.status == 200, r.body
    assert type(r.json()["expires_in"]) is int
    assert fake.issued[-1]["client_id"] == CERT_APP


def test_cert_rs256_x5t_sha1(fake, keys):
    r = cert_request(fake, make_assertion(keys["key"], keys["cert"], fake, alg="RS256", thumb="x5t"))
    assert r.status == 200, r.body


def test_cert_pem_bundle_with_key(fake, keys):
    pem = keys["key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fake.add_app(CERT_APP, certificate_pem=pem + keys["cert"].public_bytes(serialization.Encoding.PEM))
    assert cert_request(fake, make_assertion(keys["key"], keys["cert"], fake)).status == 200


@pytest.mark.parametrize("case,needle", [
    ("wrong_aud", "aud"),
    ("expired", "expired"),
    ("wrong_key", "signature"),
    ("unregistered_cert", "not registered"),
    ("too_long", "lifetime"),
    ("future_nbf", "not yet valid"),
    ("wrong_iss", "iss"),
    ("wrong_sub", "sub"),
    ("no_jti", "jti"),
    ("no_thumbprint", "x5t"),
    ("alg_none", "alg"),
    ("bad_typ", "typ"),
    ("pss_wrong_salt", "signature"),
    ("rs256_signed_as_ps256", "signature"),
    ("not_a_jwt", "JWS"),
])
def test_cert_assertion_rejections(fake, keys, case, needle):
    key, cert, now = keys["key"], keys["cert"], int(time.time())
    kw = {}
    if case == "wrong_aud":
        kw["aud"] = "https://login.microsoftonline.com/%s/oauth2/v2.0/token" % fake.tenant
    elif case == "expired":
        kw.update(nbf=now - 700, exp=now - 100)
    elif case == "wrong_key":
        key = keys["other_key"]
    elif case == "unregistered_cert":
        key, cert = keys["other_key"], keys["other_cert"]
    elif case == "too_long":
        kw.update(nbf=now, exp=now + 3600)
    elif case == "future_nbf":
        kw.update(nbf=now + 3600, exp=now + 3900)
    elif case == "wrong_iss":
        kw["iss"] = APP
    elif case == "wrong_sub":
        kw["sub"] = APP
    elif case == "no_jti":
        kw["jti"] = None
    elif case == "no_thumbprint":
        kw["thumb"] = None
    elif case == "bad_typ":
        kw["typ"] = "at+jwt"
    elif case == "pss_wrong_salt":
        kw["salt"] = padding.PSS.MAX_LENGTH
    if case == "alg_none":
        assertion = make_assertion(key, cert, fake)
        head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        assertion = head + "." + assertion.split(".")[1] + "."
    elif case == "rs256_signed_as_ps256":
        good = make_assertion(key, cert, fake, alg="RS256")
        h, p, s = good.split(".")
        hdr = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
        hdr["alg"] = "PS256"
        assertion = b64url(json.dumps(hdr).encode()) + "." + p + "." + s
    elif case == "not_a_jwt":
        assertion = "not-a-jwt"
    else:
        assertion = make_assertion(key, cert, fake, **kw)
    r = cert_request(fake, assertion)
    body = assert_entra_error(r, 401, "invalid_client", 700027)
    assert needle in body["error_description"], body["error_description"]
    assert fake.issued == []


def test_cert_app_rejects_secret(fake):
    assert_entra_error(entra(fake, client_id=CERT_APP, client_secret="x"), 401, "invalid_client", 7000215)


# ------------------------------------------------------------------------------ workload identity

def test_workload_identity(fake):
    form = {"client_id": WI_APP, "client_assertion_type": fake_azure.JWT_BEARER}
    r = entra(fake, client_assertion=FEDERATED, **form)
    assert r.status == 200, r.body
    assert fake.issued[-1]["client_id"] == WI_APP and fake.issued[-1]["endpoint"] == "entra"
    assert fake.requests[-1]["form"]["client_assertion"] == FEDERATED
    r = entra(fake, client_assertion=FEDERATED + "x", **form)
    assert_entra_error(r, 400, "invalid_request", 70021)
    # rotation: re-registering replaces the accepted token
    fake.add_app(WI_APP, federated_token="rotated.token.value")
    assert entra(fake, client_assertion=FEDERATED, **form).status == 400
    assert entra(fake, client_assertion="rotated.token.value", **form).status == 200


# ------------------------------------------------------------------------------ tokens

def test_tokens_unique_and_length(fake):
    tokens = {imds(fake, client_id=MI).json()["access_token"] for _ in range(5)}
    assert len(tokens) == 5
    for t in tokens:
        assert abs(len(t) - 1500) < 8
        assert len(t.split(".")) == 3
    fake.token_length = 16384
    t = entra(fake, client_id=APP, client_secret=SECRET).json()["access_token"]
    assert 16384 <= len(t) < 16384 + 8
    fake.token_length = 70000
    t = appsvc(fake, client_id=MI).json()["access_token"]
    assert len(t) >= 70000 and jwt_claims(t)["appid"] == MI


def test_lifetime_and_expiry(fake):
    fake.token_lifetime = 1
    body = imds(fake, client_id=MI).json()
    tok = body["access_token"]
    assert fake.is_valid(tok)
    assert int(body["expires_on"]) - int(body["not_before"]) == 1
    time.sleep(1.2)
    assert not fake.is_valid(tok)
    assert not fake.is_valid("never-issued")
    fake.token_lifetime = 120
    assert entra(fake, client_id=APP, client_secret=SECRET).json()["expires_in"] == 119


def test_on_issue_failure_gives_500(fake):
    def boom(*_):
        raise RuntimeError("db down")
    fake.on_issue = boom
    r = imds(fake, client_id=MI)
    assert r.status == 500 and r.json()["error"] == "server_error"
    assert fake.issued == [] and fake.errors


# ------------------------------------------------------------------------------ misbehaviour

def test_status_with_retry_after(fake):
    fake.misbehave("imds", "status", code=429, headers={"Retry-After": "2"})
    r = imds(fake, client_id=MI)
    assert r.status == 429 and r.headers["Retry-After"] == "2"
    assert "error" in r.json()
    assert imds(fake, client_id=MI).status == 200  # count=1 consumed


def test_status_body_and_count(fake):
    fake.misbehave("entra", "status", count=2, code=503, body="upstream busy", headers={"Retry-After": "1"})
    for _ in range(2):
        r = entra(fake, client_id=APP, client_secret=SECRET)
        assert r.status == 503 and r.body == "upstream busy" and r.headers["Retry-After"] == "1"
    assert entra(fake, client_id=APP, client_secret=SECRET).status == 200
    fake.misbehave("appservice", "status", code=500, body={"error": "server_error", "error_description": "x"})
    r = appsvc(fake, client_id=MI)
    assert r.status == 500 and r.json()["error_description"] == "x"
    assert r.headers["Content-Type"].startswith("application/json")


def test_misbehaviour_until_cleared_and_any(fake):
    fake.misbehave("any", "status", count=None, code=502)
    assert imds(fake, client_id=MI).status == 502
    assert appsvc(fake, client_id=MI).status == 502
    assert entra(fake, client_id=APP, client_secret=SECRET).status == 502
    assert imds(fake, client_id=MI).status == 502
    fake.clear_misbehaviour()
    assert imds(fake, client_id=MI).status == 200
    assert fake.count("imds") == 3  # recorded even when misbehaving


def test_misbehaviour_targets_one_endpoint(fake):
    fake.misbehave("entra", "status", code=500)
    assert imds(fake, client_id=MI).status == 200
    assert entra(fake, client_id=APP, client_secret=SECRET).status == 500


def test_misbehave_validates_arguments(fake):
    with pytest.raises(ValueError):
        fake.misbehave("nowhere", "status", code=500)
    with pytest.raises(ValueError):
        fake.misbehave("imds", "explode")


def test_garbage(fake):
    fake.misbehave("imds", "garbage")
    r = imds(fake, client_id=MI)
    assert r.status == 200
    with pytest.raises(ValueError):
        json.loads(r.body)
    assert fake.issued == []


def test_no_access_token(fake):
    fake.misbehave("imds", "no_access_token")
    fake.misbehave("entra", "no_access_token")
    r = imds(fake, client_id=MI)
    assert r.status == 200 and "access_token" not in r.json() and r.json()["expires_in"] == "3599"
    r = entra(fake, client_id=APP, client_secret=SECRET)
    assert r.status == 200 and "access_token" not in r.json() and r.json()["token_type"] == "Bearer"
    assert fake.issued == []


def test_bad_expires_in(fake):
    for ep in ("imds", "appservice", "entra"):
        fake.misbehave(ep, "bad_expires_in")
    body = imds(fake, client_id=MI).json()
    assert body["expires_in"] == "soon" and body["expires_on"] == "soon" and body["access_token"]
    body = entra(fake, client_id=APP, client_secret=SECRET).json()
    assert body["expires_in"] == "soon"
    body = appsvc(fake, client_id=MI).json()
    assert body["expires_on"] == "soon" and "expires_in" not in body
    assert fake.issued == []
    fake.misbehave("entra", "bad_expires_in", value=-5)
    assert entra(fake, client_id=APP, client_secret=SECRET).json()["expires_in"] == -5


def test_close(fake):
    fake.misbehave("imds", "close")
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        imds(fake, client_id=MI)
    assert fake.count("imds") == 1
    assert imds(fake, client_id=MI).status == 200


def test_hang_does_not_block_other_requests(fake):
    fake.misbehave("imds", "hang", seconds=1)
    result = {}

    def slow():
        t0 = time.monotonic()
        result["status"] = imds(fake, client_id=MI).status
        result["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=slow)
    th.start()
    deadline = time.monotonic() + 5
    while fake.count("imds") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    assert imds(fake, client_id=MI).status == 200
    assert entra(fake, client_id=APP, client_secret=SECRET).status == 200
    assert time.monotonic() - t0 < 1.0
    th.join(10)
    assert result["status"] == 200 and result["elapsed"] >= 0.9  # answers normally after the hang


def test_hang_timeout_on_client_side(fake):
    fake.misbehave("entra", "hang")  # default: an hour
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, urllib.error.URLError, TimeoutError)):
        entra(fake, client_id=APP, client_secret=SECRET, timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_stop_does_not_wait_for_hanging_handlers(keys):
    f = FakeAzure().start()
    f.add_managed_identity(MI)
    f.misbehave("imds", "hang")  # default 3600 s
    errors = []

    def hung():
        try:
            imds(f, client_id=MI)
        except Exception as exc:  # connection closed by stop()
            errors.append(exc)

    th = threading.Thread(target=hung, daemon=True)
    th.start()
    while f.count("imds") < 1:
        time.sleep(0.01)
    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 2
    th.join(5)
    assert not th.is_alive() and errors
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", f.port), timeout=1).close()


def test_keep_alive_connection_serves_several_requests(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=%s&client_id=%s" % (
        urllib.parse.quote(RESOURCE, safe=""), MI)
    for _ in range(3):
        conn.request("GET", path, headers={"Metadata": "true"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["client_id"] == MI
    conn.close()


def test_context_manager_and_fixed_port():
    with FakeAzure() as f:
        port = f.port
        assert call(f.url + "/x").status == 404
    with FakeAzure(port=port) as f2:
        assert f2.url.endswith(":%d" % port)


# ------------------------------------------------------------------------------ PG helper and CLI

def test_pg_role_syncer_ignores_unmapped():
    cb = fake_azure.pg_role_syncer("host=/nonexistent dbname=none connect_timeout=1", {MI.upper(): "mi_role"})
    cb(APP, "token", int(time.time()) + 60)  # not mapped: must not touch the (unreachable) database
    assert cb.role_for(MI) == "mi_role" and cb.role_for(APP) is None


def test_token_fingerprint():
    assert token_fingerprint("abc") == hashlib.sha256(b"abc").hexdigest()[:8]


def test_cli_ready_line_and_serving():
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "fake_azure.py"), "--port", "0",
                             "--managed-identity", MI, "--app", "%s:%s" % (APP, SECRET), "--lifetime", "300",
                             "--identity-header", "hdr"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        shim = type("F", (), {"imds_endpoint": url + "/metadata/identity/oauth2/token",
                              "identity_endpoint": url + "/msi/token", "identity_header": "hdr",
                              "token_url": lambda self, t=None: url + "/" + fake_azure.DEFAULT_TENANT
                              + "/oauth2/v2.0/token"})()
        body = imds(shim, client_id=MI).json()
        assert body["expires_in"] == "299"
        assert appsvc(shim, client_id=MI).status == 200
        tok = entra(shim, client_id=APP, client_secret=SECRET).json()["access_token"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "fp=%s" % token_fingerprint(tok) in err
    assert tok not in err and body["access_token"] not in err and tok not in out


# ------------------------------------------------------------------------------ real PostgreSQL

PG_BIN = "/usr/lib/postgresql/15/bin"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL 15 (run as the postgres user) with 'password' auth on TCP."""
    import pwd
    import shutil
    import tempfile
    if not os.path.exists(PG_BIN + "/initdb") or os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs PostgreSQL 15 binaries and root (for runuser -u postgres)")
    base = tempfile.mkdtemp(prefix="fake-azure-pg-")
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    data, port = os.path.join(base, "data"), _free_port()

    def as_pg(*cmd):
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True)

    try:
        as_pg(PG_BIN + "/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8",
              "--locale=C")
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n"
                    "password_encryption = 'scram-sha-256'\n" % (port, base))
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 password\n")
        as_pg(PG_BIN + "/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60", "start")
        admin = "host=%s port=%d user=postgres dbname=postgres" % (base, port)
        import psycopg
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute('CREATE ROLE "mi-role" LOGIN')
            c.execute("CREATE ROLE app_role LOGIN")
        yield {"admin": admin, "port": port}
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", PG_BIN + "/pg_ctl", "-D", data, "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def pg_login(pg, user, password):
    import psycopg
    try:
        with psycopg.connect(host="127.0.0.1", port=pg["port"], user=user, password=password, dbname="postgres",
                             connect_timeout=5) as c:
            return c.execute("SELECT current_user").fetchone()[0]
    except psycopg.OperationalError:
        return None


def test_pg_role_syncer_real_postgres(pg):
    sync = fake_azure.pg_role_syncer(pg["admin"], {MI: "mi-role", APP: "app_role"})
    f = FakeAzure(on_issue=sync).start()
    try:
        f.add_managed_identity(MI)
        f.add_managed_identity(MI2)  # unmapped: issuing for it must not fail
        f.add_app(APP, secret=SECRET)
        f.token_length = 16384
        t1 = imds(f, client_id=MI).json()["access_token"]
        assert len(t1) >= 16384
        assert pg_login(pg, "mi-role", t1) == "mi-role"
        assert pg_login(pg, "mi-role", "wrong") is None
        t2 = imds(f, client_id=MI).json()["access_token"]
        assert pg_login(pg, "mi-role", t2) == "mi-role"
        assert pg_login(pg, "mi-role", t1) is None  # only the latest token is the password
        assert imds(f, client_id=MI2).status == 200
        f.token_length = 1500
        f.token_lifetime = 3  # long enough for the first login on a loaded machine (1 s was not)
        issued = time.monotonic()
        t3 = entra(f, client_id=APP, client_secret=SECRET).json()["access_token"]
        assert pg_login(pg, "app_role", t3) == "app_role"
        time.sleep(max(0.0, issued + 3.5 - time.monotonic()))  # VALID UNTIL has passed
        assert pg_login(pg, "app_role", t3) is None
        assert f.errors == []
    finally:
        f.stop()
        sync.close()


def test_cli_with_pg(pg):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "fake_azure.py"), "--port", "0",
                             "--system-assigned", SYS, "--pg-dsn", pg["admin"], "--pg-role", "mi-role"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    try:
        url = proc.stdout.readline().split()[1]
        shim = type("F", (), {"imds_endpoint": url + "/metadata/identity/oauth2/token"})()
        tok = imds(shim).json()["access_token"]
        assert pg_login(pg, "mi-role", tok) == "mi-role"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "fp=%s" % token_fingerprint(tok) in err and tok not in err


# ------------------------------------------------------------------------------ HTTPS

def make_ca_and_server_cert(directory, host="localhost"):
    """A test CA and a certificate for DNS:<host> signed by it; returns (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_cert = make_cert("fake_azure test CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_cert.subject).issuer_name(ca_cert.subject)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("ca.crt", "server.crt", "server.key")]
    with open(paths[0], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def test_https_when_given_a_certificate(tmp_path):
    import ssl
    ca, cert, key = make_ca_and_server_cert(str(tmp_path))
    with pytest.raises(ValueError):
        FakeAzure(tls_cert=cert)
    f = FakeAzure(tls_cert=cert, tls_key=key)
    f.add_app(APP, secret=SECRET)
    f.start()
    try:
        assert f.url.startswith("https://127.0.0.1:")
        url = "https://localhost:%d/%s/oauth2/v2.0/token" % (f.port, f.tenant)
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": SCOPE, "client_id": APP,
                                       "client_secret": SECRET}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        trusting = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                               urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)))
        with trusting.open(urllib.request.Request(url, data=form, headers=headers), timeout=10) as r:
            assert r.status == 200 and "access_token" in json.loads(r.read())
        assert f.count("entra") == 1 and f.tls_errors == []
        # A client that does not trust the CA gives up in the handshake; the fake records it.
        strict = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=ssl.create_default_context()))
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            strict.open(urllib.request.Request(url, data=form, headers=headers), timeout=10)
        deadline = time.monotonic() + 5
        while not f.tls_errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f.tls_errors and f.count("entra") == 1
    finally:
        f.stop()
