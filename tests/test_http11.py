"""HTTP/1.1 protocol behaviour against real servers and real clients.

Every test starts a server (the `serve` fixture) running APP below and talks
to it with http.client or raw sockets (pipelining and malformed input need
byte-level control). Raw responses are parsed by `Conn` (tests/helpers/http1.py), which also checks
that every status line carries a reason phrase.
"""
import email.utils
import hashlib
import http.client
import json
import socket
import struct
import time

import pytest

from helpers.http1 import Conn, chunked, get, post

APP = r'''
import json, os, sys, threading, time
from urllib.parse import unquote
import skitaid

STATE = {"count": 0, "closed": 0}
LOCK = threading.Lock()

def app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    qs = environ["QUERY_STRING"]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, World!"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body))),
                                  ("X-Method", method), ("X-Query", qs),
                                  ("X-Content-Length", environ.get("CONTENT_LENGTH", "-"))])
        return [body]
    if path == "/digest":
        h, n, read = __import__("hashlib").sha256(), 0, environ["wsgi.input"].read
        while True:
            data = read(65536)
            if not data:
                break
            h.update(data)
            n += len(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("%d %s" % (n, h.hexdigest())).encode()]
    if path == "/info":
        keys = ("REMOTE_PORT", "SERVER_NAME", "PATH_INFO", "QUERY_STRING",
                "SERVER_PROTOCOL", "HTTP_HOST", "REQUEST_METHOD")
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/sleep":
        time.sleep(float(qs or "0.2"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept " + qs.encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def gen():
            for part in (b"part1-", b"part2-", b"part3"):
                yield part
        return gen()
    if path == "/nolen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"abc", b"def"]
    if path == "/noread":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"no thanks"]
    if path == "/status":
        start_response(unquote(qs), [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"bye"]
    if path == "/count":
        with LOCK:
            if qs != "peek":
                STATE["count"] += 1
            n = STATE["count"]
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(n).encode()]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        def big():
            try:
                for i in range(400):
                    yield b"x" * 65536
            finally:
                with LOCK:
                    STATE["closed"] += 1
        return big()
    if path == "/closed":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(STATE["closed"]).encode()]
    if path == "/short":      # declares 100 bytes, sends 10
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return iter([b"0123456789"])
    if path == "/long":       # declares 5 bytes, sends 10
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return iter([b"01234", b"56789"])
    if path == "/badheader":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Bad", "a\r\nX-Injected: 1")])
        return [b"bad"]
    if path == "/badstream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", "a\nb")])
        return iter([b"bad", b"stream"])
    if path == "/unicode":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Snow", "\u2603")])
        return [b"snow"]
    if path == "/nocontent":
        start_response("204 No Content", [])
        return iter([b"oops"])
    if path == "/raise":
        raise RuntimeError("boom")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]

skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), request_log=False, %(options)s)
'''

def app_script(**options):
    opts = dict(keep_alive=5, request_timeout=5)
    opts.update(options)
    return APP.replace("%(options)s", ", ".join("%s=%r" % kv for kv in opts.items()))


def assert_server_ok(port):
    """A good request on a NEW connection still succeeds."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200
        assert r.read() == b"Hello, World!"
    finally:
        c.close()


def poll(fn, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def server(serve):
    return serve(app_script())


# -- persistent connections and pipelining -----------------------------------------

def test_persistent_connection_serves_several_requests(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    ports = set()
    for i in range(5):
        c.request("GET", "/info?i=%d" % i)
        r = c.getresponse()
        assert r.status == 200
        assert r.getheader("Connection") is None
        info = json.loads(r.read())
        assert info["QUERY_STRING"] == "i=%d" % i
        ports.add(info["REMOTE_PORT"])
    c.request("POST", "/echo", body=b"payload")
    r = c.getresponse()
    assert r.read() == b"payload"
    assert len(ports) == 1, "every request must arrive on the same TCP connection"
    c.close()


def test_pipelining_three_requests_in_one_write(server):
    with Conn(server.port) as c:
        c.send(get("/sleep?0.2") + get("/echo?second") + get("/"))
        r1, r2, r3 = c.response(), c.response(), c.response()
        assert (r1.status, r1.body) == (200, b"slept 0.2")
        assert (r2.status, r2.header("x-query"), r2.body) == (200, "second", b"")
        assert (r3.status, r3.body) == (200, b"Hello, World!")
        c.send(get("/"))                        # still usable afterwards
        assert c.response().body == b"Hello, World!"


def test_pipelining_requests_with_bodies(server):
    with Conn(server.port) as c:
        c.send(post("/echo?1", b"first body")
               + b"POST /echo?2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked([b"sec", b"ond"])
               + post("/echo?3", b"third"))
        bodies = [(r.header("x-query"), r.body) for r in (c.response() for _ in range(3))]
        assert bodies == [("1", b"first body"), ("2", b"second"), ("3", b"third")]


def test_pipelining_many_requests_in_order(server):
    # more than the connection queues before it stops reading
    n = 50
    with Conn(server.port) as c:
        c.send(b"".join(get("/echo?%d" % i) for i in range(n)))
        for i in range(n):
            r = c.response()
            assert r.status == 200 and r.header("x-query") == str(i)


def test_pipelined_bad_request_after_good_one(server):
    # The 400 belongs to the second request: the first still gets its own answer.
    with Conn(server.port) as c:
        c.send(get("/sleep?0.1") + b"NOT A REQUEST\r\n\r\n")
        r1 = c.response()
        assert (r1.status, r1.body) == (200, b"slept 0.1")
        r2 = c.response()
        assert r2.status == 400 and r2.header("connection") == "close"
        assert c.eof()
    assert_server_ok(server.port)


def test_bad_body_of_pipelined_request_after_good_one(server):
    with Conn(server.port) as c:
        c.send(get("/sleep?0.1")
               + b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"3\r\nabc\r\nzz\r\n")
        assert c.response().body == b"slept 0.1"
        r = c.response()
        assert r.status == 400 and r.header("connection") == "close"
        assert c.eof()
    assert_server_ok(server.port)


def test_data_after_connection_close_is_ignored(server):
    with Conn(server.port) as c:
        c.send(get("/sleep?0.1", extra=b"Connection: close\r\n") + b"GARBAGE\r\n\r\n")
        r = c.response()
        assert r.body == b"slept 0.1" and r.header("connection") == "close"
        assert c.eof()


def test_body_cut_short_by_half_close_is_400(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        c.sock.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        r = c.response()
        assert r.status == 400 and time.monotonic() - t0 < 2    # not a request_timeout
        assert c.eof()
    assert_server_ok(server.port)


def test_half_close_after_pipelined_requests(server):
    # A client may shut down its sending side once its requests are out.
    with Conn(server.port) as c:
        c.send(get("/sleep?0.1") + get("/echo?b") + get("/"))
        c.sock.shutdown(socket.SHUT_WR)
        assert c.response().body == b"slept 0.1"
        assert c.response().header("x-query") == "b"
        assert c.response().body == b"Hello, World!"
        assert c.eof()


# -- request bodies --------------------------------------------------------------------

def test_chunked_request_body_with_extensions_and_trailers(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked([b"hello ", b"chunked ", b"world"], ext=b";name=value;flag",
                         trailers=b"X-Checksum: 42\r\nX-Other: yes\r\n"))
        r = c.response()
        assert r.status == 200
        assert r.body == b"hello chunked world"
        assert r.header("x-content-length") == "-"   # no CONTENT_LENGTH for chunked
        c.send(get("/"))                               # the trailers were consumed
        assert c.response().body == b"Hello, World!"


def test_chunked_body_sent_in_small_pieces(server):
    body = chunked([b"a" * 100, b"b" * 1000, b"c" * 5])
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 7):
            c.send(body[i:i + 7])
        r = c.response()
        assert r.body == b"a" * 100 + b"b" * 1000 + b"c" * 5


def test_large_bodies_stream_through(server):
    data = bytes(range(256)) * 20000                    # ~5 MB, above the buffer high water
    expected = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.request("POST", "/digest", body=data)
    r = c.getresponse()
    assert r.read() == expected
    c.request("POST", "/digest", body=iter([data[:3000000], data[3000000:]]),
              encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    assert c.getresponse().read() == expected
    c.close()


# -- Expect: 100-continue ------------------------------------------------------------------

def test_expect_100_continue_when_app_reads(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
               b"Expect: 100-continue\r\n\r\n")
        interim = c.response()
        assert interim.status == 100 and interim.reason == "Continue"
        c.send(b"hello")
        r = c.response()
        assert (r.status, r.body) == (200, b"hello")
        c.send(get("/"))
        assert c.response().body == b"Hello, World!"


def test_expect_100_continue_app_answers_without_reading(server):
    with Conn(server.port) as c:
        c.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.response()
        assert r.status == 200, "no 100 Continue when the app never reads the body"
        assert r.body == b"no thanks"
        assert r.header("connection") == "close"
        assert c.eof()
    assert_server_ok(server.port)


def test_expect_100_continue_body_sent_without_waiting(server):
    # Clients may send the body without waiting for the 100: the connection
    # stays usable (a 100 may still come first; RFC 9110 allows it).
    with Conn(server.port) as c:
        for i in range(2):
            c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                   b"Expect: 100-continue\r\n\r\nhello")
            r = c.response()
            if r.status == 100:
                r = c.response()
            assert (r.status, r.body) == (200, b"hello")
            assert r.header("connection") is None


def test_expect_100_continue_with_http_client(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.putrequest("POST", "/echo")
    c.putheader("Content-Length", "3")
    c.putheader("Expect", "100-continue")
    c.endheaders()
    c.send(b"abc")
    r = c.getresponse()          # http.client skips the interim 100
    assert (r.status, r.read()) == (200, b"abc")
    c.close()


def test_unknown_expectation_is_417(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
               b"Expect: something-else\r\n\r\nabc")
        r = c.response()
        assert r.status == 417
        assert c.eof()
    assert_server_ok(server.port)


# -- HEAD ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/nolen", "/stream", "/missing"])
def test_head_has_no_body_and_the_same_headers_as_get(server, path):
    with Conn(server.port) as c:
        # HEAD then GET in one write: any body byte after the HEAD response
        # would corrupt the GET response that follows.
        c.send(get(path, method=b"HEAD") + get(path))
        head = c.response(head=True)
        got = c.response()
        assert head.status == got.status == (404 if path == "/missing" else 200)
        strip = lambda r: sorted((k, v) for k, v in r.headers if k != "date")
        assert strip(head) == strip(got)
        if path != "/stream":
            assert int(head.header("content-length")) == len(got.body)
        c.send(get("/"))
        assert c.response().body == b"Hello, World!"


# -- HTTP/1.0 --------------------------------------------------------------------------------

def test_http10_closes_by_default(server):
    with Conn(server.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.response()
        assert r.version == "1.0" or r.version == "1.1"
        assert (r.status, r.body) == (200, b"Hello, World!")
        assert r.header("connection") == "close"
        assert c.eof()


def test_http10_keep_alive_when_asked(server):
    with Conn(server.port) as c:
        for i in range(3):
            c.send(b"GET /echo?%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            r = c.response()
            assert r.status == 200 and r.header("x-query") == str(i)
            assert r.header("connection").lower() == "keep-alive"
            assert r.header("content-length") == "0"
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        assert c.response().header("connection") == "close"
        assert c.eof()


def test_http10_streamed_body_is_close_delimited(server):
    with Conn(server.port) as c:
        c.send(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.head_only()
        assert r.header("transfer-encoding") is None     # 1.0 clients know no chunks
        assert r.header("content-length") is None
        assert r.header("connection") == "close"
        assert c._until_eof() == b"part1-part2-part3"


def test_http11_streamed_body_is_chunked(server):
    with Conn(server.port) as c:
        c.send(get("/stream"))
        r = c.response()
        assert r.header("transfer-encoding") == "chunked"
        assert r.body == b"part1-part2-part3"


# -- Date, Server, status lines ----------------------------------------------------------------

def test_date_and_server_headers(server):
    with Conn(server.port) as c:
        c.send(get("/") + get("/stream") + get("/missing"))
        for _ in range(3):
            r = c.response()
            date = r.header("date")
            assert date and date.endswith(" GMT")
            stamp = email.utils.parsedate_to_datetime(date).timestamp()
            assert abs(stamp - time.time()) < 5
            assert r.header("server", "").startswith("skitaid")
    with Conn(server.port) as c:                  # also on server-made errors
        c.send(b"BROKEN\r\n\r\n")
        r = c.response()
        assert r.status == 400
        assert r.header("date") and r.header("server", "").startswith("skitaid")


@pytest.mark.parametrize("status, line", [
    ("200 OK", b"HTTP/1.1 200 OK"),
    ("418 I'm a teapot", b"HTTP/1.1 418 I'm a teapot"),
    ("299 Custom Thing", b"HTTP/1.1 299 Custom Thing"),
    ("299 ", b"HTTP/1.1 299 Unknown"),
    ("418 ", b"HTTP/1.1 418 I'm a Teapot"),
    ("503 Service Unavailable", b"HTTP/1.1 503 Service Unavailable"),
])
def test_reason_phrase_on_every_status_line(server, status, line):
    with Conn(server.port) as c:
        c.send(get("/status?" + status.replace(" ", "%20").replace("'", "%27")))
        assert c.sock.recv(65536).split(b"\r\n")[0] == line


def test_reason_phrase_on_server_errors(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.request("GET", "/raise")
    r = c.getresponse()
    assert (r.status, r.reason) == (500, "Internal Server Error")
    c.close()


def test_status_with_crlf_cannot_inject_headers(server):
    with Conn(server.port) as c:
        c.send(get("/status?200%20OK%0D%0AX-Injected:%201"))
        r = c.response()
        assert r.status == 500
        assert r.header("x-injected") is None
    assert_server_ok(server.port)


# -- Connection: close ----------------------------------------------------------------------------

def test_client_connection_close_is_honoured(server):
    with Conn(server.port) as c:
        c.send(get("/", extra=b"Connection: close\r\n") + get("/echo?never"))
        r = c.response()
        assert (r.status, r.body) == (200, b"Hello, World!")
        assert r.header("connection") == "close"
        assert c.eof()


def test_app_connection_close_is_honoured(server):
    with Conn(server.port) as c:
        c.send(get("/close"))
        r = c.response()
        assert r.body == b"bye"
        assert r.all("connection") == ["close"]
        assert c.eof()
    assert_server_ok(server.port)


UPGRADE_APP = r'''
import os, skitaid
skitaid.mount("/files", os.path.join(os.path.dirname(os.path.abspath(__file__)), "files"))
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), request_log=False, keep_alive=30)
'''


@pytest.mark.parametrize("path,status", [("/files/a.txt", 200), ("/nothing/here", 404)])
def test_upgrade_answered_at_once_is_the_last_response(serve, tmp_path, path, status):
    """An Upgrade request answered in HTTP/1.1 on the spot (a static file, a
    404): nothing after its head is read, so its answer says close and the
    connection closes. A request pipelined before it is answered as usual."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_bytes(b"static")
    s = serve(UPGRADE_APP)
    with Conn(s.port) as c:
        c.send(get("/files/a.txt")
               + get(path, extra=b"Upgrade: websocket\r\nConnection: Upgrade\r\n"))
        r = c.response()
        assert (r.status, r.body) == (200, b"static") and r.header("connection") is None
        r = c.response()
        assert r.status == status and r.header("connection") == "close"
        assert c.eof()


# -- malformed requests ----------------------------------------------------------------------------

MALFORMED = {
    "garbage request line": b"hello world\r\n\r\n",
    "request line without version": b"GET /\r\nHost: t\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    "control char in target": b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n",
    "bad version": b"GET / HTTP/2.7\r\nHost: t\r\n\r\n",
    "http/0.9 version": b"GET / HTTP/0.9\r\nHost: t\r\n\r\n",
    "tls on plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "unknown method": b"FOO / HTTP/1.1\r\nHost: t\r\n\r\n",
    "lower-case method": b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: t\r\nX-Thing : 1\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
    "obsolete line folding": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  continued\r\n\r\n",
    "NUL in header": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "bare CR in header": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
    "missing Host": b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
    "duplicate Host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "absolute-form without Host": b"GET http://example.com/ HTTP/1.1\r\n\r\n",
    "content-length and chunked": (b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "chunked and content-length": (b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                   b"Content-Length: 5\r\n\r\n0\r\n\r\n"),
    "duplicate content-length": (b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 3\r\n\r\nabc"),
    "content-length list": b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "negative content-length": b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
    "non-numeric content-length": b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc",
    "unsupported transfer-coding": (b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"
                                    b"abc"),
    "chunked not last": (b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                         b"0\r\n\r\n"),
    "bad chunk size": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk size overflow": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    "chunk data too long": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabcdef\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_400_and_closed(server, name):
    with Conn(server.port) as c:
        c.send(MALFORMED[name])
        r = c.response()
        assert r.status == 400, r
        assert r.header("connection") == "close"
        assert c.eof()
    assert_server_ok(server.port)


def test_http2_request_line_is_505(server):
    with Conn(server.port) as c:
        c.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        r = c.response()
        assert r.status == 505 and r.reason == "HTTP Version Not Supported"
        assert c.eof()
    assert_server_ok(server.port)


def test_rejected_requests_never_reach_the_app(server):
    for name in ("content-length and chunked", "chunked and content-length",
                 "duplicate content-length", "negative content-length",
                 "unsupported transfer-coding", "chunked not last"):
        with Conn(server.port) as c:
            c.send(MALFORMED[name])
            assert c.response().status == 400, name
    with Conn(server.port) as c:
        c.send(get("/count?peek"))
        assert c.response().body == b"0"


def test_absolute_form_target(server):
    with Conn(server.port) as c:
        c.send(b"GET http://example.com/info?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        info = json.loads(c.response().body)
        assert info["PATH_INFO"] == "/info" and info["QUERY_STRING"] == "x=1"
        assert info["SERVER_NAME"] == "example.com"
        # RFC 9112 3.2.2: the authority in the target wins over the Host header
        c.send(b"GET http://Example.ORG:8080/info HTTP/1.1\r\nHost: other\r\n\r\n")
        info = json.loads(c.response().body)
        assert info["PATH_INFO"] == "/info" and info["SERVER_NAME"] == "example.org"
        c.send(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert c.response().body == b"Hello, World!"


# -- responses the app gets wrong ------------------------------------------------------------------

def test_response_shorter_than_its_content_length_closes(server):
    with Conn(server.port) as c:
        c.send(get("/short"))
        r = c.head_only()
        assert r.header("content-length") == "100"
        # the client must learn the body is incomplete: the server closes
        # instead of leaving it waiting for 90 bytes that never come
        assert c._until_eof() == b"0123456789"
    assert_server_ok(server.port)


def test_response_longer_than_its_content_length_is_cut(server):
    with Conn(server.port) as c:
        c.send(get("/long") + get("/"))
        assert c.response().body == b"01234"
        assert c.response().body == b"Hello, World!"    # framing intact


def test_no_content_response_never_carries_a_body(server):
    with Conn(server.port) as c:
        c.send(get("/nocontent") + get("/"))
        r = c.response()
        assert r.status == 204
        assert r.header("content-length") is None and r.header("transfer-encoding") is None
        assert c.response().body == b"Hello, World!"


@pytest.mark.parametrize("path", ["/badheader", "/badstream", "/unicode"])
def test_bad_response_header_from_app_is_500(server, path):
    # CR/LF (header injection) or a value that is not latin-1: the client
    # gets a 500, not a hang and not the injected header.
    with Conn(server.port) as c:
        c.send(get(path))
        r = c.response()
        assert r.status == 500
        assert r.header("x-injected") is None and r.header("x-bad") is None
        assert c.eof()
    assert_server_ok(server.port)


# -- clients that go away ----------------------------------------------------------------------------

def test_client_disconnect_mid_response(server):
    c = Conn(server.port)
    c.send(get("/big"))
    r = c.head_only()
    assert r.header("transfer-encoding") == "chunked"
    while len(c.buf) < 300000:
        c._recv()
    # reset, not a polite close: the worst case for the server
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()

    def closed():
        with Conn(server.port) as c2:
            c2.send(get("/closed"))
            return c2.response().body == b"1"
    assert poll(closed), "the app's iterable must be closed when the client goes away"
    assert_server_ok(server.port)
    assert server.proc.poll() is None


def test_client_disconnect_before_response(server):
    c = Conn(server.port)
    c.send(get("/sleep?0.3"))
    c.close()
    c = Conn(server.port)
    c.send(post("/echo", b"x" * 100)[:-50])           # half of the body, then gone
    c.close()
    assert_server_ok(server.port)
    with Conn(server.port) as c:
        c.send(get("/sleep?0.01"))
        assert c.response().status == 200
