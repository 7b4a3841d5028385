"""The HTTP/1.1 connection (protocols/h1.py) as a state machine: request bytes
in through data_received(), response bytes out of the fake transport, and the
events the fake host saw (dispatch, finished, rejected)."""
import os

import pytest

from helpers.http1 import chunked, get, parse_responses, post
from skitaid.protocols.h1 import MAX_PIPELINE, H1Connection

from .fakes import FakeHost, FakeTransport


def open_h1(loop, handler=None, **limits):
    host = FakeHost(loop, handler, **limits)
    transport = FakeTransport(loop)
    conn = transport.connect(H1Connection(host))
    return host, transport, conn


def hello(ex):
    """Answer with the request's path."""
    ex.respond("200 OK", [("Content-Type", "text/plain")], ex.request.path.encode())


def echo(ex):
    """Answer with the body, once it is all there, and the trailers it had."""
    body = ex.request.body
    body.on_complete(lambda: ex.respond(
        "200 OK", [("X-Trailers", repr(list(ex.request.trailers)))], body.take_all()))


def answers(transport, heads=()):
    return parse_responses(transport.take(), heads)


# -- pipelining ------------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order_in_one_write(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(get("/1") + get("/2") + get("/3"))
    host.step()
    rs = answers(t)
    assert [(r.status, r.body) for r in rs] == [(200, b"/1"), (200, b"/2"), (200, b"/3")]
    assert t.writes == 1                    # batched: one write per loop iteration
    assert [r.header("connection") for r in rs] == [None] * 3
    assert len(host.finished) == 3 and not t.closed


def test_a_pipelined_request_waits_until_the_one_before_it_is_answered(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/slow") + get("/next"))
    assert [ex.request.path for ex in host.dispatched] == ["/slow"]
    first = host.dispatched[0]
    first.start("200 OK", [("Content-Type", "text/plain")])
    first.write(b"part one, ")
    host.step()
    assert len(host.dispatched) == 1        # still streaming: /next waits
    first.write(b"part two")
    first.finish()
    assert [ex.request.path for ex in host.dispatched] == ["/slow", "/next"]
    hello(host.dispatched[1])
    host.step()
    rs = answers(t)
    assert rs[0].header("transfer-encoding") == "chunked"
    assert [r.body for r in rs] == [b"part one, part two", b"/next"]


def test_a_full_pipeline_stops_reading_until_half_of_it_is_answered(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/x") * (MAX_PIPELINE + 1))
    assert not t.reading and len(host.dispatched) == 1
    answered = 0
    while not t.reading:
        hello(host.dispatched[answered])
        answered += 1
    # one current exchange, and fewer than half a pipeline waiting behind it
    assert MAX_PIPELINE - answered == MAX_PIPELINE // 2 - 1
    while answered < len(host.dispatched):
        hello(host.dispatched[answered])
        answered += 1
    host.step()
    assert answered == MAX_PIPELINE + 1 and len(answers(t)) == MAX_PIPELINE + 1


def test_requests_sent_before_the_client_half_closed_are_all_answered(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/1") + get("/2"))
    assert conn.eof_received() is True      # keep the transport open for the answers
    hello(host.dispatched[0])
    hello(host.dispatched[1])
    host.step()
    rs = answers(t)
    assert [r.body for r in rs] == [b"/1", b"/2"]
    assert rs[1].header("connection") == "close" and t.closed


# -- request bodies ---------------------------------------------------------------------------

CHUNKED = (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n")


def test_a_chunked_body_split_at_every_byte_boundary(loop):
    data = CHUNKED + get("/after")
    for i in range(1, len(data)):
        host, t, conn = open_h1(loop, lambda ex: (echo if ex.request.method == "POST"
                                                  else hello)(ex))
        conn.data_received(data[:i])
        conn.data_received(data[i:])
        host.step()
        rs = answers(t)
        assert [(r.status, r.body) for r in rs] == [(200, b"hello world"), (200, b"/after")], i
        assert rs[0].header("x-trailers") == "[('x-sum', '42')]", i


def test_a_chunked_body_fed_one_byte_at_a_time(loop):
    host, t, conn = open_h1(loop, echo)
    for i in range(len(CHUNKED)):
        conn.data_received(CHUNKED[i:i + 1])
    host.step()
    [r] = answers(t)
    assert r.body == b"hello world" and r.header("x-trailers") == "[('x-sum', '42')]"


def test_trailers_never_join_the_head(loop):
    host, t, conn = open_h1(loop, echo)
    conn.data_received(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunked([b"hi"], trailers=b"X-Sum: 1\r\nHost: evil\r\n"
                                                   b"Authorization: x\r\nContent-Type: a/b\r\n"))
    host.step()
    req = host.dispatched[0].request
    assert req.headers == [("host", "a"), ("transfer-encoding", "chunked")]
    assert req.host == "a"
    # framing, routing and authentication fields are dropped from trailers too
    assert req.trailers == [("x-sum", "1")]
    assert answers(t)[0].body == b"hi"


def test_content_length_in_trailers_is_refused(loop):
    # (llhttp's rule: the framing cannot be restated after the body)
    host, t, conn = open_h1(loop, echo)
    conn.data_received(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunked([b"hi"], trailers=b"Content-Length: 99\r\n"))
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("connection")) == (400, "close")
    assert host.dispatched[0].closed and host.dispatched[0].request.trailers == []


def test_a_body_of_known_length_gets_an_empty_trailer_list(loop):
    host, t, conn = open_h1(loop, echo)
    conn.data_received(post("/p", b"abc"))
    host.step()
    req = host.dispatched[0].request
    assert (req.trailers, req.chunked, req.content_length) == ((), False, 3)
    assert answers(t)[0].body == b"abc"


def test_trailers_count_against_the_header_limits(loop):
    host, t, conn = open_h1(loop, echo, max_headers=5)
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(10))
    conn.data_received(b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunked([b"hi"], trailers=trailers))
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("connection")) == (431, "close")


def test_100_continue_goes_out_when_the_app_reads_the_body(loop):
    host, t, conn = open_h1(loop, echo)
    conn.data_received(b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 5\r\n\r\n")
    host.step()
    assert t.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.data_received(b"hello")
    host.step()
    [r] = answers(t)
    assert (r.status, r.body, r.header("connection")) == (200, b"hello", None)
    assert not t.closed and not t.eof_written


def test_an_answer_before_the_body_is_read_sends_no_100_and_closes(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 5\r\n\r\n")
    host.step()
    out = t.take()
    assert b"100 Continue" not in out
    [r] = parse_responses(out)
    # the client may or may not send the body now: nothing after it can be framed
    assert (r.status, r.header("connection")) == (200, "close")
    assert t.eof_written


def test_http10_clients_get_no_100_continue(loop):
    host, t, conn = open_h1(loop, echo)
    conn.data_received(b"POST /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    host.step()
    assert t.take() == b""
    conn.data_received(b"ok")
    host.step()
    assert answers(t)[0].body == b"ok"


def test_a_body_over_max_upload_size_is_413(loop):
    for head in (b"Content-Length: 11\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\nb\r\n"):
        host, t, conn = open_h1(loop, echo, max_upload_size=10)
        conn.data_received(b"POST /u HTTP/1.1\r\nHost: a\r\n" + head + b"x" * 11)
        host.step()
        [r] = answers(t)
        assert (r.status, r.header("connection")) == (413, "close"), head
        assert host.rejected[0][0] == 413


def test_a_body_cut_short_by_the_client_is_refused(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    ex = host.dispatched[0]
    conn.eof_received()
    host.step()
    [r] = answers(t)
    assert r.status == 400 and ex.closed and t.closed


# -- malformed heads ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                    # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET /\r\n\r\n", 400),                                             # HTTP/0.9
    (b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),                        # space before colon
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx", 417),
])
def test_a_malformed_head_gets_its_4xx_and_a_close(loop, data, status):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(data)
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("connection")) == (status, "close"), r
    assert host.rejected and host.rejected[0][0] == status
    assert not host.dispatched          # no handler saw it
    assert t.eof_written or t.closed
    # whatever the client sends next is not parsed
    conn.data_received(get("/more"))
    host.step()
    assert t.take() == b"" and not host.dispatched


def test_a_bad_chunk_fails_the_body_being_read(loop):
    host, t, conn = open_h1(loop, echo)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"2\r\nhi\r\nzz\r\n")
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("connection")) == (400, "close")
    ex = host.dispatched[0]
    assert ex.closed            # the app's answer, should it come, is dropped
    with pytest.raises(IOError):
        ex.request.body.take_available()


def test_a_bad_chunk_after_the_answer_gets_no_second_status(loop):
    # answered already: a 400 now would be taken for the answer to a later request
    host, t, conn = open_h1(loop, hello)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\n")
    host.step()
    [r] = answers(t)
    assert r.status == 200 and t.eof_written


def test_a_bad_request_behind_a_good_one_is_refused_after_its_answer(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/ok") + b"GET / HTTP/1.1\r\nno colon\r\n\r\n")
    host.step()
    assert t.take() == b""          # the error must not pass /ok's answer
    hello(host.dispatched[0])
    host.step()
    rs = answers(t)
    assert [r.status for r in rs] == [200, 400]
    assert rs[1].header("connection") == "close" and len(host.dispatched) == 1


# -- header size limits ---------------------------------------------------------------------------

def test_a_header_over_max_header_size_is_431(loop):
    host, t, conn = open_h1(loop, hello, max_header_size=1024)
    conn.data_received(get("/", extra=b"X-Big: " + b"v" * 2000 + b"\r\n"))
    host.step()
    assert answers(t)[0].status == 431 and not host.dispatched


def test_more_than_max_headers_fields_is_431(loop):
    host, t, conn = open_h1(loop, hello, max_headers=5)
    conn.data_received(get("/", extra=b"".join(b"X-%d: v\r\n" % i for i in range(5))))
    host.step()
    assert answers(t)[0].status == 431


def test_a_request_line_over_max_url_size_is_414(loop):
    host, t, conn = open_h1(loop, hello, max_url_size=100)
    conn.data_received(get("/" + "a" * 200))
    host.step()
    assert answers(t)[0].status == 414


def test_a_head_trickling_in_is_refused_once_it_is_over_the_limits(loop):
    # one endless header line, never finished: the parser buffers it, we count it
    host, t, conn = open_h1(loop, hello, max_header_size=1024, max_url_size=100)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    sent = 0
    while not t.written and sent < 10000:
        conn.data_received(b"v" * 64)
        sent += 64
    [r] = answers(t)
    assert r.status == 431 and sent <= 1024 + 100 + 64


def test_headers_at_the_limits_are_taken(loop):
    host, t, conn = open_h1(loop, hello, max_headers=5, max_url_size=100)
    conn.data_received(get("/" + "a" * 90, extra=b"".join(b"X-%d: v\r\n" % i for i in range(4))))
    host.step()
    assert answers(t)[0].status == 200


# -- keep-alive and close ----------------------------------------------------------------------

def ended(t):
    """The connection ended its side: our FIN (it then lingers, reading and
    dropping what still comes, so no reset can destroy the answer) or a close."""
    return t.eof_written or t.closed


def test_http10_is_answered_in_10_and_closed(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(b"GET /a HTTP/1.0\r\n\r\n" + get("/never"))
    host.step()
    [r] = answers(t)
    assert (r.version, r.status, r.header("connection")) == ("1.0", 200, "close")
    assert ended(t) and len(host.dispatched) == 1


def test_http10_keep_alive_is_kept_when_the_length_is_known(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    host.step()
    [r] = answers(t)
    assert (r.header("connection"), r.body) == ("keep-alive", b"/a") and not t.closed
    conn.data_received(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    host.step()
    assert answers(t)[0].body == b"/b"


def test_http10_without_a_length_is_close_delimited(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(b"GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    ex = host.dispatched[0]
    ex.start("200 OK", [])
    ex.write(b"abc")
    ex.finish()
    host.step()
    [r] = answers(t)
    assert r.header("transfer-encoding") is None and r.header("connection") == "close"
    assert r.body == b"abc" and ended(t)


def test_http11_without_a_length_is_chunked_and_kept_alive(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/s"))
    ex = host.dispatched[0]
    ex.start("200 OK", [("Transfer-Encoding", "gzip"), ("Keep-Alive", "timeout=1")])
    ex.write(b"abc")
    ex.write(b"x" * 20000)       # (sent as its own piece)
    ex.finish()
    host.step()
    out = t.take()
    assert out.endswith(b"\r\n0\r\n\r\n")
    [r] = parse_responses(out)
    # framing is the server's: the app's Transfer-Encoding and Keep-Alive are not sent
    assert r.all("transfer-encoding") == ["chunked"] and r.header("keep-alive") is None
    assert r.body == b"abc" + b"x" * 20000 and not t.closed


def test_connection_close_from_the_client_ends_the_connection(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(get("/a", extra=b"Connection: close\r\n") + get("/never"))
    host.step()
    [r] = answers(t)
    assert r.header("connection") == "close" and ended(t)
    assert [ex.request.path for ex in host.dispatched] == ["/a"]


def test_a_client_that_asked_to_close_and_sent_nothing_more_is_closed_without_lingering(loop):
    host, t, conn = open_h1(loop, hello)
    conn.data_received(get("/a", extra=b"Connection: close\r\n"))
    host.step()
    [r] = answers(t)
    assert r.header("connection") == "close"
    assert t.closed and not t.eof_written


def test_a_client_whose_body_the_app_left_unread_gets_a_half_close(loop):
    # the rest of the body may still be on its way: close() could reset the answer
    host, t, conn = open_h1(loop, lambda ex: ex.respond("200 OK", [], b"early"))
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Content-Length: 10\r\n\r\nabc")
    host.step()
    [r] = answers(t)
    assert r.body == b"early" and t.eof_written and not t.closed


def test_connection_close_from_the_app_ends_the_connection(loop):
    host, t, conn = open_h1(loop, lambda ex: ex.respond("200 OK", [("Connection", "close")], b"x"))
    conn.data_received(get("/a") + get("/b"))
    host.step()
    [r] = answers(t)
    assert r.all("connection") == ["close"] and r.body == b"x" and ended(t)


def test_nothing_behind_an_answer_that_closed_the_connection_is_dispatched(loop):
    # an app that answers at once (static files, threads = 0) with Connection: close;
    # the client will send /b again on a new connection, so it must not run here
    host, t, conn = open_h1(loop, lambda ex: ex.respond("200 OK", [("Connection", "close")], b"x"))
    conn.data_received(get("/a") + get("/b"))
    host.step()
    assert [ex.request.path for ex in host.dispatched] == ["/a"]


# -- framing: lengths, HEAD and bodiless statuses ----------------------------------------------------

def test_head_gets_the_length_and_no_body(loop):
    def handler(ex):
        ex.respond("200 OK", [("Content-Type", "text/plain")], b"12345")
    host, t, conn = open_h1(loop, handler)
    conn.data_received(get("/", method=b"HEAD") + get("/next"))
    host.step()
    rs = answers(t, heads=(0,))
    assert rs[0].header("content-length") == "5" and rs[0].body == b""
    assert rs[1].body == b"12345"        # the next response is not shifted


def test_head_keeps_the_apps_content_length_and_drops_writes(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/", method=b"HEAD") + get("/next"))
    ex = host.dispatched[0]
    ex.start("200 OK", [("Content-Length", "1000")])
    ex.write(b"dropped")
    ex.finish()
    hello(host.dispatched[1])
    host.step()
    rs = answers(t, heads=(0,))
    assert rs[0].header("content-length") == "1000"
    assert rs[1].body == b"/next"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified", "100 Continue"])
def test_bodiless_statuses_never_carry_a_body(loop, status):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/") + get("/next"))
    ex = host.dispatched[0]
    ex.start(status, [("Content-Length", "10")] if status[:3] == "304" else [])
    ex.write(b"should not be sent")
    ex.finish()
    hello(host.dispatched[1])
    host.step()
    out = t.take()
    assert b"should not be sent" not in out
    rs = parse_responses(out)
    assert rs[0].header("transfer-encoding") is None
    # a 304 keeps the length of the representation; 1xx and 204 have none
    assert rs[0].header("content-length") == ("10" if status[:3] == "304" else None)
    assert rs[1].body == b"/next"


def test_a_body_longer_than_its_content_length_is_cut(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/") + get("/next"))
    ex = host.dispatched[0]
    ex.start("200 OK", [], content_length=4)
    ex.write(b"abcdef")
    ex.write(b"more")
    ex.finish()
    hello(host.dispatched[1])
    host.step()
    rs = answers(t)
    assert [r.body for r in rs] == [b"abcd", b"/next"]


def test_a_body_short_of_its_content_length_closes_the_connection(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(get("/"))
    ex = host.dispatched[0]
    ex.start("200 OK", [], content_length=10)
    ex.write(b"abc")
    ex.finish()
    host.step()
    out = t.take()
    assert out.endswith(b"\r\n\r\nabc") and b"Content-Length: 10\r\n" in out
    assert ended(t)         # the client learns the body is incomplete


def test_sendfile_sends_the_file_within_the_content_length(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(300000))
    host, t, conn = open_h1(loop)
    conn.data_received(get("/f") + get("/next"))
    ex = host.dispatched[0]
    results = []
    f = open(str(path), "rb")
    ex.start("200 OK", [], content_length=250000)
    ex.sendfile(f, 10, 300000, lambda ok: (results.append(ok), f.close()))
    for _ in range(20):
        host.step()
        if len(host.dispatched) > 1:
            break
    hello(host.dispatched[1])
    host.step()
    rs = answers(t)
    assert results == [True]
    assert rs[0].body == path.read_bytes()[10:250010] and rs[1].body == b"/next"


# -- response heads that cannot be sent ----------------------------------------------------------

@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("X-A", "a\r\nSet-Cookie: evil=1")]),
    ("200 OK", [("X-A", "a\nSet-Cookie: evil=1")]),
    ("200 OK", [("X-A", "a\x00evil")]),
    ("200 OK", [("X-A\r\nSet-Cookie: evil", "1")]),
    ("200 O\r\nSet-Cookie: evil=1", []),
    ("200 OK", [("Set-Cookie: evil=1 X", "1")]),     # not a token: the rule HTTP/2 applies
    ("200 OK", [("", "evil")]),
])
def test_cr_lf_or_nul_in_a_response_head_is_a_500_and_a_close(loop, status, headers):
    for streaming in (False, True):
        host, t, conn = open_h1(loop)
        conn.data_received(get("/") + get("/next"))
        ex = host.dispatched[0]
        if streaming:
            ex.start(status, headers)
            ex.write(b"body")
            ex.finish()
        else:
            ex.respond(status, headers, b"body")
        host.step()
        out = t.take()
        assert b"evil" not in out and b"body" not in out
        [r] = parse_responses(out)
        assert (r.status, r.header("connection")) == (500, "close")
        assert host.exceptions and len(host.dispatched) == 1


# -- the connection itself -----------------------------------------------------------------------

def test_over_max_connections_a_new_connection_gets_503(loop):
    host = FakeHost(loop, hello, max_connections=1)
    host.connections.add(object())          # one already open
    t = FakeTransport(loop)
    conn = t.connect(H1Connection(host))
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("retry-after"), r.header("connection")) == (503, "1", "close")
    conn.data_received(get("/"))
    host.step()
    assert not host.dispatched and t.take() == b""


def test_a_lost_connection_aborts_the_exchange_in_flight(loop):
    host, t, conn = open_h1(loop)
    conn.data_received(post("/u", b"ab")[:-1])     # body incomplete
    ex = host.dispatched[0]
    assert conn in host.connections
    t.abort()
    host.step()
    assert ex.closed and host.aborted == [ex] and ex.status == 499
    assert conn not in host.connections
    ex.respond("200 OK", [], b"late")           # dropped, never written after the close
    with pytest.raises(IOError):
        ex.request.body.take_available()        # the reader learns the client is gone


# -- timeouts (the worker's sweep passes the time) -----------------------------------------------

def test_a_head_that_does_not_finish_in_time_is_408(loop):
    host, t, conn = open_h1(loop, hello, request_timeout=5)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")
    started = conn.last_active
    conn.sweep(started + 4)
    assert t.take() == b""
    conn.sweep(started + 6)
    host.step()
    [r] = answers(t)
    assert (r.status, r.header("connection")) == (408, "close")


def test_an_idle_keep_alive_connection_is_closed(loop):
    host, t, conn = open_h1(loop, hello, keep_alive=10)
    conn.data_received(get("/"))
    host.step()
    t.take()
    conn.sweep(conn.last_active + 5)
    assert not t.closed
    conn.sweep(conn.last_active + 11)
    assert t.closed and t.take() == b""


def test_the_http2_preface_hands_the_connection_to_http2(loop):
    from skitaid.protocols.h2 import H2Connection
    host = FakeHost(loop, hello, http2=True)
    t = FakeTransport(loop)
    conn = t.connect(H1Connection(host))
    conn.data_received(b"PRI * HTTP")                # a prefix: wait for the rest
    assert t.protocol is conn and t.take() == b""
    conn.data_received(b"/2.0\r\n\r\nSM\r\n\r\n")
    assert isinstance(t.protocol, H2Connection)
    assert conn not in host.connections and t.protocol in host.connections
    host.step()
    assert t.take()[3:4] == b"\x04"                  # the server's SETTINGS frame
