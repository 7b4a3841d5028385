"""What an HTTP/2 client sends, checked before any handler sees it, and the
graceful end of an HTTP/2 connection.

A real skitaid server (cleartext HTTP/2 by prior knowledge) with WSGI apps and
a reverse-proxy mount in front of a backend that records every byte it
receives; clients speak raw frames (hpack + hyperframe) so that what goes on
the wire is exact, or the `h2` package, or curl. The two-step GOAWAY is
tested against a real daemon that is reloaded and stopped while a client
keeps opening streams.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

from conftest import ServerProc, free_port, wait_for
from helpers.framing_backend import FramingBackend, saw_request_line
from helpers.h2frames import PREFACE, split_frames
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM = 0x0, 0x1, 0x7
MAX_SID = 2 ** 31 - 1

APP = r'''
import json, os, time
import skitaid


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    out = {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
           "query": environ["QUERY_STRING"], "host": environ.get("HTTP_HOST"),
           "content_type": environ.get("CONTENT_TYPE"), "cookie": environ.get("HTTP_COOKIE"),
           "content_length": environ.get("CONTENT_LENGTH"),
           "body": body.decode("latin-1"),
           "trailers": [list(t) for t in environ.get("skitaid.request_trailers") or ()],
           "headers": sorted(k for k in environ if k.startswith("HTTP_"))}
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


BAD = {"nul": ("X-Evil", "a\x00b"), "cr": ("X-Evil", "a\rb"), "lf": ("X-Evil", "a\nb"),
       "euro": ("X-Evil", "\u20ac"), "name": ("X-\u20ac", "1"), "nulname": ("X\x00Y", "1"),
       "pseudo": (":status", "200"), "latin1": ("X-Latin", "caf\xe9")}


def bad(environ, start_response):
    kind, _, how = environ["QUERY_STRING"].partition("&")
    headers = [("Content-Type", "text/plain"), BAD[kind]]
    if how == "stream":
        start_response("200 OK", headers)

        def gen():
            yield b"partial"
            yield b" rest"
        return gen()
    start_response("200 OK", headers + [("Content-Length", "2")])
    return [b"ok"]


def hop(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "x-secret"),
                              ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                              ("Transfer-Encoding", "chunked"), ("Upgrade", "foo"),
                              ("TE", "trailers"), ("X-Fine", "yes")])
    return [b"hop"]


def sleep(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or "0.5"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("slept %s" % environ["PATH_INFO"]).encode()]


skitaid.alias("@b", "http", [os.environ["BACKEND"]])
skitaid.mount("/public", "@b/public")
skitaid.mount("/echo", echo)
skitaid.mount("/bad", bad)
skitaid.mount("/hop", hop)
skitaid.mount("/sleep", sleep)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=8,
            graceful_timeout=10, request_log=False,
            keep_alive=float(os.environ.get("KEEP_ALIVE", "10")))
'''


@pytest.fixture(scope="module")
def backend():
    r = FramingBackend(saw_request_line)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("h2in")
    (root / "app.py").write_text(APP)
    s = ServerProc([sys.executable, str(root / "app.py")], str(root),
                   env={"BACKEND": "127.0.0.1:%d" % backend.port})
    yield s
    s.stop()


# -- raw frames ----------------------------------------------------------------------------

class Raw:
    """An HTTP/2 client writing frames by hand: header blocks are encoded
    as given (bytes or str), nothing is validated on the way out."""

    def __init__(self, port, ack_pings=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.enc = Encoder()
        self.dec = Decoder()
        self.buf = b""
        self.frames = []
        self.closed = False
        self.ack_pings = ack_pings
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize()
                          + WindowUpdateFrame(0, window_increment=2 ** 30).serialize())

    def send(self, *frames):
        self.sock.sendall(b"".join(f.serialize() for f in frames))

    def headers(self, sid, fields, end=True):
        flags = ["END_HEADERS"] + (["END_STREAM"] if end else [])
        return HeadersFrame(sid, data=self.enc.encode(list(fields)), flags=flags)

    def request(self, sid, path="/echo/x", method="GET", authority="localhost",
                scheme="http", extra=(), end=True, body=None):
        fields = [(":method", method), (":scheme", scheme), (":authority", authority),
                  (":path", path)]
        fields = [(k, v) for k, v in fields if v is not None] + list(extra)
        frames = [self.headers(sid, fields, end and body is None)]
        if body is not None:
            frames.append(DataFrame(sid, data=body, flags=["END_STREAM"] if end else []))
        self.send(*frames)

    def read(self, until, timeout=5.0):
        """Read frames until `until(self)` is true, the server closes, or the timeout."""
        deadline = time.monotonic() + timeout
        while not until(self) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            frames, self.buf = split_frames(self.buf + data)
            for f in frames:
                if isinstance(f, HeadersFrame):
                    f.fields = self.dec.decode(f.data, raw=True)
                elif isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    self.send(SettingsFrame(0, flags=["ACK"]))
                elif isinstance(f, PingFrame) and "ACK" not in f.flags and self.ack_pings:
                    self.send(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]))
                self.frames.append(f)
        return self.frames

    def of(self, sid, kind):
        return [f for f in self.frames if f.stream_id == sid and isinstance(f, kind)]

    def ended(self, sid):
        return any("END_STREAM" in f.flags for f in self.frames
                   if f.stream_id == sid and isinstance(f, (DataFrame, HeadersFrame))) \
            or bool(self.of(sid, RstStreamFrame))

    def wait(self, *sids, timeout=5.0):
        self.read(lambda c: all(c.ended(s) for s in sids), timeout)

    def reset_code(self, sid):
        rst = self.of(sid, RstStreamFrame)
        return rst[0].error_code if rst else None

    def status(self, sid):
        for f in self.of(sid, HeadersFrame):
            for k, v in f.fields:
                if k == b":status":
                    return int(v)
        return None

    def head(self, sid):
        h = self.of(sid, HeadersFrame)
        return dict(h[0].fields) if h else {}

    def body(self, sid):
        return b"".join(f.data for f in self.of(sid, DataFrame))

    def goaways(self):
        return [f for f in self.frames if isinstance(f, GoAwayFrame)]

    def close(self):
        self.sock.close()


def served(conn, sid, status=200):
    conn.wait(sid)
    assert conn.reset_code(sid) is None and conn.status(sid) == status, conn.frames
    return conn.body(sid)


def still_serving(server):
    c = Raw(server.port)
    c.request(1, "/echo/again")
    assert json.loads(served(c, 1))["path"] == "/again"
    c.close()


# -- 1. pseudo-header fields (RFC 9113 8.3) ------------------------------------------------

BAD_PSEUDO = [
    # the report: the method carries a second request target
    {":method": "GET /secret", ":path": "/public/x"},
    {":method": "GET\t/secret", ":path": "/public/x"},
    {":method": "GE\x0bT", ":path": "/public/x"},
    {":method": "G\x01T", ":path": "/public/x"},
    {":method": b"G\xc9T", ":path": "/public/x"},
    {":method": "", ":path": "/public/x"},
    {":method": "GET", ":path": "/public/x /secret"},
    {":method": "GET", ":path": "/public/x\t/secret"},
    {":method": "GET", ":path": "/public/\x0bx"},
    {":method": "GET", ":path": "/public/\x01x"},
    {":method": "GET", ":path": "/public/\x7fx"},
    {":method": "GET", ":path": b"/public/\xe9"},
    {":method": "GET", ":path": "public/x"},
    {":method": "GET", ":path": "http://evil.example/public/x"},
    {":method": "GET", ":path": "*"},
    {":method": "GET", ":path": "/public/x", ":scheme": "ht tp"},
    {":method": "GET", ":path": "/public/x", ":scheme": "1http"},
    {":method": "GET", ":path": "/public/x", ":authority": "evil.example/x"},
    {":method": "GET", ":path": "/public/x", ":authority": "a b"},
    {":method": "GET", ":path": "/public/x", ":authority": "user@localhost"},
    {":method": "GET", ":path": "/public/x", ":authority": ""},
    {":method": "GET", ":path": "/public/x", ":authority": "localhost:80x"},
    {":method": "CONNECT", ":path": None, ":scheme": None, ":authority": "exa mple:443"},
    {":method": "CONNECT", ":path": None, ":scheme": None, ":authority": "example.com"},
]


def _pseudo(case):
    fields = {":method": "GET", ":scheme": "http", ":authority": "localhost", ":path": "/"}
    fields.update(case)
    return [(k, v) for k, v in fields.items() if v is not None]


@pytest.mark.parametrize("case", BAD_PSEUDO, ids=[repr(c) for c in BAD_PSEUDO])
def test_bad_pseudo_header_resets_the_stream_and_reaches_no_one(server, backend, case):
    before = backend.all_bytes()
    c = Raw(server.port)
    c.send(c.headers(1, _pseudo(case)))
    c.wait(1)
    assert c.reset_code(1) == PROTOCOL_ERROR, c.frames
    assert c.status(1) is None
    # the same connection goes on: a good stream after the bad one
    c.request(3, "/public/ok")
    assert served(c, 3) == b"saw GET /public/ok HTTP/1.1 body=0"
    assert not c.goaways()
    c.close()
    sent = backend.all_bytes()[len(before):]
    assert b"secret" not in sent and sent.count(b" HTTP/1.1\r\n") == 1, sent


def test_bad_pseudo_header_never_reaches_an_app(server):
    """Every handler, not only the proxy: the WSGI app is never called."""
    c = Raw(server.port)
    c.send(c.headers(1, _pseudo({":method": "GET /secret", ":path": "/echo/x"})),
           c.headers(3, _pseudo({":path": "/echo/a b"})))
    c.wait(1, 3)
    assert c.reset_code(1) == PROTOCOL_ERROR and c.reset_code(3) == PROTOCOL_ERROR
    assert not c.of(1, DataFrame) and not c.of(3, DataFrame)
    c.close()


GOOD_PSEUDO = [
    ({":method": "GET", ":path": "/echo/a%20b?q=%22x%22&y=|{}"}, "GET", "/a b"),
    ({":method": "PROPFIND", ":path": "/echo/p"}, "PROPFIND", "/p"),
    ({":method": "M-SEARCH", ":path": "/echo/m"}, "M-SEARCH", "/m"),
    ({":method": "GET", ":path": "/echo/h", ":authority": "[::1]:8080"}, "GET", "/h"),
    ({":method": "GET", ":path": "/echo/h", ":authority": "localhost:80"}, "GET", "/h"),
    ({":method": "GET", ":path": "/echo/h", ":scheme": "https"}, "GET", "/h"),
]


@pytest.mark.parametrize("case,method,path", GOOD_PSEUDO, ids=[repr(c[0]) for c in GOOD_PSEUDO])
def test_valid_pseudo_headers_are_served(server, case, method, path):
    c = Raw(server.port)
    c.send(c.headers(1, _pseudo(case)))
    got = json.loads(served(c, 1))
    assert got["method"] == method and got["path"].encode("latin-1") == path.encode()
    c.close()


def test_options_star_and_connect_are_answered_not_reset(server):
    c = Raw(server.port)
    c.send(c.headers(1, _pseudo({":method": "OPTIONS", ":path": "*"})),
           c.headers(3, [(":method", "CONNECT"), (":authority", "example.com:443")]))
    c.wait(1, 3)
    assert c.reset_code(1) is None and c.status(1) is not None
    assert c.reset_code(3) is None and c.status(3) == 405
    c.close()


def test_extended_connect_is_refused_as_malformed(server):
    """No SETTINGS_ENABLE_CONNECT_PROTOCOL from us: :protocol is malformed."""
    c = Raw(server.port)
    c.send(c.headers(1, _pseudo({":method": "CONNECT", ":path": "/echo/ws"})
                     + [(":protocol", "websocket")]))
    c.wait(1)
    assert c.reset_code(1) == PROTOCOL_ERROR or \
        (c.goaways() and c.goaways()[0].error_code == PROTOCOL_ERROR), c.frames
    c.close()


# -- 1b. ordinary fields -----------------------------------------------------------------

@pytest.mark.parametrize("field", [
    ("x-evil", "a\x00b"), ("x-evil", "a\rb"), ("x-evil", "a\nb"),
    ("x-evil", "a\r\nHost: evil"), ("X-Upper", "1"), ("x(evil)", "1"), ("x evil", "1"),
    ("x-evil\x00", "1"), ("connection", "close"), ("transfer-encoding", "chunked"),
    ("te", "gzip"), ("host", "evil.example/x"),
])
def test_bad_request_field_is_refused(server, backend, field):
    """NUL, CR or LF in a value, a name that is not a token or not lower case,
    a connection-specific field: the request never reaches a handler (a
    stream or connection error), and the server goes on."""
    before = backend.all_bytes()
    c = Raw(server.port)
    if field[0] == "host":
        c.request(1, "/public/f", authority=None, extra=[field])
    else:
        c.request(1, "/public/f", extra=[field])
    sid = 1
    c.wait(sid)
    g = c.goaways()
    assert c.status(sid) in (None, 400), c.frames
    if c.status(sid) is None:
        assert c.reset_code(sid) == PROTOCOL_ERROR or (g and g[0].error_code == PROTOCOL_ERROR)
    c.close()
    assert backend.all_bytes()[len(before):] == b""
    still_serving(server)


def test_cookie_crumbs_become_one_field(server, backend):
    """RFC 9113 8.2.3: several cookie fields are one "; "-joined field for
    anything that is not HTTP/2 (an app, an HTTP/1.1 backend)."""
    before = len(backend.requests)
    c = Raw(server.port)
    c.request(1, "/echo/c", extra=[("cookie", "a=1"), ("cookie", "b=2")])
    c.request(3, "/public/c", extra=[("cookie", "a=1"), ("cookie", "b=2")])
    assert json.loads(served(c, 1))["cookie"] == "a=1; b=2"
    served(c, 3)
    c.close()
    fields = backend.requests[before][2]
    assert [v for k, v in fields if k == b"cookie"] == [b"a=1; b=2"]


# -- 2. bodies without content-length, and content-length that lies ----------------------

def test_body_without_content_length_reaches_the_backend_chunked(server, backend):
    before = len(backend.requests)
    c = Raw(server.port)
    c.request(1, "/public/up", "PUT", end=False)
    c.send(DataFrame(1, data=b"hello "), DataFrame(1, data=b"world", flags=["END_STREAM"]))
    assert served(c, 1) == b"saw PUT /public/up HTTP/1.1 body=11"
    c.close()
    head, body, fields = backend.requests[before]
    assert body == b"hello world"
    assert (b"transfer-encoding", b"chunked") in fields
    assert not any(k == b"content-length" for k, _ in fields)


def test_curl_upload_from_stdin_over_h2_reaches_the_backend(server, backend):
    """The report: `curl --http2-prior-knowledge -T - URL` sends no content-length."""
    before = len(backend.requests)
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-T", "-",
                          server.url + "/public/up"], input=b"x" * 70000,
                         capture_output=True, timeout=20)
    assert out.stdout == b"saw PUT /public/up HTTP/1.1 body=70000", out
    assert backend.requests[before][1] == b"x" * 70000


def test_body_without_content_length_reaches_a_wsgi_app(server):
    c = Raw(server.port)
    c.request(1, "/echo/up", "POST", end=False)
    c.send(DataFrame(1, data=b"abc"), DataFrame(1, data=b"", flags=["END_STREAM"]))
    got = json.loads(served(c, 1))
    assert got["body"] == "abc" and got["content_length"] in (None, "")
    c.close()


@pytest.mark.parametrize("declared,sent,trailers", [
    (10, b"hello", False), (3, b"hello", False), (10, b"hello", True), (5, b"", False)])
def test_content_length_that_disagrees_with_data_is_a_stream_error(server, backend,
                                                                   declared, sent, trailers):
    before = len(backend.requests)
    c = Raw(server.port)
    c.request(1, "/sleep/x?0.3")       # in flight on the same connection all along
    extra = [("content-length", str(declared))]
    if not sent and not trailers:
        # content-length with END_STREAM on the HEADERS
        c.request(3, "/public/cl", "POST", extra=extra)
    else:
        c.request(3, "/public/cl", "POST", extra=extra, end=False)
        frames = [DataFrame(3, data=sent, flags=[] if trailers else ["END_STREAM"])]
        if trailers:
            frames.append(c.headers(3, [("x-t", "1")], end=True))
        c.send(*frames)
    c.wait(1, 3)
    assert c.reset_code(3) == PROTOCOL_ERROR, c.frames
    assert not c.goaways()
    assert served(c, 1) == b"slept /x"
    # a good one after it: by its answer, anything of the bad one would be there too
    c.request(5, "/public/after")
    assert served(c, 5) == b"saw GET /public/after HTTP/1.1 body=0"
    c.close()
    assert [r[0].split(b"\r\n")[0] for r in backend.requests[before:]] == \
        [b"GET /public/after HTTP/1.1"]


# -- 3. request trailers ------------------------------------------------------------------

def test_request_trailers_never_become_headers(server, backend):
    before = backend.all_bytes()
    c = Raw(server.port)
    for sid, path in ((1, "/echo/t"), (3, "/public/t")):
        c.request(sid, path, "POST", extra=[("content-type", "text/plain")], end=False)
        c.send(DataFrame(sid, data=b"hello"),
               c.headers(sid, [("host", "evil.example"), ("x-injected-trailer", "evil"),
                               ("content-type", "text/evil"), ("content-length", "999"),
                               ("authorization", "Bearer evil"), ("x-checksum", "abc")]))
    got = json.loads(served(c, 1))
    assert got["host"] == "localhost" and got["content_type"] == "text/plain"
    assert got["body"] == "hello"
    assert got["trailers"] == [["x-injected-trailer", "evil"], ["x-checksum", "abc"]]
    assert "HTTP_X_INJECTED_TRAILER" not in got["headers"]
    assert "HTTP_AUTHORIZATION" not in got["headers"]
    assert served(c, 3) == b"saw POST /public/t HTTP/1.1 body=5"
    c.close()
    sent = backend.all_bytes()[len(before):]
    assert b"evil" not in sent, sent


def test_h2_package_trailers_and_bodyless_requests(server):
    """The `h2` package as a client: trailers after a body reach the app."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    base = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost")]
    conn.send_headers(1, base + [(":path", "/echo/a")])
    conn.send_data(1, b"x" * 100)
    conn.send_headers(1, [("x-sum", "42")], end_stream=True)
    conn.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                          (":path", "/echo/b")], end_stream=True)
    sock.sendall(conn.data_to_send())
    bodies = {1: b"", 3: b""}
    ended = set()
    deadline = time.monotonic() + 5
    while ended != {1, 3} and time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert json.loads(bodies[1])["trailers"] == [["x-sum", "42"]]
    assert json.loads(bodies[3])["trailers"] == []


# -- 4. response fields the server may not send ----------------------------------------------

@pytest.mark.parametrize("kind", ["nul", "cr", "lf", "euro", "name", "nulname", "pseudo"])
@pytest.mark.parametrize("how", ["", "stream"])
def test_unsendable_response_field_gives_500(server, kind, how):
    c = Raw(server.port)
    c.request(1, "/bad/x?%s&%s" % (kind, how))
    c.request(3, "/echo/next")
    c.wait(1, 3)
    assert c.reset_code(1) is None and c.status(1) == 500, c.frames
    assert all(not k.startswith(b"x-evil") and not k.startswith(b"x-\xe2")
               for k in c.head(1)), c.head(1)
    assert b"partial" not in c.body(1)
    assert json.loads(served(c, 3))["path"] == "/next"
    assert not c.goaways()
    c.close()


def test_latin1_response_value_goes_out_as_over_http11(server):
    """One byte per character, as HTTP/1.1 writes it (not UTF-8)."""
    c = Raw(server.port)
    c.request(1, "/bad/x?latin1")
    c.wait(1)
    assert c.status(1) == 200 and c.head(1)[b"x-latin"] == b"caf\xe9"
    c.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /bad/x?latin1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b"\r\nX-Latin: caf\xe9\r\n" in data, data
    # and a value that latin-1 cannot hold is a 500 over both
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /bad/x?euro HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 500 ")


def test_connection_specific_response_fields_are_not_sent(server):
    c = Raw(server.port)
    c.request(1, "/hop/x")
    assert served(c, 1) == b"hop"
    names = set(c.head(1))
    assert b"x-fine" in names
    for name in (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                 b"upgrade", b"te"):
        assert name not in names, names
    c.close()


# -- 5. graceful stop: two GOAWAYs (RFC 9113 6.8) ------------------------------------------

def test_two_step_goaway_serves_streams_sent_in_the_round_trip(tmp_path, backend):
    (tmp_path / "app.py").write_text(APP)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path),
                   env={"BACKEND": "127.0.0.1:%d" % backend.port})
    try:
        c = Raw(s.port, ack_pings=False)
        c.request(1, "/echo/first")
        served(c, 1)                    # (the worker has the connection)
        c.request(3, "/sleep/a?0.6")
        s.proc.send_signal(signal.SIGTERM)
        c.read(lambda c: c.goaways() and any(isinstance(f, PingFrame) for f in c.frames))
        first = c.goaways()[0]
        assert first.last_stream_id == MAX_SID and first.error_code == NO_ERROR, c.frames
        ping = next(f for f in c.frames if isinstance(f, PingFrame))
        # streams the client sent before it read the GOAWAY: still taken
        c.request(5, "/echo/b")
        c.request(7, "/sleep/c?0.1")
        c.send(PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]))
        c.read(lambda c: len(c.goaways()) > 1)
        final = c.goaways()[1]
        assert final.last_stream_id == 7 and final.error_code == NO_ERROR
        # one after the last GOAWAY is not taken
        c.request(9, "/echo/late")
        c.wait(3, 5, 7, 9)
        assert c.body(3) == b"slept /a" and json.loads(c.body(5))["path"] == "/b"
        assert c.body(7) == b"slept /c"
        assert c.reset_code(9) in (REFUSED_STREAM, None) and not c.of(9, DataFrame)
        # and the server closes once they are done
        c.read(lambda c: False, timeout=5)
        assert c.closed
        c.close()
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


def test_two_step_goaway_without_ping_ack_still_ends(tmp_path, backend):
    (tmp_path / "app.py").write_text(APP)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path),
                   env={"BACKEND": "127.0.0.1:%d" % backend.port})
    try:
        c = Raw(s.port, ack_pings=False)
        c.request(1, "/echo/a")
        served(c, 1)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        c.read(lambda c: len(c.goaways()) > 1, timeout=5)
        assert [g.last_stream_id for g in c.goaways()] == [MAX_SID, 1]
        assert time.monotonic() - t0 < 3
        c.read(lambda c: False, timeout=5)
        assert c.closed
        c.close()
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


def test_idle_close_takes_the_same_two_steps(tmp_path, backend):
    """keep_alive ends an idle connection; a request already on its way is served."""
    (tmp_path / "app.py").write_text(APP)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path),
                   env={"BACKEND": "127.0.0.1:%d" % backend.port, "KEEP_ALIVE": "1"})
    try:
        c = Raw(s.port, ack_pings=False)
        c.request(1, "/echo/a")
        served(c, 1)
        c.read(lambda c: any(isinstance(f, PingFrame) for f in c.frames), timeout=5)
        assert [g.last_stream_id for g in c.goaways()] == [MAX_SID]
        c.request(3, "/echo/b")
        ping = next(f for f in c.frames if isinstance(f, PingFrame))
        c.send(PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]))
        c.read(lambda c: len(c.goaways()) > 1)
        assert [g.last_stream_id for g in c.goaways()] == [MAX_SID, 3]
        assert json.loads(served(c, 3))["path"] == "/b"
        c.read(lambda c: False, timeout=5)
        assert c.closed
        c.close()
    finally:
        s.stop()


# -- a client that keeps its streams in flight while the daemon reloads or stops -----------

DAEMON_APP = """
import os
def app(environ, start_response):
    body = ("%d" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


class Busy:
    """Keeps `depth` streams in flight on one connection at a time, like a
    browser or gRPC client: on a GOAWAY it opens no new stream there, waits
    for the streams the GOAWAY covers and moves to a new connection."""

    def __init__(self, port, depth=10):
        self.port = port
        self.depth = depth
        self.stop = threading.Event()
        self.ok = 0
        self.connections = 0
        self.pids = set()
        self.failures = []          # streams sent before the final GOAWAY that were lost
        self.refused = 0            # streams above the final GOAWAY's last id (sent after it)
        self.goaways = []           # per connection: the (last id, code) of each GOAWAY
        self.reconnect = True       # cleared before a stop: no new connection after it
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set() and (self.reconnect or not self.connections):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                if self.stop.wait(0.05):
                    return
                continue
            self.connections += 1
            try:
                self._one(sock)
            except Exception as e:      # noqa: BLE001 (any breakage is a finding)
                self.failures.append("connection: %r" % e)
            finally:
                sock.close()

    def _one(self, sock):
        enc, dec = Encoder(), Decoder()
        sock.sendall(PREFACE + SettingsFrame(0).serialize()
                     + WindowUpdateFrame(0, window_increment=2 ** 30).serialize())
        pending = {}        # sid -> [status, body, sent after the final GOAWAY]
        next_sid = 1
        final = None        # last id of a GOAWAY other than 2^31-1
        goaway = False
        goaways = []
        self.goaways.append(goaways)
        buf = b""
        while True:
            if not goaway and not self.stop.is_set():
                out = b""
                while len(pending) < self.depth:
                    out += HeadersFrame(next_sid, data=enc.encode(
                        [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                         (":path", "/s%d" % next_sid)]),
                        flags=["END_HEADERS", "END_STREAM"]).serialize()
                    pending[next_sid] = [None, b"", final is not None]
                    next_sid += 2
                if out:
                    sock.sendall(out)
            if (goaway or self.stop.is_set()) and not any(
                    sid <= (final if final is not None else MAX_SID) for sid in pending):
                return
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, socket.timeout) as e:
                data = b""
                err = e
            else:
                err = None
            if not data:
                for sid, (status, body, late) in pending.items():
                    if final is not None and sid > final:
                        self.refused += 1
                    else:
                        self.failures.append("stream %d lost at close (%r, GOAWAY %r)"
                                             % (sid, err, final))
                return
            frames, buf = split_frames(buf + data)
            for f in frames:
                sid = f.stream_id
                if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                    sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
                elif isinstance(f, PingFrame) and "ACK" not in f.flags:
                    sock.sendall(PingFrame(0, opaque_data=f.opaque_data,
                                           flags=["ACK"]).serialize())
                elif isinstance(f, GoAwayFrame):
                    goaway = True
                    goaways.append((f.last_stream_id, f.error_code))
                    if f.error_code != NO_ERROR:
                        self.failures.append("GOAWAY error %d" % f.error_code)
                    if f.last_stream_id != MAX_SID:
                        final = f.last_stream_id
                        for s in [s for s in pending if s > final]:
                            del pending[s]
                            self.refused += 1
                elif sid in pending:
                    entry = pending[sid]
                    if isinstance(f, HeadersFrame):
                        entry[0] = dict(dec.decode(f.data)).get(":status")
                    elif isinstance(f, DataFrame):
                        entry[1] += f.data
                    elif isinstance(f, RstStreamFrame):
                        del pending[sid]
                        if f.error_code == REFUSED_STREAM and final is not None and sid > final:
                            self.refused += 1
                        else:
                            self.failures.append("stream %d reset %d (GOAWAY %r)"
                                                 % (sid, f.error_code, final))
                        continue
                    if "END_STREAM" in f.flags:
                        del pending[sid]
                        if entry[0] == "200":
                            self.ok += 1
                            self.pids.add(entry[1])
                        else:
                            self.failures.append("stream %d status %r" % (sid, entry[0]))

    def finish(self):
        self.stop.set()
        self.thread.join(20)


def _daemon_site(root, port):
    (root / "app.py").write_text(textwrap.dedent(DAEMON_APP))
    (root / "skitaid.conf").write_text(textwrap.dedent("""
        [global]
        run_path = %s/run
        log_path = %s/log
        pidfile = %s/run/skitaid.pid
        """ % (root, root, root)))
    (root / "servers-enabled").mkdir()
    (root / "servers-enabled" / "web.conf").write_text(
        "[server]\nip = 127.0.0.1\nport = %d\nprocesses = 1\nthreads = 4\n"
        "graceful_timeout = 5\n[routes:line]\n/ = %s:app\n" % (port, root / "app.py"))


def test_reload_and_stop_refuse_no_stream_in_flight(tmp_path):
    port = free_port()
    _daemon_site(tmp_path, port)
    m = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", str(tmp_path)],
                   str(tmp_path), port=port)
    busy = None
    try:
        busy = Busy(port)
        assert wait_for(lambda: busy.ok > 200, 10), busy.failures
        for n in range(2):
            pids = len(busy.pids)
            os.kill(m.proc.pid, signal.SIGHUP)
            # served by the new generation, on a new connection
            assert wait_for(lambda: len(busy.pids) > pids and busy.connections > n + 1, 20), \
                (busy.failures, busy.goaways)
            before = busy.ok
            assert wait_for(lambda: busy.ok > before + 100, 10)
        busy.reconnect = False
        m.proc.send_signal(signal.SIGTERM)
        busy.thread.join(20)
        assert not busy.thread.is_alive()
        assert m.proc.wait(20) == 0
    finally:
        if busy is not None:
            busy.finish()
        m.stop()
    assert busy.failures == [], (busy.failures[:10], busy.goaways)
    assert busy.refused == 0, (busy.refused, busy.goaways)
    # every retirement (two reloads, one stop) began with a GOAWAY that took
    # every stream; the client may close before the second one comes
    ended = [g for g in busy.goaways if g]
    assert len(ended) >= 3 and all(g[0] == (MAX_SID, NO_ERROR) for g in ended), busy.goaways
