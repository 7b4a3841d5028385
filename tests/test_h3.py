"""HTTP/3 over QUIC (`quic = PORT`) against real servers, with aioquic's own
client API (tests/helpers/h3client.py): app routes and static files, a 10 MB
upload, 100 streams on one connection, two workers, graceful stop and reload,
Alt-Svc on the TCP side, Retry, the amplification limit and an Initial flood.

The QUIC port is the TCP port's number (UDP and TCP ports are separate).
The self-signed certificate is made at run time with `openssl`.
"""
import asyncio
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ServerProc, wait_for
from helpers.h3client import client_config, h3_connect

from aioquic.quic.connection import QuicConnection

APP = r'''
import hashlib, os, time
import skitaid


def hello(environ, start_response):
    body = ("hello %s %s %d" % (environ["PATH_INFO"], environ["SERVER_PROTOCOL"],
                                os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def upload(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or "0"))     # a slow reader: nothing read yet
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
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def big(environ, start_response):
    n = int(environ["QUERY_STRING"] or "0")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(n))])
    def gen():
        left = n
        while left > 0:
            yield b"z" * min(left, 65536)
            left -= 65536
    return gen()


def sleep(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or "1"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept %d" % os.getpid()]


def trailers(environ, start_response):
    data = environ["wsgi.input"].read()
    got = environ.get("skitaid.request_trailers")
    environ["skitaid.set_trailers"]([("x-checksum", "abc")])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("with trailers %d %r" % (len(data), got)).encode()]


skitaid.mount("/hello", hello)
skitaid.mount("/upload", upload)
skitaid.mount("/big", big)
skitaid.mount("/sleep", sleep)
skitaid.mount("/trailers", trailers)
skitaid.mount("/static", "static")
skitaid.enable_ssl("cert.pem", "key.pem")
port = int(os.environ["PORT"])
skitaid.run(address="127.0.0.1", port=port, quic=port, threads=8,
            processes=int(os.environ.get("PROCS", "1")),
            quic_retry=os.environ.get("RETRY") == "1",
            alt_svc_port=int(os.environ.get("ALT", "0")),
            graceful_timeout=10)
'''

CSS = b"body { color: #333 }\n" * 50


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("h3")
    (root / "app.py").write_text(APP)
    (root / "static").mkdir()
    (root / "static" / "app.css").write_bytes(CSS)
    (root / "static" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return root


def start(root, **env):
    s = ServerProc([sys.executable, str(root / "app.py")], str(root),
                   env={k: str(v) for k, v in env.items()})
    s.root = root
    s.cafile = str(root / "cert.pem")
    return s


@pytest.fixture(scope="module")
def server(root):
    s = start(root)
    yield s
    s.stop()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def no_tracebacks(s):
    assert "Traceback" not in s.log, s.log[-3000:]


# -- requests ----------------------------------------------------------------------------

def test_get_app_route_and_static_file(server):
    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = await c.request("GET", "/hello/there")
            assert r.status == 200
            assert bytes(r.body).startswith(b"hello /there HTTP/3 ")
            assert r.header("content-length") == str(len(r.body))
            r = await c.request("GET", "/static/app.css")
            assert r.status == 200 and bytes(r.body) == CSS
            assert r.header("content-type").startswith("text/css")
            etag = r.header("etag")
            r = await c.request("GET", "/static/app.css", headers=[("if-none-match", etag)])
            assert r.status == 304 and not r.body
            r = await c.request("HEAD", "/static/app.css")
            assert r.status == 200 and not r.body and r.header("etag") == etag
            r = await c.request("GET", "/nothing-here")
            assert r.status == 404
    run(go())
    no_tracebacks(server)


def test_large_static_file_and_streamed_response(server, root):
    want = (root / "static" / "big.bin").read_bytes()

    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = await c.request("GET", "/static/big.bin", timeout=30)
            assert r.status == 200 and bytes(r.body) == want
            r = await c.request("GET", "/big?%d" % (2 * 1024 * 1024 + 1), timeout=30)
            assert r.status == 200 and len(r.body) == 2 * 1024 * 1024 + 1
    run(go())


def test_post_10_mb(server):
    data = os.urandom(10 * 1024 * 1024)

    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = await c.request("POST", "/upload", body=data,
                                headers=[("content-length", str(len(data)))], timeout=60)
            assert r.status == 200
            assert bytes(r.body) == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())
            # without content-length: the length is known at the end of the stream only
            r = await c.request("POST", "/upload", body=data[:300000], timeout=60)
            assert bytes(r.body).startswith(b"300000 ")
    run(go(), 90)


def test_an_upload_waits_for_a_slow_app(server):
    """The stream's window follows what the app read: while it reads nothing,
    the client can send little more than STREAM_WINDOW beyond body.HIGH_WATER."""
    data = os.urandom(20 * 1024 * 1024)

    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = c.start("POST", "/upload?2", body=data)
            sid = max(c.responses)
            await asyncio.sleep(1.5)
            sent = c._quic._streams[sid].sender.highest_offset
            assert sent < 3 * 1024 * 1024, sent
            await asyncio.wait_for(r.done, 60)
            assert bytes(r.body) == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())
    run(go(), 90)


def test_100_concurrent_streams_on_one_connection(server):
    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            rs = [c.start("GET", "/hello/%d" % i) for i in range(100)]
            await asyncio.wait_for(asyncio.gather(*[r.done for r in rs]), 30)
            for i, r in enumerate(rs):
                assert r.status == 200
                assert bytes(r.body).startswith(b"hello /%d HTTP/3" % i)
    run(go())


def test_trailers(server):
    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = await c.request("GET", "/trailers")
            assert r.status == 200 and bytes(r.body).startswith(b"with trailers 0 ")
            assert ("x-checksum", "abc") in r.trailers
            r = c.start("POST", "/trailers", body=b"x" * 1000, trailers=[("x-sum", "42")])
            await asyncio.wait_for(r.done, 20)
            assert bytes(r.body) == b"with trailers 1000 [('x-sum', '42')]"
    run(go())


def test_malformed_request_is_refused(server):
    """A request line that means two things reaches no handler (400); a bad
    content-length is a connection error (aioquic's H3_MESSAGE_ERROR); the
    server goes on serving."""
    async def go():
        async with h3_connect(server.port, server.cafile) as c:
            r = await c.request("GET", "/hello/a b")
            assert r.status == 400
            r = await c.request("GET", "/hello/ok")
            assert r.status == 200
        async with h3_connect(server.port, server.cafile) as c:
            with pytest.raises(ConnectionError):
                await c.request("GET", "/hello", headers=[("content-length", "x")])
        async with h3_connect(server.port, server.cafile) as c:
            assert (await c.request("GET", "/hello/ok")).status == 200
    run(go())


# -- Alt-Svc on the TCP side -------------------------------------------------------------

def test_alt_svc_on_http1_and_http2(server):
    ctx = ssl.create_default_context(cafile=server.cafile)
    want = 'h3=":%d"; ma=86400' % server.port
    with httpx.Client(verify=ctx, http2=False) as c:
        r = c.get("https://127.0.0.1:%d/hello/a" % server.port)
        assert r.http_version == "HTTP/1.1" and r.headers["alt-svc"] == want
    with httpx.Client(verify=ctx, http2=True) as c:
        r = c.get("https://127.0.0.1:%d/static/app.css" % server.port)
        assert r.http_version == "HTTP/2" and r.headers["alt-svc"] == want


def test_alt_svc_port_is_configurable(root):
    with start(root, ALT=443) as s:
        ctx = ssl.create_default_context(cafile=s.cafile)
        r = httpx.get("https://127.0.0.1:%d/hello/a" % s.port, verify=ctx)
        assert r.headers["alt-svc"] == 'h3=":443"; ma=86400'


# -- several workers, stop, reload ---------------------------------------------------------

def _pid(r):
    return int(bytes(r.body).split()[-1])


def test_two_workers_serve_two_connections(root):
    with start(root, PROCS=2) as s:
        async def go():
            seen = set()
            for _ in range(16):
                async with h3_connect(s.port, s.cafile) as c:
                    pids = {_pid(await c.request("GET", "/hello")) for _ in range(5)}
                    assert len(pids) == 1       # one connection stays with one worker
                    seen |= pids
                if len(seen) == 2:
                    return seen
            return seen
        seen = run(go(), 90)
        assert len(seen) == 2, seen
        no_tracebacks(s)


def test_fewer_workers_leave_no_socket_unread(root):
    """TTOU retires a worker: its UDP socket leaves the group once it exits, so
    no client is hashed to a socket nobody reads."""
    with start(root, PROCS=2) as s:
        s.proc.send_signal(signal.SIGTTOU)
        assert s.wait_log("1 workers (TTOU)", 10)

        def one_udp_socket():
            out = subprocess.run(["ss", "-Hlunp", "sport = :%d" % s.port],
                                 capture_output=True, text=True).stdout
            return len(out.strip().splitlines()) == 1
        assert wait_for(one_udp_socket, 20)

        async def go():
            for _ in range(8):      # new source ports: each hashes somewhere in the group
                async with h3_connect(s.port, s.cafile) as c:
                    assert (await c.request("GET", "/hello")).status == 200
        run(go(), 60)


def test_graceful_stop_finishes_an_in_flight_request(root):
    s = start(root)
    try:
        async def go():
            async with h3_connect(s.port, s.cafile) as c:
                r = c.start("GET", "/sleep?1.5")
                await asyncio.sleep(0.3)
                s.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(r.done, 20)
                assert r.status == 200 and bytes(r.body).startswith(b"slept")
        run(go())
        s.proc.wait(20)
        assert s.proc.returncode == 0
        assert "request cut" not in s.log
    finally:
        s.stop()


def test_reload_keeps_udp_serving(root):
    with start(root) as s:
        async def get_pid():
            async with h3_connect(s.port, s.cafile) as c:
                r = await c.request("GET", "/hello")
                assert r.status == 200
                return _pid(r)
        before = run(get_pid())

        async def in_flight_then_reload():
            async with h3_connect(s.port, s.cafile) as c:
                r = c.start("GET", "/sleep?1")
                await asyncio.sleep(0.2)
                s.proc.send_signal(signal.SIGHUP)
                await asyncio.wait_for(r.done, 20)
                return r
        r = run(in_flight_then_reload())
        assert r.status == 200 and _pid(r) == before
        assert wait_for(lambda: "reload done" in s.log, 20), s.log[-2000:]

        def new_worker_serves():
            try:
                return run(get_pid(), 10) != before
            except (asyncio.TimeoutError, ConnectionError):
                return False
        assert wait_for(new_worker_serves, 20)
        no_tracebacks(s)


# -- address validation and floods ------------------------------------------------------------

def initial_datagrams(cafile, port):
    """A fresh client's first Initial datagram(s), as a real client sends them."""
    q = QuicConnection(configuration=client_config(cafile))
    q.connect(("127.0.0.1", port), now=time.monotonic())
    return [d for d, _ in q.datagrams_to_send(now=time.monotonic())]


def _is_retry(packet):
    return packet[0] & 0x80 and (packet[0] & 0x30) >> 4 == 3


def test_retry_when_configured(root):
    with start(root, RETRY=1) as s:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        try:
            sock.sendto(initial_datagrams(s.cafile, s.port)[0], ("127.0.0.1", s.port))
            answer = sock.recv(65536)
            assert _is_retry(answer)
        finally:
            sock.close()

        async def go():     # aioquic's client follows the Retry
            async with h3_connect(s.port, s.cafile) as c:
                return await c.request("GET", "/hello/r")
        assert run(go()).status == 200


def test_amplification_limit_before_the_address_is_validated(server):
    """One Initial from a client that never answers: the server sends at most
    three times what it received (RFC 9000 8.1), however often it retries."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        first = initial_datagrams(server.cafile, server.port)
        sent = sum(len(d) for d in first)
        for d in first:
            sock.sendto(d, ("127.0.0.1", server.port))
        got = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                got += len(sock.recv(65536))
            except socket.timeout:
                break
        assert 0 < got <= 3 * sent, (got, sent)
    finally:
        sock.close()


def test_initial_flood_does_not_stall_other_clients(server):
    """Initials from many source ports (a spoofed flood: nobody completes a
    handshake) while a real client connects and makes requests."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)]
    retries = 0
    try:
        packets = [initial_datagrams(server.cafile, server.port)[0] for _ in range(300)]
        for sock in socks:
            sock.setblocking(False)
        for rnd in range(6):        # 300 new connections' Initials in all
            for i, sock in enumerate(socks):
                sock.sendto(packets[rnd * 50 + i], ("127.0.0.1", server.port))

        async def go():
            t0 = time.monotonic()
            async with h3_connect(server.port, server.cafile) as c:
                for _ in range(5):
                    assert (await c.request("GET", "/hello/during-flood")).status == 200
            return time.monotonic() - t0
        elapsed = run(go(), 30)
        assert elapsed < 10, elapsed
        for sock in socks:
            while True:
                try:
                    retries += _is_retry(sock.recv(65536))
                except (BlockingIOError, OSError):
                    break
        # past MAX_HANDSHAKES half-open connections the worker answers with Retry
        assert retries > 0
    finally:
        for sock in socks:
            sock.close()
