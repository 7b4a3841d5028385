"""Request smuggling through the reverse proxy: the proxy owns the framing it sends.

A skitaid proxy (`/public = @backend/public`, also a forward proxy) stands in
front of a raw recording backend (tests/helpers/recording_backend.py) that
parses every byte it receives with llhttp. Whatever the client puts in its
head, the backend must see exactly one request per client request, framed by
the proxy: one canonical Content-Length equal to the body forwarded, or
Transfer-Encoding: chunked, never both, never the client's own spelling.
"""
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ServerProc, wait_for
from helpers.clients import h2_exchange, raw_exchange
from helpers.recording_backend import RecordingBackend

PROXY = r'''
import os
import skitaid
skitaid.alias("@backend", "http", [os.environ["MEMBER"]])
skitaid.mount("/public", "@backend/public")
skitaid.enable_proxy(True)
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
'''

SMUGGLED = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def _pair(tmp_path_factory):
    """One recording backend and one proxy in front of it for the whole module."""
    root = tmp_path_factory.mktemp("smuggling")
    script = root / "proxy.py"
    script.write_text(textwrap.dedent(PROXY))
    with RecordingBackend() as b:
        with ServerProc([sys.executable, str(script)], str(root),
                        env={"MEMBER": b.member}) as p:
            yield b, p


@pytest.fixture
def backend(_pair):
    b = _pair[0]
    b.reset()
    return b


@pytest.fixture
def proxy(_pair, backend):
    return _pair[1]


def settled(backend, n, timeout=3.0):
    """The backend's requests once it has seen `n` and nothing more trickles in."""
    wait_for(lambda: backend.count() >= n, timeout)
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:      # quiet for 0.1 s: nothing else is on its way
        now = backend.received()
        if now == last:
            break
        last = now
        time.sleep(0.1)
    return backend.snapshot()


def framing(rec):
    """('length', n) | ('chunked',) | None; asserts it is one or the other, once."""
    lengths = rec.values("content-length")
    codings = rec.values("transfer-encoding")
    assert not (lengths and codings), "both Content-Length and Transfer-Encoding: %r" % rec
    if lengths:
        assert len(lengths) == 1, rec
        assert lengths[0] == str(len(rec.body)), rec       # canonical and exact
        return ("length", int(lengths[0]))
    if codings:
        assert codings == ["chunked"], rec
        return ("chunked",)
    assert not rec.body, rec
    return None


def only_request(backend):
    got = settled(backend, 1)
    assert len(got) == 1, "the backend saw %d requests: %r" % (len(got), got)
    assert not backend.errors, backend.errors
    rec = got[0]
    assert rec.complete, rec
    framing(rec)
    return rec


# -- item 1: Connection may not remove the framing ------------------------------------------

def test_connection_content_length_does_not_smuggle_the_body(proxy, backend):
    raw = (b"POST /public/x HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
           b"Content-Length: 33\r\n\r\n" + SMUGGLED)
    status, _, body = raw_exchange(proxy.port, raw, "POST")
    assert (status, body) == (200, b"ok")
    rec = only_request(backend)
    assert (rec.method, rec.target) == ("POST", "/public/x")
    assert rec.values("content-length") == ["33"] and bytes(rec.body) == SMUGGLED
    assert rec.header("x-forwarded-for") == "127.0.0.1"
    # the pooled backend connection is still in step: the next client gets its own answer
    status, _, body = raw_exchange(proxy.port, b"GET /public/y HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"ok")
    got = settled(backend, 2)
    assert [r.target for r in got] == ["/public/x", "/public/y"]


@pytest.mark.parametrize("connection", [
    b"Transfer-Encoding", b"transfer-encoding, close", b"Host", b"keep-alive, Content-Length, Host",
    b"X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto",
])
def test_connection_cannot_remove_what_the_proxy_sends(proxy, backend, connection):
    body = b"5\r\nhello\r\n1c\r\n" + SMUGGLED[:28] + b"\r\n0\r\n\r\n"
    raw = (b"POST /public/c HTTP/1.1\r\nHost: front.example\r\nConnection: " + connection +
           b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    status, _, _ = raw_exchange(proxy.port, raw, "POST")
    assert status == 200
    rec = only_request(backend)
    assert rec.values("transfer-encoding") == ["chunked"] and not rec.values("content-length")
    assert bytes(rec.body) == b"hello" + SMUGGLED[:28]
    assert rec.values("host") == ["127.0.0.1:%d" % backend.port]
    assert rec.header("x-forwarded-host") == "front.example"
    assert rec.header("x-forwarded-proto") == "http"
    assert rec.header("x-forwarded-for") == "127.0.0.1"


def test_forward_proxy_owns_the_framing_too(proxy, backend):
    raw = (b"POST http://%s/public/f HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
           b"Content-Length: 33\r\n\r\n" % backend.member.encode() + SMUGGLED)
    status, _, _ = raw_exchange(proxy.port, raw, "POST")
    assert status == 200
    rec = only_request(backend)
    assert rec.target == "/public/f" and rec.values("content-length") == ["33"]
    assert bytes(rec.body) == SMUGGLED


def test_websocket_handshake_keeps_host_and_sends_no_framing(proxy, backend):
    raw = (b"GET /public/ws HTTP/1.1\r\nHost: x\r\n"
           b"Connection: Upgrade, Host, Content-Length, Sec-WebSocket-Version\r\n"
           b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
    status, _, _ = raw_exchange(proxy.port, raw)
    assert status == 200            # the backend did not switch: relayed as a response
    rec = only_request(backend)
    assert rec.upgraded and rec.tail == b""
    assert rec.values("host") == ["127.0.0.1:%d" % backend.port]
    assert rec.values("connection") == ["Upgrade"] and rec.values("upgrade") == ["websocket"]
    assert not rec.values("content-length") and not rec.values("transfer-encoding")
    assert not rec.values("sec-websocket-version")     # the client asked for it to go


# -- decided: canonical Content-Length, underscores ---------------------------------------------

def test_padded_content_length_is_forwarded_canonical(proxy, backend):
    payload = b"x" * 35
    raw = (b"POST /public/z HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000035\r\n\r\n" + payload)
    status, _, _ = raw_exchange(proxy.port, raw, "POST")
    assert status == 200
    rec = only_request(backend)
    assert rec.values("content-length") == ["35"] and bytes(rec.body) == payload


def test_empty_bodies_get_an_explicit_zero_length(proxy, backend):
    raw = b"POST /public/e HTTP/1.1\r\nHost: x\r\nContent-Length: 000\r\n\r\n"
    assert raw_exchange(proxy.port, raw, "POST")[0] == 200
    raw = b"GET /public/g HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_exchange(proxy.port, raw)[0] == 200
    post, get = settled(backend, 2)
    assert post.values("content-length") == ["0"] and not post.body
    assert framing(get) is None


def test_underscore_names_never_reach_the_backend(proxy, backend):
    raw = (b"POST /public/u HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n"
           b"content_length: 0\r\nX_Forwarded_For: 10.9.9.9\r\nX-Fine: 1\r\n"
           b"Content-Length: 5\r\n\r\nhello")
    status, _, _ = raw_exchange(proxy.port, raw, "POST")
    assert status == 200
    rec = only_request(backend)
    assert not [n for n, _ in rec.headers if "_" in n], rec.headers
    assert rec.values("content-length") == ["5"] and bytes(rec.body) == b"hello"
    assert rec.header("x-fine") == "1" and rec.header("x-forwarded-for") == "127.0.0.1"


WSGI = r'''
import json, os
import skitaid
def app(env, start):
    body = env["wsgi.input"].read()
    out = {k: v for k, v in env.items() if k.startswith("HTTP_") or k.startswith("CONTENT_")}
    out["body"] = body.decode("latin-1")
    start("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]
skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=1, request_log=False)
'''


def test_underscore_names_are_not_in_the_wsgi_environ(serve):
    import json
    srv = serve(WSGI, filename="wsgiapp.py")
    raw = (b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\ncontent_length: 99\r\n"
           b"Content-Length: 5\r\nConnection: close\r\n\r\nhello")
    status, _, body = raw_exchange(srv.port, raw, "POST")
    env = json.loads(body)
    assert status == 200 and env["body"] == "hello"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_TRANSFER_ENCODING" not in env and "HTTP_CONTENT_LENGTH" not in env
    # the same over HTTP/2
    r = h2_exchange(srv.port, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"),
                               (b":path", b"/e"), (b"transfer_encoding", b"chunked"),
                               (b"content_length", b"99")], [b"hello"])
    env = json.loads(bytes(r.body))
    assert r.status == 200 and env["body"] == "hello"
    assert "CONTENT_LENGTH" not in env
    assert "HTTP_TRANSFER_ENCODING" not in env and "HTTP_CONTENT_LENGTH" not in env


# -- the response direction --------------------------------------------------------------------

def test_the_backend_cannot_unframe_its_response(serve):
    def answer(rec):
        return (b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 0005\r\n"
                b"\r\n" + (b"" if rec.method == "HEAD" else b"hello"))
    with RecordingBackend(answer) as b:
        p = serve(PROXY, env={"MEMBER": b.member}, filename="proxy.py")
        for method in ("GET", "HEAD"):
            raw = b"%s /public/r HTTP/1.1\r\nHost: x\r\n\r\n" % method.encode()
            with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
                s.sendall(raw)
                head = b""
                while b"\r\n\r\n" not in head:
                    got = s.recv(65536)
                    assert got
                    head += got
            lines = [ln.lower() for ln in head.split(b"\r\n\r\n")[0].split(b"\r\n")]
            assert b"content-length: 5" in lines, (method, lines)
            assert not [ln for ln in lines if ln.startswith(b"transfer-encoding")], lines


# -- HTTP/2 client → HTTP/1.1 backend ---------------------------------------------------------

def h2_head(method, path, *fields):
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"front.example"),
            (b":path", path)] + list(fields)


def test_h2_body_without_content_length_is_forwarded_chunked(proxy, backend):
    r = h2_exchange(proxy.port, h2_head(b"PUT", b"/public/up"), [b"hello ", b"world"])
    assert r.status == 200 and bytes(r.body) == b"ok"
    rec = only_request(backend)
    assert (rec.method, rec.target) == ("PUT", "/public/up")
    assert rec.values("transfer-encoding") == ["chunked"] and bytes(rec.body) == b"hello world"
    assert rec.header("x-forwarded-host") == "front.example"


def test_h2_upload_with_curl(proxy, backend):
    """The report's own command: curl --http2-prior-knowledge -T - http://HOST/up"""
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-T", "-",
                          "http://127.0.0.1:%d/public/up" % proxy.port],
                         input=b"from stdin\n", capture_output=True, timeout=20)
    assert out.returncode == 0 and out.stdout == b"ok", out.stderr
    rec = only_request(backend)
    assert rec.method == "PUT" and bytes(rec.body) == b"from stdin\n"


def test_h2_fields_are_made_http11(proxy, backend):
    r = h2_exchange(proxy.port, h2_head(b"POST", b"/public/h2",
                                        (b"cookie", b"a=1"), (b"content-length", b"0005"),
                                        (b"cookie", b"b=2"), (b"transfer_encoding", b"chunked"),
                                        (b"x-many", b"1"), (b"x-many", b"2")),
                    [b"hello"])
    assert r.status == 200
    rec = only_request(backend)
    assert rec.values("cookie") == ["a=1; b=2"]         # RFC 9113 8.2.3
    assert rec.values("content-length") == ["5"] and bytes(rec.body) == b"hello"
    assert rec.values("host") == ["127.0.0.1:%d" % backend.port]
    assert rec.values("x-many") == ["1", "2"]
    assert not [n for n, _ in rec.headers if "_" in n]
