"""Reverse proxy: skitaid in front of a second skitaid server on loopback."""
import hashlib
import http.client
import json
import os
import socket
import threading
import time

import psutil
import pytest

from conftest import free_port, wait_for
from helpers.clients import fetch

BACKEND = r'''
import hashlib, json, os, time
import skitaid

def app(env, start):
    path = env["PATH_INFO"]
    if path.endswith("/big"):
        n = int(env["QUERY_STRING"].partition("=")[2])
        chunk = b"x" * 262144
        def gen():
            left = n
            while left > 0:
                yield chunk[:left]
                left -= len(chunk)
        start("200 OK", [("Content-Type", "application/octet-stream"),
                         ("Content-Length", str(n))])
        return gen()
    if path.endswith("/upload"):
        h = hashlib.sha1()
        total = 0
        inp = env["wsgi.input"]
        while True:
            data = inp.read(262144)
            if not data:
                break
            total += len(data)
            h.update(data)
        body = json.dumps({"received": total, "sha1": h.hexdigest()}).encode()
        start("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path.endswith("/slow"):
        time.sleep(3)
    headers = {k: v for k, v in env.items() if k.startswith("HTTP_")}
    body = json.dumps({"path": path, "query": env["QUERY_STRING"], "headers": headers,
                       "method": env["REQUEST_METHOD"], "port": os.environ["PORT"]}).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Connection", "keep-alive"),
                     ("Keep-Alive", "timeout=5"), ("X-Backend", "yes")])
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=4, max_upload_size=300 * 1024 * 1024)
'''

PROXY = r'''
import os
import skitaid
skitaid.alias("@b", "http", os.environ["MEMBERS"].split(","))
skitaid.mount("/", "@b")
skitaid.mount("/api", "@b/v1")
skitaid.run(port=int(os.environ["PORT"]), threads=2,
            backend_timeout=float(os.environ.get("TIMEOUT", "30")),
            max_upload_size=300 * 1024 * 1024, request_log=False)
'''


@pytest.fixture
def backends(serve):
    def start(n=1):
        return [serve(BACKEND, filename="backend%d.py" % i) for i in range(n)]
    return start


@pytest.fixture
def proxy(serve):
    def start(members, **env):
        env["MEMBERS"] = ",".join(members)
        return serve(PROXY, env=env, filename="proxy.py")
    return start


def request(port, method, path, body=None, headers=None, timeout=20):
    r = fetch(port, path, method, body, headers, timeout=timeout)
    return r.status, dict(r.headers), r.body


def member(server):
    return "127.0.0.1:%d" % server.port


def test_forwarding_headers_and_paths(backends, proxy):
    (b,) = backends()
    p = proxy([member(b)])
    status, headers, body = request(p.port, "GET", "/hello/x?q=1", headers={
        "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "5",
        "X-Forwarded-For": "10.1.1.1", "X-Forwarded-Proto": "https"})
    assert status == 200
    d = json.loads(body)
    assert d["path"] == "/hello/x" and d["query"] == "q=1"
    h = d["headers"]
    assert "HTTP_X_SECRET" not in h and "HTTP_KEEP_ALIVE" not in h
    assert h["HTTP_X_FORWARDED_FOR"] == "10.1.1.1, 127.0.0.1"
    assert h["HTTP_X_FORWARDED_PROTO"] == "http"
    assert h["HTTP_X_FORWARDED_HOST"] == "127.0.0.1:%d" % p.port
    assert headers["X-Backend"] == "yes" and "Keep-Alive" not in headers
    # /api = @b/v1: the prefix is replaced by the alias's path
    status, _, body = request(p.port, "GET", "/api/items?x=2")
    assert status == 200 and json.loads(body)["path"] == "/v1/items"
    status, _, body = request(p.port, "GET", "/api")
    assert json.loads(body)["path"] == "/v1"


def test_keep_alive_through_the_proxy(backends, proxy):
    (b,) = backends()
    p = proxy([member(b)])
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    for i in range(20):
        conn.request("POST" if i % 2 else "GET", "/k%d" % i, b"abc" if i % 2 else None)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["path"] == "/k%d" % i
    conn.close()


def test_failover_to_a_live_member_and_502_when_none_answers(backends, proxy):
    (b,) = backends()
    dead = "127.0.0.1:%d" % free_port()
    p = proxy([dead, member(b)])
    for _ in range(5):
        status, _, body = request(p.port, "GET", "/x")
        assert status == 200 and json.loads(body)["port"] == str(b.port)
    p.stop()
    p2 = proxy(["127.0.0.1:%d" % free_port()])
    status, _, _ = request(p2.port, "GET", "/x")
    assert status == 502


def test_504_when_the_backend_is_too_slow(backends, proxy):
    (b,) = backends()
    p = proxy([member(b)], TIMEOUT="0.5")
    t0 = time.monotonic()
    status, _, _ = request(p.port, "GET", "/slow")
    assert status == 504 and time.monotonic() - t0 < 2.5


def _worker_of(server):
    master = psutil.Process(server.proc.pid)
    return wait_for(lambda: (master.children() or [None])[0], 5)


SIZE = 200 * 1024 * 1024


def _sample_rss(proc, stop, peak):
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.05)


def test_200mb_streams_both_ways_in_bounded_memory(backends, proxy):
    (b,) = backends()
    p = proxy([member(b)])
    worker = _worker_of(p)
    request(p.port, "GET", "/warm")
    base = worker.memory_info().rss
    peak = [base]
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(worker, stop, peak))
    sampler.start()
    try:
        # download
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=60)
        conn.request("GET", "/big?n=%d" % SIZE)
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.getheader("Content-Length")) == SIZE
        got = 0
        while True:
            data = resp.read(1024 * 1024)
            if not data:
                break
            got += len(data)
        assert got == SIZE
        conn.close()
        # upload, chunked, with a sha1 to prove every byte arrived in order
        h = hashlib.sha1()
        block = os.urandom(1024 * 1024)

        def body():
            for _ in range(SIZE // len(block)):
                h.update(block)
                yield block
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=60)
        conn.request("POST", "/upload", body(), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200
        d = json.loads(resp.read())
        assert d["received"] == SIZE and d["sha1"] == h.hexdigest()
        conn.close()
    finally:
        stop.set()
        sampler.join()
    assert peak[0] - base < 40 * 1024 * 1024, "worker grew by %d MB" % ((peak[0] - base) >> 20)


def test_slow_client_does_not_make_the_proxy_buffer(backends, proxy):
    (b,) = backends()
    p = proxy([member(b)])
    worker = _worker_of(p)
    request(p.port, "GET", "/warm")
    base = worker.memory_info().rss
    s = socket.create_connection(("127.0.0.1", p.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
    s.recv(65536)
    time.sleep(1.5)         # the client reads nothing; the backend could send it all by now
    grown = worker.memory_info().rss - base
    s.close()
    assert grown < 20 * 1024 * 1024, "worker grew by %d MB" % (grown >> 20)


FORWARD = r'''
import os
import skitaid
def app(env, start):
    start("200 OK", [("Content-Type", "text/plain")])
    return [b"local app"]
skitaid.mount("/", app)
allow = os.environ.get("ALLOW")
skitaid.enable_proxy(True, allow.split(",") if allow else None)
skitaid.run(port=int(os.environ["PORT"]), threads=1)
'''


def test_forward_proxy_for_allowed_clients_only(backends, serve):
    (b,) = backends()
    fwd = serve(FORWARD, filename="forward.py")
    status, _, body = request(fwd.port, "GET", "http://127.0.0.1:%d/through?x=1" % b.port,
                              headers={"Proxy-Connection": "keep-alive"})
    assert status == 200
    d = json.loads(body)
    assert d["path"] == "/through" and d["query"] == "x=1"
    assert "HTTP_PROXY_CONNECTION" not in d["headers"]
    status, _, body = request(fwd.port, "GET", "/")       # origin-form: the mounted app
    assert status == 200 and body == b"local app"
    fwd.stop()
    closed = serve(FORWARD, env={"ALLOW": "10.0.0.0/8"}, filename="forward2.py")
    status, _, _ = request(closed.port, "GET", "http://127.0.0.1:%d/through" % b.port)
    assert status == 403
