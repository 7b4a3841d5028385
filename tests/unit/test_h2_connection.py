"""The HTTP/2 connection (protocols/h2.py) driven by a client state machine
(the `h2` package, client side) through the fake transport: frames in, frames
and host events out."""
import asyncio

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection as H2ClientState
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, ResponseReceived,
                       SettingsAcknowledged, StreamEnded, StreamReset)
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import (GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

from helpers.h2frames import split_frames
from skitaid.body import EMPTY_BODY
from skitaid.protocols import h2 as h2mod
from skitaid.protocols.h2 import (CONN_WINDOW, MAX_STREAM_ID, MAX_STREAMS, OUT_HIGH_WATER,
                                  STREAM_WINDOW, H2Connection, malformed_pseudo)

from .fakes import FakeHost, FakeTransport


class Client:
    """A client state machine wired to an H2Connection under test. Output the
    client has not read yet stays in the transport: tests that need to look
    at frames the client never acts on use `frames()` instead of `read()`."""

    def __init__(self, loop, handler=None, settings=None, **limits):
        self.host = FakeHost(loop, handler, **limits)
        self.t = FakeTransport(loop)
        self.conn = self.t.connect(H2Connection(self.host))
        self.h2 = H2ClientState(H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.events = []
        self.send()

    def send(self, read=True):
        data = self.h2.data_to_send()
        if data:
            self.conn.data_received(data)
        self.host.step()
        if read:
            self.read()

    def read(self):
        data = self.t.take()
        if data:
            self.events += self.h2.receive_data(data)
        return self.events

    def frames(self):
        frames, rest = split_frames(self.t.take())
        assert rest == b""
        return frames

    def request(self, path="/", method="GET", body=None, headers=(), end=True, read=True):
        sid = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", "a"), (":path", path)]
        self.h2.send_headers(sid, fields + list(headers), end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.send(read)
        return sid

    def of(self, sid, kind):
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", sid) == sid]

    def response(self, sid):
        """(status, headers dict, body, ended) of stream `sid` so far."""
        heads = self.of(sid, ResponseReceived)
        headers = dict(heads[0].headers) if heads else {}
        body = b"".join(e.data for e in self.of(sid, DataReceived))
        return (int(headers[":status"]) if heads else None, headers, body,
                bool(self.of(sid, StreamEnded)))


def hello(ex):
    ex.respond("200 OK", [("Content-Type", "text/plain")], ex.request.path.encode())


def echo(ex):
    body = ex.request.body
    if body is EMPTY_BODY:
        return hello(ex)
    body.on_complete(lambda: ex.respond("200 OK", [], body.take_all()))


# -- preface and SETTINGS -----------------------------------------------------------------------

def test_the_server_opens_with_its_settings_and_a_bigger_window(loop):
    host = FakeHost(loop)
    t = FakeTransport(loop)
    t.connect(H2Connection(host))
    host.step()
    frames, rest = split_frames(t.take())
    assert rest == b"" and isinstance(frames[0], SettingsFrame)
    settings = frames[0].settings
    assert settings[SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_STREAMS
    assert settings[SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert settings[SettingCodes.ENABLE_PUSH] == 0
    assert settings[SettingCodes.MAX_HEADER_LIST_SIZE] == host.limits.max_header_size
    [wu] = [f for f in frames if isinstance(f, WindowUpdateFrame)]
    assert wu.stream_id == 0 and wu.window_increment == CONN_WINDOW - 65535


def test_a_bad_preface_is_a_goaway_and_a_close(loop):
    host = FakeHost(loop)
    t = FakeTransport(loop)
    conn = t.connect(H2Connection(host))
    conn.data_received(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 20)
    host.step()
    goaways = [f for f in split_frames(t.take())[0] if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [ErrorCodes.PROTOCOL_ERROR]
    assert t.closed and host.rejected


def test_the_clients_settings_are_acknowledged_and_applied(loop):
    c = Client(loop, hello, settings={SettingCodes.MAX_FRAME_SIZE: 20000})
    assert any(isinstance(e, SettingsAcknowledged) for e in c.events)
    c.host.handler = lambda ex: ex.respond("200 OK", [], b"q" * 50000)
    sid = c.request("/")
    assert max(len(e.data) for e in c.of(sid, DataReceived)) == 20000


# -- a request and its response -------------------------------------------------------------------

def test_a_request_is_dispatched_and_answered(loop):
    c = Client(loop, hello)
    sid = c.request("/a/b?x=1#frag", headers=[("user-agent", "t")])
    [ex] = c.host.dispatched
    req = ex.request
    assert (req.method, req.path, req.query, req.version, req.host) == ("GET", "/a/b", "x=1", "2", "a")
    assert ("user-agent", "t") in req.headers and ("host", "a") in req.headers
    assert not any(n.startswith(":") for n, _ in req.headers)
    status, headers, body, ended = c.response(sid)
    assert (status, body, ended) == (200, b"/a/b", True)
    assert headers["content-length"] == "4" and headers["server"] == "skitaid"
    assert c.host.finished == [ex]


def test_a_request_body_reaches_the_app_with_its_trailers(loop):
    c = Client(loop, echo)
    sid = c.request("/up", "POST", body=b"hello ", end=False)
    c.h2.send_data(sid, b"world")
    c.h2.send_headers(sid, [("x-sum", "1"), ("authorization", "no")], end_stream=True)
    c.send()
    req = c.host.dispatched[0].request
    assert req.chunked and req.trailers == [("x-sum", "1")]
    assert ("x-sum", "1") not in req.headers
    assert c.response(sid)[2:] == (b"hello world", True)


def test_a_body_that_disagrees_with_its_content_length_is_a_stream_error(loop):
    c = Client(loop, echo)
    bad = c.request("/up", "POST", body=b"toolong", headers=[("content-length", "3")])
    good = c.request("/next")
    assert c.of(bad, StreamReset)[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert c.response(bad)[0] is None           # never answered as if whole
    assert c.response(good)[0] == 200 and not c.of(0, ConnectionTerminated)


@pytest.mark.parametrize("status, extra", [("204 No Content", []), ("304 Not Modified", [])])
def test_head_and_bodiless_statuses_end_in_the_headers(loop, status, extra):
    c = Client(loop, lambda ex: ex.respond(status if ex.request.method == "GET" else "200 OK",
                                           extra, b"12345"))
    head = c.request("/", "HEAD")
    other = c.request("/")
    st, headers, body, ended = c.response(head)
    assert (st, body, ended, headers.get("content-length")) == (200, b"", True, "5")
    st, headers, body, ended = c.response(other)
    assert (st, body, ended) == (int(status[:3]), b"", True)
    assert "content-length" not in headers


def test_connection_specific_response_fields_are_dropped(loop):
    c = Client(loop, lambda ex: ex.respond("200 OK", [("Connection", "close"),
                                                       ("Transfer-Encoding", "chunked"),
                                                       ("Keep-Alive", "1"), ("X-Ok", "1")], b"x"))
    sid = c.request("/")
    headers = c.response(sid)[1]
    assert headers["x-ok"] == "1"
    assert not {"connection", "transfer-encoding", "keep-alive"} & set(headers)


@pytest.mark.parametrize("headers", [
    [("X-A", "a\r\nb")], [("X-A", "a\x00b")], [("X A", "v")], [(":path", "/x")],
])
def test_a_response_field_that_cannot_be_sent_is_a_500(loop, headers):
    c = Client(loop, lambda ex: ex.respond("200 OK", headers, b"secret"))
    sid = c.request("/")
    status, _, body, ended = c.response(sid)
    assert status == 500 and b"secret" not in body and ended
    assert c.host.exceptions


# -- flow control -------------------------------------------------------------------------------

def test_output_waits_for_the_peers_window(loop):
    c = Client(loop, lambda ex: ex.respond("200 OK", [], b"x" * 1000),
               settings={SettingCodes.INITIAL_WINDOW_SIZE: 100})
    sid = c.request("/")
    status, _, body, ended = c.response(sid)
    assert (status, len(body), ended) == (200, 100, False)
    c.h2.increment_flow_control_window(400, stream_id=sid)
    c.send()
    assert c.response(sid)[2:] == (b"x" * 500, False)
    c.h2.increment_flow_control_window(500, stream_id=sid)
    c.send()
    assert c.response(sid)[2:] == (b"x" * 1000, True)


def test_a_producer_waits_in_drain_until_the_window_opens(loop):
    c = Client(loop)
    sid = c.request("/big")
    ex = c.host.dispatched[0]
    ex.start("200 OK", [])
    ex.write(b"y" * (OUT_HIGH_WATER + 100000))
    assert ex.writing_paused()
    waiter = loop.create_task(ex.drain())
    c.send()
    assert not waiter.done()
    sent = len(c.response(sid)[2])
    assert sent == 65535            # the client's initial windows
    c.h2.increment_flow_control_window(10 ** 6)
    c.h2.increment_flow_control_window(10 ** 6, stream_id=sid)
    c.send()
    c.host.step()
    assert waiter.done() and not ex.writing_paused()
    ex.finish()
    c.send()
    assert c.response(sid)[2:] == (b"y" * (OUT_HIGH_WATER + 100000), True)


def test_the_receive_window_is_reopened_as_the_body_arrives(loop):
    c = Client(loop)
    sid = c.request("/up", "POST", body=b"z" * 16000, end=False)
    before = c.h2.local_flow_control_window(sid)
    for _ in range(10):
        c.h2.send_data(sid, b"z" * 16000)
        c.send()
    # the server took the body into the app's buffer and re-opened the window
    assert c.h2.local_flow_control_window(sid) > before - 10 * 16000
    assert c.host.dispatched[0].request.body.received == 11 * 16000


# -- streams reset, connections closed ----------------------------------------------------------

def test_a_stream_reset_by_the_client_stops_its_exchange_only(loop):
    c = Client(loop)
    sid = c.request("/up", "POST", body=b"part", end=False)
    ex = c.host.dispatched[0]
    c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.send()
    assert ex.closed and c.host.aborted == [ex]
    with pytest.raises(IOError):
        ex.request.body.take_available()
    ex.respond("200 OK", [], b"late")       # dropped: no frame for a closed stream
    c.send()
    assert c.response(sid)[0] is None
    c.host.handler = hello
    assert c.response(c.request("/next"))[0] == 200


def test_rapid_reset_ends_the_connection_with_enhance_your_calm(loop):
    c = Client(loop)
    for _ in range(250):
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                                (":path", "/")], end_stream=True)
        c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.send()
    [term] = c.of(0, ConnectionTerminated)
    assert term.error_code == ErrorCodes.ENHANCE_YOUR_CALM and c.t.closed


def test_graceful_close_takes_two_goaways(loop, monkeypatch):
    c = Client(loop, hello)
    first = c.request("/1")
    assert c.response(first)[0] == 200
    assert c.conn.close_idle() is False
    frames = c.frames()                     # (the client does not read them yet)
    goaway = [f for f in frames if isinstance(f, GoAwayFrame)]
    ping = [f for f in frames if isinstance(f, PingFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaway] == [(MAX_STREAM_ID, 0)]
    assert len(ping) == 1 and "ACK" not in ping[0].flags
    # a stream the client opened before it read the GOAWAY is still served
    c.host.handler = None
    late = c.request("/late", read=False)
    assert [ex.request.path for ex in c.host.dispatched][-1] == "/late"
    c.conn.data_received(PingFrame(0, opaque_data=ping[0].opaque_data, flags=["ACK"]).serialize())
    c.host.step()
    goaway = [f for f in c.frames() if isinstance(f, GoAwayFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaway] == [(late, 0)]
    # one opened after the last GOAWAY is refused, and no handler sees it
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "a"),
                        (":path", "/too-late")])
    c.conn.data_received(HeadersFrame(late + 2, data=block,
                                      flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.host.step()
    [rst] = [f for f in c.frames() if isinstance(f, RstStreamFrame)]
    assert (rst.stream_id, rst.error_code) == (late + 2, ErrorCodes.REFUSED_STREAM)
    assert len(c.host.dispatched) == 2 and not c.t.eof_written
    hello(c.host.dispatched[-1])            # the last stream done: the connection winds down
    c.host.step()
    assert c.t.eof_written and c.conn.close_idle() is True


def test_graceful_close_goes_on_when_the_ping_is_never_answered(loop, monkeypatch):
    monkeypatch.setattr(h2mod, "DRAIN_TIMEOUT", 0.01)
    c = Client(loop, hello)
    c.request("/1")
    c.conn.close_idle()
    loop.run_until_complete(asyncio.sleep(0.03))
    goaway = [f for f in c.frames() if isinstance(f, GoAwayFrame)]
    assert [g.last_stream_id for g in goaway] == [MAX_STREAM_ID, 1]
    assert c.t.eof_written


def test_over_max_connections_the_goaway_takes_no_stream(loop):
    host = FakeHost(loop, hello, max_connections=1)
    host.connections.add(object())
    t = FakeTransport(loop)
    t.connect(H2Connection(host))
    host.step()
    goaway = [f for f in split_frames(t.take())[0] if isinstance(f, GoAwayFrame)]
    assert [(g.last_stream_id, g.error_code) for g in goaway] == [(0, 0)] and t.closed


# -- malformed requests -------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/a b")],
    [(":method", "G T"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
    [(":method", "GET"), (":scheme", "ht tp"), (":authority", "a"), (":path", "/")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "u@a"), (":path", "/")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "noslash")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "*")],
    [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     ("content-length", "5")],          # END_STREAM on HEADERS: no DATA can match it
])
def test_a_malformed_request_is_a_stream_error_and_the_connection_goes_on(loop, fields):
    c = Client(loop, hello)
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, fields, end_stream=True)
    c.send()
    assert not c.host.dispatched
    assert c.of(sid, StreamReset)[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert c.host.rejected[0][0] == 400
    assert c.response(c.request("/next"))[:1] == (200,)


@pytest.mark.parametrize("fields", [
    [(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     (":protocol", "websocket")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     ("bad name", "v")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     ("x-a", "a\r\nb")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     ("connection", "close")],
    [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/"),
     ("X-Upper", "v")],
])
def test_what_h2_itself_refuses_ends_the_connection(loop, fields):
    # (RFC 9113 5.4 allows a connection error for a malformed request)
    c = Client(loop, hello)
    c.h2.send_headers(1, fields, end_stream=True)
    c.send()
    assert not c.host.dispatched
    terms = c.of(0, ConnectionTerminated)
    assert terms and {t.error_code for t in terms} == {ErrorCodes.PROTOCOL_ERROR}
    assert c.t.closed and c.host.rejected


def test_too_many_fields_is_431_and_too_long_a_body_413(loop):
    c = Client(loop, hello, max_headers=5, max_upload_size=10)
    many = c.request("/", headers=[("x-%d" % i, "v") for i in range(6)])
    big = c.request("/", "POST", body=b"x" * 11, headers=[("content-length", "11")])
    assert c.response(many)[0] == 431 and c.response(big)[0] == 413
    assert not c.host.dispatched


@pytest.mark.parametrize("method, scheme, path, authority, bad", [
    ("GET", "http", "/", "a", False),
    ("GET", "https", "/x?y#z", "example.com:8443", False),
    ("OPTIONS", "http", "*", "a", False),
    ("CONNECT", None, None, "example.com:443", False),
    ("GET", "http", "/", None, False),              # :authority is optional
    ("GET", None, "/", "a", True),
    ("GET", "http", None, "a", True),
    (None, "http", "/", "a", True),
    ("GET", "http", "*", "a", True),
    ("GET", "http", "/\x7f", "a", True),
    ("GET", "http", "/é", "a", True),
    ("GET", "1http", "/", "a", True),
    ("GET", "http", "/", "a b", True),
    ("GET", "http", "/", "[::1", True),
    ("CONNECT", None, None, "example.com", True),   # no port
    ("CONNECT", "http", None, "example.com:443", True),
    ("CONNECT", None, "/", "example.com:443", True),
])
def test_pseudo_header_grammar(method, scheme, path, authority, bad):
    assert malformed_pseudo(method, scheme, path, authority) is bad
