"""The WSGI (PEP 3333) bridge, against real servers on loopback ports.

Most tests share one server (module scope, threads=4) running APP_SCRIPT;
tests that need other settings (threads=0, threads=1 + 503, debug) start
their own. Clients are http.client, httpx, curl and raw sockets.
"""
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import weakref

import psutil
import pytest

from conftest import ServerProc, wait_for
from helpers.clients import read_until_close

MB = 1024 * 1024

# The app module for the shared server: one WSGI app per mount point.
APP_SCRIPT = r'''
import hashlib, io, json, os, sys, threading, time, warnings
from wsgiref.validate import validator, WSGIWarning
import skitaid

HERE = os.path.dirname(os.path.abspath(__file__))
warnings.simplefilter("error", WSGIWarning)      # a validator warning fails the request


def flag(name, text="1"):
    with open(os.path.join(HERE, "flag-" + name), "w") as f:
        f.write(text)


def plain(environ, start_response):
    """GET/HEAD: a text page; POST: reads wsgi.input in 64 KB chunks → length + sha256."""
    method = environ["REQUEST_METHOD"]
    if method == "POST":
        h = hashlib.sha256()
        n = 0
        inp = environ["wsgi.input"]
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            n += len(chunk)
            h.update(chunk)
        tail = inp.read(65536)          # at the end: b"" again
        body = ("%d %s %r" % (n, h.hexdigest(), tail)).encode()
    else:
        body = ("hello %s %s" % (method, environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def env(environ, start_response):
    out = {}
    for k, v in environ.items():
        if k == "wsgi.version":
            out[k] = ["tuple", list(v)]
        elif k in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper"):
            out[k] = ["object", type(v).__name__]
        else:
            out[k] = [type(v).__name__, v]
    inp = environ["wsgi.input"]
    out["_input_methods"] = [m for m in ("read", "readline", "readlines", "__iter__") if hasattr(inp, m)]
    err = environ["wsgi.errors"]
    out["_errors_methods"] = [m for m in ("write", "writelines", "flush") if hasattr(err, m)]
    body = inp.read(1 << 20)
    out["_body"] = body.decode("latin-1")
    out["_body_end"] = inp.read(10).decode("latin-1")
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


BIGFILE = os.path.join(HERE, "big.bin")


class ClosingFile(io.FileIO):
    def close(self):
        if not self.closed:
            flag("file-closed-" + os.path.basename(self.name))
        super().close()


def files(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        f = ClosingFile(BIGFILE, "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/offset":           # sendfile from the current position, app-given length
        f = ClosingFile(BIGFILE, "rb")
        f.seek(1000)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "5000")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/bytesio":          # not a real file: the iterable fallback
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 200000), 8192)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such file\n"]


def excinfo(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/before":
        # headers replaced before any output: the client sees only the error
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/after":
        # after output, start_response(exc_info) must re-raise the app's exception
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            try:
                raise KeyError("late")
            except KeyError:
                try:
                    start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                                   sys.exc_info())
                except KeyError:
                    flag("reraised")
                    raise
            yield b"never"
        return gen()
    if path == "/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("200 OK", [("Content-Type", "text/plain")])
        except AssertionError:
            body = b"second call refused"
        else:
            body = b"second call accepted"
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b""]


def writer(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three"]


class Tracked:
    """An iterable with close(): records that close() was called."""

    def __init__(self, name, n, size, delay=0.0):
        self.name, self.n, self.size, self.delay = name, n, size, delay

    def __iter__(self):
        for i in range(self.n):
            if self.delay:
                time.sleep(self.delay)
            yield b"%d" % (i % 10) * self.size

    def close(self):
        flag("closed-" + self.name)


PROGRESS = {}


def stream(environ, start_response):
    path = environ["PATH_INFO"]
    qs = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    name = qs.get("name", "x")
    if path == "/chunked":          # no length: chunked
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(name, int(qs.get("n", "5")), int(qs.get("size", "10")),
                       float(qs.get("delay", "0")))
    if path == "/sized":            # app-given length on a generator
        n, size = int(qs.get("n", "5")), int(qs.get("size", "10"))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", qs.get("declared", str(n * size)))])
        return Tracked(name, n, size)
    if path == "/huge":             # 100 MB in 64 KB chunks, progress counted
        PROGRESS[name] = 0
        def gen():
            chunk = b"z" * 65536
            try:
                for _ in range(1600):
                    yield chunk
                    PROGRESS[name] += len(chunk)
            finally:
                flag("huge-closed-" + name, str(PROGRESS[name]))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return gen()
    if path == "/progress":
        body = str(PROGRESS.get(name, -1)).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b""]


def fail(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("boom-in-the-app")
    if path == "/midstream":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"begin"
            raise RuntimeError("boom-midstream")
        return gen()
    if path == "/nostart":
        return [b"no start_response"]
    if path == "/str":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def slow(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"] or "1"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [threading.current_thread().name.encode()]


skitaid.mount("/", plain)
skitaid.mount("/v", validator(plain))
skitaid.mount("/env", validator(env))
skitaid.mount("/mnt/app", env)
skitaid.mount("/files", files)
skitaid.mount("/excinfo", excinfo)
skitaid.mount("/write", validator(writer))
skitaid.mount("/stream", stream)
skitaid.mount("/fail", fail)
skitaid.mount("/slow", slow)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]),
            threads=int(os.environ.get("THREADS", "4")))
'''

BIG = os.urandom(5 * MB + 123)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsgi")
    (root / "app.py").write_text(APP_SCRIPT)
    (root / "big.bin").write_bytes(BIG)
    s = ServerProc([sys.executable, str(root / "app.py")], str(root))
    s.root = str(root)
    yield s
    s.stop()


# -- helpers ---------------------------------------------------------------------------

def request(srv, method, path, body=None, headers=None, conn=None):
    """(response, body) over a fresh (or the given) http.client connection."""
    c = conn or http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r, data


class _Reader:
    """One buffered reader per socket, shared by the responses read from it
    (a reader per response would swallow the start of a pipelined next one)."""

    def __init__(self, sock):
        self.fp = sock.makefile("rb")

    def makefile(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return getattr(self.fp, name)

    def close(self):            # HTTPResponse closes its fp when the body ends
        pass


_readers = weakref.WeakKeyDictionary()


def raw_response(sock, method="GET"):
    """Read the next response from a raw socket (handles 1xx, chunked, length)."""
    reader = _readers.get(sock)
    if reader is None:
        reader = _readers[sock] = _Reader(sock)
    r = http.client.HTTPResponse(reader, method=method)
    r.begin()
    return r, r.read()


def flag(srv, name):
    path = os.path.join(srv.root, "flag-" + name)
    if os.path.exists(path):
        with open(path) as f:
            return f.read() or "1"
    return None


def rss(srv):
    return psutil.Process(srv.proc.pid).memory_info().rss


class RSSWatch:
    """Samples the server's RSS in a thread; .peak is the largest value seen."""

    def __init__(self, srv):
        self.proc = psutil.Process(srv.proc.pid)
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self):
        self._stop.set()
        self._t.join()
        return self.peak - self.start


def no_validator_errors(srv):
    log = srv.log
    assert "AssertionError" not in log, log[-3000:]
    assert "WSGIWarning" not in log, log[-3000:]
    assert "garbage collected without being closed" not in log, log[-3000:]


# -- wsgiref.validate ----------------------------------------------------------------

def test_validator_get_head_post(srv):
    r, body = request(srv, "GET", "/v/page?x=1")
    assert r.status == 200 and body == b"hello GET /page"
    assert r.getheader("Content-Length") == str(len(body))
    r, body = request(srv, "HEAD", "/v/page")
    assert r.status == 200 and body == b""
    assert r.getheader("Content-Length") == str(len(b"hello HEAD /page"))
    data = os.urandom(300000)
    r, body = request(srv, "POST", "/v/upload", body=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert body == ("%d %s %r" % (len(data), hashlib.sha256(data).hexdigest(), b"")).encode()
    no_validator_errors(srv)


def test_validator_chunked_post(srv):
    parts = [os.urandom(n) for n in (1, 5000, 70000, 3, 200000)]
    data = b"".join(parts)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    c.request("POST", "/v/chunked", body=iter(parts), encode_chunked=True,
              headers={"Content-Type": "application/octet-stream"})
    r = c.getresponse()
    assert r.status == 200
    assert r.read() == ("%d %s %r" % (len(data), hashlib.sha256(data).hexdigest(), b"")).encode()
    # the connection is still good for the next request
    c.request("GET", "/v/again")
    r = c.getresponse()
    assert r.read() == b"hello GET /again"
    c.close()
    no_validator_errors(srv)


def test_httpx_streaming_upload_and_download(srv):
    httpx = pytest.importorskip("httpx")
    parts = [os.urandom(40000) for _ in range(10)]
    data = b"".join(parts)
    with httpx.Client(base_url=srv.url, timeout=20) as client:
        r = client.post("/v/gen", content=iter(parts))       # a generator: sent chunked
        assert r.status_code == 200
        assert r.content == ("%d %s %r" % (len(data), hashlib.sha256(data).hexdigest(), b"")).encode()
        with client.stream("GET", "/stream/chunked?name=httpx&n=50&size=1000") as r:
            got = b"".join(r.iter_bytes())
        assert r.headers["transfer-encoding"] == "chunked"
        assert got == b"".join(b"%d" % (i % 10) * 1000 for i in range(50))
    assert wait_for(lambda: flag(srv, "closed-httpx"), 5)


def test_validator_100_continue(srv):
    data = os.urandom(150000)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /v/up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % len(data))
        # nothing is sent before the server says go on
        got = b""
        while b"\r\n\r\n" not in got:
            more = s.recv(1000)
            assert more, "connection closed before 100 Continue"
            got += more
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n"), got
        s.sendall(data)
        r, body = raw_response(s)
        assert r.status == 200
        assert body == ("%d %s %r" % (len(data), hashlib.sha256(data).hexdigest(), b"")).encode()
    no_validator_errors(srv)


def test_validator_50mb_streamed_upload_memory_bounded(srv):
    request(srv, "GET", "/v/warm")
    total = 50 * MB
    block = os.urandom(MB)
    expect = hashlib.sha256()
    for _ in range(50):
        expect.update(block)

    def gen():
        for _ in range(50):
            yield block

    watch = RSSWatch(srv)
    try:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        c.request("POST", "/v/upload50", body=gen(),
                  headers={"Content-Length": str(total), "Content-Type": "application/octet-stream"})
        r = c.getresponse()
        body = r.read()
        c.close()
    finally:
        grew = watch.stop()
    assert r.status == 200
    assert body == ("%d %s %r" % (total, expect.hexdigest(), b"")).encode()
    assert grew < 15 * MB, "server RSS grew by %.1f MB during a 50 MB upload" % (grew / MB)
    no_validator_errors(srv)


# -- environ -----------------------------------------------------------------------------

def get_env(srv, target, method="GET", body=None, headers=None):
    r, data = request(srv, method, target, body=body, headers=headers)
    assert r.status == 200, data
    return json.loads(data)


def test_environ_required_keys_and_types(srv):
    env = get_env(srv, "/env/x?q=1", method="POST", body=b"abc",
                  headers={"Content-Type": "text/plain", "X-Custom": "v"})
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                "HTTP_HOST", "HTTP_X_CUSTOM", "wsgi.url_scheme"):
        assert env[key][0] == "str", (key, env[key])
    assert env["REQUEST_METHOD"][1] == "POST"
    assert env["SCRIPT_NAME"][1] == "/env"
    assert env["PATH_INFO"][1] == "/x"
    assert env["QUERY_STRING"][1] == "q=1"
    assert env["CONTENT_TYPE"][1] == "text/plain"
    assert env["CONTENT_LENGTH"][1] == "3"
    assert env["SERVER_PORT"][1] == str(srv.port)
    assert env["SERVER_PROTOCOL"][1] == "HTTP/1.1"
    assert env["HTTP_X_CUSTOM"][1] == "v"
    assert env["wsgi.url_scheme"][1] == "http"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == ["tuple", [1, 0]]
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
        assert env[key][0] == "bool", key
    assert env["wsgi.multithread"][1] is True        # threads=4
    assert env["wsgi.run_once"][1] is False
    assert env["_input_methods"] == ["read", "readline", "readlines", "__iter__"]
    assert env["_errors_methods"] == ["write", "writelines", "flush"]
    assert env["_body"] == "abc" and env["_body_end"] == ""
    assert env["REMOTE_ADDR"][1] == "127.0.0.1"
    # no body: wsgi.input reads b"" at once, no CONTENT_LENGTH
    env = get_env(srv, "/env")
    assert env["_body"] == "" and env["_body_end"] == ""
    assert env["SCRIPT_NAME"][1] == "/env" and env["PATH_INFO"][1] == ""
    assert "CONTENT_LENGTH" not in env or env["CONTENT_LENGTH"][1] in ("", "0")
    no_validator_errors(srv)


def test_environ_script_name_path_info_split(srv):
    env = get_env(srv, "/mnt/app/caf%C3%A9/x%20y?a=%20b&c=d+e&e=%C3%A9")
    assert env["SCRIPT_NAME"][1] == "/mnt/app"
    assert env["PATH_INFO"][1] == "/café/x y".encode("utf-8").decode("latin-1")
    assert env["QUERY_STRING"][1] == "a=%20b&c=d+e&e=%C3%A9"      # raw, undecoded
    assert env["REQUEST_URI"][1] == "/mnt/app/caf%C3%A9/x%20y?a=%20b&c=d+e&e=%C3%A9"
    env = get_env(srv, "/mnt/app")
    assert (env["SCRIPT_NAME"][1], env["PATH_INFO"][1]) == ("/mnt/app", "")
    env = get_env(srv, "/mnt/app/")
    assert (env["SCRIPT_NAME"][1], env["PATH_INFO"][1]) == ("/mnt/app", "/")
    # "/mnt/apple" is not under "/mnt/app": the root app answers it
    r, body = request(srv, "GET", "/mnt/apple")
    assert body == b"hello GET /mnt/apple"
    # the root mount: empty SCRIPT_NAME, the whole path in PATH_INFO
    r, body = request(srv, "GET", "/some/where%21")
    assert body == b"hello GET /some/where!"


def test_environ_headers(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: Example.COM:8080\r\nCookie: a=1\r\nCookie: b=2\r\n"
                  b"Accept: text/html\r\nAccept: */*\r\nX_Spoof: 1\r\n\r\n")
        r, body = raw_response(s)
    env = json.loads(body)
    assert env["HTTP_HOST"][1] == "Example.COM:8080"
    assert env["SERVER_NAME"][1] == "example.com"
    assert env["HTTP_COOKIE"][1] == "a=1; b=2"
    assert env["HTTP_ACCEPT"][1] == "text/html,*/*"
    assert "HTTP_X_SPOOF" not in env       # underscores could spoof X-Spoof
    # HTTP/1.0, no Host header
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /env HTTP/1.0\r\n\r\n")
        r, body = raw_response(s)
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"][1] == "HTTP/1.0"
    assert env["SERVER_NAME"][1]      # never empty


# -- wsgi.file_wrapper ---------------------------------------------------------------

def test_file_wrapper_large_file_and_close(srv):
    r, body = request(srv, "GET", "/files/big")
    assert r.status == 200
    assert r.getheader("Content-Length") == str(len(BIG))
    assert len(body) == len(BIG) and body == BIG
    assert wait_for(lambda: flag(srv, "file-closed-big.bin"), 5), "file_wrapper close() not called"
    # offset + app-given Content-Length
    os.unlink(os.path.join(srv.root, "flag-file-closed-big.bin"))
    r, body = request(srv, "GET", "/files/offset")
    assert r.getheader("Content-Length") == "5000"
    assert body == BIG[1000:6000]
    assert wait_for(lambda: flag(srv, "file-closed-big.bin"), 5)
    # HEAD: length, no body, still closed
    os.unlink(os.path.join(srv.root, "flag-file-closed-big.bin"))
    r, body = request(srv, "HEAD", "/files/big")
    assert r.getheader("Content-Length") == str(len(BIG)) and body == b""
    assert wait_for(lambda: flag(srv, "file-closed-big.bin"), 5)
    # a file-like object without a file descriptor: iterated
    r, body = request(srv, "GET", "/files/bytesio")
    assert body == b"x" * 200000


def test_file_wrapper_keep_alive_and_slow_reader(srv):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
    for _ in range(3):
        c.request("GET", "/files/big")
        r = c.getresponse()
        assert r.read() == BIG
    c.close()
    # a client that reads slowly still gets every byte
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(b"GET /files/big HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.5)
        r, body = raw_response(s)
        assert body == BIG


def test_file_wrapper_via_curl(srv, tmp_path):
    out = tmp_path / "out.bin"
    subprocess.run(["curl", "-sS", "--max-time", "20", "-o", str(out), srv.url + "/files/big"],
                   check=True)
    assert out.read_bytes() == BIG


# -- start_response / write() ------------------------------------------------------------

def test_exc_info_before_output_replaces_headers(srv):
    r, body = request(srv, "GET", "/excinfo/before")
    assert r.status == 500
    assert r.getheader("X-First") is None
    assert body == b"replaced"


def test_exc_info_after_output_reraises(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /excinfo/after HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while True:
            more = s.recv(65536)
            if not more:
                break           # the server drops the connection: the body can't be completed
            got += more
    assert got.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in got and b"never" not in got
    assert not got.endswith(b"0\r\n\r\n"), "a broken response must not look complete"
    assert wait_for(lambda: flag(srv, "reraised"), 5)
    assert srv.wait_log("KeyError")


def test_start_response_twice_without_exc_info(srv):
    r, body = request(srv, "GET", "/excinfo/twice")
    assert body == b"second call refused"


def test_write_callable(srv):
    r, body = request(srv, "GET", "/write/")
    assert r.status == 200
    assert body == b"one,two,three"
    no_validator_errors(srv)


# -- response framing, close() ---------------------------------------------------------

def test_list_gets_content_length_generator_gets_chunked(srv):
    r, body = request(srv, "GET", "/v/x")
    assert r.getheader("Content-Length") == str(len(body))
    assert r.getheader("Transfer-Encoding") is None
    r, body = request(srv, "GET", "/stream/chunked?name=frame&n=4&size=3")
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("Content-Length") is None
    assert body == b"000111222333"
    r, body = request(srv, "GET", "/stream/sized?name=frame2&n=4&size=3")
    assert r.getheader("Content-Length") == "12"
    assert r.getheader("Transfer-Encoding") is None
    assert body == b"000111222333"
    # HTTP/1.0: no chunked; the end of the body is the close
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /stream/chunked?name=frame3&n=3&size=2 HTTP/1.0\r\n\r\n")
        r, body = raw_response(s)
    assert r.getheader("Transfer-Encoding") is None and body == b"001122"


def test_streamed_body_longer_than_content_length_is_cut(srv):
    # the excess must not reach a keep-alive client, which would take it for
    # the start of the next response
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /stream/sized?name=long&n=3&size=4&declared=6 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /v/next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r1, body1 = raw_response(s)
        r2, body2 = raw_response(s)
    assert r1.getheader("Content-Length") == "6" and body1 == b"000011"
    assert r2.status == 200 and body2 == b"hello GET /next"
    assert wait_for(lambda: flag(srv, "closed-long"), 5)


def test_streamed_body_shorter_than_content_length_closes(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /stream/sized?name=short&n=2&size=4&declared=20 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /v/next HTTP/1.1\r\nHost: t\r\n\r\n")
        got = read_until_close(s)          # the server closes: no hang, no second response
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n00001111")
    assert got.count(b"HTTP/1.1") == 1


def test_close_called_after_normal_response(srv):
    r, body = request(srv, "GET", "/stream/chunked?name=normal&n=3&size=1")
    assert body == b"012"
    assert wait_for(lambda: flag(srv, "closed-normal"), 5)


def test_close_called_when_client_disconnects_mid_stream(srv):
    # 2000 chunks, one every 5 ms: ~10 s if nobody stops it
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /stream/chunked?name=gone&n=2000&size=100&delay=0.005 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while got.count(b"\r\n") < 10:
            got += s.recv(4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    t0 = time.monotonic()
    assert wait_for(lambda: flag(srv, "closed-gone"), 5), "close() not called after disconnect"
    assert time.monotonic() - t0 < 3


def test_close_called_when_client_disconnects_while_paused(srv):
    # the client reads nothing, then goes: the app thread waiting on backpressure is released
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.sendall(b"GET /stream/huge?name=gone2 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: request(srv, "GET", "/stream/progress?name=gone2")[1] not in (b"-1", b"0"), 5)
        time.sleep(0.2)
    assert wait_for(lambda: flag(srv, "huge-closed-gone2"), 5), "generator not closed"
    assert int(flag(srv, "huge-closed-gone2")) < 50 * MB


def test_streaming_to_a_client_that_does_not_read_is_bounded(srv):
    r, _ = request(srv, "GET", "/v/warm")
    watch = RSSWatch(srv)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /stream/huge?name=paused HTTP/1.1\r\nHost: t\r\n\r\n")

        def progress():
            return int(request(srv, "GET", "/stream/progress?name=paused")[1])

        # it stalls: the counter stops growing well before 100 MB
        last = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = progress()
            if now == last and now > 0:
                break
            last = now
        else:
            pytest.fail("the app was never paused (progress %d)" % last)
        time.sleep(0.5)
        assert progress() == last, "the app kept producing while the client read nothing"
        assert last < 30 * MB, "%.1f MB produced for a client that reads nothing" % (last / MB)
        grew_paused = watch.peak - watch.start
        # then the client reads everything
        r, body = raw_response(s)
        assert len(body) == 100 * MB
    finally:
        s.close()
        grew = watch.stop()
    assert grew_paused < 30 * MB, "RSS grew %.1f MB while paused" % (grew_paused / MB)
    assert grew < 40 * MB, "RSS grew %.1f MB for a 100 MB stream" % (grew / MB)
    assert wait_for(lambda: flag(srv, "huge-closed-paused"), 5)


def test_streaming_bounded_after_client_half_close(srv):
    # HTTP lets a client shut down its sending side after the request; the
    # response must still be produced at the client's pace
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /stream/huge?name=halfclosed HTTP/1.1\r\nHost: t\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        watch = RSSWatch(srv)
        time.sleep(1.5)
        produced = int(request(srv, "GET", "/stream/progress?name=halfclosed")[1])
        grew = watch.stop()
        assert produced < 30 * MB, "%.1f MB produced for a client that reads nothing" % (produced / MB)
        assert grew < 30 * MB, "RSS grew %.1f MB" % (grew / MB)
    finally:
        s.close()


# -- app errors ------------------------------------------------------------------------

def test_app_exception_gives_500_without_traceback(srv):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    r, body = request(srv, "GET", "/fail/raise", conn=c)
    assert r.status == 500
    assert b"Traceback" not in body and b"boom-in-the-app" not in body
    assert srv.wait_log("boom-in-the-app")
    log = srv.log
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: boom-in-the-app" in log
    # the keep-alive connection is still usable
    r, body = request(srv, "GET", "/fail/ok", conn=c)
    assert r.status == 200 and body == b"ok"
    # a POST whose body the failing app never read: same
    r, body = request(srv, "POST", "/fail/raise", body=b"x" * 100000, conn=c)
    assert r.status == 500
    r, body = request(srv, "GET", "/fail/ok", conn=c)
    assert body == b"ok"
    c.close()


@pytest.mark.parametrize("path", ["/fail/nostart", "/fail/str"])
def test_broken_apps_give_500(srv, path):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    r, body = request(srv, "GET", path, conn=c)
    assert r.status == 500
    r, body = request(srv, "GET", "/fail/ok", conn=c)
    assert body == b"ok"
    c.close()


def test_exception_mid_stream_drops_connection(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /fail/midstream HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while True:
            more = s.recv(65536)
            if not more:
                break
            got += more
    assert got.startswith(b"HTTP/1.1 200 OK") and b"begin" in got
    assert not got.endswith(b"0\r\n\r\n")
    assert srv.wait_log("boom-midstream")
    assert request(srv, "GET", "/fail/ok")[1] == b"ok"


DEBUG_SCRIPT = '''
import os, skitaid
def app(environ, start_response):
    raise ValueError("debug-visible <b>")
skitaid.enable_debug()
skitaid.mount("/", app)(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "2")))
'''


@pytest.mark.parametrize("threads", ["2", "0"])
def test_debug_500_page_has_traceback(serve, threads):
    s = serve(DEBUG_SCRIPT, env={"THREADS": threads})
    r, body = request(s, "GET", "/")
    assert r.status == 500
    assert b"Traceback (most recent call last)" in body
    assert b"ValueError: debug-visible &lt;b&gt;" in body     # escaped in the HTML page
    assert s.wait_log("debug-visible")


NONE_SCRIPT = '''
import os, skitaid
def app(environ, start_response):
    return None             # not an iterable: a broken app
skitaid.mount("/", app)(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "2")))
'''


@pytest.mark.parametrize("threads", ["2", "0"])
def test_app_returning_none_gives_500_with_or_without_upgrade(serve, threads):
    s = serve(NONE_SCRIPT, env={"THREADS": threads})
    for headers in ({}, {"Upgrade": "websocket", "Connection": "Upgrade"},
                    {"Upgrade": "something/1", "Connection": "Upgrade"}):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
        r, body = request(s, "GET", "/", headers=headers, conn=c)
        assert r.status == 500, headers
        c.close()


# -- thread pool ------------------------------------------------------------------------

def test_threads_run_apps_concurrently(srv):
    results = []

    def one():
        results.append(request(srv, "GET", "/slow/?0.6")[1])

    t0 = time.monotonic()
    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    assert len(results) == 4
    assert len(set(results)) == 4, results            # four different pool threads
    assert took < 1.5, "4 slow requests on 4 threads took %.2fs" % took


INLINE_SCRIPT = '''
import hashlib, os, skitaid
PROGRESS = [0]

def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        data = environ["wsgi.input"].read()
        body = ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"%03d," % i for i in range(100))
    if environ["PATH_INFO"] == "/huge":          # 100 MB, progress counted
        PROGRESS[0] = 0
        def gen():
            chunk = b"z" * 65536
            for _ in range(1600):
                yield chunk
                PROGRESS[0] += len(chunk)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return gen()
    if environ["PATH_INFO"] == "/progress":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(PROGRESS[0]).encode()]
    if environ["PATH_INFO"] == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(os.path.join(os.path.dirname(__file__), "big.bin"), "rb"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"inline multithread=%r" % environ["wsgi.multithread"]]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=0)
'''


def test_threads_zero_inline(serve, tmp_path):
    (tmp_path / "big.bin").write_bytes(BIG)
    s = serve(INLINE_SCRIPT)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
    r, body = request(s, "GET", "/", conn=c)
    assert body == b"inline multithread=False"
    for size in (10, 300000, 3 * MB):
        data = os.urandom(size)
        r, body = request(s, "POST", "/", body=data, conn=c)
        assert r.status == 200
        assert body == ("%d %s" % (size, hashlib.sha256(data).hexdigest())).encode()
    data = os.urandom(2 * MB)
    c.request("POST", "/", body=iter([data[:MB], data[MB:]]), encode_chunked=True)
    r = c.getresponse()
    assert r.read() == ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()
    r, body = request(s, "GET", "/stream", conn=c)
    assert body == b"".join(b"%03d," % i for i in range(100))
    r, body = request(s, "GET", "/file", conn=c)
    assert body == INLINE_SCRIPT.encode()
    r, body = request(s, "GET", "/big", conn=c)
    assert r.getheader("Content-Length") == str(len(BIG)) and body == BIG
    c.close()
    # pipelined: a big body arrives (and fills the server's buffer) while the
    # request before it is still being answered
    big = os.urandom(3 * MB)
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sender = threading.Thread(target=sock.sendall, args=(
            b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big) + big,))
        sender.start()
        time.sleep(0.5)          # /big waits for us meanwhile; the POST body piles up
        r, body = raw_response(sock)
        assert body == BIG
        r, body = raw_response(sock)
        assert body == ("%d %s" % (len(big), hashlib.sha256(big).hexdigest())).encode()
        sender.join()
    # 100-continue is answered before the inline app needs the body
    data = os.urandom(2 * MB)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % len(data))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(data)
        r, body = raw_response(sock)
    assert body == ("%d %s" % (len(data), hashlib.sha256(data).hexdigest())).encode()


def test_threads_zero_streaming_to_a_client_that_does_not_read_is_bounded(serve):
    s = serve(INLINE_SCRIPT)
    request(s, "GET", "/")
    watch = RSSWatch(s)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /huge HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.0)
        # the loop is not stuck in the app: other requests are served meanwhile
        produced = int(request(s, "GET", "/progress")[1])
        time.sleep(0.3)
        assert int(request(s, "GET", "/progress")[1]) == produced, "not paused"
        assert 0 < produced < 30 * MB, "%.1f MB produced for a client that reads nothing" % (produced / MB)
        grew = watch.peak - watch.start
        assert grew < 30 * MB, "RSS grew %.1f MB while paused" % (grew / MB)
        r, body = raw_response(sock)
        assert len(body) == 100 * MB
    finally:
        sock.close()
        watch.stop()


BUSY_SCRIPT = '''
import os, time, skitaid

def app(environ, start_response):
    time.sleep(0.4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]

skitaid.mount("/", app)
if os.environ.get("VIA") == "api":
    skitaid.set_503_estimated_timeout(1)
    skitaid.run(port=int(os.environ["PORT"]), threads=1)
else:                               # the [server] key, through skitaid.config()
    skitaid.config(threads=1, estimated_timeout=1)
    skitaid.run(port=int(os.environ["PORT"]))
'''


@pytest.mark.parametrize("via", ["api", "option"])
def test_503_when_estimated_wait_too_long(serve, via):
    s = serve(BUSY_SCRIPT, env={"VIA": via})
    # one request teaches the server how long a request takes
    assert request(s, "GET", "/")[1] == b"done"
    statuses = []
    retry_after = []
    lock = threading.Lock()

    def one():
        r, body = request(s, "GET", "/")
        with lock:
            statuses.append(r.status)
            if r.status == 503:
                retry_after.append(r.getheader("Retry-After"))

    ts = [threading.Thread(target=one) for _ in range(10)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
        time.sleep(0.01)
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    assert statuses.count(200) >= 2, statuses
    assert statuses.count(503) >= 4, statuses
    assert all(v and int(v) >= 1 for v in retry_after), retry_after
    # the 503s came at once: nobody waited in a queue ten requests long
    assert took < 0.4 * 7, took
