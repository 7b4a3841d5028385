"""WebSocket endpoints (@skitaid.websocket) against a real server.

One shared server (threads=4) runs APP_SCRIPT: Flask views and a plain WSGI
app in every design mode. Clients: the `websockets` library (sync client)
and raw sockets for what a library would not send (bad handshakes, unmasked
frames) or hide (server pings).
"""
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import sys
import time
import zlib

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import ServerProc, wait_for
from helpers.clients import read_head
from helpers.wsframes import FrameReader, client_frame, close_code

APP_SCRIPT = r'''
import os, threading, time
from flask import Flask, request
import skitaid

HERE = os.path.dirname(os.path.abspath(__file__))
app = Flask(__name__)


@app.route("/")
def index():
    return "plain page"


@app.route("/echo")
@skitaid.websocket(60)
def echo():
    while True:
        message = yield
        if message is None:
            return
        # request is the view's, even in later steps run by other threads
        yield "ECHO:" + message + request.args.get("suffix", "")


@app.route("/greet")
@skitaid.websocket(60)
def greet():
    yield "hello " + request.args.get("name", "?")
    while True:
        message = yield
        if message is None:
            return
        yield ["one:" + message, "two:" + message]     # a list: two messages


@app.route("/dedicated")
@skitaid.websocket(60, skitaid.WS_DEDICATED)
def dedicated():
    ws = request.environ["websocket"]
    me = threading.current_thread().name
    while True:
        message = ws.receive()
        if message is None:
            return
        if message == "bye":
            ws.send("bye")
            ws.close()
            return
        ws.send("%s:%s" % (me, message))


def pusher(ws, n):
    for i in range(n):
        ws.send("push %d" % i)


@app.route("/pull")
@skitaid.websocket(60)
def pull():
    # a plain function in the default mode: it pulls with receive()
    ws = request.environ["websocket"]
    while True:
        message = ws.receive()
        if message is None:
            return
        ws.send("%s:%s" % (threading.current_thread().name, message))


@app.route("/threadsafe")
@skitaid.websocket(60, skitaid.WS_THREADSAFE)
def threadsafe():
    ws = request.environ["websocket"]
    while True:
        messages = ws.getswait(10)
        if messages is None:
            return
        for m in messages:
            n = int(m.split()[1])
            threading.Thread(target=pusher, args=(ws, n)).start()
            yield "started %d" % n


def joined():
    return "joined %s" % request.args.get("name")


def left():
    return "left %s" % request.args.get("name")


@app.route("/chat")
@skitaid.websocket(60, skitaid.WS_GROUPCHAT, onopen=joined, onclose=left)
def chat():
    name = request.args.get("name")
    while True:
        message = yield
        if message is None:
            return
        yield "%s: %s" % (name, message)


@app.route("/json")
@skitaid.websocket(60, encoding=skitaid.WS_MSG_JSON)
def json_view():
    n = 0
    while True:
        message = yield
        if message is None:
            return
        n += 1
        yield {"n": n, "got": message}


@app.route("/idle")
@skitaid.websocket(1)
def idle():
    while True:
        message = yield
        if message is None:
            with open(os.path.join(HERE, "flag-idle-closed"), "w") as f:
                f.write("1")
            return
        yield message


@app.route("/ping")
@skitaid.websocket(60, ping_interval=1)
def ping():
    while True:
        message = yield
        if message is None:
            return
        yield message


@app.route("/small")
@skitaid.websocket(60, max_message_size=1024)
def small():
    while True:
        message = yield
        if message is None:
            return
        yield message


@app.route("/flood")
@skitaid.websocket(60, skitaid.WS_DEDICATED)
def flood():
    ws = request.environ["websocket"]
    chunk = b"x" * 65536
    n = 0
    while ws.send(chunk):
        n += 1
        with open(os.path.join(HERE, "flag-flood"), "w") as f:
            f.write(str(n))


@app.route("/crash")
@skitaid.websocket(60)
def crash():
    message = yield
    raise RuntimeError("app bug")


def raw_app(environ, start_response):
    return raw_ws(environ, start_response)


@skitaid.websocket(60)
def raw_ws(environ, start_response):
    while True:
        message = yield
        if message is None:
            return
        yield b"RAW:" + (message.encode() if isinstance(message, str) else message)


skitaid.mount("/raw", raw_app)
skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=4,
            graceful_timeout=5)
'''


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    (root / "app.py").write_text(APP_SCRIPT)
    s = ServerProc([sys.executable, str(root / "app.py")], str(root))
    s.root = str(root)
    yield s
    s.stop()


def url(srv, path):
    return "ws://127.0.0.1:%d%s" % (srv.port, path)


# -- raw-socket helpers -------------------------------------------------------------

KEY = base64.b64encode(b"0123456789abcdef").decode()


def raw_request(port, path="/echo", headers=None, method="GET", version="1.1"):
    """Send a handshake; returns (socket, status, headers dict, bytes after the head)."""
    h = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13"}
    h.update(headers or {})
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    lines += ["%s: %s" % (k, v) for k, v in h.items() if v is not None]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head, rest = read_head(s)
    first, *hlines = head.split("\r\n")
    status = int(first.split()[1])
    hdrs = {}
    for line in hlines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return s, status, hdrs, rest


def send_frame(s, op, payload, fin=True, mask=True):
    s.sendall(client_frame(op, payload, fin, mask))


# -- modes ------------------------------------------------------------------------------

def test_echo_flask_view_keeps_request_context(srv):
    with connect(url(srv, "/echo?suffix=!")) as ws:
        for i in range(20):
            ws.send("m%d" % i)
            assert ws.recv(timeout=5) == "ECHO:m%d!" % i
        big = "é" * 100000
        ws.send(big)
        assert ws.recv(timeout=5) == "ECHO:" + big + "!"


def test_echo_plain_wsgi_app_text_and_binary(srv):
    with connect(url(srv, "/raw/anything")) as ws:
        ws.send("text")
        assert ws.recv(timeout=5) == b"RAW:text"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=5) == b"RAW:\x00\xffbin"


def test_greeting_and_list_of_messages(srv):
    with connect(url(srv, "/greet?name=ann")) as ws:
        assert ws.recv(timeout=5) == "hello ann"
        ws.send("x")
        assert ws.recv(timeout=5) == "one:x"
        assert ws.recv(timeout=5) == "two:x"


def test_dedicated_thread_per_connection(srv):
    with connect(url(srv, "/dedicated")) as a, connect(url(srv, "/dedicated")) as b:
        a.send("hi")
        b.send("hi")
        ta, ma = a.recv(timeout=5).rsplit(":", 1)
        tb, mb = b.recv(timeout=5).rsplit(":", 1)
        assert ma == mb == "hi"
        assert ta.startswith("skitaid-ws-") and tb.startswith("skitaid-ws-") and ta != tb
        a.send("again")
        assert a.recv(timeout=5) == ta + ":again"     # the same thread all along
        a.send("bye")
        assert a.recv(timeout=5) == "bye"
        with pytest.raises(ConnectionClosed):
            a.recv(timeout=5)
        assert a.close_code == 1000


def test_threadsafe_send_from_other_threads(srv):
    with connect(url(srv, "/threadsafe")) as ws:
        ws.send("run 50")
        ws.send("run 50")
        got = [ws.recv(timeout=5) for _ in range(102)]
        assert got.count("started 50") == 2
        pushes = [m for m in got if m.startswith("push ")]
        assert len(pushes) == 100
        assert sorted(pushes) == sorted(["push %d" % i for i in range(50)] * 2)


def test_group_chat_three_clients(srv):
    with contextlib.ExitStack() as stack:
        _group_chat(srv, lambda u: stack.enter_context(connect(u)))


def _group_chat(srv, connect):
    a = connect(url(srv, "/chat?room=1&name=a"))
    assert a.recv(timeout=5) == "joined a"
    b = connect(url(srv, "/chat?room=1&name=b"))
    assert b.recv(timeout=5) == "joined b"
    assert a.recv(timeout=5) == "joined b"       # onopen's answer goes to the room
    other = connect(url(srv, "/chat?room=2&name=z"))
    assert other.recv(timeout=5) == "joined z"
    c = connect(url(srv, "/chat?room=1&name=c"))
    for ws in (a, b, c):
        assert ws.recv(timeout=5) == "joined c"
    b.send("hello all")
    for ws in (a, b, c):
        assert ws.recv(timeout=5) == "b: hello all"
    c.close()
    for ws in (a, b):
        assert ws.recv(timeout=5) == "left c"
    a.send("still here")
    assert b.recv(timeout=5) == "a: still here"
    assert a.recv(timeout=5) == "a: still here"
    with pytest.raises(TimeoutError):
        other.recv(timeout=0.3)                    # another room hears nothing


def test_json_encoding(srv):
    with connect(url(srv, "/json")) as ws:
        ws.send(json.dumps({"a": [1, 2]}))
        assert json.loads(ws.recv(timeout=5)) == {"n": 1, "got": {"a": [1, 2]}}
        ws.send("42")
        assert json.loads(ws.recv(timeout=5)) == {"n": 2, "got": 42}
        ws.send("not json")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1007


# -- timeouts, pings, limits ------------------------------------------------------------

def test_idle_timeout_closes(srv):
    t0 = time.monotonic()
    with connect(url(srv, "/idle"), ping_interval=None) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    assert time.monotonic() - t0 < 5
    assert wait_for(lambda: os.path.exists(os.path.join(srv.root, "flag-idle-closed")), 5)


def test_server_sends_keepalive_pings(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/ping")
    assert status == 101
    r = FrameReader(s, rest)
    op, payload = r.read()
    assert op == 0x9                    # a ping after ~1 s of silence
    send_frame(s, 0xA, payload)         # pong
    send_frame(s, 0x1, b"alive")
    op, payload = r.read()
    while op == 0x9:
        send_frame(s, 0xA, payload)
        op, payload = r.read()
    assert (op, payload) == (0x1, b"alive")
    send_frame(s, 0x8, struct.pack("!H", 1000))
    op, payload = r.read()
    assert op == 0x8 and close_code(payload) == 1000
    s.close()


def test_unanswered_pings_drop_the_connection(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/ping")
    assert status == 101
    r = FrameReader(s, rest)
    s.settimeout(8)
    t0 = time.monotonic()
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            r.read()                    # pings, never answered
    assert time.monotonic() - t0 < 7
    s.close()


def test_max_message_size_closes_1009(srv):
    with connect(url(srv, "/small")) as ws:
        ws.send("a" * 1024)
        assert ws.recv(timeout=5) == "a" * 1024
        ws.send("a" * 1025)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1009


def test_compressed_message_is_limited_after_inflating(srv):
    """A few hundred bytes that inflate to 1 MB: refused at the limit, not inflated."""
    s, status, hdrs, rest = raw_request(srv.port, "/small",
                                        {"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert status == 101 and hdrs["sec-websocket-extensions"] == "permessage-deflate"
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(b"\0" * (1 << 20)) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 2000
    key = os.urandom(4)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(bomb[:-4]))
    s.sendall(struct.pack("!BBH", 0xC2, 0x80 | 126, len(payload)) + key + payload)
    op, payload = FrameReader(s, rest).read()
    assert op == 0x8 and close_code(payload) == 1009
    s.close()


def test_server_answers_client_ping_and_close(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/echo")
    r = FrameReader(s, rest)
    send_frame(s, 0x1, b"frag-", fin=False)
    send_frame(s, 0x9, b"pp")           # a control frame between fragments
    send_frame(s, 0x0, b"mented")
    assert r.read() == (0xA, b"pp")
    assert r.read() == (0x1, b"ECHO:frag-mented")
    send_frame(s, 0x8, struct.pack("!H", 4000) + b"done")
    op, payload = r.read()
    assert op == 0x8 and close_code(payload) == 4000
    assert s.recv(10) == b""            # the server closes TCP
    s.close()


def test_unmasked_frame_is_a_protocol_error(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/echo")
    assert status == 101
    send_frame(s, 0x1, b"hello", mask=False)
    op, payload = FrameReader(s, rest).read()
    assert op == 0x8 and close_code(payload) == 1002
    s.close()


def test_invalid_utf8_split_across_frames_is_1007(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/echo")
    r = FrameReader(s, rest)
    send_frame(s, 0x1, "κόσ".encode()[:3], fin=False)    # ends inside a character
    send_frame(s, 0x0, "κόσ".encode()[3:], fin=True)     # completes it: fine
    assert r.read() == (0x1, "ECHO:κόσ".encode())
    send_frame(s, 0x1, b"ok\xce", fin=False)
    send_frame(s, 0x0, b"\xff", fin=False)               # not a continuation byte
    op, payload = r.read()
    assert op == 0x8 and close_code(payload) == 1007
    s.close()


def test_app_error_closes_1011_and_server_goes_on(srv):
    with connect(url(srv, "/crash")) as ws:
        ws.send("boom")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1011
    with connect(url(srv, "/echo")) as ws:
        ws.send("ok")
        assert ws.recv(timeout=5) == "ECHO:ok"


def test_permessage_deflate_negotiated(srv):
    with connect(url(srv, "/echo")) as ws:      # the client offers it by default
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        text = "compress me " * 5000
        for _ in range(3):                       # context takeover across messages
            ws.send(text)
            assert ws.recv(timeout=5) == "ECHO:" + text
    with connect(url(srv, "/echo"), compression=None) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.send("plain")
        assert ws.recv(timeout=5) == "ECHO:plain"


# -- handshakes -------------------------------------------------------------------------

@pytest.mark.parametrize("headers,method,version,status,version_hdr", [
    ({"Sec-WebSocket-Key": None}, "GET", "1.1", 400, True),
    ({"Sec-WebSocket-Key": "short"}, "GET", "1.1", 400, True),
    ({"Sec-WebSocket-Version": "8"}, "GET", "1.1", 400, True),
    ({"Sec-WebSocket-Version": None}, "GET", "1.1", 400, True),
    ({"Connection": "keep-alive"}, "GET", "1.1", 400, True),
    ({"Upgrade": "h2c, foo"}, "GET", "1.1", 400, True),
    ({}, "POST", "1.1", 400, True),
    ({}, "GET", "1.0", 400, True),
    ({"Upgrade": None, "Connection": None}, "GET", "1.1", 426, True),
])
def test_bad_handshakes(srv, headers, method, version, status, version_hdr):
    # (the plain WSGI endpoint: Flask would answer a POST with its own 405)
    s, got, hdrs, rest = raw_request(srv.port, "/raw/x", headers, method, version)
    s.close()
    assert got == status
    if version_hdr:
        assert hdrs.get("sec-websocket-version") == "13"
    assert "sec-websocket-accept" not in hdrs


def test_plain_get_to_flask_websocket_view_is_426(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", "/echo")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 426
    assert resp.getheader("Upgrade") == "websocket"
    assert resp.getheader("Sec-WebSocket-Version") == "13"


def test_good_handshake_accept_key(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/echo", {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 101
    assert hdrs["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert hdrs["upgrade"].lower() == "websocket" and hdrs["connection"].lower() == "upgrade"
    send_frame(s, 0x1, b"x")
    assert FrameReader(s, rest).read() == (0x1, b"ECHO:x")
    s.close()


def test_frame_right_behind_the_handshake(srv):
    """Bytes sent with the head (before the 101) belong to WebSocket."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    key = os.urandom(4)
    frame = bytes((0x81, 0x80 | 2)) + key + bytes(b ^ key[i % 4] for i, b in enumerate(b"hi"))
    s.sendall(("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % KEY).encode() + frame)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert FrameReader(s, rest).read() == (0x1, b"ECHO:hi")
    s.close()


def test_upgrade_pipelined_behind_a_request(srv):
    """A plain request, then the handshake, in one write: both are answered."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(("GET / HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % KEY).encode())
    buf = b""
    while buf.count(b"\r\n\r\n") < 2 or b"plain page" not in buf:
        data = s.recv(4096)
        assert data, buf
        buf += data
    first, _, rest = buf.partition(b"plain page")
    assert first.startswith(b"HTTP/1.1 200")
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    send_frame(s, 0x1, b"after")
    assert FrameReader(s, rest).read() == (0x1, b"ECHO:after")
    s.close()


def test_upgrade_to_plain_view_is_answered_and_closed(srv):
    s, status, hdrs, rest = raw_request(srv.port, "/")
    assert status == 200 and hdrs.get("connection") == "close"
    s.close()


# -- backpressure and shutdown ---------------------------------------------------------

def test_slow_reader_does_not_grow_server_memory(srv):
    proc = psutil.Process(srv.proc.pid)
    rss0 = proc.memory_info().rss
    s, status, hdrs, rest = raw_request(srv.port, "/flood")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert status == 101
    flag = os.path.join(srv.root, "flag-flood")
    assert wait_for(lambda: os.path.exists(flag), 5)
    time.sleep(1.5)                     # the app keeps trying to send; nobody reads
    with open(flag) as f:
        sent = int(f.read() or 0)
    # ~64 KB each: what fits in socket buffers plus the high-water mark, not more
    assert sent * 65536 < 24 * 1024 * 1024, sent
    assert proc.memory_info().rss - rss0 < 48 * 1024 * 1024
    s.close()


def test_graceful_stop_closes_1001(tmp_path):
    (tmp_path / "app.py").write_text(APP_SCRIPT)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path))
    try:
        with connect("ws://127.0.0.1:%d/echo" % s.port) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "ECHO:x"
            s.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1001
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


def test_threads_0_runs_the_generator_on_the_loop(tmp_path):
    script = APP_SCRIPT.replace("threads=4", "threads=0")
    (tmp_path / "app.py").write_text(script)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path))
    try:
        with connect("ws://127.0.0.1:%d/echo?suffix=0" % s.port) as ws:
            for i in range(5):
                ws.send("m%d" % i)
                assert ws.recv(timeout=5) == "ECHO:m%d0" % i
        with connect("ws://127.0.0.1:%d/dedicated" % s.port) as ws:   # still its own thread
            ws.send("hi")
            assert ws.recv(timeout=5).startswith("skitaid-ws-")
    finally:
        s.stop()


def test_receive_style_view_does_not_hold_an_app_thread(tmp_path):
    # threads=1: a plain-function view open for the whole connection must not
    # take the only app thread, or no HTTP request would be answered meanwhile
    script = APP_SCRIPT.replace("threads=4", "threads=1")
    (tmp_path / "app.py").write_text(script)
    s = ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path))
    try:
        with connect("ws://127.0.0.1:%d/pull" % s.port) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5).endswith(":hi")
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"plain page"
            c.close()
            ws.send("again")
            assert ws.recv(timeout=5).endswith(":again")
    finally:
        s.stop()
