"""Limits and timeouts: the right status, then a clean close, and the server
stays healthy (a good request on a NEW connection still succeeds).

Servers run with small limits and one app thread, so a request that leaves
a thread stuck (say, blocked reading a body that will never come) shows up
as the next request hanging.
"""
import select
import socket
import time

import pytest

from helpers.http1 import Conn, get, post
from test_http11 import app_script, assert_server_ok, poll

LIMITS = dict(max_url_size=1024, max_header_size=4096, max_headers=20,
              max_upload_size=100000, keep_alive=1, request_timeout=1,
              response_timeout=1, threads=1)


@pytest.fixture
def server(serve):
    return serve(app_script(**LIMITS))


def expect_error(c, status):
    """The error response, with Connection: close, then the server closes."""
    r = c.response()
    assert r.status == status, r
    assert r.header("connection") == "close"
    assert r.header("date") and r.header("server")
    assert c.eof()
    return r


def send_until_answered(c, pieces, limit, pace=0.0):
    """Send pieces until the server answers; returns the bytes sent by then.
    With `pace`, wait that long for an answer between pieces (a slow client)."""
    sent = 0
    for piece in pieces:
        if select.select([c.sock], [], [], pace)[0]:
            return sent
        try:
            c.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(piece)
        assert sent < limit, "the server never answered"
    select.select([c.sock], [], [], 5)
    return sent


# -- request line and headers ----------------------------------------------------------

def test_request_line_too_long_is_414(server):
    with Conn(server.port) as c:
        c.send(get("/" + "a" * 2000))
        expect_error(c, 414)
    assert_server_ok(server.port)


def test_request_line_too_long_sent_slowly_is_414(server):
    with Conn(server.port) as c:
        c.send(b"GET /")
        pieces = (b"a" * 200 for _ in range(1000))
        assert send_until_answered(c, pieces, 200000, pace=0.002) < 4000
        expect_error(c, 414)
    assert_server_ok(server.port)


def test_request_line_under_the_limit_is_served(server):
    with Conn(server.port) as c:
        c.send(get("/echo?" + "q" * 900))
        r = c.response()
        assert r.status == 200 and r.header("x-query") == "q" * 900


def test_header_bytes_over_the_limit_is_431(server):
    with Conn(server.port) as c:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(10))
        c.send(get("/", extra=extra))
        expect_error(c, 431)
    assert_server_ok(server.port)


def test_headers_under_the_limits_are_served(server):
    with Conn(server.port) as c:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 500) for i in range(6))
        extra += b"".join(b"X-S%d: s\r\n" % i for i in range(12))      # 19 + Host = 20
        c.send(get("/", extra=extra))
        assert c.response().status == 200


def test_too_many_headers_is_431(server):
    with Conn(server.port) as c:
        c.send(get("/", extra=b"".join(b"X-N%d: 1\r\n" % i for i in range(25))))
        expect_error(c, 431)
    assert_server_ok(server.port)


def test_huge_header_line_sent_slowly_is_431(server):
    # No CRLF ever comes: the server must stop buffering at its limit.
    with Conn(server.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Huge: ")
        pieces = (b"h" * 1024 for _ in range(100000))
        sent = send_until_answered(c, pieces, 4 * 1024 * 1024, pace=0.002)
        # header limit 4096 + URL limit 1024, plus what one read may bring
        assert sent < 16 * 1024, "answered only after %d bytes" % sent
        expect_error(c, 431)
    assert_server_ok(server.port)


def test_head_after_a_big_pipelined_body_is_not_refused(server):
    # 99 KB of body then a new request head in the same writes: the head's
    # size must not be charged with the body bytes that precede it.
    with Conn(server.port) as c:
        c.send(post("/", b"b" * 99000) + b"GET /echo?next HTTP/1.1\r\nHost: t\r\n")
        assert c.response().status == 200
        c.send(b"\r\n")            # the end of the second head comes in a later read
        assert c.response().header("x-query") == "next"


# -- request bodies ------------------------------------------------------------------------

def test_content_length_over_the_limit_is_413_before_the_body(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n")
        expect_error(c, 413)       # answered with no body byte sent
    assert_server_ok(server.port)


def test_content_length_over_the_limit_with_expect_is_413_without_100(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n"
               b"Expect: 100-continue\r\n\r\n")
        expect_error(c, 413)
    assert_server_ok(server.port)


def test_client_still_uploading_reads_the_413(server):
    # The server lingers: a client busy sending its body reads the 413
    # rather than a connection reset.
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n")
        try:
            c.send(b"x" * 300000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.response().status == 413


def test_pipelined_request_over_the_limit_after_a_good_one(server):
    with Conn(server.port) as c:
        c.send(get("/sleep?0.2") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n")
        assert c.response().body == b"slept 0.2"      # answered first, in order
        expect_error(c, 413)
    assert_server_ok(server.port)


def test_body_at_the_limit_is_accepted(server):
    with Conn(server.port) as c:
        c.send(post("/echo", b"z" * 100000))
        r = c.response()
        assert r.status == 200 and len(r.body) == 100000


def test_chunked_body_over_the_limit_is_413(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.response().status == 100       # the app is reading now
        pieces = (b"4000\r\n" + b"c" * 0x4000 + b"\r\n" for _ in range(100))
        send_until_answered(c, pieces, 3 * 1024 * 1024)
        expect_error(c, 413)
    # the one app thread was blocked reading that body: it must be free again
    assert_server_ok(server.port)


def test_chunked_body_over_the_limit_app_not_reading_is_413(server):
    with Conn(server.port) as c:
        c.send(b"POST /sleep?0.5 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = (b"4000\r\n" + b"c" * 0x4000 + b"\r\n" for _ in range(100))
        send_until_answered(c, pieces, 3 * 1024 * 1024)
        expect_error(c, 413)
    assert_server_ok(server.port)


# -- timeouts ------------------------------------------------------------------------------

def test_keep_alive_timeout_closes_idle_connection(server):
    with Conn(server.port) as c:
        c.send(get("/"))
        assert c.response().status == 200
        t0 = time.monotonic()
        assert c.eof(timeout=5)
        assert time.monotonic() - t0 >= 0.9       # keep_alive=1
    with Conn(server.port) as c:                  # connected, never sent a byte
        assert c.eof(timeout=5)


def test_slow_headers_get_408(server):
    with Conn(server.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        t0 = time.monotonic()
        expect_error(c, 408)
        assert time.monotonic() - t0 >= 0.9
    assert_server_ok(server.port)


def test_trickled_headers_get_408(server):
    # A byte every 0.2 s keeps the connection busy; the head as a whole
    # must still arrive within request_timeout (slowloris).
    with Conn(server.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        pieces = iter(lambda: b"X", None)
        deadline = time.monotonic() + 6
        while not select.select([c.sock], [], [], 0.2)[0]:
            assert time.monotonic() < deadline, "no 408 for a trickled head"
            c.send(next(pieces))
        expect_error(c, 408)
    assert_server_ok(server.port)


def test_pipelined_partial_head_gets_408(server):
    with Conn(server.port) as c:
        c.send(get("/") + b"GET / HTTP/1.1\r\nHost: t\r\n")
        assert c.response().status == 200
        expect_error(c, 408)
    assert_server_ok(server.port)


def test_stalled_body_gets_408(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.response().status == 100       # the app is reading now
        c.send(b"s" * 10)
        expect_error(c, 408)
    # the one app thread was blocked reading that body: it must be free again
    assert_server_ok(server.port)


def test_waiting_for_100_continue_is_not_a_stall(server):
    # The client sends nothing until it gets 100 Continue; an app that takes
    # longer than request_timeout before it answers must not cause a 408.
    with Conn(server.port) as c:
        c.send(b"POST /sleep?2.5 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
               b"Expect: 100-continue\r\n\r\n")
        r = c.response()
        assert (r.status, r.body) == (200, b"slept 2.5")
        assert r.header("connection") == "close"
        assert c.eof()


def test_stalled_chunked_body_gets_408(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        expect_error(c, 408)
    assert_server_ok(server.port)


def test_client_that_stops_reading_is_dropped(server):
    # response_timeout=1: a client that never reads a 25 MB response is cut
    # off, and the one app thread blocked writing to it is freed.
    with Conn(server.port) as c:
        c.send(get("/big"))
        assert_server_ok(server.port)


# -- connection cap -------------------------------------------------------------------------

def test_max_connections_extra_connection_gets_503(serve):
    srv = serve(app_script(max_connections=2, keep_alive=5))
    held = [Conn(srv.port), Conn(srv.port)]
    try:
        for c in held:
            c.send(get("/"))
            assert c.response().status == 200
        with Conn(srv.port) as extra:
            extra.send(get("/"))
            r = extra.response()
            assert r.status == 503 and r.reason == "Service Unavailable"
            assert r.header("date") and r.header("server")
            assert r.header("retry-after") and r.header("connection") == "close"
            assert extra.eof()
        for c in held:                       # the held ones are unaffected
            c.send(get("/"))
            assert c.response().status == 200
    finally:
        for c in held:
            c.close()

    def served():
        with Conn(srv.port) as c:
            c.send(get("/"))
            return c.response().status == 200
    assert poll(served), "a slot must free up once connections close"
