#!/usr/bin/python3
"""Fake Microsoft Entra ID token service for tokenbouncer's tests.

One HTTP server answers three token protocols the way Microsoft documents them:

* Azure IMDS managed identity:  GET  /metadata/identity/oauth2/token   (every JSON field a string)
* App Service / Container Apps: GET  /msi/token  (api-version 2019-08-01, X-IDENTITY-HEADER,
  no expires_in in the answer)
* Entra v2 token endpoint:      POST /{tenant}/oauth2/v2.0/token  (client_credentials with a
  client secret, a certificate-signed JWT assertion, or a workload-identity federated token;
  expires_in is a JSON number)

It serves plain HTTP by default, or HTTPS with a given certificate and key (``tls_cert``,
``tls_key``), for testing tokenbouncer's certificate and host-name verification of the authority.

It can misbehave on purpose (error statuses with Retry-After, hangs, garbage, missing or bad
fields, dropped connections) and reports every issued token to an ``on_issue`` callback, which
the integration tests use to make a real PostgreSQL role accept exactly the issued tokens.

Runs with Debian's /usr/bin/python3: standard library, plus python3-cryptography (only for
certificate assertions) and python3-psycopg (only for the PostgreSQL helpers).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import json
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

__all__ = ["FakeAzure", "pg_role_syncer", "token_fingerprint", "main"]

DEFAULT_TENANT = "72f988bf-0000-0000-0000-000000000001"
IMDS_PATH = "/metadata/identity/oauth2/token"
APPSERVICE_PATH = "/msi/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ENDPOINTS = ("imds", "appservice", "entra", "any")
ACTIONS = ("status", "hang", "garbage", "no_access_token", "bad_expires_in", "close")

_ENTRA_PATH_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_API_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(-[A-Za-z0-9.]+)?$")
_OID_NAMESPACE = uuid.UUID("8f0d1c7e-3b5a-4e55-9f1e-6d2a1f6b7c01")


# --------------------------------------------------------------------------------------------
# small helpers

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_len(n: int) -> int:
    """Length of the unpadded base64url encoding of n bytes."""
    return (4 * n + 2) // 3


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def token_fingerprint(token: str) -> str:
    """First 8 hex digits of the token's SHA-256: safe to log, unlike the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


def _object_id(client_id: str) -> str:
    """A stable fake object id for a client id."""
    return str(uuid.uuid5(_OID_NAMESPACE, client_id.lower()))


class _Headers(dict):
    """A plain dict of request headers with lower-case keys and case-insensitive lookup."""

    def __init__(self, items=()):
        super().__init__()
        for key, value in items:
            super().__setitem__(key.lower(), value)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


class _Reply(Exception):
    """Raised inside request handling to send a finished answer."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class _Drop(Exception):
    """Raised to close the connection without answering."""

    def __init__(self, reset=False):
        super().__init__("drop")
        self.reset = reset


# --------------------------------------------------------------------------------------------
# the server

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, fake, ssl_context=None):
        self.fake = fake
        self.ssl_context = ssl_context
        self.connections = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            # The handshake happens in the handler's thread (setup), not in the accepting one.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # Client-side resets and our own shutdown() of live sockets are normal here.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    server_version = "FakeAzure/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections don't live forever

    # -- connection bookkeeping so that stop() can cut live connections
    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                # A client that does not trust the certificate aborts here (alert "unknown ca").
                with self.server.fake._lock:
                    self.server.fake.tls_errors.append(str(exc))
                raise
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.server.fake.verbose:
            sys.stderr.write("fake_azure: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    # -- body reading (Content-Length or chunked)
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > 16 * 1024 * 1024:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        fake = self.server.fake
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, {"error": "invalid_request", "error_description": "Malformed request body"})
            return
        try:
            fake._handle(self, body)
        except _Reply as reply:
            self._send(reply.status, reply.body, reply.headers)
        except _Drop as drop:
            self.close_connection = True
            if drop.reset:
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as exc:  # a bug here must still produce an answer
            fake.errors.append(repr(exc))
            self._send(500, {"error": "server_error", "error_description": "fake_azure: %r" % (exc,)})

    def _send(self, status, body, headers=None):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            data = _json_bytes(body)
            ctype = "application/json; charset=utf-8"
        elif isinstance(body, bytes):
            data, ctype = body, "application/octet-stream"
        else:
            data = (body or "").encode("utf-8")
            ctype = "text/plain; charset=utf-8"
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = ctype
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class FakeAzure:
    """Fake IMDS + App Service identity endpoint + Entra v2 token endpoint on one port."""

    #: Tolerance for a client assertion's nbf in the future, seconds.
    assertion_clock_skew = 300
    #: Maximum exp - nbf of a client assertion, seconds, plus the slack below.
    assertion_max_lifetime = 600
    assertion_lifetime_slack = 5

    def __init__(self, tenant=DEFAULT_TENANT, on_issue=None, host="127.0.0.1", port=0, tls_cert=None, tls_key=None):
        """``tls_cert`` and ``tls_key`` (PEM files): serve HTTPS with that certificate instead of
        plain HTTP (the URLs below then start with https://, and the certificate must name
        ``host`` for a client that checks host names)."""
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("tls_cert and tls_key go together")
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_errors = []  # failed TLS handshakes (the client refused the certificate, say)
        self.tenant = tenant
        self.tenants = {tenant.lower()}
        self.on_issue = on_issue
        self.host = host
        self.port = port
        self.identity_header = secrets.token_urlsafe(24)
        self.token_lifetime = 3600
        self.token_length = 1500
        self.verbose = False
        self.requests = []
        self.issued = []
        self.errors = []  # exceptions raised by on_issue or by bugs in this module
        self._lock = threading.RLock()
        self._rules = []
        self._managed = {}      # client_id.lower() -> identity dict
        self._system = None     # identity dict of the system-assigned identity
        self._apps = {}         # client_id.lower() -> app dict
        self._issued_by_token = {}
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        if self._server is not None:
            return self
        self._stopping.clear()
        context = None
        if self.tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.tls_cert, self.tls_key)
        self._server = _Server((self.host, self.port), self, context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-azure-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes hanging handlers, which then drop their connection
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            live = list(server.connections)
        for conn in live:  # cut keep-alive and hanging connections; don't wait for their threads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls_cert else "http", self.host, self.port)

    @property
    def imds_endpoint(self):
        return self.url + IMDS_PATH

    @property
    def identity_endpoint(self):
        return self.url + APPSERVICE_PATH

    @property
    def authority(self):
        return self.url + "/"

    def token_url(self, tenant=None):
        return "%s%s/oauth2/v2.0/token" % (self.authority, tenant or self.tenant)

    # ------------------------------------------------------------------ registry
    def add_tenant(self, tenant):
        """Make another tenant id (or domain) known to the Entra endpoint."""
        with self._lock:
            self.tenants.add(tenant.lower())

    def add_managed_identity(self, client_id, system_assigned=False, object_id=None, resource_id=None):
        """Register a managed identity reachable through IMDS and App Service.

        system_assigned=True makes it THE system-assigned identity, used when a request names none.
        """
        ident = {"client_id": client_id, "object_id": object_id or _object_id(client_id),
                 "resource_id": resource_id}
        with self._lock:
            self._managed[client_id.lower()] = ident
            if system_assigned:
                self._system = ident
        return ident

    def add_app(self, client_id, secret=None, certificate_pem=None, federated_token=None):
        """Register (or replace) a service principal.

        secret: the client secret. certificate_pem: PEM certificate (str/bytes, or a list of them)
        whose key signs client assertions. federated_token: the exact assertion string (or a list of
        accepted strings) a workload-identity token file holds.
        """
        certs = []
        if certificate_pem is not None:
            pems = certificate_pem if isinstance(certificate_pem, (list, tuple)) else [certificate_pem]
            certs = [_load_certificate(p) for p in pems]
        if federated_token is None:
            federated = set()
        elif isinstance(federated_token, str):
            federated = {federated_token}
        else:
            federated = set(federated_token)
        app = {"client_id": client_id, "secret": secret, "certs": certs, "federated": federated,
               "object_id": _object_id(client_id)}
        with self._lock:
            self._apps[client_id.lower()] = app
        return app

    # ------------------------------------------------------------------ misbehaviour
    def misbehave(self, endpoint, action, count=1, **params):
        """Make the next `count` requests of `endpoint` misbehave (count=None: until cleared).

        Rules are consumed in the order they were added; a request consumes at most one rule.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError("endpoint must be one of %s" % (ENDPOINTS,))
        if action not in ACTIONS:
            raise ValueError("action must be one of %s" % (ACTIONS,))
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        if action == "status" and "code" not in params:
            raise ValueError("status needs code=")
        with self._lock:
            self._rules.append({"endpoint": endpoint, "action": action, "count": count, "params": params})

    def clear_misbehaviour(self):
        with self._lock:
            self._rules.clear()

    def _take_rule(self, endpoint):
        with self._lock:
            for rule in self._rules:
                if rule["endpoint"] in (endpoint, "any"):
                    if rule["count"] is not None:
                        rule["count"] -= 1
                        if rule["count"] <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    # ------------------------------------------------------------------ inspection
    def count(self, endpoint=None):
        with self._lock:
            return sum(1 for r in self.requests if endpoint is None or r["endpoint"] == endpoint)

    def is_valid(self, token):
        with self._lock:
            entry = self._issued_by_token.get(token)
        return entry is not None and entry["expires_on"] > time.time()

    def reset_log(self):
        """Forget recorded requests (issued tokens stay valid)."""
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------------ tokens
    def _make_token(self, client_id, resource, tenant, object_id, now, exp):
        header = {"typ": "JWT", "alg": "RS256", "x5t": "fake-azure-signing-key", "kid": "fake-azure-signing-key"}
        claims = {
            "aud": resource,
            "iss": "https://sts.windows.net/%s/" % tenant,
            "iat": now, "nbf": now, "exp": exp,
            "aio": _b64url(secrets.token_bytes(24)),
            "appid": client_id,
            "appidacr": "2",
            "idp": "https://sts.windows.net/%s/" % tenant,
            "idtyp": "app",
            "oid": object_id,
            "rh": "0.fake.",
            "sub": object_id,
            "tid": tenant,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "1.0",
            "xms_pad": "",
        }
        head = _b64url(_json_bytes(header))
        sig = _b64url(secrets.token_bytes(256))
        base = _json_bytes(claims)
        # Each padding character adds exactly one payload byte; pick the smallest padding whose
        # token is at least token_length long.
        want = int(self.token_length) - len(head) - len(sig) - 2
        pad = max(0, -(-3 * want // 4) - len(base))
        while _b64url_len(len(base) + pad) < want:
            pad += 1
        claims["xms_pad"] = "p" * pad
        return "%s.%s.%s" % (head, _b64url(_json_bytes(claims)), sig)

    def _issue(self, endpoint, client_id, resource, tenant, object_id, register=True):
        now = int(time.time())
        lifetime = int(self.token_lifetime)
        exp = now + lifetime
        token = self._make_token(client_id, resource, tenant, object_id, now, exp)
        expires_in = lifetime - 1 if lifetime > 1 else lifetime
        if register:
            if self.on_issue is not None:
                try:
                    self.on_issue(client_id, token, exp)
                except Exception as exc:
                    self.errors.append("on_issue: %r" % (exc,))
                    raise _Reply(500, {"error": "server_error",
                                       "error_description": "fake_azure on_issue failed: %r" % (exc,)})
            entry = {"client_id": client_id, "token": token, "expires_on": exp, "endpoint": endpoint,
                     "resource": resource, "time": time.time()}
            with self._lock:
                self.issued.append(entry)
                self._issued_by_token[token] = entry
        return token, now, exp, expires_in

    # ------------------------------------------------------------------ request handling
    def _handle(self, handler, body):
        split = urllib.parse.urlsplit(handler.path)
        path = split.path
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
        query = {}
        for key, value in pairs:
            query.setdefault(key, value)
        headers = _Headers(handler.headers.items())
        form = {}
        form_pairs = []
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        body_text = body.decode("utf-8", "replace")
        if ctype == "application/x-www-form-urlencoded" and body:
            form_pairs = urllib.parse.parse_qsl(body_text, keep_blank_values=True)
            for key, value in form_pairs:
                form.setdefault(key, value)

        if path == IMDS_PATH:
            endpoint = "imds"
        elif path.lower() == APPSERVICE_PATH:
            endpoint = "appservice"
        elif _ENTRA_PATH_RE.match(path):
            endpoint = "entra"
        else:
            endpoint = "unknown"

        record = {"endpoint": endpoint, "method": handler.command, "path": path, "query": query,
                  "headers": headers, "form": form, "body": body_text, "time": time.time()}
        with self._lock:
            self.requests.append(record)

        if endpoint == "unknown":
            raise _Reply(404, {"error": "not_found", "error_description": "No such endpoint: %s" % path})

        rule = self._take_rule(endpoint)
        action = rule["action"] if rule else None
        params = rule["params"] if rule else {}
        if action == "status":
            raise _Reply(*self._status_reply(params))
        if action == "close":
            raise _Drop(reset=bool(params.get("reset", False)))
        if action == "garbage":
            raise _Reply(200, params.get("body", "<html><body>Service temporarily unavailable</body></html>"),
                         {"Content-Type": params.get("content_type", "text/html; charset=utf-8")})
        if action == "hang":
            if self._stopping.wait(float(params.get("seconds", 3600))):
                raise _Drop()

        if endpoint == "imds":
            answer = self._imds(handler.command, pairs, query, headers, action, params)
        elif endpoint == "appservice":
            answer = self._appservice(handler.command, pairs, query, headers, action, params)
        else:
            tenant = _ENTRA_PATH_RE.match(path).group(1)
            answer = self._entra(handler.command, tenant, ctype, form_pairs, form, headers, action, params)
            raise _Reply(200, answer, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
        raise _Reply(200, answer)

    @staticmethod
    def _status_reply(params):
        code = int(params["code"])
        headers = dict(params.get("headers") or {})
        body = params.get("body")
        if body is None:
            body = {"error": "server_error" if code >= 500 else "invalid_request",
                    "error_description": "fake_azure injected HTTP %d" % code}
        if isinstance(body, str) and "content_type" not in params:
            try:
                json.loads(body)
                params = dict(params, content_type="application/json; charset=utf-8")
            except ValueError:
                pass
        if "content_type" in params:
            headers.setdefault("Content-Type", params["content_type"])
        return code, body, headers

    @staticmethod
    def _mangle(answer, action, params):
        """Apply the no_access_token / bad_expires_in actions to a success answer.

        bad_expires_in replaces every expiry field the endpoint normally sends (IMDS: expires_in and
        expires_on; App Service: expires_on; Entra: expires_in) with params["value"] (default "soon").
        """
        if action == "no_access_token":
            answer.pop("access_token", None)
        elif action == "bad_expires_in":
            for key in ("expires_in", "expires_on"):
                if key in answer:
                    answer[key] = params.get("value", "soon")
        return answer

    # -- managed identity (shared by IMDS and App Service)
    def _find_identity(self, client_id, object_id, res_id):
        with self._lock:
            if client_id is not None:
                return self._managed.get(client_id.lower())
            if object_id is not None:
                return next((i for i in self._managed.values() if i["object_id"].lower() == object_id.lower()), None)
            if res_id is not None:
                return next((i for i in self._managed.values()
                             if i["resource_id"] and i["resource_id"].lower() == res_id.lower()), None)
            return self._system

    @staticmethod
    def _check_resource(resource, tenant):
        if resource is None or resource == "":
            raise _Reply(400, {"error": "invalid_request",
                               "error_description": "Required audience parameter not specified"})
        if resource.endswith("/.default"):
            raise _Reply(400, {"error": "invalid_resource", "error_description": _aadsts(
                500011, "The resource principal named %s was not found in the tenant named %s. This can "
                "happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You might have sent your authentication request "
                "to the wrong tenant." % (resource, tenant))[0]})
        parsed = urllib.parse.urlsplit(resource)
        if not parsed.scheme or not (parsed.netloc or parsed.path):
            raise _Reply(400, {"error": "invalid_resource", "error_description": _aadsts(
                500011, "The resource principal named %s was not found in the tenant named %s."
                % (resource, tenant))[0]})

    def _imds(self, method, pairs, query, headers, action, params):
        def bad(desc, error="invalid_request"):
            raise _Reply(400, {"error": error, "error_description": desc})

        if method != "GET":
            raise _Reply(405, {"error": "method_not_allowed",
                               "error_description": "The HTTP method %s is not supported" % method})
        if "x-forwarded-for" in headers:
            bad("Request contains an X-Forwarded-For header; IMDS cannot be used through a proxy")
        if headers.get("metadata") != "true":
            bad("Required metadata header not specified")
        names = [k for k, _ in pairs]
        if len(names) != len(set(names)):
            bad("Query parameters must not be repeated")
        version = query.get("api-version")
        if not version:
            bad("Required query variable 'api-version' is missing")
        m = _API_VERSION_RE.match(version)
        if not m or m.group(1) < "2018-02-01":
            bad("Invalid api-version '%s'. Use 2018-02-01 or later" % version, "bad_request")
        self._check_resource(query.get("resource"), self.tenant)
        ids = [k for k in ("client_id", "object_id", "msi_res_id") if k in query]
        if len(ids) > 1:
            bad("Only one of client_id, object_id and msi_res_id may be specified")
        ident = self._find_identity(query.get("client_id"), query.get("object_id"), query.get("msi_res_id"))
        if ident is None:
            bad("Identity not found")
        register = action not in ("no_access_token", "bad_expires_in")
        token, now, exp, expires_in = self._issue("imds", ident["client_id"], query["resource"], self.tenant,
                                                  ident["object_id"], register)
        answer = {"access_token": token, "refresh_token": "", "expires_in": str(expires_in),
                  "expires_on": str(exp), "ext_expires_in": str(expires_in), "not_before": str(now),
                  "resource": query["resource"], "token_type": "Bearer", "client_id": ident["client_id"]}
        if "msi_res_id" in query:
            answer["msi_res_id"] = query["msi_res_id"]
        return self._mangle(answer, action, params)

    def _appservice(self, method, pairs, query, headers, action, params):
        def bad(desc, error="invalid_request", status=400):
            raise _Reply(status, {"error": error, "error_description": desc})

        if method != "GET":
            raise _Reply(405, {"error": "method_not_allowed",
                               "error_description": "The HTTP method %s is not supported" % method})
        sent = headers.get("x-identity-header")
        if sent is None:
            bad("The X-IDENTITY-HEADER header is missing")
        if not secrets.compare_digest(sent.encode("utf-8"), self.identity_header.encode("utf-8")):
            bad("The X-IDENTITY-HEADER header does not match", "unauthorized_client", 401)
        version = query.get("api-version")
        if not version:
            bad("Required query variable 'api-version' is missing")
        m = _API_VERSION_RE.match(version)
        if not m or m.group(1) < "2019-08-01":
            bad("Invalid api-version '%s'. Use 2019-08-01 or later" % version)
        self._check_resource(query.get("resource"), self.tenant)
        ids = [k for k in ("client_id", "principal_id", "object_id", "mi_res_id") if k in query]
        if len(ids) > 1:
            bad("Only one of client_id, principal_id/object_id and mi_res_id may be specified")
        ident = self._find_identity(query.get("client_id"), query.get("principal_id") or query.get("object_id"),
                                    query.get("mi_res_id"))
        if ident is None:
            bad("Identity not found")
        register = action not in ("no_access_token", "bad_expires_in")
        token, now, exp, _ = self._issue("appservice", ident["client_id"], query["resource"], self.tenant,
                                         ident["object_id"], register)
        answer = {"access_token": token, "expires_on": str(exp), "resource": query["resource"],
                  "token_type": "Bearer", "client_id": ident["client_id"]}
        return self._mangle(answer, action, params)

    # -- Entra v2 token endpoint
    def _entra(self, method, tenant, ctype, form_pairs, form, headers, action, params):
        if tenant.lower() not in self.tenants:
            _entra_error(400, "invalid_request", 90002,
                         "Tenant '%s' not found. Check to make sure you have the correct tenant ID and are "
                         "signing into the correct cloud. Check with your subscription administrator, this "
                         "may happen if there are no active subscriptions for the tenant." % tenant)
        if method != "POST":
            _entra_error(400, "invalid_request", 900561, "The endpoint only accepts POST requests. Received a %s "
                         "request." % method)
        if ctype != "application/x-www-form-urlencoded":
            _entra_error(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'grant_type'.")
        names = [k for k, _ in form_pairs]
        if len(names) != len(set(names)):
            _entra_error(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.")

        # RFC 6749 2.3.1 client_secret_basic
        basic_id = basic_secret = None
        auth = headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                user, _, pw = raw.partition(":")
                basic_id, basic_secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
            except (binascii.Error, UnicodeDecodeError):
                _entra_error(401, "invalid_client", 7000215, "Invalid client secret provided.")

        grant = form.get("grant_type")
        if not grant:
            _entra_error(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            _entra_error(400, "unsupported_grant_type", 70003,
                         "The app requested an unsupported grant type '%s'." % grant)
        client_id = form.get("client_id") or basic_id
        if basic_id is not None and form.get("client_id") not in (None, basic_id):
            _entra_error(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.")
        if not client_id:
            _entra_error(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
        scope = form.get("scope")
        if not scope:
            _entra_error(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default") or scopes[0] == "/.default":
            _entra_error(400, "invalid_scope", 1002012,
                         "The provided value for scope %s is not valid. Client credential flows must have a "
                         "scope value with /.default suffixed to the resource identifier "
                         "(application ID URI)." % scope)
        resource = scopes[0][: -len("/.default")]

        with self._lock:
            app = self._apps.get(client_id.lower())
        if app is None:
            _entra_error(400, "unauthorized_client", 700016,
                         "Application with identifier '%s' was not found in the directory '%s'. This can "
                         "happen if the application has not been installed by the administrator of the tenant "
                         "or consented to by any user in the tenant. You may have sent your authentication "
                         "request to the wrong tenant." % (client_id, tenant))

        secret = form.get("client_secret")
        if basic_secret is not None:
            if secret is not None:
                _entra_error(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.")
            secret = basic_secret
        assertion = form.get("client_assertion")
        assertion_type = form.get("client_assertion_type")
        if secret is not None and (assertion is not None or assertion_type is not None):
            _entra_error(400, "invalid_request", 9002313, "Invalid request. Request is malformed or invalid.")
        if secret is not None:
            if app["secret"] is None or not secrets.compare_digest(secret.encode("utf-8"),
                                                                     app["secret"].encode("utf-8")):
                _entra_error(401, "invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in the request is "
                             "the client secret value, not the client secret ID, for a secret added to app "
                             "'%s'." % app["client_id"])
        elif assertion is not None or assertion_type is not None:
            if not assertion_type:
                _entra_error(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_assertion_type'.")
            if assertion_type != JWT_BEARER:
                _entra_error(400, "invalid_request", 50027,
                             "Invalid client_assertion_type '%s'; expected '%s'." % (assertion_type, JWT_BEARER))
            if not assertion:
                _entra_error(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_assertion'.")
            if assertion in app["federated"]:
                pass  # workload identity: the projected service account token, compared verbatim
            elif app["certs"]:
                problem = self._check_assertion(assertion, app, client_id, tenant)
                if problem:
                    _entra_error(401, "invalid_client", 700027, "Client assertion failed validation: " + problem)
            elif app["federated"]:
                _entra_error(400, "invalid_request", 70021,
                             "No matching federated identity record found for presented assertion.")
            else:
                _entra_error(401, "invalid_client", 700027,
                             "Client assertion failed validation: no certificate is registered on application "
                             "'%s'." % app["client_id"])
        else:
            _entra_error(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: 'client_assertion' or "
                         "'client_secret'.")

        register = action not in ("no_access_token", "bad_expires_in")
        token, now, exp, expires_in = self._issue("entra", app["client_id"], resource, self.tenant,
                                                  app["object_id"], register)
        answer = {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                  "access_token": token}
        return self._mangle(answer, action, params)

    def _check_assertion(self, assertion, app, client_id, tenant):
        """Validate a certificate client assertion; return a problem description or None."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "the assertion is not a JWS compact serialization (header.payload.signature)."
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            return "the assertion is not valid base64url-encoded JSON."
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "the assertion header and payload must be JSON objects."
        alg = header.get("alg")
        if alg not in ("RS256", "PS256"):
            return "unsupported signing algorithm alg=%r; use PS256 or RS256." % (alg,)
        if header.get("typ") != "JWT":
            return "the header typ must be 'JWT', got %r." % (header.get("typ"),)

        cert = None
        if "x5t#S256" in header:
            wanted = str(header["x5t#S256"]).rstrip("=")
            cert = next((c for c in app["certs"] if c["x5t#S256"] == wanted), None)
            kind = "x5t#S256"
        elif "x5t" in header:
            wanted = str(header["x5t"]).rstrip("=")
            cert = next((c for c in app["certs"] if c["x5t"] == wanted), None)
            kind = "x5t"
        else:
            return "the header has neither x5t#S256 nor x5t (certificate thumbprint)."
        if cert is None:
            return ("the certificate with identifier used to sign the client assertion (%s %s) is not "
                    "registered on application '%s'." % (kind, wanted, app["client_id"]))

        signing_input = (parts[0] + "." + parts[1]).encode("ascii")
        if not _verify_signature(cert["public_key"], alg, signing_input, signature):
            return "client assertion contains an invalid signature (%s verification with the registered " \
                   "certificate %s failed)." % (alg, cert["x5t#S256"])

        now = time.time()
        expected = {self.token_url(tenant), self.token_url(self.tenant)}
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in expected for a in auds):
            return "the audience claim aud=%r does not match the token endpoint %r." % (aud, self.token_url(tenant))
        if claims.get("iss") != client_id:
            return "the issuer claim iss=%r must equal the client id %r." % (claims.get("iss"), client_id)
        if claims.get("sub") != client_id:
            return "the subject claim sub=%r must equal the client id %r." % (claims.get("sub"), client_id)
        if not isinstance(claims.get("jti"), str) or not claims.get("jti"):
            return "the jti claim is missing."
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            return "the nbf claim is missing or not a number."
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return "the exp claim is missing or not a number."
        if nbf > now + self.assertion_clock_skew:
            return "the assertion is not yet valid (nbf %d is in the future)." % nbf
        if exp <= now:
            return "the assertion has expired (exp %d, now %d)." % (exp, int(now))
        if exp - nbf > self.assertion_max_lifetime + self.assertion_lifetime_slack:
            return "the assertion lifetime exp - nbf = %d s exceeds %d s." % (exp - nbf, self.assertion_max_lifetime)
        return None


def _aadsts(code, message):
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    desc = "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
        code, message, trace_id, correlation_id, stamp)
    return desc, trace_id, correlation_id, stamp


def _entra_error(status, error, code, message):
    desc, trace_id, correlation_id, stamp = _aadsts(code, message)
    raise _Reply(status, {"error": error, "error_description": desc, "error_codes": [code],
                          "timestamp": stamp, "trace_id": trace_id, "correlation_id": correlation_id,
                          "error_uri": "https://login.microsoftonline.com/error?code=%d" % code},
                 {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def _load_certificate(pem):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    # Accept a PEM bundle holding the key too: pick the CERTIFICATE block.
    m = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    if not m:
        raise ValueError("certificate_pem holds no PEM certificate")
    cert = x509.load_pem_x509_certificate(m.group(0))
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"cert": cert, "public_key": cert.public_key(),
            "x5t#S256": _b64url(hashlib.sha256(der).digest()),
            "x5t": _b64url(hashlib.sha1(der).digest())}


def _verify_signature(public_key, alg, data, signature):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    if alg == "RS256":
        pad = padding.PKCS1v15()
    else:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size)
    try:
        public_key.verify(signature, data, pad, hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# PostgreSQL helpers

class _PgRoleSetter:
    """Sets a role's password to an issued token over one autocommit psycopg connection."""

    def __init__(self, dsn, role_for, log=None):
        self.dsn = dsn
        self.role_for = role_for
        self.log = log
        self.lock = threading.Lock()
        self.conn = None

    def __call__(self, client_id, token, expires_on):
        role = self.role_for(client_id)
        if role is None:
            return
        import psycopg
        from psycopg import sql
        until = datetime.datetime.fromtimestamp(int(expires_on), datetime.timezone.utc).isoformat()
        stmt = sql.SQL("ALTER ROLE {} PASSWORD {} VALID UNTIL {}").format(
            sql.Identifier(role), sql.Literal(token), sql.Literal(until))
        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = psycopg.connect(self.dsn, autocommit=True)
                    self.conn.execute(stmt)
                    break
                except psycopg.OperationalError:
                    if self.conn is not None:
                        self.conn.close()
                    self.conn = None
                    if attempt == 2:
                        raise
        if self.log is not None:
            self.log("role %s password set to token fp=%s valid until %s" % (role, token_fingerprint(token), until))

    def close(self):
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


def pg_role_syncer(dsn, role_by_client_id):
    """Return an on_issue callback that sets the mapped PostgreSQL role's password to each token.

    ALTER ROLE "role" PASSWORD 'token' VALID UNTIL 'expiry' over one autocommit connection, under a
    lock. Client ids not in role_by_client_id (compared case-insensitively) are ignored. The
    connecting user needs CREATEROLE or superuser. The callback has a close() method.
    """
    mapping = {k.lower(): v for k, v in role_by_client_id.items()}
    return _PgRoleSetter(dsn, lambda client_id: mapping.get(client_id.lower()))


# --------------------------------------------------------------------------------------------
# CLI

def _split_pair(text, what):
    key, sep, value = text.partition(":")
    if not sep or not key:
        raise argparse.ArgumentTypeError("%s must look like CLIENT_ID:VALUE" % what)
    return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fake Microsoft Entra ID / IMDS / App Service token service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tenant", default=DEFAULT_TENANT)
    parser.add_argument("--managed-identity", action="append", default=[], metavar="CLIENT_ID",
                        help="user-assigned managed identity (repeatable)")
    parser.add_argument("--system-assigned", metavar="CLIENT_ID", help="the system-assigned identity's client id")
    parser.add_argument("--app", action="append", default=[], metavar="CLIENT_ID:SECRET",
                        help="service principal with a client secret (repeatable)")
    parser.add_argument("--app-cert", action="append", default=[], metavar="CLIENT_ID:CERT_PEM_FILE",
                        help="service principal with a certificate credential (repeatable)")
    parser.add_argument("--federated", action="append", default=[], metavar="CLIENT_ID:TOKEN_FILE",
                        help="workload identity app accepting the token held in TOKEN_FILE (repeatable)")
    parser.add_argument("--lifetime", type=int, default=3600, help="token lifetime in seconds")
    parser.add_argument("--token-length", type=int, default=1500)
    parser.add_argument("--identity-header", help="fixed X-IDENTITY-HEADER secret (default: random)")
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN used to ALTER ROLE on every issued token")
    parser.add_argument("--pg-role", help="role whose password becomes each issued token")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    args = parser.parse_args(argv)
    if bool(args.pg_dsn) != bool(args.pg_role):
        parser.error("--pg-dsn and --pg-role go together")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    def log(line):
        sys.stderr.write("fake_azure: %s\n" % line)
        sys.stderr.flush()

    setter = _PgRoleSetter(args.pg_dsn, lambda cid: args.pg_role) if args.pg_dsn else None

    def on_issue(client_id, token, expires_on):
        log("issued token client_id=%s fp=%s expires_on=%d" % (client_id, token_fingerprint(token), expires_on))
        if setter is not None:
            setter(client_id, token, expires_on)
            log("role %s now accepts token fp=%s" % (args.pg_role, token_fingerprint(token)))

    fake = FakeAzure(tenant=args.tenant, on_issue=on_issue, host=args.host, port=args.port, tls_cert=args.tls_cert,
                     tls_key=args.tls_key)
    fake.token_lifetime = args.lifetime
    fake.token_length = args.token_length
    fake.verbose = args.verbose
    if args.identity_header:
        fake.identity_header = args.identity_header
    for cid in args.managed_identity:
        fake.add_managed_identity(cid)
    if args.system_assigned:
        fake.add_managed_identity(args.system_assigned, system_assigned=True)
    for item in args.app:
        cid, secret = _split_pair(item, "--app")
        fake.add_app(cid, secret=secret)
    for item in args.app_cert:
        cid, path = _split_pair(item, "--app-cert")
        with open(path, "rb") as f:
            fake.add_app(cid, certificate_pem=f.read())
    for item in args.federated:
        cid, path = _split_pair(item, "--federated")
        with open(path, "r", encoding="utf-8") as f:
            fake.add_app(cid, federated_token=f.read().strip())

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    fake.start()
    if not args.identity_header:  # a test secret, but only shown when the caller could not know it
        log("identity header for %s: X-IDENTITY-HEADER=%s" % (fake.identity_endpoint, fake.identity_header))
    sys.stdout.write("READY %s\n" % fake.url)
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    fake.stop()
    if setter is not None:
        setter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
