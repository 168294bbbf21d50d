#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Small, hand-made inputs that reach the interesting paths; the fuzzers mutate from there.
Run with Debian's python3:  /usr/bin/python3 tests/fuzz/make_corpus.py
The first byte of the stream targets' inputs is the control byte (see targets.hpp): 0 sends the
stream in one piece, other values cut it into pieces.
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def be32(v):
    return struct.pack(">I", v)


def be16(v):
    return struct.pack(">H", v)


def msg(t, body=b""):
    return t + be32(4 + len(body)) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup_packet(code, payload=b""):
    return be32(8 + len(payload)) + be32(code) + payload


def startup_params(*pairs, minor=0):
    payload = b"".join(cstr(k) + cstr(v) for k, v in pairs) + b"\0"
    return startup_packet((3 << 16) | minor, payload)


# --- startup -----------------------------------------------------------------------------------
startup = {
    "psql": b"\0" + startup_params(("user", "alice"), ("database", "app"), ("application_name", "psql"),
                                    ("client_encoding", "UTF8")),
    "jdbc_pieces": b"\x05" + startup_params(("user", "app"), ("database", "app"), ("DateStyle", "ISO"),
                                             ("extra_float_digits", "2")),
    "protocol_3_2_pq_options": b"\x0a" + startup_params(("user", "u"), ("_pq_.test", "1"), minor=2),
    "ssl_request": b"\0" + startup_packet(80877103),
    "gssenc_request": b"\x01" + startup_packet(80877104),
    "cancel_request": b"\x02" + startup_packet(80877102, be32(4242) + be32(0xDEADBEEF)),
    "ssl_then_startup": b"\x03" + startup_packet(80877103) + startup_params(("user", "bob")),
    "protocol_2": b"\0" + startup_packet(2 << 16, cstr("user") + cstr("x") + b"\0"),
    "too_long": b"\0" + be32(20000) + be32(3 << 16),
}

# --- frontend ----------------------------------------------------------------------------------
def parse(name, query, types=()):
    return msg(b"P", cstr(name) + cstr(query) + be16(len(types)) + b"".join(be32(t) for t in types))


def bind(portal, stmt, params=()):
    body = cstr(portal) + cstr(stmt) + be16(0) + be16(len(params))
    for p in params:
        body += be32(len(p)) + p
    return msg(b"B", body + be16(0))


describe_s = lambda n: msg(b"D", b"S" + cstr(n))
describe_p = lambda n: msg(b"D", b"P" + cstr(n))
execute = lambda p="": msg(b"E", cstr(p) + be32(0))
close_s = lambda n: msg(b"C", b"S" + cstr(n))
sync = msg(b"S")
query = lambda q: msg(b"Q", cstr(q))
flush = msg(b"H")
terminate = msg(b"X")

frontend = {
    # control 0x10: tracking on, one statement per server; 0x30: three.
    "extended_unnamed": b"\0" + parse("", "SELECT $1::int", (23,)) + bind("", "", [b"42"]) + describe_p("") +
                        execute() + sync,
    "prepared_named": b"\x30" + parse("s1", "SELECT 1") + bind("", "s1") + execute() + sync +
                      bind("", "s1") + execute() + sync + close_s("s1") + sync,
    "prepared_evict": b"\x11" + parse("a", "SELECT 1") + parse("b", "SELECT 2") + sync + bind("", "a") +
                      execute() + describe_s("b") + sync,
    "same_query_twice": b"\x35" + parse("x", "SELECT now()") + parse("y", "SELECT now()") + flush + sync,
    "simple_query": b"\x02" + query("BEGIN") + query("SELECT 1") + query("COMMIT") + terminate,
    "copy": b"\x04" + query("COPY t FROM STDIN") + msg(b"d", b"1\t2\n") + msg(b"c") + sync,
    "bad_length": b"\0" + b"Q" + be32(2),
    "max_packet_small": b"\x08" + msg(b"Q", b"x" * 9000),
}

# --- backend -----------------------------------------------------------------------------------
def auth(code, data=b""):
    return msg(b"R", be32(code) + data)


def error(fields):
    return msg(b"E", b"".join(k.encode() + cstr(v) for k, v in fields) + b"\0")


login_tail = (auth(0) + msg(b"S", cstr("server_version") + cstr("15.4")) +
              msg(b"S", cstr("client_encoding") + cstr("UTF8")) + msg(b"K", be32(1234) + be32(0x5eed)) +
              msg(b"Z", b"I"))
backend = {
    "sasl_login": b"\0" + auth(10, cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0") +
                  auth(11, b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096") +
                  auth(12, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") + login_tail,
    "md5_login": b"\x03" + auth(5, b"\x01\x02\x03\x04") + login_tail,
    "cleartext_login": b"\x01" + auth(3) + login_tail,
    "login_error": b"\0" + error([("S", "FATAL"), ("V", "FATAL"), ("C", "28P01"),
                                  ("M", 'password authentication failed for user "x"')]),
    "relay": b"\x0b" + msg(b"1") + msg(b"2") + msg(b"T", be16(1) + cstr("a") + be32(0) + be16(0) + be32(23) +
                                                       be16(4) + be32(0xffffffff) + be16(0)) +
             msg(b"D", be16(1) + be32(1) + b"1") + msg(b"C", cstr("SELECT 1")) + msg(b"Z", b"I") +
             msg(b"N", b"SNOTICE\0C00000\0Mhello\0\0") + msg(b"S", cstr("TimeZone") + cstr("UTC")) +
             msg(b"3") + msg(b"Z", b"T"),
    "big_row": b"\x18" + msg(b"D", be16(1) + be32(3000) + b"x" * 3000) + msg(b"C", cstr("DISCARD ALL")) +
               msg(b"Z", b"I"),
    "error_then_sync": b"\x10" + msg(b"1") + error([("S", "ERROR"), ("C", "42601"), ("M", "syntax error")]) +
                       msg(b"Z", b"E"),
}

# --- scram -------------------------------------------------------------------------------------
cf = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
scram = {
    # control bit 0: part 0 is wrapped into a SASLInitialResponse.
    "exchange": b"\x01" + b"\0".join([
        cf,
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawLc2VydmVybm9uY2U,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"r=cmFuZG9tbm9uY2U3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        b"rOprNGfwEbeRWgbNEkqO",
        b"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        b"HKPvlG0+Qo6BQkOyRaRXT6s1XtQaXdNwfCJYqakXUQo=",
        b"\x01\x02\x03\x04",
    ]),
    "raw_initial_response": b"\0" + cstr("SCRAM-SHA-256") + be32(len(cf)) + cf,
    "channel_binding": b"\x01" + b"p=tls-server-end-point,,n=,r=abc\0c=cD10bHM=,r=abc,p=AAAA",
    "server_error": b"\x01" + b"\0".join([b"n,,n=,r=x", b"", b"r=cmFuZG9tbm9uY2Uxyz,s=c2FsdA==,i=1", b"e=invalid-proof"]),
}

# --- config ------------------------------------------------------------------------------------
config = {
    "azure.conf": b"""# tokenbouncer in front of Azure Database for PostgreSQL
pg_host = myserver.postgres.database.azure.com
pg_port = 5432
pg_database = app
pg_user = my-managed-identity
pg_sslmode = verify-full
pg_azure_auth = on
pg_azure_client_id = 00000000-0000-0000-0000-000000000001
pg_pool_size = 20
pool_mode = transaction
max_prepared_statements = 100
listen_addr = 127.0.0.1, ::1
listen_port = 6432
server_idle_timeout = 10min
query_wait_timeout = 2.5s
azure_request_timeout = 500ms
log_level = info
""",
    "password.conf": b"""pg_host = db.internal
pg_user = app
pg_database = app
pg_password = abc\\#def   # "\\#" is a literal '#'
pg_sslmode = disable
auth_type = scram-sha-256
auth_file = /etc/tokenbouncer/users.txt
client_tls_sslmode = require
TOKENBOUNCER_PG_PORT=6543
pg_ro_host = replica.internal
ro_listen_port = 6432
unix_socket_mode = 0660
allowed_peer_uids = 0, 1000, x
nginx_worker_processes = auto
no equals sign here
 = value without key
pg_port = 5433
pg_port = 5434
""",
}

# --- token replies -----------------------------------------------------------------------------
imds = (b'{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJvc3NyZGJtcyJ9.c2ln",'
        b'"client_id":"00000000-0000-0000-0000-000000000001","expires_in":"86399",'
        b'"expires_on":"1700086399","ext_expires_in":"86399","not_before":"1699999700",'
        b'"resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"}')
entra = (b'{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"refresh_in":1799,'
         b'"access_token":"eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln"}')
app_service = b'{"access_token":"abc","expires_on":"1700003600","resource":"x","token_type":"Bearer"}'
entra_error = (b'{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\\r\\n'
               b'Trace ID: 0000\\r\\nCorrelation ID: 1111\\r\\nTimestamp: 2024-01-01 00:00:00Z",'
               b'"error_codes":[7000215],"timestamp":"2024-01-01 00:00:00Z"}')
imds_error = b'{"error":"invalid_request","error_description":"Identity not found"}'
token_reply = {
    "imds": imds,
    "entra": entra,
    "app_service": app_service,
    "entra_error": entra_error,
    "imds_error": imds_error,
    "not_json": b"<html><body>502 Bad Gateway</body></html>\r\n",
    "float_expiry": b'{"access_token":"t","expires_in":3599.5,"token_type":"bearer"}',
}

# --- http responses ----------------------------------------------------------------------------
def http(status, reason, headers, body, chunked=False):
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    for k, v in headers:
        head += k + b": " + v + b"\r\n"
    if chunked:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        out = b""
        for i in range(0, len(body), 100):
            part = body[i:i + 100]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        return head + out + b"0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


json_ct = (b"Content-Type", b"application/json; charset=utf-8")
http_response = {
    "imds_200": b"\0" + http(200, b"OK", [json_ct, (b"Server", b"IMDS/150.870.65.1325")], imds),
    "entra_chunked": b"\x05" + http(200, b"OK", [json_ct, (b"Cache-Control", b"no-store, no-cache")], entra,
                                    chunked=True),
    "entra_400": b"\x02" + http(400, b"Bad Request", [json_ct], entra_error),
    "imds_429": b"\x01" + http(429, b"Too Many Requests", [json_ct, (b"Retry-After", b"5")], imds_error),
    "until_close": b"\x03" + b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + app_service,
    "http_1_0": b"\0" + b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
}

# --- auth_file ---------------------------------------------------------------------------------
auth_file = {
    "scram": b'"kong" "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$J1AE6Bg1X6rrhvW6ZvOOqIEG+UHBTHYAymIaAX/DBaY=:'
             b'l3Hn6jWqD3IxdU6aOLTQ3JT2LbHgA6SRMtI0qfTpdVQ="\n',
    "clear_and_comments": b'; PgBouncer auth_file\n# a comment\n\n"ops" "clear-text password"\n'
                          b'  "we""ird" "pa""ss"\r\n',
    "md5_style": b'"legacy" "md5d3b07384d113edec49eaa6238ad5ff00"\n',
    "bad_line": b'"kong" "ok"\nkong password\n',
    "unterminated": b'"kong" "no end\n',
}

CORPORA = {
    "startup": startup,
    "frontend": frontend,
    "backend": backend,
    "scram": scram,
    "config": config,
    "token_reply": token_reply,
    "http_response": http_response,
    "auth_file": auth_file,
}


def main():
    for target, files in CORPORA.items():
        d = os.path.join(HERE, "corpus", target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
