"""skitaid.test_client: serve an app script for a test suite and talk to it.

    with skitaid.test_client("./app.py", 6000) as cli:
        assert "hello" in cli.get("/").text
        assert cli.api().apis.pets(45).get().data["id"] == 45

The script runs as a real server in a process of its own (`python -m
skitaid.testclient SCRIPT PORT`: the script's own run(port=...) is overridden),
so a test sees what a browser would. The client is httpx (HTTP/1.1, or HTTP/2
with prior knowledge); cli.ws() is a websockets client.
"""
import atexit
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

START_TIMEOUT = 30.0        # seconds for the script to serve
STOP_TIMEOUT = 15.0
_TAIL = 40                  # lines of the script's output in an error


def _need(module, package):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError("skitaid.test_client needs the %s package (pip install '%s', or "
                          "'skitaid[testing]')"
                          % (module.split(".")[0], package)) from None


def _script_path(script):
    if not isinstance(script, (str, os.PathLike)):
        raise TypeError("skitaid.test_client(): script is a path to an app script, got %r"
                        % (script,))
    path = os.path.abspath(os.fspath(script))
    if os.path.isdir(path):
        path = os.path.join(path, "app.py")
    if not os.path.isfile(path):
        raise FileNotFoundError("skitaid.test_client(): no such script: %s" % path)
    return path


class Response:
    """httpx's response, plus `data`: the JSON body decoded, else the text."""

    def __init__(self, resp):
        self._resp = resp

    def __getattr__(self, name):
        return getattr(self._resp, name)

    @property
    def data(self):
        ctype = self._resp.headers.get("content-type", "")
        if "json" in ctype:
            try:
                return self._resp.json()
            except ValueError:
                pass
        return self._resp.text

    def __repr__(self):
        return "<Response %d>" % self._resp.status_code


class Stub:
    """Paths from attributes and calls: stub.apis.pets(45).get(q=1) is
    GET /apis/pets/45?q=1; post/put/patch send JSON by default."""

    def __init__(self, client, path=""):
        self._client = client
        self._path = path

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return Stub(self._client, self._path + "/" + quote(name))

    def __call__(self, *parts):
        return Stub(self._client, self._path + "".join("/" + quote(str(p), safe="") for p in parts))

    def _url(self):
        return self._path or "/"

    def get(self, **params):
        return self._client.get(self._url(), params=params or None)

    def delete(self, **params):
        return self._client.delete(self._url(), params=params or None)

    def options(self, **params):
        return self._client.options(self._url(), params=params or None)

    def head(self, **params):
        return self._client.head(self._url(), params=params or None)

    def _send(self, method, data, kw):
        if data is not None:
            kw.setdefault("json", data)
        return getattr(self._client, method)(self._url(), **kw)

    def post(self, data=None, **kw):
        return self._send("post", data, kw)

    def put(self, data=None, **kw):
        return self._send("put", data, kw)

    def patch(self, data=None, **kw):
        return self._send("patch", data, kw)

    def __repr__(self):
        return "<Stub %s>" % self._url()


class WebSocket:
    """A connected WebSocket (websockets' sync client): send, recv, close."""

    def __init__(self, opener):
        self._opener = opener           # websockets' connect(): a context manager
        self._conn = opener.__enter__()

    def send(self, message):
        self._conn.send(message)

    def recv(self, timeout=10.0):
        return self._conn.recv(timeout)

    def close(self):
        self._opener.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """HTTP calls to the server a test_client() started (or found, dry=True)."""

    def __init__(self, port, host="127.0.0.1", http2=False, timeout=10.0, server=None):
        httpx = _need("httpx", "httpx[http2]")
        self.port = port
        self.host = host
        self.timeout = timeout
        self.server = server            # the _Server process, None when dry
        self.base_url = "http://%s:%d" % (host if ":" not in host else "[%s]" % host, port)
        if http2:
            _need("h2", "httpx[http2]")
        # HTTP/2 in the clear: prior knowledge (h2c), as skitaid accepts it
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, http2=http2,
                                  http1=not http2, follow_redirects=False)
        self._h2 = None
        self.is_http2 = http2

    @property
    def http2(self):
        """The same server over HTTP/2."""
        if self.is_http2:
            return self
        if self._h2 is None:
            self._h2 = Client(self.port, self.host, http2=True, timeout=self.timeout)
        return self._h2

    def request(self, method, path, **kw):
        return Response(self._http.request(method, path, **kw))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def options(self, path, **kw):
        return self.request("OPTIONS", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def api(self, prefix=""):
        """A Stub building paths under `prefix`."""
        return Stub(self, prefix.rstrip("/"))

    def ws(self, path, **kw):
        """A WebSocket to `path`."""
        sync = _need("websockets.sync.client", "websockets")
        kw.setdefault("open_timeout", self.timeout)
        url = self.base_url.replace("http://", "ws://", 1) + path
        return WebSocket(sync.connect(url, **kw))

    @property
    def output(self):
        """What the script has printed so far (its console: logs, tracebacks)."""
        return self.server.output() if self.server is not None else ""

    def stop(self):
        """Close the connections and stop the server (if this client started it)."""
        self._http.close()
        if self._h2 is not None:
            self._h2.stop()
        if self.server is not None:
            self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Server:
    """The script serving in its own process; its output in a file."""

    def __init__(self, script, port, env=None):
        self.script = script
        self.port = port
        # its own pid file, control socket and logs: a developer's server of
        # the same script (same name) may be running meanwhile
        self.state_dir = tempfile.mkdtemp(prefix="skitaid-test-")
        self._log = open(os.path.join(self.state_dir, "output.log"), "wb")
        full_env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, full_env.get("PYTHONPATH", "")) if p)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skitaid.testclient", script, str(port), self.state_dir],
            cwd=os.path.dirname(script), env=full_env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)      # a fixture without teardown leaves nothing behind

    _output = None

    def output(self):
        if self._output is not None:
            return self._output
        with open(self._log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tail(self):
        lines = collections.deque(self.output().splitlines(), _TAIL)
        return "\n".join(lines)

    def wait_serving(self, host, timeout):
        """Until an HTTP answer comes (any status): the master listens before
        its workers have imported the app. Raises at once if the script exits."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError("skitaid.test_client(%r, %d): the script exited (status %s) "
                                   "before serving; its output:\n%s"
                                   % (self.script, self.port, code, self.tail()))
            if _answers(host, self.port, min(1.0, max(0.1, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError("skitaid.test_client(%r, %d): not serving after %.0f s; "
                                   "its output:\n%s" % (self.script, self.port, timeout,
                                                        self.tail()))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)   # the master, its workers, a watcher
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        if os.path.isdir(self.state_dir):
            self._output = self.output()     # still readable after the stop
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _answers(host, port, timeout):
    """Does an HTTP request get a status line back within `timeout`?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                      % host.encode())
            return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def test_client(script, port, dry=False, http2=False, host="127.0.0.1", timeout=START_TIMEOUT,
                env=None):
    """Start `script` as a skitaid server on `port` (its run(port=...) is
    overridden) and return a Client; stop it with client.stop() or by leaving
    `with`. dry=True starts nothing: the client talks to a server running
    on `port` already (another console)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("skitaid.test_client(): port must be 1-65535, got %r" % (port,))
    if dry:
        if not _answers(host, port, 2.0):
            raise ConnectionError("skitaid.test_client(dry=True): nothing answers HTTP on "
                                  "%s:%d; start the server first" % (host, port))
        return Client(port, host, http2=http2)
    server = _Server(_script_path(script), port, env)
    try:
        server.wait_serving(host, timeout)
        return Client(port, host, http2=http2, server=server)
    except BaseException:
        server.stop()
        raise


test_client.__test__ = False        # pytest: not a test, though its name says so


def _serve(script, port, state_dir=""):
    """The server process: run the script as __main__ with the port (and the
    directory of its pid file, control socket and logs) forced."""
    import runpy
    from . import api
    api._forced["port"] = port
    if state_dir:
        api._forced.update(run_path=state_dir, var_path=state_dir,
                           log_path=os.path.join(state_dir, "log"),
                           pidfile=os.path.join(state_dir, "skitaid.pid"))
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(_serve(os.path.abspath(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4]))
