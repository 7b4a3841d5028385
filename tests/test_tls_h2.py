"""TLS and HTTP/2 against real servers: httpx (TLS + ALPN, prior knowledge),
curl (h2c Upgrade with and without a body), nghttp (server push), the `h2`
package over raw sockets (streams, resets, trailers, GOAWAY), big transfers
with the server's memory watched, the HTTP → HTTPS forward listener, and the
http2 / forward config keys.

The self-signed certificate is made at run time with `openssl`.
"""
import asyncio
import base64
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time

import h2.config
import h2.connection
import h2.events
import httpx
import psutil
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for

MB = 1024 * 1024

APP = r'''
import hashlib, os, sys, time, warnings
from wsgiref.validate import validator, WSGIWarning
import skitaid

HERE = os.path.dirname(os.path.abspath(__file__))
warnings.simplefilter("error", WSGIWarning)


def flag(name):
    open(os.path.join(HERE, "flag-" + name), "w").close()


def hello(environ, start_response):
    body = ("hello %s %s %s %s" % (environ["PATH_INFO"], environ["SERVER_PROTOCOL"],
                                   environ["wsgi.url_scheme"], environ.get("HTTPS", "-"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def plain(environ, start_response):
    """GET: a page; POST: reads wsgi.input in 64 KB chunks → length and sha256."""
    if environ["REQUEST_METHOD"] == "POST":
        h = hashlib.sha256()
        n = 0
        inp = environ["wsgi.input"]
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            n += len(chunk)
            h.update(chunk)
        body = ("%d %s" % (n, h.hexdigest())).encode()
    else:
        body = ("hello %s" % environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def big(environ, start_response):
    n = int(environ["QUERY_STRING"] or "0")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(n))])
    block = b"z" * MB_

    def gen():
        left = n
        while left > 0:
            yield block[:min(left, MB_)]
            left -= MB_
    return gen()
MB_ = 1024 * 1024


def sleep(environ, start_response):
    time.sleep(0.5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


class Endless:
    """Yields slowly until closed; close() leaves a flag file."""
    def __init__(self):
        self.n = 0
    def __iter__(self):
        return self
    def __next__(self):
        self.n += 1
        if self.n > 2000:
            raise StopIteration
        time.sleep(0.01)
        return b"x" * 1000
    def close(self):
        flag("closed")


def endless(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Endless()


def push(environ, start_response):
    env_push = environ.get("skitaid.push", lambda uri: False)    # HTTP/2 only
    # skitaid.was.push is the same call as skitaid.push (the original Skitai spelling)
    pushed = [skitaid.was.push("/static/app.css"), env_push("/hello/pushed")]
    body = ("pushed %r" % pushed).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def readall(environ, start_response):
    """wsgi.input.read() with no size: the whole body at once."""
    data = environ["wsgi.input"].read()
    body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def trailers(environ, start_response):
    data = environ["wsgi.input"].read()
    got = environ.get("skitaid.request_trailers")
    environ["skitaid.set_trailers"]([("x-checksum", hashlib.sha256(data).hexdigest())])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %r" % (len(data), got)).encode()]


skitaid.mount("/hello", hello)
skitaid.mount("/v", validator(plain))
skitaid.mount("/big", big)
skitaid.mount("/sleep", sleep)
skitaid.mount("/endless", endless)
skitaid.mount("/push", push)
skitaid.mount("/trailers", trailers)
skitaid.mount("/readall", readall)
skitaid.mount("/static", "static")
if os.environ.get("PASS"):
    skitaid.enable_ssl("cert.pem", "key-enc.pem", os.environ["PASS"])
elif os.environ.get("TLS"):
    skitaid.enable_ssl("cert.pem", "key.pem")
if os.environ.get("FORWARD"):
    https_port, domain = os.environ["FORWARD"].split(",")
    skitaid.enable_forward(int(os.environ["FPORT"]), int(https_port), domain or None)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=8,
            http2=os.environ.get("HTTP2", "yes") == "yes",
            request_timeout=float(os.environ.get("REQUEST_TIMEOUT", "30")),
            graceful_timeout=10)
'''

CSS = b"body { color: #333 }\n" * 10
BIG_FILE = os.urandom(5 * MB + 3)


def make_root(root):
    (root / "app.py").write_text(APP)
    (root / "static").mkdir()
    (root / "static" / "app.css").write_bytes(CSS)
    (root / "static" / "big.bin").write_bytes(BIG_FILE)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(root / "key.pem"), "-aes256",
                    "-passout", "pass:s3cret", "-out", str(root / "key-enc.pem")],
                   check=True, capture_output=True)
    return root


def start(root, **env):
    env = {k: str(v) for k, v in env.items()}
    s = ServerProc([sys.executable, str(root / "app.py")], str(root), env=env)
    s.root = root
    return s


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("h2"))


@pytest.fixture(scope="module")
def clear(root):
    s = start(root)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tls(root):
    s = start(root, TLS=1)
    yield s
    s.stop()


def https(s):
    return "https://127.0.0.1:%d" % s.port


def client_ctx(root, alpn=("h2",)):
    ctx = ssl.create_default_context(cafile=str(root / "cert.pem"))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def no_app_errors(s):
    log = s.log
    for bad in ("AssertionError", "WSGIWarning", "Traceback"):
        assert bad not in log, log[-3000:]


# -- raw HTTP/2 client ----------------------------------------------------------------

class Raw:
    """An HTTP/2 client on a plain socket, driven by the `h2` package."""

    def __init__(self, port, ctx=None, preface=True):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.events = []
        self.closed = False
        if preface:
            self.h2.initiate_connection()
            self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", body=None, end=True, headers=()):
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", method), (":scheme", "http"),
                                   (":authority", "localhost"), (":path", path)] + list(headers),
                             end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def pump(self, until, timeout=10.0):
        """Read until `until(events)` is true or the server closes; returns events."""
        deadline = time.monotonic() + timeout
        while not until(self.events) and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            for ev in self.h2.receive_data(data):
                self.events.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self.flush()
            if time.monotonic() > deadline:
                break
        return self.events

    def body(self, sid):
        return b"".join(e.data for e in self.events
                        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)

    def ended(self, sid):
        return lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid
                               for e in evs)

    def close(self):
        self.sock.close()


def goaway_of(events):
    for e in events:
        if isinstance(e, h2.events.ConnectionTerminated):
            return e
    return None


def still_serving(s):
    """A new connection gets a normal answer."""
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        r = c.get(s.url + "/hello/again")
    assert r.status_code == 200 and r.http_version == "HTTP/2", r


# -- clients ----------------------------------------------------------------------------

def test_httpx_over_tls_negotiates_h2(tls, root):
    with httpx.Client(http2=True, verify=client_ctx(root, ("h2", "http/1.1"))) as c:
        r = c.get(https(tls) + "/hello/x")
        assert r.http_version == "HTTP/2"
        assert r.text == "hello /x HTTP/2 https on"
        assert r.headers["server"] == "skitaid" and "date" in r.headers
        r = c.get(https(tls) + "/static/app.css")
        assert r.content == CSS and r.headers["content-type"].startswith("text/css")


def test_big_static_file_over_h2(tls, clear, root):
    with httpx.Client(http2=True, verify=client_ctx(root)) as c:
        r = c.get(https(tls) + "/static/big.bin")
        assert r.http_version == "HTTP/2" and r.content == BIG_FILE
        r = c.get(https(tls) + "/static/big.bin", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == BIG_FILE[100:200]
    with httpx.Client(http1=False, http2=True) as c:
        r = c.get(clear.url + "/static/big.bin")
        assert r.content == BIG_FILE


def test_encrypted_key_with_passphrase(root):
    s = start(root, PASS="s3cret")
    try:
        with httpx.Client(http2=True, verify=client_ctx(root)) as c:
            assert c.get(https(s) + "/hello/k").text == "hello /k HTTP/2 https on"
    finally:
        s.stop()
    with pytest.raises(RuntimeError) as e:      # exits at start, saying why
        start(root, PASS="wrong")
    assert "cannot load the TLS certificate" in str(e.value)


def test_tls_http11_by_alpn(tls, root):
    with httpx.Client(http2=False, verify=client_ctx(root, ("http/1.1",))) as c:
        r = c.get(https(tls) + "/hello/y")
    assert r.http_version == "HTTP/1.1" and r.text == "hello /y HTTP/1.1 https on"


def test_httpx_prior_knowledge(clear):
    with httpx.Client(http1=False, http2=True) as c:
        r = c.get(clear.url + "/hello/pk")
        assert r.http_version == "HTTP/2" and r.text == "hello /pk HTTP/2 http -"
        r = c.head(clear.url + "/static/app.css")
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(len(CSS))
        r = c.get(clear.url + "/nowhere")
        assert r.status_code == 404


def test_curl_upgrade_without_body(clear):
    out = subprocess.run(["curl", "-sv", "--http2", clear.url + "/hello/up"],
                         capture_output=True, timeout=20)
    assert b"101 Switching Protocols" in out.stderr
    assert b"< HTTP/2 200" in out.stderr
    assert out.stdout == b"hello /up HTTP/2 http -"


@pytest.mark.parametrize("size", [5, 3 * MB + 7])
def test_curl_upgrade_with_body(clear, tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "body").write_bytes(data)
    out = subprocess.run(["curl", "-sv", "--http2", "--data-binary", "@%s" % (tmp_path / "body"),
                          clear.url + "/v/post"], capture_output=True, timeout=60)
    assert b"101 Switching Protocols" in out.stderr
    assert b"< HTTP/2 200" in out.stderr
    assert out.stdout.decode() == "%d %s" % (size, hashlib.sha256(data).hexdigest())
    no_app_errors(clear)


def test_upgrade_pipelined_behind_a_request_answers_in_order(clear):
    """A request answered at once, then an h2c upgrade, in one write: the
    first request's response goes out before the 101, then stream 1's."""
    settings = base64.urlsafe_b64encode(SettingsFrame(0, settings={
        SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize_body()).rstrip(b"=")
    sock = socket.create_connection(("127.0.0.1", clear.port), timeout=10)
    sock.sendall(b"GET /static/app.css HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /hello/b HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf.partition(b"HTTP/1.1 101 ")[2]:
        data = sock.recv(65536)
        assert data, buf
        buf += data
    first, _, rest = buf.partition(b"HTTP/1.1 101 ")
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(CSS), buf
    frames = rest.partition(b"\r\n\r\n")[2]
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    while b"hello /b HTTP/2" not in frames:      # (DATA frames carry it as is)
        data = sock.recv(65536)
        assert data, frames
        frames += data
    sock.close()


UNIX_APP = r'''
import os, skitaid

def env(environ, start_response):
    keys = ("SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT")
    body = " ".join(environ.get(k, "-") for k in keys).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]

skitaid.mount("/", env)
skitaid.run(address="unix:" + os.environ["SOCK"], threads=2, request_log=False)
'''


def test_h2c_on_a_unix_socket(tmp_path):
    """A UNIX-socket listener has no addresses or ports to speak of, over
    HTTP/2 as over HTTP/1.1 (its sockname is a path, not an address)."""
    (tmp_path / "app.py").write_text(UNIX_APP)
    path = str(tmp_path / "s.sock")
    env = dict(os.environ, SOCK=path, PYTHONUNBUFFERED="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "app.py")], cwd=str(tmp_path),
                                env=env, stdout=log, stderr=subprocess.STDOUT)

    def up():
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                return proc.poll() is not None
    try:
        assert wait_for(up, 15) and proc.poll() is None, (tmp_path / "log").read_text()
        got = {}
        for name, kw in (("1.1", {}), ("2", {"http1": False, "http2": True})):
            with httpx.Client(transport=httpx.HTTPTransport(uds=path, **kw)) as c:
                r = c.get("http://example.com/x")
                assert r.status_code == 200
                got[name] = r.text
        assert got == {"1.1": "HTTP/1.1 example.com 0 unix 0",
                       "2": "HTTP/2 example.com 0 unix 0"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_nghttp_sees_push_promise(clear):
    out = subprocess.run(["nghttp", "-nv", clear.url + "/push"], capture_output=True,
                         timeout=20, text=True)
    assert "PUSH_PROMISE" in out.stdout, out.stdout
    assert out.stdout.count("recv PUSH_PROMISE") == 2
    # the pushed streams got their answers (stream ids are even)
    assert ":path: /static/app.css" in out.stdout and ":path: /hello/pushed" in out.stdout


def test_push_ignored_over_http11_and_when_disabled(clear):
    r = httpx.get(clear.url + "/push")
    assert r.text == "pushed [False, False]"
    with httpx.Client(http1=False, http2=True) as c:      # httpx disables push
        r = c.get(clear.url + "/push")
    assert r.text == "pushed [False, False]"


def test_validator_app_over_h2(clear, tls, root):
    body = os.urandom(200000)
    want = "%d %s" % (len(body), hashlib.sha256(body).hexdigest())
    with httpx.Client(http1=False, http2=True) as c:
        assert c.get(clear.url + "/v/a").text == "hello /a"
        assert c.post(clear.url + "/v/p", content=body).text == want
        # no Content-Length: a streamed body
        assert c.post(clear.url + "/v/p", content=iter([body[:1000], body[1000:]])).text == want
    with httpx.Client(http2=True, verify=client_ctx(root)) as c:
        assert c.post(https(tls) + "/v/p", content=body).text == want
    no_app_errors(clear)
    no_app_errors(tls)


def test_read_everything_beyond_the_flow_control_high_water(clear):
    body = os.urandom(3 * MB + 5)      # > body.HIGH_WATER: the read must not stall
    want = "%d %s" % (len(body), hashlib.sha256(body).hexdigest())
    with httpx.Client(http1=False, http2=True, timeout=20) as c:
        assert c.post(clear.url + "/readall", content=body).text == want
    assert httpx.post(clear.url + "/readall", content=body, timeout=20).text == want


def test_streams_run_concurrently(clear):
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as c:
            await c.get(clear.url + "/hello/warm")
            t0 = time.monotonic()
            rs = await asyncio.gather(*[c.get(clear.url + "/sleep") for _ in range(8)])
            return time.monotonic() - t0, rs
    elapsed, rs = asyncio.run(main())
    assert all(r.text == "slept" and r.http_version == "HTTP/2" for r in rs)
    assert elapsed < 2.0, elapsed        # one at a time would take 4 s


def _rss(s):
    proc = psutil.Process(s.proc.pid)
    return proc.memory_info().rss


def test_100mb_up_and_down_with_bounded_memory(clear):
    size = 100 * MB
    base = _rss(clear)
    peak = [base]
    block = os.urandom(MB)
    h = hashlib.sha256()

    def chunks():
        for i in range(100):
            h.update(block)
            if i % 10 == 0:
                peak[0] = max(peak[0], _rss(clear))
            yield block

    with httpx.Client(http1=False, http2=True, timeout=60) as c:
        r = c.post(clear.url + "/v/up", content=chunks())
        assert r.text == "%d %s" % (size, h.hexdigest())
        n = 0
        with c.stream("GET", clear.url + "/big?%d" % size) as r:
            for i, chunk in enumerate(r.iter_raw()):
                n += len(chunk)
                if i % 200 == 0:
                    peak[0] = max(peak[0], _rss(clear))
        assert n == size
    assert peak[0] - base < 40 * MB, (base, peak[0])


def test_100mb_download_over_tls(tls, root):
    n = 0
    with httpx.Client(http2=True, verify=client_ctx(root), timeout=60) as c:
        with c.stream("GET", https(tls) + "/big?%d" % (100 * MB)) as r:
            assert r.http_version == "HTTP/2"
            for chunk in r.iter_raw():
                n += len(chunk)
    assert n == 100 * MB


def test_rst_stream_stops_the_app(clear):
    flag = clear.root / "flag-closed"
    if flag.exists():
        flag.unlink()
    c = Raw(clear.port)
    sid = c.request("/endless")
    c.pump(lambda evs: len(c.body(sid)) >= 5000)
    c.h2.reset_stream(sid)
    c.flush()
    assert wait_for(flag.exists, 10), "close() was not called"
    got = len(c.body(sid))
    # the same connection serves the next stream
    sid2 = c.request("/hello/next")
    c.pump(c.ended(sid2))
    assert c.body(sid2) == b"hello /next HTTP/2 http -"
    time.sleep(0.3)
    c.pump(lambda evs: False, timeout=0.3)
    assert len(c.body(sid)) - got < 200000     # at most what was already in flight
    c.close()


def test_trailers_both_ways(clear):
    c = Raw(clear.port)
    sid = c.request("/trailers", "POST", body=b"abc" * 1000, end=False,
                    headers=[("te", "trailers")])
    c.h2.send_headers(sid, [("x-client", "yes")], end_stream=True)
    c.flush()
    c.pump(c.ended(sid))
    assert c.body(sid) == b"3000 [('x-client', 'yes')]"
    trailers = [e for e in c.events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and dict(trailers[0].headers)["x-checksum"] == \
        hashlib.sha256(b"abc" * 1000).hexdigest()
    c.close()


# -- protocol errors: the right code, and the server goes on --------------------------

def _frames_client(s):
    """A raw socket that already sent the preface and an empty SETTINGS."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    return sock


from hpack import Encoder  # noqa: E402
from helpers.h2frames import read_frames  # noqa: E402
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame,  # noqa: E402
                              HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)


def goaway(frames):
    g = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert g, frames
    return g[-1].error_code


def headers_frame(sid, path="/hello/f", end=True, extra=()):
    enc = Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                        (":path", path)] + list(extra))
    return HeadersFrame(sid, data=block, flags=["END_HEADERS"] + (["END_STREAM"] if end else []))


PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, CALM = 0x1, 0x3, 0x5, 0xb


def test_bad_preface(clear, tls, root):
    sock = socket.create_connection(("127.0.0.1", clear.port), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 20)
    assert goaway(read_frames(sock)) == PROTOCOL_ERROR
    sock.close()
    sock = client_ctx(root).wrap_socket(socket.create_connection(("127.0.0.1", tls.port)),
                                        server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2"
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 20)
    assert goaway(read_frames(sock)) == PROTOCOL_ERROR
    sock.close()
    still_serving(clear)


def test_data_on_closed_stream(clear):
    sock = _frames_client(clear)
    sock.sendall(headers_frame(1).serialize())
    deadline = time.monotonic() + 5
    frames = []
    while time.monotonic() < deadline and not any(
            isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in frames):
        frames += read_frames(sock, 0.5)
    sock.sendall(DataFrame(1, data=b"late", flags=["END_STREAM"]).serialize())
    frames = read_frames(sock, 2)
    rst = [f for f in frames if isinstance(f, RstStreamFrame)]
    if rst:
        assert rst[0].error_code == STREAM_CLOSED
    else:
        assert goaway(frames) == STREAM_CLOSED
    sock.close()
    still_serving(clear)


def test_oversized_header_list(clear):
    sock = _frames_client(clear)
    big = [("x-big-%d" % i, "v" * 4000) for i in range(20)]       # 80 KB > 64 KB
    block = Encoder().encode([(":method", "GET"), (":scheme", "http"),
                              (":authority", "localhost"), (":path", "/")] + big)
    frames = [HeadersFrame(1, data=block[:16000])]
    rest = block[16000:]
    while rest:
        frames.append(ContinuationFrame(1, data=rest[:16000]))
        rest = rest[16000:]
    frames[-1].flags.add("END_HEADERS")
    sock.sendall(b"".join(f.serialize() for f in frames))
    assert goaway(read_frames(sock)) in (CALM, PROTOCOL_ERROR)
    sock.close()
    still_serving(clear)


def test_continuation_flood(clear):
    sock = _frames_client(clear)
    first = HeadersFrame(1, data=Encoder().encode([(":method", "GET")]))
    flood = b"".join(ContinuationFrame(1, data=b"").serialize() for _ in range(1000))
    try:
        sock.sendall(first.serialize() + flood)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert goaway(read_frames(sock)) in (PROTOCOL_ERROR, CALM)
    sock.close()
    still_serving(clear)


def test_window_overflow(clear):
    sock = _frames_client(clear)
    sock.sendall(WindowUpdateFrame(0, window_increment=2 ** 31 - 1).serialize())
    assert goaway(read_frames(sock)) == FLOW_CONTROL_ERROR
    sock.close()
    still_serving(clear)


def test_rapid_reset_is_cut_off_and_others_are_served(clear):
    sock = _frames_client(clear)
    data = b"".join(headers_frame(sid).serialize() + RstStreamFrame(sid, error_code=8).serialize()
                    for sid in range(1, 2 * 1000, 2))
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert goaway(read_frames(sock)) == CALM
    sock.close()
    still_serving(clear)


@pytest.mark.parametrize("frame", ["ping", "settings"])
def test_control_frame_floods(clear, frame):
    sock = _frames_client(clear)
    one = (PingFrame(0, opaque_data=b"12345678") if frame == "ping" else SettingsFrame(0))
    try:
        sock.sendall(one.serialize() * 2000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert goaway(read_frames(sock)) == CALM
    sock.close()
    still_serving(clear)


def test_too_many_concurrent_streams(clear):
    sock = _frames_client(clear)
    # POSTs whose bodies never come: each stream stays open
    sock.sendall(b"".join(headers_frame(sid, "/v/x", end=False).serialize()
                          for sid in range(1, 2 * 101, 2)))
    frames = read_frames(sock, 3)
    refused = [f for f in frames if isinstance(f, RstStreamFrame)]
    gone = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert refused or gone, frames
    if gone:
        assert gone[0].error_code in (PROTOCOL_ERROR, 0x7)
    sock.close()
    still_serving(clear)


# -- TLS handshake, shutdown ----------------------------------------------------------

def test_silent_tls_client_delays_no_one(root):
    s = start(root, TLS=1, REQUEST_TIMEOUT=1)
    try:
        silent = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(5)]
        t0 = time.monotonic()
        with httpx.Client(http2=True, verify=client_ctx(root)) as c:
            assert c.get(https(s) + "/hello/z").status_code == 200
        assert time.monotonic() - t0 < 1.0
        # the handshake timeout ends them
        silent[0].settimeout(5)
        t0 = time.monotonic()
        assert silent[0].recv(10) == b""
        assert time.monotonic() - t0 < 4
        for x in silent:
            x.close()
    finally:
        s.stop()


def test_goaway_on_graceful_shutdown_and_streams_finish(root):
    s = start(root)
    try:
        # (the h2 package as a client drops what follows a GOAWAY: raw frames here)
        sock = _frames_client(s)
        sock.sendall(headers_frame(1, "/sleep").serialize())
        time.sleep(0.15)
        s.proc.send_signal(signal.SIGTERM)
        # two GOAWAYs (RFC 9113 6.8): the first takes every stream, and a PING
        # measures the round trip; once it is answered comes the real last id
        frames = read_frames(sock, stop=lambda fs: any(isinstance(f, PingFrame) for f in fs))
        g = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert g and g[0].error_code == 0 and g[0].last_stream_id == 2 ** 31 - 1
        ping = [f for f in frames if isinstance(f, PingFrame)][0]
        sock.sendall(PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"]).serialize())
        frames += read_frames(sock)
        g = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert len(g) == 2 and g[1].error_code == 0 and g[1].last_stream_id == 1
        # a stream opened after the last GOAWAY is refused; stream 1 completes
        sock.sendall(headers_frame(3).serialize())
        frames += read_frames(sock, stop=lambda fs: any(
            isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in fs))
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"slept"
        assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] \
            == [(3, 0x7)]
        sock.close()
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


# -- http2 = no, forward ------------------------------------------------------------------

def test_http2_off(root):
    s = start(root, TLS=1, HTTP2="no")
    try:
        with httpx.Client(http2=True, verify=client_ctx(root, ("h2", "http/1.1"))) as c:
            r = c.get(https(s) + "/hello/o")
        assert r.http_version == "HTTP/1.1"
    finally:
        s.stop()
    s = start(root, HTTP2="no")
    try:
        out = subprocess.run(["curl", "-sv", "--http2", s.url + "/hello/o"],
                             capture_output=True, timeout=20)
        assert b"101" not in out.stderr and b"< HTTP/1.1 200" in out.stderr
    finally:
        s.stop()


@pytest.mark.parametrize("https_port,domain,host,expected", [
    (443, "", "example.com:8080", "https://example.com/a/b?x=1&y=%20"),
    (8443, "", "example.com", "https://example.com:8443/a/b?x=1&y=%20"),
    (443, "secure.example.org", "other", "https://secure.example.org/a/b?x=1&y=%20"),
])
def test_forward_to_https(root, https_port, domain, host, expected):
    fport = free_port()
    s = start(root, TLS=1, FORWARD="%d,%s" % (https_port, domain), FPORT=fport)
    try:
        for method in ("GET", "POST", "HEAD"):
            r = httpx.request(method, "http://127.0.0.1:%d/a/b?x=1&y=%%20" % fport,
                              headers={"Host": host}, content=b"data" if method == "POST" else None)
            assert r.status_code == 301, r
            assert r.headers["location"] == expected
        sock = socket.create_connection(("127.0.0.1", fport))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bad\r\n host\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
        sock.close()
    finally:
        s.stop()


# -- config ----------------------------------------------------------------------------------

def test_config_keys(tmp_path):
    from skitaid.config import ConfigError, load_config
    etc = tmp_path / "etc"
    (etc / "servers-enabled").mkdir(parents=True)
    (etc / "cert").mkdir()
    (etc / "cert" / "site.pem").write_text("x")
    (etc / "www").mkdir()
    conf = etc / "servers-enabled" / "web.conf"
    conf.write_text(textwrap.dedent("""\
        [server]
        port = 8443
        ssl = yes
        certfile = site.pem
        http2 = no
        forward = 8080 -> example.com:8443
        [routes:line]
        / = www
    """))
    server = load_config(str(etc)).servers[0]
    assert server.http2 is False and server.ssl is True
    assert server.certfile == str(etc / "cert" / "site.pem")
    assert server.forward == (8080, 8443, "example.com")
    (etc / "servers-enabled" / "api.yaml").write_text(
        "server:\n  port: 9000\n  forward: 80 -> 443\nroutes:\n  /: www\n")
    servers = {s.name: s for s in load_config(str(etc)).servers}
    assert servers["api"].forward == (80, 443, "") and servers["api"].http2 is True
    conf.write_text("[server]\nforward = 80 => 443\nhttp2 = maybe\n[routes:line]\n/ = www\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(etc))
    text = str(e.value)
    assert "web.conf [server] forward: found '80 => 443', expected HTTP_PORT -> HTTPS_PORT" in text
    assert "web.conf [server] http2: found 'maybe', expected yes or no" in text
