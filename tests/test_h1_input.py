"""HTTP/1.x input handling: raw requests an outside probe sent, against real servers.

Each test sends the exact bytes of a reported case over a raw socket (`Conn`
from tests/helpers/http1.py) to a real skitaid server, and where the reverse proxy is
involved, through a real proxy to `FramingBackend` (tests/helpers), a raw
backend that keeps every byte it receives (so framing can be checked byte for byte).
"""
import http.client
import json
import select
import threading
import time

import pytest

from conftest import wait_for
from helpers.framing_backend import FramingBackend, echo_body
from helpers.http1 import Conn, get

APP = r'''
import json, os, threading
import skitaid

SEEN = []
LOCK = threading.Lock()

def app(environ, start_response):
    path = environ["PATH_INFO"]
    with LOCK:
        SEEN.append(path)
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, World!"]
    if path == "/seen":
        with LOCK:
            body = json.dumps(SEEN).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/nul":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Evil", "a\x00b")])
        return [b"evil"]
    if path == "/nulname":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-E\x00vil", "x")])
        return [b"evil"]
    if path == "/nulstream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Evil", "a\x00b")])
        return iter([b"evil", b"stream"])
    if path == "/nulstatus":
        start_response("200 O\x00K", [("Content-Type", "text/plain")])
        return [b"evil"]
    if path == "/badlength":       # used for HEAD, where the app's Content-Length is sent
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", "4\r\nX-Evil: 1")])
        return [b"evil"]
    if path == "/slow-ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fast"]
    body = environ["wsgi.input"].read()
    info = {k: environ.get(k) for k in ("HTTP_HOST", "CONTENT_TYPE", "CONTENT_LENGTH",
                                         "HTTP_X_INJECTED_TRAILER", "HTTP_X_PADDED",
                                         "HTTP_TRANSFER_ENCODING", "HTTP_UPGRADE")}
    info["path"] = path
    info["body"] = body.decode("latin-1")
    info["trailers"] = [list(t) for t in environ.get("skitaid.request_trailers", "missing")]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(info).encode()]

skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), request_log=False, %(options)s)
'''

PROXY = r'''
import os
import skitaid
skitaid.alias("@backend", "http", ["127.0.0.1:" + os.environ["BACKEND_PORT"]])
skitaid.mount("/p", "@backend")
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=2,
            backend_timeout=5, request_log=False)
'''


def app_script(**options):
    opts = dict(keep_alive=5, request_timeout=5)
    opts.update(options)
    return APP.replace("%(options)s", ", ".join("%s=%r" % kv for kv in opts.items()))


@pytest.fixture
def server(serve):
    return serve(app_script())


def seen(port):
    with Conn(port) as c:
        c.send(get("/seen"))
        return json.loads(c.response().body)


def assert_server_ok(port):
    with Conn(port) as c:
        c.send(get("/"))
        assert c.response().body == b"Hello, World!"


@pytest.fixture
def backend():
    b = FramingBackend(echo_body, timeout=10)
    yield b
    b.close()


@pytest.fixture
def proxy(serve, backend):
    return serve(PROXY, env={"BACKEND_PORT": str(backend.port)}, filename="proxy.py")


def head_fields(head):
    """[(lower-case name, value)] of a recorded request head (bytes)."""
    out = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
    return out


# -- 4. chunked trailers are never request headers ---------------------------------------------

TRAILER_REQUEST = (b"POST /t HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nHost: evil.example\r\nX-Injected-Trailer: evil\r\n"
                   b"Content-Type: text/evil\r\n\r\n")


def test_trailers_in_the_same_write_never_become_headers(server):
    with Conn(server.port) as c:
        c.send(TRAILER_REQUEST)
        info = json.loads(c.response().body)
    assert info["HTTP_HOST"] == "example.com"
    assert info["CONTENT_TYPE"] is None and info["HTTP_X_INJECTED_TRAILER"] is None
    assert info["body"] == "hello"
    # Host and Content-Type may not stand in a trailer (RFC 9110 6.5.1): dropped
    assert info["trailers"] == [["x-injected-trailer", "evil"]]


def test_trailers_arriving_after_the_app_started_are_in_request_trailers(server):
    head, _, rest = TRAILER_REQUEST.partition(b"0\r\n")
    with Conn(server.port) as c:
        c.send(head)
        time.sleep(0.3)            # the app thread may already be reading the body
        c.send(b"0\r\n" + rest)
        info = json.loads(c.response().body)
        assert info["HTTP_HOST"] == "example.com" and info["CONTENT_TYPE"] is None
        assert info["trailers"] == [["x-injected-trailer", "evil"]]
        c.send(get("/t2", extra=b"Content-Length: 0\r\n"))    # the next request: no leftovers
        info = json.loads(c.response().body)
        assert info["HTTP_HOST"] == "t" and info["trailers"] == []


def test_trailers_count_against_the_header_limits(serve):
    srv = serve(app_script(max_headers=20))
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(25))
    with Conn(srv.port) as c:
        c.send(b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nhi\r\n0\r\n" + trailers + b"\r\n")
        r = c.response()
        assert r.status == 431 and r.header("connection") == "close"
        assert c.eof()
    assert_server_ok(srv.port)


def test_requests_without_trailers_get_an_empty_list(server):
    with Conn(server.port) as c:
        c.send(b"POST /t HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert json.loads(c.response().body)["trailers"] == []


def test_trailers_never_reach_the_backend_as_headers(proxy, backend):
    with Conn(proxy.port) as c:
        c.send(TRAILER_REQUEST.replace(b"POST /t", b"POST /p/t"))
        r = c.response()
        assert (r.status, r.body) == (200, b"hello")
    assert len(backend.requests) == 1
    head, body, _ = backend.requests[0]
    fields = head_fields(head)
    assert body == b"hello"
    names = [n for n, _ in fields]
    assert "x-injected-trailer" not in names and "content-type" not in names
    assert not any("evil" in v for _, v in fields), fields
    assert b"evil" not in backend.all_bytes()


# -- 5. HTTP/1.0 with Transfer-Encoding: answered once, then closed ------------------------------

HTTP10_TE = (b"POST /p1 HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n")


def test_http10_with_transfer_encoding_is_answered_once_then_closed(server):
    with Conn(server.port) as c:
        c.send(HTTP10_TE)
        r = c.response()
        assert r.status == 200 and json.loads(r.body)["path"] == "/p1"
        assert r.header("connection") == "close"
        assert c.eof()
    assert "/SMUGGLED" not in seen(server.port)


def test_http10_with_transfer_encoding_through_the_proxy(proxy, backend):
    with Conn(proxy.port) as c:
        c.send(HTTP10_TE.replace(b"POST /p1", b"POST /p/p1").replace(b"GET /SMUGGLED",
                                                                      b"GET /p/SMUGGLED"))
        r = c.response()
        assert r.status == 200 and r.header("connection") == "close"
        assert c.eof()
    assert len(backend.requests) == 1
    assert b"SMUGGLED" not in backend.all_bytes()


# -- 6. an Upgrade the server does not take is an ordinary request with its body ----------------

UPGRADE_CL = (b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
              b"Content-Length: 11\r\n\r\nhello world")
UPGRADE_CHUNKED = (b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n"
                   b"X-Sum: 1\r\n\r\n")


def test_upgrade_request_with_a_body_gets_its_body(server):
    with Conn(server.port) as c:
        c.send(UPGRADE_CL)
        r = c.response()
        info = json.loads(r.body)
        assert (info["CONTENT_LENGTH"], info["body"]) == ("11", "hello world")
        # the Upgrade was not taken; what follows the body is not read
        assert r.header("connection") == "close"
        assert c.eof()


def test_upgrade_request_with_a_chunked_body_gets_its_body_and_trailers(server):
    with Conn(server.port) as c:
        c.send(UPGRADE_CHUNKED + get("/after"))
        r = c.response()
        info = json.loads(r.body)
        assert info["body"] == "hello world" and info["trailers"] == [["x-sum", "1"]]
        assert r.header("connection") == "close"
        assert c.eof()
    assert "/after" not in seen(server.port)


def test_h2c_upgrade_with_a_chunked_body_is_an_ordinary_request(server):
    # h2c cannot take a body of unknown length (RFC 9113 3.2 leaves it to
    # HTTP/1.1): answered in HTTP/1.1, with the body
    with Conn(server.port) as c:
        c.send(b"POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        r = c.response()
        assert r.version == "1.1" and json.loads(r.body)["body"] == "hello"


def test_upgrade_request_with_a_body_sent_in_pieces(server):
    with Conn(server.port) as c:
        for i in range(0, len(UPGRADE_CL), 9):
            c.send(UPGRADE_CL[i:i + 9])
            time.sleep(0.01)
        assert json.loads(c.response().body)["body"] == "hello world"


def test_upgrade_request_with_a_body_through_the_proxy(proxy, backend):
    for raw, framing in ((UPGRADE_CL, ("content-length", "11")),
                         (UPGRADE_CHUNKED, ("transfer-encoding", "chunked"))):
        with Conn(proxy.port, timeout=4) as c:
            t0 = time.monotonic()
            c.send(raw.replace(b"POST /up", b"POST /p/up"))
            r = c.response()
            assert (r.status, r.body) == (200, b"hello world")
            assert time.monotonic() - t0 < 3
        head, body, _ = backend.requests[-1]
        assert body == b"hello world"
        fields = head_fields(head)
        assert framing in fields, fields
        assert ("upgrade", "foo") not in fields


# -- 7. slow request bodies cannot hold the app threads -----------------------------------------

SLOW = dict(threads=4, request_timeout=1, min_body_rate=200)


class Trickler:
    """Clients that send a head, then one body byte every `pace` seconds
    (in a thread) until the server answers them."""

    def __init__(self, port, head, n=4, pace=0.2, conns=None):
        if conns is None:
            conns = [Conn(port) for _ in range(n)]
            for c in conns:
                c.send(head)
        self.conns = conns
        self.answered = {}        # conn index → seconds from the head to the answer
        self.t0 = time.monotonic()
        self.pace = pace
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop and len(self.answered) < len(self.conns):
            for i, c in enumerate(self.conns):
                if i in self.answered:
                    continue
                if select.select([c.sock], [], [], 0)[0]:
                    self.answered[i] = time.monotonic() - self.t0
                    continue
                try:
                    c.send(b"x")
                except OSError:
                    self.answered[i] = time.monotonic() - self.t0
            time.sleep(self.pace)

    def close(self):
        self._stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()


def fast_get(port, timeout=1.5):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/slow-ok")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"fast")
    finally:
        c.close()
    return time.monotonic() - t0


def test_slow_bodies_get_no_app_thread_and_a_408(serve):
    srv = serve(app_script(**SLOW))
    slow = Trickler(srv.port, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
    try:
        time.sleep(0.3)                      # all four heads are in
        for _ in range(3):                   # the four app threads are free
            assert fast_get(srv.port) < 1.0
        assert wait_for(lambda: len(slow.answered) == 4, 6), slow.answered
        for c in slow.conns:
            r = c.response()
            assert r.status == 408 and r.header("connection") == "close"
        # a byte every 0.2 s keeps request_timeout (1 s) from firing; the rate
        # rule (200 B/s after a 1 s grace) ends them within a sweep or two
        assert max(slow.answered.values()) < 4.0
    finally:
        slow.close()
    assert fast_get(srv.port) < 1.0


def _expecting(port, head):
    """Clients that were sent 100 Continue (the app reads), ready to trickle."""
    conns = [Conn(port) for _ in range(4)]
    for c in conns:
        c.send(head)
    for c in conns:
        assert c.response().status == 100
    return Trickler(port, None, conns=conns)


@pytest.mark.parametrize("kind", ["expect", "chunked"])
def test_slow_body_that_holds_a_thread_is_bounded(serve, kind):
    # A body of unknown length (the app may stream it) or one behind
    # Expect: 100-continue (the app decides first) gets its thread at once;
    # the rate rule frees the thread within request_timeout + received/rate.
    srv = serve(app_script(**SLOW))
    if kind == "expect":
        slow = _expecting(srv.port, b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                                    b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
    else:
        slow = Trickler(srv.port, b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n186a0\r\n")
    try:
        time.sleep(0.3)
        # the four threads are held, but not for long: this request waits
        # for one of them and is served within the bound
        assert fast_get(srv.port, timeout=6) < 4.0
        assert wait_for(lambda: len(slow.answered) == 4, 6), slow.answered
        for c in slow.conns:
            r = c.response()
            assert r.status == 408 and r.header("connection") == "close"
        assert max(slow.answered.values()) < 4.0
    finally:
        slow.close()
    assert fast_get(srv.port) < 1.0


def test_upload_at_a_reasonable_rate_is_not_cut(serve):
    srv = serve(app_script(threads=4, request_timeout=1, min_body_rate=2000))
    with Conn(srv.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 12000\r\n\r\n")
        for _ in range(12):                  # 12 KB in ~2.4 s: 5 KB/s
            c.send(b"u" * 1000)
            time.sleep(0.2)
        r = c.response()
        assert r.status == 200 and len(json.loads(r.body)["body"]) == 12000


def test_min_body_rate_in_ini_and_yaml(tmp_path):
    from skitaid.config import ConfigError, load_config
    from skitaid.config.model import Limits
    from test_config import make_config

    assert Limits().min_body_rate > 0       # on by default
    route = "[routes:line]\n/ = www/static\n"
    root = make_config(tmp_path / "a", {"web.conf": "[server]\nmin_body_rate = 2K\n" + route})
    assert load_config(str(root)).servers[0].limits.min_body_rate == 2048
    root = make_config(tmp_path / "b", {"web.yaml": "server:\n  min_body_rate: 500\n"
                                                    "routes:\n  /: www/static\n"})
    assert load_config(str(root)).servers[0].limits.min_body_rate == 500
    root = make_config(tmp_path / "c", {"web.conf": "[server]\nmin_body_rate = 0\n" + route})
    assert load_config(str(root)).servers[0].limits.min_body_rate == 0      # off
    root = make_config(tmp_path / "d", {"web.conf": "[server]\nmin_body_rate = fast\n" + route})
    with pytest.raises(ConfigError) as e:
        load_config(str(root))
    assert "[server] min_body_rate: found 'fast', expected a size" in str(e.value)


# -- 8. optional whitespace around field values ------------------------------------------------

def test_whitespace_around_header_values_is_stripped(server):
    with Conn(server.port) as c:
        c.send(b"POST /ws HTTP/1.1\r\nHost: t\r\nX-Padded: \t value \t \r\n"
               b"Transfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        r = c.response()
        assert r.status == 200, r
        info = json.loads(r.body)
        assert info["HTTP_X_PADDED"] == "value" and info["body"] == "abc"
        c.send(b"POST /ws HTTP/1.1\r\nHost: t \t\r\nContent-Length: 2\t\r\n\r\nok")
        info = json.loads(c.response().body)
        assert info["HTTP_HOST"] == "t" and info["body"] == "ok"


# -- 9. NUL in a response header is never sent --------------------------------------------------

@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("path", ["/nul", "/nulname", "/nulstream"])
def test_nul_in_response_header_is_500(server, path, version):
    with Conn(server.port) as c:
        c.send(get(path, version=version))
        r = c.response()
        assert r.status == 500
        assert r.header("x-evil") is None and b"\x00" not in r.body
        assert r.header("connection") == "close"
        assert c.eof()
    assert_server_ok(server.port)


def test_nul_in_status_is_500(server):
    with Conn(server.port) as c:
        c.send(get("/nulstatus"))
        r = c.response()
        assert r.status == 500 and b"\x00" not in r.reason.encode("latin-1")
        assert c.eof()


def test_app_content_length_cannot_inject_into_a_head_response(server):
    with Conn(server.port) as c:
        c.send(get("/badlength", method=b"HEAD"))
        r = c.response(head=True)
        assert r.status == 500 and r.header("x-evil") is None
        assert c.eof()


# -- transfer codings and conflicting framing ---------------------------------------------------

@pytest.mark.parametrize("te", [
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
], ids=["gzip-chunked", "two-lines", "identity-chunked"])
def test_unknown_transfer_coding_before_chunked_is_501(server, te):
    # RFC 9112 6.1: a coding the server does not understand → 501; the
    # body cannot be decoded, so nothing after it can be parsed: close.
    with Conn(server.port) as c:
        c.send(b"POST /te HTTP/1.1\r\nHost: t\r\n" + te + b"\r\n3\r\nabc\r\n0\r\n\r\n" + get("/after"))
        r = c.response()
        assert r.status == 501 and r.header("connection") == "close"
        assert c.eof()
    assert "/te" not in seen(server.port) and "/after" not in seen(server.port)


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n",
], ids=["cl-te", "te-cl", "gzip-te-cl"])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_content_length_with_transfer_encoding_is_400_and_closed(server, framing, version):
    with Conn(server.port) as c:
        c.send(b"POST /both HTTP/" + version + b"\r\nHost: t\r\n" + framing
               + b"\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response()
        assert r.status == 400 and r.header("connection") == "close"
        assert c.eof()
    assert "/both" not in seen(server.port) and "/after" not in seen(server.port)
