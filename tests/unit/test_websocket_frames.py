"""WebSocket framing (protocols/websocket.py, sans I/O) and the connection that
runs it (protocols/wsconn.py) over the fake transport."""
import struct
import zlib

import pytest

from helpers.wsframes import client_frame, close_code, server_frames
from skitaid.protocols import websocket as wsp
from skitaid.protocols.websocket import (CLOSE, MESSAGE, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING,
                                         OP_PONG, OP_TEXT, PING, PONG, FrameParser,
                                         ProtocolError)
from skitaid.protocols.wsconn import HARD_LIMIT, WSConnection

from .fakes import FakeHost, FakeTransport


def feed(data, max_size=1 << 20, deflate=None):
    return FrameParser(max_size, deflate).feed(data)


def refused(data, max_size=1 << 20, deflate=None):
    """The close code the parser fails `data` with, and the events before the mistake."""
    with pytest.raises(ProtocolError) as e:
        FrameParser(max_size, deflate).feed(data)
    return e.value.code, e.value.events


# -- frames and messages ------------------------------------------------------------------------

def test_masked_text_and_binary_messages():
    assert feed(client_frame(OP_TEXT, "héllo".encode())) == [(MESSAGE, "héllo")]
    assert feed(client_frame(OP_BINARY, b"\x00\xff")) == [(MESSAGE, b"\x00\xff")]
    assert feed(client_frame(OP_BINARY, b"")) == [(MESSAGE, b"")]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_every_length_encoding(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert feed(client_frame(OP_BINARY, payload)) == [(MESSAGE, payload)]


def test_an_unmasked_client_frame_is_a_protocol_error():
    assert refused(client_frame(OP_TEXT, b"hi", mask=False))[0] == wsp.PROTOCOL_ERROR


def test_a_fragmented_message_with_control_frames_between():
    data = (client_frame(OP_TEXT, b"hel", fin=False) + client_frame(OP_PING, b"p1")
            + client_frame(OP_CONT, b"lo ", fin=False) + client_frame(OP_PONG, b"")
            + client_frame(OP_CONT, b"world"))
    expected = [(PING, b"p1"), (PONG, b""), (MESSAGE, "hello world")]
    assert feed(data) == expected
    # the same bytes one at a time: the same events, in the same order
    parser = FrameParser(1 << 20)
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i:i + 1])
    assert events == expected


def test_a_character_split_across_fragments_is_valid():
    e_acute = "é".encode()
    data = client_frame(OP_TEXT, b"caf" + e_acute[:1], fin=False) + client_frame(OP_CONT, e_acute[1:])
    assert feed(data) == [(MESSAGE, "café")]


@pytest.mark.parametrize("payload", [b"\xff", b"a\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
def test_invalid_utf8_in_a_text_message_is_1007(payload):
    assert refused(client_frame(OP_TEXT, payload))[0] == wsp.INVALID_DATA


def test_invalid_utf8_fails_at_once_not_at_the_end_of_the_message():
    parser = FrameParser(1 << 20)
    with pytest.raises(ProtocolError) as e:
        parser.feed(client_frame(OP_TEXT, b"ok \xff", fin=False))     # no FIN yet
    assert e.value.code == wsp.INVALID_DATA
    # a dangling surrogate start can never become valid: refused before the next byte
    with pytest.raises(ProtocolError):
        FrameParser(1 << 20).feed(client_frame(OP_TEXT, b"\xed\xa0", fin=False))


def test_a_text_message_ending_inside_a_character_is_1007():
    assert refused(client_frame(OP_TEXT, "é".encode()[:1]))[0] == wsp.INVALID_DATA


def test_a_message_over_the_size_limit_is_1009_before_its_payload_comes():
    code, _ = refused(client_frame(OP_BINARY, b"x" * 11)[:8], max_size=10)   # header only
    assert code == wsp.TOO_BIG
    fragments = client_frame(OP_BINARY, b"x" * 6, fin=False) + client_frame(OP_CONT, b"x" * 5)
    assert refused(fragments, max_size=10)[0] == wsp.TOO_BIG
    assert feed(client_frame(OP_BINARY, b"x" * 10), max_size=10) == [(MESSAGE, b"x" * 10)]


@pytest.mark.parametrize("data", [
    client_frame(OP_PING, b"x" * 126),                          # control frame too long
    client_frame(OP_PING, b"x", fin=False),                     # fragmented control frame
    client_frame(3, b"x"),                                      # reserved data opcode
    client_frame(0xB, b""),                                     # reserved control opcode
    client_frame(OP_TEXT, b"x", rsv=0x40),                      # RSV1 without deflate
    client_frame(OP_TEXT, b"x", rsv=0x20),
    client_frame(OP_CONT, b"x"),                                # continuation of nothing
    client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
])
def test_frame_level_violations_are_1002(data):
    assert refused(data)[0] == wsp.PROTOCOL_ERROR


def test_messages_before_a_violation_are_kept():
    code, events = refused(client_frame(OP_TEXT, b"first") + client_frame(OP_TEXT, b"x", mask=False))
    assert code == wsp.PROTOCOL_ERROR and events == [(MESSAGE, "first")]


# -- close frames -------------------------------------------------------------------------------

@pytest.mark.parametrize("payload, event", [
    (b"", (CLOSE, wsp.NO_STATUS, "")),
    (struct.pack("!H", 1000) + b"bye", (CLOSE, 1000, "bye")),
    (struct.pack("!H", 3000), (CLOSE, 3000, "")),
    (struct.pack("!H", 4999) + "é".encode(), (CLOSE, 4999, "é")),
])
def test_close_frames(payload, event):
    parser = FrameParser(1 << 20)
    assert parser.feed(client_frame(OP_CLOSE, payload) + client_frame(OP_TEXT, b"after")) == [event]
    assert parser.feed(client_frame(OP_TEXT, b"later")) == []      # nothing after a close


@pytest.mark.parametrize("payload, code", [
    (b"\x03", wsp.PROTOCOL_ERROR),                               # a 1-byte payload
    (struct.pack("!H", 999), wsp.PROTOCOL_ERROR),
    (struct.pack("!H", 1005), wsp.PROTOCOL_ERROR),               # never sent on the wire
    (struct.pack("!H", 1006), wsp.PROTOCOL_ERROR),
    (struct.pack("!H", 1015), wsp.PROTOCOL_ERROR),
    (struct.pack("!H", 5000), wsp.PROTOCOL_ERROR),
    (struct.pack("!H", 1000) + b"\xff", wsp.INVALID_DATA),       # the reason is UTF-8
])
def test_bad_close_frames(payload, code):
    assert refused(client_frame(OP_CLOSE, payload))[0] == code


def test_server_frames_and_close_payloads():
    assert wsp.frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert wsp.frame(OP_BINARY, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert wsp.close_payload(1000, "bye") == b"\x03\xe8bye"
    assert wsp.close_payload(wsp.NO_STATUS) == b""
    assert len(wsp.close_payload(1000, "é" * 100)) == 125       # fits a control frame


def test_handshake_keys():
    # RFC 6455 1.3's example
    assert wsp.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wsp.valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not wsp.valid_key("c2hvcnQ=") and not wsp.valid_key("not base64!")


# -- permessage-deflate -------------------------------------------------------------------------

def deflated(data):
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_a_compressed_message_is_inflated():
    deflate, answer = wsp.negotiate_deflate("permessage-deflate; client_max_window_bits")
    assert answer == "permessage-deflate"
    text = "hello " * 1000
    assert feed(client_frame(OP_TEXT, deflated(text.encode()), rsv=0x40), deflate=deflate) \
        == [(MESSAGE, text)]


def test_a_deflate_bomb_is_1009_while_it_inflates():
    deflate, _ = wsp.negotiate_deflate("permessage-deflate")
    bomb = deflated(b"\0" * 10 ** 6)
    assert len(bomb) < 2000
    assert refused(client_frame(OP_BINARY, bomb, rsv=0x40), max_size=100000, deflate=deflate)[0] \
        == wsp.TOO_BIG


@pytest.mark.parametrize("offer, answer", [
    ("permessage-deflate; server_no_context_takeover",
     "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
     "permessage-deflate"),                                      # 8 declined: the next offer
    ("permessage-deflate; client_max_window_bits=8",
     "permessage-deflate; client_max_window_bits=9"),
    ("permessage-deflate; unknown=1", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("x-webkit-deflate-frame", None),
])
def test_deflate_negotiation(offer, answer):
    assert wsp.negotiate_deflate(offer)[1] == answer


# -- the connection -----------------------------------------------------------------------------

class FakeSession:
    """The app side of a WebSocket connection (handlers/websocket.py's Session)."""

    def __init__(self, pause=False):
        self.pause = pause
        self.conn = None
        self.messages = []
        self.failures = []
        self.closed_with = []

    def opened(self, conn):
        self.conn = conn

    def received(self, msg):
        self.messages.append(msg)
        return self.pause

    def fail_after(self, code, reason):
        self.failures.append((code, reason))

    def closed(self, code):
        self.closed_with.append(code)


def open_ws(loop, leftover=b"", session=None, idle_timeout=0, ping_interval=0):
    host = FakeHost(loop)
    t = FakeTransport(loop)
    t.pause_reading()           # (the HTTP/1.1 side paused it before the switch)
    session = session or FakeSession()
    conn = WSConnection(host, session, 1 << 20, idle_timeout, ping_interval)
    t.set_protocol(conn)
    conn.takeover(t, leftover)
    return host, t, conn, session


def test_takeover_reads_what_came_with_the_upgrade(loop):
    host, t, conn, session = open_ws(loop, client_frame(OP_TEXT, b"early"))
    assert session.conn is conn and conn in host.connections
    assert session.messages == ["early"] and t.reading


def test_a_ping_is_answered_with_its_payload(loop):
    host, t, conn, session = open_ws(loop)
    conn.data_received(client_frame(OP_PING, b"abc"))
    host.step()
    assert server_frames(t.take()) == [(OP_PONG, b"abc")]


def test_the_clients_close_is_echoed_and_the_server_closes_tcp(loop):
    host, t, conn, session = open_ws(loop)
    conn.data_received(client_frame(OP_CLOSE, struct.pack("!H", 1001) + b"gone"))
    host.step()
    [(op, payload)] = server_frames(t.take())
    assert (op, close_code(payload)) == (OP_CLOSE, 1001)
    assert t.closed and session.closed_with == [1001] and conn not in host.connections


def test_a_violation_waits_for_the_app_then_fails_with_its_code(loop):
    host, t, conn, session = open_ws(loop)
    conn.data_received(client_frame(OP_TEXT, b"fine") + client_frame(OP_TEXT, b"\xff"))
    # the message before the mistake is handed over; the session fails the connection
    assert session.messages == ["fine"] and session.failures[0][0] == wsp.INVALID_DATA
    assert t.take() == b""
    conn.data_received(client_frame(OP_TEXT, b"ignored"))       # input is no longer parsed
    assert session.messages == ["fine"]
    conn.fail(*session.failures[0])
    host.step()
    [(op, payload)] = server_frames(t.take())
    assert (op, close_code(payload)) == (OP_CLOSE, wsp.INVALID_DATA)
    assert t.eof_written and host.rejected[0][0] == wsp.INVALID_DATA


def test_an_oversized_message_fails_with_1009(loop):
    host = FakeHost(loop)
    t = FakeTransport(loop)
    session = FakeSession()
    conn = WSConnection(host, session, 10, 0, 0)
    conn.takeover(t, b"")
    conn.data_received(client_frame(OP_BINARY, b"x" * 11))
    assert session.failures[0][0] == wsp.TOO_BIG and not session.messages


def test_messages_go_out_as_text_or_binary_frames(loop):
    host, t, conn, session = open_ws(loop)
    assert conn.send_message("héllo") and conn.send_message(b"\x01")
    host.step()
    assert server_frames(t.take()) == [(OP_TEXT, "héllo".encode()), (OP_BINARY, b"\x01")]


def test_graceful_stop_closes_with_1001(loop):
    host, t, conn, session = open_ws(loop)
    assert conn.close_idle() is False
    host.step()
    [(op, payload)] = server_frames(t.take())
    assert (op, close_code(payload), payload[2:]) == (OP_CLOSE, 1001, b"server shutting down")
    assert session.closed_with == [1001]
    assert not conn.send_message("late")
    # the client's answering close frame ends it
    conn.data_received(client_frame(OP_CLOSE, struct.pack("!H", 1001)))
    host.step()
    assert t.closed and t.take() == b""


def test_a_client_that_lets_output_pile_up_is_dropped(loop):
    host, t, conn, session = open_ws(loop)
    t.buffer_size = HARD_LIMIT
    conn.send_message("one more")
    assert t.aborted


def test_a_busy_session_pauses_reading(loop):
    host, t, conn, session = open_ws(loop, session=FakeSession(pause=True))
    conn.data_received(client_frame(OP_TEXT, b"a"))
    assert not t.reading
    conn.resume_input()
    assert t.reading


def test_an_idle_connection_is_closed_by_the_sweep(loop):
    host, t, conn, session = open_ws(loop, idle_timeout=5)
    conn.sweep(conn.last_active + 4)
    assert t.take() == b""
    conn.sweep(conn.last_active + 6)
    host.step()
    [(op, payload)] = server_frames(t.take())
    assert (op, close_code(payload), payload[2:]) == (OP_CLOSE, 1000, b"idle timeout")
