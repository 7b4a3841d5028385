"""Corequests over HTTP/2: a front skitaid server whose app calls a TLS skitaid
backend with `was`. When the backend offers h2 by ALPN, the front worker's
calls share one connection; results are the same as over HTTP/1.1.

The backend's self-signed certificate is made at run time with `openssl`;
the front trusts it through SSL_CERT_FILE (honoured by the client's default
TLS context).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

from conftest import ServerProc, wait_for

BACKEND = r'''
import hashlib, json, os, time
import skitaid

def answer(start, obj):
    body = json.dumps(obj).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def echo(env, start):
    data = env["wsgi.input"].read()
    q = env["QUERY_STRING"]
    if q.startswith("s="):
        time.sleep(float(q[2:].split("&")[0]))
    who = {} if "bare" in q else {"proto": env["SERVER_PROTOCOL"], "port": env["REMOTE_PORT"],
                                  "pid": os.getpid()}
    return answer(start, {**who, "method": env["REQUEST_METHOD"], "query": q,
                          "len": len(data), "sha": hashlib.sha256(data).hexdigest(),
                          "ctype": env.get("CONTENT_TYPE", "")})

def big(env, start):
    n = int(env["QUERY_STRING"])
    block = bytes(range(256)) * 4096
    start("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])
    def gen():
        left = n
        while left > 0:
            yield block[:min(left, len(block))]
            left -= len(block)
    return gen()

def missing(env, start):
    start("404 Not Found", [("Content-Type", "text/plain"), ("X-Extra", "yes")])
    return [b"not here"]

skitaid.mount("/echo", echo)
skitaid.mount("/big", big)
skitaid.mount("/missing", missing)
skitaid.enable_ssl("cert.pem", "key.pem")
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=32, workers=1,
            http2=os.environ.get("HTTP2", "yes") == "yes", graceful_timeout=10)
'''

FRONT = r'''
import hashlib, json, os
import skitaid
from skitaid import was

B = os.environ["BACKEND"]

def plain(r):
    return {"status": r.status, "code": r.status_code, "reason": r.reason,
            "headers": sorted((k, v) for k, v in r.headers if k.lower() != "date"),
            "data": r.data if isinstance(r.data, (dict, list, str)) else None}

def answer(start, obj):
    body = json.dumps(obj).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path, q = env["PATH_INFO"], env["QUERY_STRING"]
    if path == "/many":
        n, _, sleep = (q or "20").partition(",")
        tasks = was.Tasks([was.get(B + "/echo?s=%s&i=%d" % (sleep or "0.3", i))
                           for i in range(int(n))], timeout=20)
        return answer(start, [plain(r) for r in tasks.dispatch()])
    if path == "/shapes":
        rs = [was.get(B + "/echo?bare").dispatch(10),
              was.post(B + "/echo?bare", {"x": [1, 2]}).dispatch(10),
              was.get(B + "/missing").dispatch(10)]
        return answer(start, [plain(r) for r in rs])
    if path == "/big":
        r = was.get(B + "/big?%d" % int(q)).dispatch(30)
        return answer(start, {"status": r.status, "code": r.status_code, "error": str(r.error),
                              "len": len(r.content or b""),
                              "sha": hashlib.sha256(r.content or b"").hexdigest()})
    if path == "/post":
        body = os.urandom(int(q))
        r = was.post(B + "/echo", body).dispatch(30)
        return answer(start, {"status": r.status, "sha": hashlib.sha256(body).hexdigest(),
                              "len": len(body), "data": r.data})
    if path == "/one":
        r = was.get(B + "/echo").dispatch(10)
        return answer(start, {"status": r.status, "code": r.status_code,
                              "error": str(r.error) if r.error else None,
                              "data": r.data if r.status == 3 else None})
    start("404 Not Found", [("Content-Length", "0")])
    return [b""]

skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=8, workers=1)
'''


def make_cert(root, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(root / ("%s-key.pem" % name)),
                    "-out", str(root / ("%s.pem" % name)),
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("h2c")
    (root / "backend.py").write_text(BACKEND)
    (root / "front.py").write_text(FRONT)
    make_cert(root, "cert")
    os.rename(root / "cert-key.pem", root / "key.pem")
    make_cert(root, "other")        # trusted by nobody
    return root


def start_backend(root, **env):
    return ServerProc([sys.executable, str(root / "backend.py")], str(root),
                      env={k: str(v) for k, v in env.items()})


def start_front(root, backend_port, ca="cert.pem"):
    return ServerProc([sys.executable, str(root / "front.py")], str(root),
                      env={"BACKEND": "https://127.0.0.1:%d" % backend_port,
                           "SSL_CERT_FILE": str(root / ca)})


@pytest.fixture(scope="module")
def backend(root):
    s = start_backend(root)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def backend_h1(root):
    s = start_backend(root, HTTP2="no")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def front(root, backend):
    s = start_front(root, backend.port)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def front_h1(root, backend_h1):
    s = start_front(root, backend_h1.port)
    yield s
    s.stop()


def get(server, path, timeout=60):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (server.port, path),
                                timeout=timeout) as r:
        return json.loads(r.read())


def test_concurrent_calls_share_one_connection(front):
    t0 = time.monotonic()
    results = get(front, "/many?20")
    elapsed = time.monotonic() - t0
    assert [r["status"] for r in results] == [3] * 20
    assert {r["data"]["proto"] for r in results} == {"HTTP/2"}
    # one TCP connection: every request came from the same client port
    assert len({r["data"]["port"] for r in results}) == 1
    assert sorted(r["data"]["query"] for r in results) == sorted(
        "s=0.3&i=%d" % i for i in range(20))
    assert elapsed < 3.0            # concurrent streams, not one after another (20 × 0.3 s)
    # the next request reuses it
    again = get(front, "/many?3")
    assert again[0]["data"]["port"] == results[0]["data"]["port"]


def test_more_calls_than_the_servers_stream_limit(front):
    # the backend allows 100 concurrent streams: the rest wait for one to end
    results = get(front, "/many?150,0.05")
    assert [r["status"] for r in results] == [3] * 150
    assert len({r["data"]["port"] for r in results}) == 1


def test_connection_lost_fails_streams_in_flight(root):
    backend = start_backend(root)
    try:
        with start_front(root, backend.port) as front:
            out = {}
            t = threading.Thread(target=lambda: out.update(r=get(front, "/many?5,5")))
            t0 = time.monotonic()
            t.start()
            worker = psutil.Process(backend.proc.pid).children()[0]

            def streams_open():
                return any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == backend.port
                           for c in worker.net_connections("tcp"))
            assert wait_for(streams_open, 10)
            worker.kill()
            t.join(30)
            assert time.monotonic() - t0 < 4.5      # not the 5 s the backend would take
            assert [r["status"] for r in out["r"]] == [2] * 5      # STA_NETERR
    finally:
        backend.stop()


def test_results_identical_to_http11(front, front_h1):
    h2 = get(front, "/shapes")
    h1 = get(front_h1, "/shapes")
    assert h2 == h1
    assert [r["code"] for r in h2] == [200, 200, 404]
    assert h2[1]["data"]["method"] == "POST" and h2[1]["data"]["ctype"] == "application/json"
    assert ("X-Extra", "yes") in [tuple(h) for h in h2[2]["headers"]]


def test_http11_backend_over_tls(front_h1):
    results = get(front_h1, "/many?4")
    assert [r["status"] for r in results] == [3] * 4
    assert {r["data"]["proto"] for r in results} == {"HTTP/1.1"}


def test_large_response_and_post(front):
    n = 10 * 1024 * 1024 + 7
    expect = hashlib.sha256((bytes(range(256)) * ((n // 256) + 1))[:n]).hexdigest()
    r = get(front, "/big?%d" % n)
    assert (r["status"], r["code"], r["len"], r["sha"]) == (3, 200, n, expect)
    r = get(front, "/post?%d" % (5 * 1024 * 1024))
    assert r["status"] == 3
    assert r["data"]["len"] == r["len"] and r["data"]["sha"] == r["sha"]
    assert r["data"]["proto"] == "HTTP/2"


def test_untrusted_certificate_is_an_error_result(root, backend):
    with start_front(root, backend.port, ca="other.pem") as front:
        t0 = time.monotonic()
        r = get(front, "/one", timeout=20)
        assert time.monotonic() - t0 < 5
        assert r["status"] == 2                     # STA_NETERR
        assert "certificate" in r["error"].lower()


def test_backend_reload_goaway_loses_nothing(root):
    """The backend reloads (its old worker sends GOAWAY and finishes what it
    took) while the front keeps calling: every call succeeds."""
    backend = start_backend(root)
    try:
        with start_front(root, backend.port) as front:
            get(front, "/many?2")
            failures = []
            pids = set()
            stop = threading.Event()

            def hammer():
                while not stop.is_set():
                    try:
                        for r in get(front, "/many?5"):
                            if r["status"] != 3 or r["code"] != 200:
                                failures.append(r)
                            else:
                                pids.add(r["data"]["pid"])
                    except Exception as e:      # noqa: BLE001
                        failures.append(repr(e))

            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            try:
                wait_for(lambda: len(pids) >= 1, 10)
                first = set(pids)
                os.kill(backend.proc.pid, signal.SIGHUP)
                assert wait_for(lambda: pids - first, 20), "no new backend worker answered"
                time.sleep(0.5)             # a few more rounds on the new connection
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            assert not failures, failures[:3]
    finally:
        backend.stop()


class GoawayBackend:
    """An HTTP/2 server (the `h2` package on a TLS socket) whose first
    connection takes three requests, answers the first, then sends GOAWAY
    with last-stream-id 1: the other two must be sent again elsewhere."""

    def __init__(self, root):
        import socket
        import ssl
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(root / "cert.pem"), str(root / "key.pem"))
        self.ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.served = []            # (connection number, stream id, path)
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(raw, self.conns), daemon=True).start()

    def _serve(self, raw, n):
        import h2.config
        import h2.connection
        import h2.events
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            pending = []

            def answer(sid, path):
                body = json.dumps({"path": path, "conn": n}).encode()
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                        ("content-length", str(len(body)))])
                conn.send_data(sid, body, end_stream=True)
                self.served.append((n, sid, path))

            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict((k.decode(), v.decode()) for k, v in ev.headers)[":path"]
                        if n > 1:
                            answer(ev.stream_id, path)
                        else:
                            pending.append((ev.stream_id, path))
                if n == 1 and len(pending) == 3:
                    answer(*pending[0])
                    conn.close_connection(last_stream_id=pending[0][0])
                    sock.sendall(conn.data_to_send())
                    # the rest was never processed. Read until the client hangs up:
                    # closing with its frames unread would reset the connection and
                    # could destroy the answer and the GOAWAY before they are read
                    sock.settimeout(10)
                    while sock.recv(65536):
                        pass
                    return
                sock.sendall(conn.data_to_send())
        except Exception:               # noqa: BLE001 - the client hung up
            pass
        finally:
            raw.close()

    def close(self):
        self.sock.close()


GOAWAY_FRONT = r'''
import json, os
import skitaid
from skitaid import was

B = os.environ["BACKEND"]

def app(env, start):
    rs = was.Tasks([was.post(B + "/p%d" % i, {"i": i}) for i in range(3)], timeout=10).dispatch()
    body = json.dumps([[r.status, r.status_code, r.data if not isinstance(r.data, bytes)
                        else repr(r.data)] for r in rs]).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), threads=4, workers=1)
'''


def test_goaway_streams_not_taken_are_retried(root):
    (root / "goaway_front.py").write_text(GOAWAY_FRONT)
    backend = GoawayBackend(root)
    try:
        with ServerProc([sys.executable, str(root / "goaway_front.py")], str(root),
                        env={"BACKEND": "https://127.0.0.1:%d" % backend.port,
                             "SSL_CERT_FILE": str(root / "cert.pem")}) as front:
            results = get(front, "/", timeout=20)
    finally:
        backend.close()
    assert [r[:2] for r in results] == [[3, 200]] * 3, (results, backend.served, backend.conns)
    assert sorted(r[2]["path"] for r in results) == ["/p0", "/p1", "/p2"]
    assert backend.conns == 2
    # one answered before the GOAWAY, the two it did not take on the new connection
    assert sorted(n for n, _, _ in backend.served) == [1, 2, 2]
