"""Retiring workers lose no request: reloads and recycling under load.

A worker that retires (reload, max_requests, max_rss, critical_point) must
answer every request that reached it. The clients here follow the HTTP rules
and nothing more: they reconnect after a response carrying `Connection:
close`, after an orderly close seen *before* sending, or after a GOAWAY
(sending again only the streams the server said it did not take). A request
sent on a connection that then closes without an answer is a failure.
"""
import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import psutil
import pytest

from conftest import ServerProc, free_port, wait_for
from test_daemon import master, site  # noqa: F401  (fixtures: a config dir, `skitaid run`)

RELOADS = 10
LOAD_TIMEOUT = "10s"       # wrk: a slow answer on a busy machine is not a lost one

APP = """
import os, time
VERSION = {version!r}
HERE = os.path.dirname(os.path.abspath(__file__))
def app(environ, start_response):
    if environ["PATH_INFO"] == "/wait":      # until the test says "go"
        open(os.path.join(HERE, "waiting"), "w").close()
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(HERE, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
    body = ("%s %d\\n" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def app(site, version):
    with open(os.path.join(site.root, "app.py"), "w") as f:
        f.write(textwrap.dedent(APP.format(version=version)))


def web(site, port, **keys):
    """One server (two workers unless told), request log off (wrk would flood
    the test's log); a graceful_timeout no retirement here should reach, and
    short enough that the master's own SIGKILL deadline (+1 s) comes before
    the fixture's (10 s): a stuck worker cannot outlive the test."""
    app(site, "v1")
    keys.setdefault("processes", 2)
    keys.setdefault("graceful_timeout", 8)
    site.ini("web", port, request_log="off", **keys)


def reload_times(site, m, n):
    """n reloads by HUP, each waiting for the new generation to be serving
    (new app code each time: the clients see which generation answered)."""
    for i in range(n):
        app(site, "v%d" % (i + 2))
        done = m.log.count("reload done")
        os.kill(m.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: m.log.count("reload done") > done, 30), m.log[-2000:]


# -- HTTP/1.1 clients -----------------------------------------------------------------------

def closed_before_sending(sock):
    """True if the server closed this idle connection (we read nothing yet)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except ConnectionError:
        return True
    if data:
        raise AssertionError("bytes on an idle connection: %r" % data)
    return True


class Clients:
    """Python clients in threads: `keep_alive` connections that are reused,
    and `fresh` ones that send `Connection: close` on a new connection per
    request. Any exception or non-200 answer is a failure."""

    def __init__(self, port, keep_alive=4, fresh=2):
        self.port = port
        self.stop = threading.Event()
        self.ok = {"keep-alive": 0, "close": 0}
        self.failures = []
        self.versions = set()
        self.threads = [threading.Thread(target=self._keep_alive, daemon=True)
                        for _ in range(keep_alive)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True)
                         for _ in range(fresh)]
        for t in self.threads:
            t.start()

    def _record(self, kind, resp, body):
        if resp.status != 200:
            self.failures.append("%s: status %d" % (kind, resp.status))
            return
        self.ok[kind] += 1
        self.versions.add(body.split()[0].decode())

    def _keep_alive(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is not None and closed_before_sending(conn.sock):
                    conn.close()
                    conn = None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.connect()
                conn.request("GET", "/")
                resp = conn.getresponse()
                self._record("keep-alive", resp, resp.read())
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:       # noqa: BLE001 - every kind of loss counts
                self.failures.append("keep-alive: %r" % e)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fresh(self):
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                resp = conn.getresponse()
                self._record("close", resp, resp.read())
            except Exception as e:       # noqa: BLE001
                self.failures.append("close: %r" % e)
            finally:
                conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def summary(self):
        return "python clients: %s, %d failed: %s" % (self.ok, len(self.failures),
                                                      self.failures[:5])


def wrk_start(port, connections=32, threads=2):
    exe = shutil.which("wrk")
    if exe is None:
        pytest.skip("wrk is not installed")
    return subprocess.Popen([exe, "-t%d" % threads, "-c%d" % connections, "-d300s",
                             "--timeout", LOAD_TIMEOUT, "http://127.0.0.1:%d/" % port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_finish(proc):
    """SIGINT ends wrk and makes it print its figures: (requests, failures).
    wrk reconnects after `Connection: close`; it counts a connection that
    closes or resets before the answer as a read error."""
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=20)[0]
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    failures = []
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        failures.append("socket errors: " + errors.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        failures.append("%s non-2xx" % non2xx.group(1))
    return int(m.group(1)), failures


def test_ten_reloads_under_keep_alive_and_close_load_lose_nothing(site, master):
    port = free_port()
    web(site, port)
    m = master(port)
    wrk = wrk_start(port)
    clients = Clients(port)
    try:
        assert wait_for(lambda: clients.ok["keep-alive"] and clients.ok["close"], 10)
        reload_times(site, m, RELOADS)
        last = "v%d" % (RELOADS + 1)
        # the keep-alive clients, too, moved on to the last generation
        assert wait_for(lambda: last in clients.versions, 10), clients.versions
    finally:
        clients.finish()
        requests, wrk_failures = wrk_finish(wrk)
    summary = "wrk: %d requests, %s; %s" % (requests, wrk_failures or "no failure",
                                            clients.summary())
    assert clients.failures == [] and wrk_failures == [], summary
    assert requests > 1000 and clients.ok["keep-alive"] > 100 and clients.ok["close"] > 20, summary
    assert m.log.count("reload done") == RELOADS


def test_recycled_worker_loses_no_keep_alive_request(site, master):
    # max_requests retires a worker the way max_rss and critical_point do:
    # its replacement is started first, then it stops gracefully
    port = free_port()
    web(site, port, max_requests=150)
    m = master(port)
    clients = Clients(port, keep_alive=8, fresh=0)
    try:
        assert wait_for(lambda: m.log.count("(max_requests)") >= 6, 30), clients.summary()
    finally:
        clients.finish()
    assert clients.failures == [], clients.summary()


def read_response(f):
    """(status, {lowercase name: value}, body) of one response with a Content-Length."""
    status = int(f.readline().split()[1])
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers["content-length"]))


def test_retiring_worker_answers_requests_on_idle_and_pipelined_connections(site, master):
    port = free_port()
    web(site, port, processes=1)
    m = master(port)
    # a keep-alive client pausing 0.2 s between requests (well within the
    # grace a retiring worker gives idle connections)
    paced = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    paced.request("GET", "/")
    first = paced.getresponse()
    old = int(first.read().split()[1])
    assert not first.will_close
    # a pipelining client with a request waiting behind a slow one
    piped = socket.create_connection(("127.0.0.1", port), timeout=10)
    piped.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_for(lambda: os.path.exists(os.path.join(site.root, "waiting")))
    # and one that stays idle
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.request("GET", "/")
    idle.getresponse().read()

    app(site, "v2")
    os.kill(m.proc.pid, signal.SIGHUP)
    answers = []
    while True:
        time.sleep(0.2)
        paced.request("GET", "/")      # raises if the connection was closed under it
        resp = paced.getresponse()
        answers.append(resp.read().split())
        assert resp.status == 200
        if resp.will_close:
            break
        assert len(answers) < 100, m.log[-2000:]
    # the retiring worker answered, the last time with Connection: close
    assert "%d stopping gracefully" % old in m.log
    assert answers[-1] == [b"v1", str(old).encode()]
    paced.close()

    # the slow request finishes, and the one queued behind it is answered too
    open(os.path.join(site.root, "go"), "w").close()
    piped_in = piped.makefile("rb")
    for close in (False, True):
        status, headers, body = read_response(piped_in)
        assert status == 200 and body.split() == [b"v1", str(old).encode()]
        assert (headers.get("connection") == "close") is close
    assert piped_in.read() == b""
    piped_in.close()
    piped.close()

    # the idle connection is closed in order (FIN: nothing was sent on it),
    # and the old worker is gone well before graceful_timeout
    assert wait_for(lambda: closed_before_sending(idle.sock), 5)
    assert idle.sock.recv(1) == b""
    idle.close()
    assert wait_for(lambda: not psutil.pid_exists(old), 5)


def test_retiring_worker_answers_the_next_request_on_the_forward_port(site, master, tmp_path):
    # the HTTP -> HTTPS 301 listener keeps its connections alive too
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    port, plain = free_port(), free_port()
    web(site, port, processes=1, ssl="yes", certfile=cert, keyfile=key,
        forward="%d -> %d" % (plain, port))
    m = master(port)
    conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
    conn.request("GET", "/a")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 301 and not resp.will_close
    os.kill(m.proc.pid, signal.SIGHUP)
    for _ in range(100):
        time.sleep(0.2)                # paced, within the idle grace
        conn.request("GET", "/b")      # raises if the connection was closed under it
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 301 and resp.getheader("Location") == "https://127.0.0.1:%d/b" % port
        if resp.will_close:
            break
    assert resp.will_close and "stopping gracefully" in m.log
    conn.close()


def test_a_worker_told_to_stop_as_it_is_forked_stops(site):
    # Reloads in quick succession abandon generations whose workers were
    # forked a moment before (SIGQUIT), then the master stops (SIGTERM). A
    # signal that reaches a worker before it has its own handlers must not be
    # lost, or the stop waits for the master's SIGKILL deadline (3 s and more).
    port = free_port()
    web(site, port, graceful_timeout=5)
    # one CPU: a child just forked waits while the master goes on signalling
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    for _ in range(3):
        m = ServerProc(pin + [sys.executable, "-m", "skitaid", "run", "-c", site.root],
                       site.root, port=port)
        try:
            for _ in range(6):
                os.kill(m.proc.pid, signal.SIGHUP)
                time.sleep(0.01)         # (signals sent together would merge into one)
            os.kill(m.proc.pid, signal.SIGTERM)
            started = time.monotonic()
            m.proc.wait(15)
            assert time.monotonic() - started < 2.5, m.log[-3000:]
        finally:
            m.stop()


# -- HTTP/2 ---------------------------------------------------------------------------------

class _ClientState(h2.connection.H2Connection):
    """h2 goes to its closed state on any GOAWAY; after a graceful one the
    streams the server took still finish, so their frames must be read."""

    def _receive_goaway_frame(self, frame):
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = state
        return frames, events


class H2Clients:
    """h2c (prior knowledge) clients in threads, `streams` requests in flight
    on each connection. After a GOAWAY a client opens no new stream there and
    reconnects once the streams the server took are answered; streams above
    GOAWAY's last stream id or reset with REFUSED_STREAM were not processed
    and count as `refused` (RFC 9113 8.7: a client may send them again). Any
    other stream that ends without a complete 200 is a failure, so is a
    connection lost with streams open that no GOAWAY gave back."""

    def __init__(self, port, clients=4, streams=4):
        self.port = port
        self.streams = streams
        self.stop = threading.Event()
        self.ok = 0
        self.refused = 0
        self.goaways = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self._connection()
            except Exception as e:      # noqa: BLE001 - every kind of loss counts
                self.failures.append("h2c: %r" % e)

    def _connection(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        conn = _ClientState(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        head = [(":method", "GET"), (":scheme", "http"),
                (":authority", "127.0.0.1:%d" % self.port), (":path", "/")]
        open_ = {}          # stream id → status
        goaway = None       # GOAWAY's last stream id

        def new_stream():
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, head, end_stream=True)
            open_[sid] = 0

        for _ in range(self.streams):
            new_stream()
        lost = None
        try:
            sock.sendall(conn.data_to_send())
            while open_:
                data = sock.recv(65536)
                if not data:
                    lost = "closed"
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        open_[ev.stream_id] = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        status = open_.pop(ev.stream_id, None)
                        if status == 200:
                            self.ok += 1
                        else:
                            self.failures.append("h2c stream ended with status %s" % status)
                        if goaway is None and not self.stop.is_set():
                            new_stream()
                    elif isinstance(ev, h2.events.StreamReset):
                        open_.pop(ev.stream_id, None)
                        if ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                            self.refused += 1
                        else:
                            self.failures.append("h2c stream reset: %r" % ev.error_code)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.goaways += 1
                        if ev.error_code:
                            self.failures.append("h2c GOAWAY %r" % ev.error_code)
                        goaway = ev.last_stream_id
                        for sid in [s for s in open_ if s > goaway]:
                            del open_[sid]
                            self.refused += 1
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError) as e:
            lost = repr(e)
        finally:
            sock.close()
        if open_:
            self.failures.append("h2c: %d stream(s) lost (%s, GOAWAY last stream %s)"
                                 % (len(open_), lost, goaway))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def summary(self):
        return "h2c: %d ok, %d refused, %d GOAWAYs, %d failed: %s" % (
            self.ok, self.refused, self.goaways, len(self.failures), self.failures[:5])


def test_ten_reloads_under_h2c_load_lose_nothing(site, master):
    port = free_port()
    web(site, port)
    m = master(port)
    clients = H2Clients(port)
    try:
        assert wait_for(lambda: clients.ok, 10)
        reload_times(site, m, RELOADS)
        before = clients.ok
        assert wait_for(lambda: clients.ok > before + 100, 10), clients.summary()
    finally:
        clients.finish()
    assert clients.failures == [], clients.summary()
    assert clients.goaways >= RELOADS, clients.summary()
