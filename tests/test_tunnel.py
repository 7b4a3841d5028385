"""Tunnels: WebSocket through the reverse proxy, CONNECT through the forward proxy.

A skitaid backend serves a WebSocket echo endpoint and plain HTTP; a second
skitaid server proxies `/` to it (`@b`) and is also a forward proxy (CONNECT).
"""
import json
import os
import signal
import socket
import subprocess
import time

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import free_port, wait_for
from helpers.clients import read_head, read_until_close
from test_autobahn import PASSING, kosoku_exe

BACKEND = r'''
import json, os
import skitaid


@skitaid.websocket(60, max_message_size=64 * 1024 * 1024)
def echo(environ, start_response):
    while True:
        message = yield
        if message is None:
            return
        if message == "close-4001":
            environ["websocket"].close(4001, "asked to")
            return
        yield message


def app(env, start):
    if env["PATH_INFO"] == "/big":
        n = int(env["QUERY_STRING"].partition("=")[2])
        chunk = b"x" * 262144
        def gen():
            left = n
            while left > 0:
                yield chunk[:left]
                left -= len(chunk)
        start("200 OK", [("Content-Length", str(n))])
        return gen()
    body = json.dumps({"path": env["PATH_INFO"], "port": os.environ["PORT"],
                       "upgrade": env.get("skitaid.websocket.upgrade")}).encode()
    start("200 OK", [("Content-Type", "application/json")])
    return [body]


skitaid.mount("/ws/echo", echo)
skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=4, request_log=False)
'''

PROXY = r'''
import os
import skitaid
skitaid.alias("@b", "http", os.environ["MEMBERS"].split(","))
skitaid.mount("/", "@b")
allow = os.environ.get("ALLOW")
ports = [int(p) for p in os.environ.get("CONNECT_PORTS", "").split(",") if p]
skitaid.enable_proxy(True, allow.split(",") if allow else None, ports or None)
tls = {"ssl": True, "certfile": os.environ["CERT"], "keyfile": os.environ["KEY"]} \
    if os.environ.get("CERT") else {}
skitaid.run(port=int(os.environ["PORT"]), threads=1, request_log=False, **tls,
            backend_timeout=float(os.environ.get("TIMEOUT", "30")),
            tunnel_timeout=float(os.environ.get("TUNNEL_TIMEOUT", "300")),
            graceful_timeout=float(os.environ.get("GRACEFUL", "30")))
'''


@pytest.fixture
def backend(serve):
    return serve(BACKEND, filename="backend.py")


@pytest.fixture
def proxy(serve):
    def start(members, **env):
        env["MEMBERS"] = ",".join(members)
        return serve(PROXY, env=env, filename="proxy.py")
    return start


def member(server):
    return "127.0.0.1:%d" % server.port


def ws_url(server, path="/ws/echo"):
    return "ws://127.0.0.1:%d%s" % (server.port, path)


def _worker_of(server):
    master = psutil.Process(server.proc.pid)
    return wait_for(lambda: (master.children() or [None])[0], 5)


# -- WebSocket through the reverse proxy ------------------------------------------------

def test_websocket_echo_through_the_proxy(backend, proxy):
    p = proxy(["127.0.0.1:%d" % free_port(), member(backend)])    # a dead member first
    for _ in range(2):      # the dead one is skipped (and marked down) both times
        with connect(ws_url(p), max_size=None) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\x01binary\xff")
            assert ws.recv(timeout=5) == b"\x00\x01binary\xff"
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv(timeout=10) == big
            text = "é" * 300000
            ws.send(text)
            assert ws.recv(timeout=10) == text
    # a close code chosen by the backend reaches the client unchanged
    with connect(ws_url(p)) as ws:
        ws.send("close-4001")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "asked to"
    # and the client's code reaches the backend, which echoes it back
    with connect(ws_url(p)) as ws:
        ws.close(code=4321, reason="bye")
        rcvd = ws.protocol.close_rcvd
        assert rcvd.code == 4321        # (the backend echoes the code, not the reason)


def test_websocket_through_a_tls_proxy(backend, proxy, tmp_path):
    import ssl
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    p = proxy([member(backend)], CERT=cert, KEY=key)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    with connect("wss://127.0.0.1:%d/ws/echo" % p.port, ssl=ctx, max_size=None) as ws:
        big = os.urandom(1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("tls")
        assert ws.recv(timeout=5) == "tls"
        ws.close(code=4002)
        assert ws.protocol.close_rcvd.code == 4002


def test_websocket_tunnel_is_not_left_open(backend, proxy):
    p = proxy([member(backend)])
    worker = _worker_of(p)

    def established():
        return [c for c in worker.net_connections() if c.status == "ESTABLISHED"]
    for _ in range(5):
        with connect(ws_url(p)) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            assert len(established()) == 2        # the client's and the backend's
    # both sides of every tunnel closed (a tunnel never returns to the pool)
    assert wait_for(lambda: not established(), 5), established()


def test_non_101_answer_is_relayed_as_a_response(backend, proxy):
    p = proxy([member(backend)])
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    # an upgrade to a plain HTTP route: the backend answers 200, which is relayed
    s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 ")
    body = rest + read_until_close(s)      # the connection closes after it
    d = json.loads(body)
    assert d["path"] == "/plain" and d["upgrade"] == "websocket"
    s.close()
    # an upgrade the backend refuses (bad key) comes back as its 400
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    head, _ = read_head(s)
    assert head.startswith("HTTP/1.1 400 ")
    s.close()


def test_websocket_through_the_proxy_502_when_no_member_answers(proxy):
    p = proxy(["127.0.0.1:%d" % free_port()])
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head, _ = read_head(s)
    assert head.startswith("HTTP/1.1 502 ")
    s.close()


def test_graceful_stop_closes_quiet_tunnels_and_lets_busy_ones_run(backend, proxy):
    p = proxy([member(backend)], GRACEFUL="20")
    with connect(ws_url(p)) as quiet, connect(ws_url(p)) as busy:
        quiet.send("a")
        assert quiet.recv(timeout=5) == "a"
        time.sleep(1.2)         # (QUIET in protocols/tunnel.py)
        busy.send("go")
        assert busy.recv(timeout=5) == "go"
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        # the idle tunnel closes at once; the one in use goes on working
        with pytest.raises(ConnectionClosed):
            quiet.recv(timeout=5)
        n = 0
        while time.monotonic() - t0 < 2.5:
            busy.send("m%d" % n)
            assert busy.recv(timeout=5) == "m%d" % n
            n += 1
            time.sleep(0.1)
        assert p.proc.poll() is None
        # once it falls quiet it is closed too, long before graceful_timeout
        with pytest.raises(ConnectionClosed):
            busy.recv(timeout=5)
        p.proc.wait(10)
        assert time.monotonic() - t0 < 8


def test_autobahn_through_the_proxy(backend, proxy):
    """Sections 1-7 and 10, and 9 (messages up to 16 MB: the tunnel's backpressure)."""
    if kosoku_exe() is None:
        pytest.skip("kosoku is not installed (pip install kosoku)")
    p = proxy([member(backend)])
    out = os.path.join(p.cwd, "report")
    cases = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
    args = [kosoku_exe(), "-m", "fuzzingclient", "-o", out, "-p", "2"]
    for c in cases:
        args += ["-i", c]
    args.append(ws_url(p))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    index = os.path.join(out, "index.json")
    assert os.path.exists(index), proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(index) as f:
        report = json.load(f)
    results = {}
    for agent_cases in report.values():
        results.update(agent_cases)
    assert len(results) >= 300       # (301 cases in sections 1-7, 9, 10)
    failed = {case: (r.get("behavior"), r.get("behaviorClose"))
              for case, r in results.items()
              if r.get("behavior") not in PASSING or r.get("behaviorClose") not in PASSING}
    assert not failed, "failed cases (report in %s): %s" % (out, failed)
    assert p.proc.poll() is None and backend.proc.poll() is None


# -- CONNECT through the forward proxy ------------------------------------------------------

def _connect(proxy_port, target):
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    head, rest = read_head(s)
    return s, head, rest


def test_connect_tunnel_from_loopback(backend, proxy):
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port))
    s, head, rest = _connect(p.port, "127.0.0.1:%d" % backend.port)
    assert head.startswith("HTTP/1.1 200 ") and rest == b""
    # two requests on the tunnelled connection, the second one closing it
    for i, last in ((1, False), (2, True)):
        s.sendall(b"GET /through/%d HTTP/1.1\r\nHost: b\r\n%s\r\n"
                  % (i, b"Connection: close\r\n" if last else b""))
        head, rest = read_head(s)
        assert head.startswith("HTTP/1.1 200 ")
        length = int([line.split(":")[1] for line in head.split("\r\n")
                      if line.lower().startswith("content-length")][0])
        while len(rest) < length:
            rest += s.recv(65536)
        d = json.loads(rest)
        assert d["path"] == "/through/%d" % i and d["port"] == str(backend.port)
    assert s.recv(10) == b""        # the backend closed: so does the tunnel
    s.close()


def test_connect_tunnel_passes_a_half_close(backend, proxy):
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port))
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % backend.port)
    assert head.startswith("HTTP/1.1 200 ")
    s.sendall(b"GET /half HTTP/1.1\r\nHost: b\r\n\r\n")
    s.shutdown(socket.SHUT_WR)      # the backend sees the end, and still answers
    head, rest = read_head(s)
    assert head.startswith("HTTP/1.1 200 ")
    assert json.loads(rest + read_until_close(s))["path"] == "/half"
    s.close()


def test_connect_tunnel_keeps_memory_bounded_for_a_slow_reader(backend, proxy):
    size = 200 * 1024 * 1024
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port))
    worker = _worker_of(p)
    base = worker.memory_info().rss
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % backend.port)
    assert head.startswith("HTTP/1.1 200 ")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % size)
    time.sleep(1.5)         # the client reads nothing; the backend could send it all by now
    grown = worker.memory_info().rss - base
    assert grown < 20 * 1024 * 1024, "worker grew by %d MB" % (grown >> 20)
    got = 0
    while True:             # then every byte arrives
        data = s.recv(1024 * 1024)
        if not data:
            break
        got += len(data)
    s.close()
    assert got > size


def test_idle_tunnel_closes_after_tunnel_timeout(backend, proxy):
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port), TUNNEL_TIMEOUT="1")
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % backend.port)
    assert head.startswith("HTTP/1.1 200 ")
    t0 = time.monotonic()
    assert s.recv(10) == b""       # (the socket's own timeout is 10 s)
    assert 0.9 < time.monotonic() - t0 < 4
    s.close()


def test_connect_with_curl(backend, proxy):
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port))
    out = subprocess.run(["curl", "-sS", "-p", "-x", "http://127.0.0.1:%d" % p.port,
                          "http://127.0.0.1:%d/via-curl" % backend.port],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["path"] == "/via-curl"


def test_connect_refusals(backend, proxy, serve):
    p = proxy([member(backend)], CONNECT_PORTS=str(backend.port))
    # a port not in proxy_connect_ports (default: 443 only)
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % p.port)
    assert head.startswith("HTTP/1.1 403 ")
    s.close()
    # malformed targets
    for bad in ("127.0.0.1", "127.0.0.1:0", "a b:443", "[::1:443", "::1:443"):
        s, head, _ = _connect(p.port, bad)
        assert head.startswith("HTTP/1.1 400 "), (bad, head)
        s.close()
    # nobody listens there: 502, and the proxy goes on serving
    dead = free_port()
    p.stop()
    p = proxy([member(backend)], CONNECT_PORTS="%d,%d" % (backend.port, dead))
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % dead)
    assert head.startswith("HTTP/1.1 502 ")
    assert s.recv(100000) == b"" or s.recv(100000) == b""
    s.close()
    # an allow-list without loopback: 403 before anything is opened
    p.stop()
    p = proxy([member(backend)], ALLOW="10.0.0.0/8", CONNECT_PORTS=str(backend.port))
    s, head, _ = _connect(p.port, "127.0.0.1:%d" % backend.port)
    assert head.startswith("HTTP/1.1 403 ")
    s.close()
    out = subprocess.run(["curl", "-sS", "-p", "-x", "http://127.0.0.1:%d" % p.port,
                          "http://127.0.0.1:%d/" % backend.port],
                         capture_output=True, timeout=20)
    assert out.returncode != 0 and b"403" in out.stderr


def test_connect_to_a_server_that_is_not_a_proxy(backend):
    s, head, _ = _connect(backend.port, "127.0.0.1:443")
    assert head.startswith("HTTP/1.1 405 ") and "Connection: close" in head
    s.close()


def test_connect_timeout_gives_504(backend, proxy):
    # a listener that never accepts, its backlog filled: further SYNs go unanswered
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(0)
    port = trap.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    try:
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel completes connections beyond the backlog")
        except socket.timeout:
            pass
        finally:
            probe.close()
        p = proxy([member(backend)], CONNECT_PORTS=str(port), TIMEOUT="1")
        t0 = time.monotonic()
        s, head, _ = _connect(p.port, "127.0.0.1:%d" % port)
        assert head.startswith("HTTP/1.1 504 ") and time.monotonic() - t0 < 4
        s.close()
    finally:
        for f in fillers:
            f.close()
        trap.close()
