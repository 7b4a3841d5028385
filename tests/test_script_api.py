"""The script API of the original Skitai's pages, run as real scripts.

Each test writes an app script (and the files it mounts) to a temporary
directory and runs it with this Python: served ones against a real server
on a free port, refused ones checked for their message and exit status.
"""
import os
import subprocess
import sys
import textwrap

from conftest import ROOT, ServerProc
from helpers.clients import fetch


def _app(body):
    return textwrap.dedent('''
        def app(env, start):
            body = ("%s " + env["SCRIPT_NAME"]).encode()
            start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        ''' % body)


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_script(path, cwd, timeout=20):
    env = dict(os.environ, PYTHONPATH=ROOT, PORT="1")
    return subprocess.run([sys.executable, str(path)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_mount_forms_of_the_pages(tmp_path):
    site = tmp_path / "site"
    write(site, {
        "app_v1/app.py": _app("v1") + "\nother = app\n",
        "pkg/__init__.py": _app("pkg-module"),
        "pkg/inner.py": _app("inner") + "\nother = app\n",
        "app.py": '''
            import os
            import skitaid
            import pkg
            skitaid.mount("/a", "app_v1/app:app")      # a file and its app's name
            skitaid.mount("/b", "app_v1/app")          # the .py left out
            skitaid.mount("/c", (pkg, "inner"))        # a file next to that module
            skitaid.mount("/d", (pkg, "inner:other"))  # ... and the app's name
            skitaid.mount("/e", pkg)                   # a module object: its app
            skitaid.mount("/f", ("app_v1/app.py", "other"))   # (file, app name)
            skitaid.run(port=int(os.environ["PORT"]))
            ''',
    })
    elsewhere = tmp_path / "elsewhere"       # paths are the script's, not the cwd's
    elsewhere.mkdir()
    with ServerProc([sys.executable, str(site / "app.py")], str(elsewhere)) as s:
        got = {p: fetch(s.port, p + "/").body.decode() for p in "/a /b /c /d /e /f".split()}
    assert got == {"/a": "v1 /a", "/b": "v1 /b", "/c": "inner /c", "/d": "inner /d",
                   "/e": "pkg-module /e", "/f": "v1 /f"}


def test_two_apps_at_one_mount_point_is_an_error_naming_both(tmp_path):
    write(tmp_path, {
        "first.py": _app("first"),
        "app.py": '''
            import skitaid
            def second(env, start):
                pass
            skitaid.mount("/", "static")            # a static dir may share the point
            skitaid.mount("/", "first.py")
            skitaid.mount("/", second)
            skitaid.run(port=1)
            ''',
    })
    (tmp_path / "static").mkdir()
    r = run_script(tmp_path / "app.py", tmp_path)
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "first.py:app" in r.stderr
    assert "__main__.second" in r.stderr and "mounted at / for host default" in r.stderr


def test_other_hosts_may_use_the_same_mount_point(tmp_path):
    write(tmp_path, {
        "one.py": _app("one"),
        "two.py": _app("two"),
        "app.py": '''
            import os, skitaid
            skitaid.mount("/", "one.py")
            skitaid.mount("/", "two.py", host="two.example")
            skitaid.run(port=int(os.environ["PORT"]))
            ''',
    })
    with ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path)) as s:
        assert fetch(s.port, "/").body == b"one "
        assert fetch(s.port, "/", host="two.example").body == b"two "


def test_mount_targets_that_do_not_exist_are_refused_at_once(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "app.py": '''
        import sys, skitaid, pkg
        cases = [lambda: skitaid.mount("/x", "nosuch/app"),
                 lambda: skitaid.mount("/x", (pkg, "nosuch")),
                 lambda: skitaid.mount("/x", pkg),
                 lambda: skitaid.mount("/x", (pkg, "a", "b")),
                 lambda: skitaid.mount("/x", 42),
                 lambda: skitaid.mount("/x", "app.py:not-a-name")]
        for case in cases:
            try:
                case()
                print("ACCEPTED")
            except (TypeError, ValueError) as e:
                print(type(e).__name__, e)
        '''})
    r = run_script(tmp_path / "app.py", tmp_path)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 6 and "ACCEPTED" not in r.stdout, r.stdout + r.stderr
    assert "no app file %s" % (tmp_path / "nosuch" / "app") in lines[0]
    assert "no app file %s" % (tmp_path / "pkg" / "nosuch") in lines[1]
    assert "the module has no callable 'app'" in lines[2]
    assert lines[3].startswith("TypeError") and "(module, 'file[:app]')" in lines[3]
    assert lines[4].startswith("TypeError") and "not 42" in lines[4]
    assert "must be a Python name" in lines[5]


# -- setup functions -------------------------------------------------------------------
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import wait_for


class CountingBackend:
    """An HTTP/1.1 backend that counts the connections made to it and the requests."""

    def __init__(self):
        self.connections = 0
        self.hits = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                backend.connections += 1
                super().setup()

            def log_message(self, *args):
                pass

            def do_GET(self):
                backend.hits += 1
                body = b'{"hits": %d}' % backend.hits
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SETUP_SCRIPT = r'''
import json, os, time
import skitaid
from skitaid import was
B = os.environ.get("BACKEND", "")
%(setup)s

def app(env, start):
    path = env["PATH_INFO"]
    if path == "/twice":            # two calls to the backend, 1 s apart
        first = was.get(B + "/a").fetch(5)
        time.sleep(1.0)
        second = was.get(B + "/b").fetch(5)
        out = [first, second]
    elif path == "/cached":         # A, B, then A again, each kept for 60 s
        out = [was.get(B + "/" + p).fetch(5, 60)["hits"] for p in ("A", "B", "A")]
    elif path == "/file":
        with open(skitaid.abspath("data", "note.txt")) as f:
            out = {"text": f.read(), "swd": skitaid.getswd()}
    else:
        out = {"length": len(env["wsgi.input"].read())}
    body = json.dumps(out).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=2)
'''


def setup_server(serve, setup, **env):
    return serve(SETUP_SCRIPT % {"setup": textwrap.dedent(setup)},
                 env={k: str(v) for k, v in env.items()})


def _request(port, raw):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(raw)
    return sock


def _read_until_closed(sock, deadline):
    """Everything the server sends until it closes (or the deadline: None)."""
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            return data
        data += chunk
    return None


def test_set_keep_alive_closes_idle_connections(serve):
    s = setup_server(serve, "skitaid.set_keep_alive(1)")
    sock = _request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.monotonic()
    data = _read_until_closed(sock, t0 + 4)      # the default would keep it 10 s
    assert data is not None and data.startswith(b"HTTP/1.1 200")
    assert 0.8 <= time.monotonic() - t0 < 3


def test_set_request_timeout_answers_408(serve):
    s = setup_server(serve, "skitaid.set_request_timeout(1)")
    sock = _request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n")     # the head never ends
    t0 = time.monotonic()
    data = _read_until_closed(sock, t0 + 5)      # the default would wait 30 s
    assert data is not None and data.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 3.5


def test_set_max_upload_size_takes_a_size_string(serve):
    s = setup_server(serve, 'skitaid.set_max_upload_size("1K")')
    ok = fetch(s.port, "/", "POST", b"x" * 1024)
    assert ok.status == 200 and ok.json() == {"length": 1024}
    assert fetch(s.port, "/", "POST", b"x" * 1025).status == 413


def test_set_backend_keep_alive_retires_idle_backend_connections(serve):
    backend = CountingBackend()
    try:
        s = setup_server(serve, "", BACKEND=backend.url)        # default: 4 s
        assert fetch(s.port, "/twice").status == 200
        assert backend.connections == 1                          # reused after 1 s
        s.stop()
        backend.connections = 0
        s = setup_server(serve, "skitaid.set_backend_keep_alive(0.5)", BACKEND=backend.url)
        assert fetch(s.port, "/twice").status == 200
        assert backend.connections == 2                          # idle 1 s > 0.5 s: a new one
    finally:
        backend.close()


def test_set_max_rcache_bounds_the_result_cache(serve):
    backend = CountingBackend()
    try:
        s = setup_server(serve, "", BACKEND=backend.url)
        assert fetch(s.port, "/cached").json() == [1, 2, 1]      # A still cached
        s.stop()
        backend.hits = 0
        s = setup_server(serve, "skitaid.set_max_rcache(1)", BACKEND=backend.url)
        assert fetch(s.port, "/cached").json() == [1, 2, 3]      # B pushed A out
    finally:
        backend.close()


def test_abspath_and_getswd_are_the_scripts_directory(tmp_path):
    site = tmp_path / "site"
    write(site, {"data/note.txt": "hello"})
    (site / "app.py").write_text(SETUP_SCRIPT % {"setup": ""})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with ServerProc([sys.executable, str(site / "app.py")], str(elsewhere)) as s:
        r = fetch(s.port, "/file")
    assert r.status == 200 and r.json() == {"text": "hello", "swd": str(site)}


def test_setup_functions_refuse_bad_values(tmp_path):
    write(tmp_path, {"app.py": '''
        import skitaid
        cases = [("set_keep_alive", "soon"), ("set_keep_alive", -1), ("set_keep_alive", True),
                 ("set_request_timeout", None), ("set_max_upload_size", "lots"),
                 ("set_max_upload_size", 1.5), ("set_backend_keep_alive", "x"),
                 ("set_max_rcache", -1), ("set_max_rcache", "many"), ("abspath", 3)]
        for name, value in cases:
            try:
                getattr(skitaid, name)(value)
                print("ACCEPTED", name, value)
            except ValueError as e:
                print(e)
        '''})
    r = run_script(tmp_path / "app.py", tmp_path)
    assert r.returncode == 0 and "ACCEPTED" not in r.stdout, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "skitaid.set_keep_alive(): expected a number of seconds >= 0, got 'soon'"
    assert lines[1].endswith("got -1") and lines[2].endswith("got True")
    assert lines[3].startswith("skitaid.set_request_timeout(): expected a number of seconds")
    assert lines[4].startswith("skitaid.set_max_upload_size(): expected a size in bytes, or "
                               "with a K, M or G suffix")
    assert lines[5].endswith("got 1.5")
    assert lines[6].startswith("skitaid.set_backend_keep_alive(): expected a number of seconds")
    assert lines[7] == "skitaid.set_max_rcache(): expected an integer >= 0, got -1"
    assert lines[8].endswith("got 'many'")
    assert lines[9].startswith("skitaid.abspath(): expected path parts")


POLL_SCRIPT = r'''
import json, os
import skitaid
from skitaid.corequest import engine
%s

def app(env, start):
    loop = engine.current().loop            # the worker's event loop
    selector = getattr(loop, "_selector", None)
    body = json.dumps([type(loop).__module__.split(".")[0],
                       type(selector).__name__ if selector else None]).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]))
'''


def test_use_poll_picks_the_workers_loop(serve):
    got = {}
    for name in ("epoll", "poll", "select", None):
        s = serve(POLL_SCRIPT % ("skitaid.use_poll(%r)" % name if name else ""))
        got[name] = fetch(s.port, "/").json()
        s.stop()
    assert got == {"epoll": ["asyncio", "EpollSelector"], "poll": ["asyncio", "PollSelector"],
                   "select": ["asyncio", "SelectSelector"], None: ["uvloop", None]}


def test_use_poll_refuses_other_names(tmp_path):
    write(tmp_path, {"app.py": '''
        import skitaid
        for name in ("kqueue", "", 1):
            try:
                skitaid.use_poll(name)
                print("ACCEPTED", name)
            except ValueError as e:
                print(e)
        '''})
    r = run_script(tmp_path / "app.py", tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines() == [
        "skitaid.use_poll(): expected uvloop, or epoll, poll or select (asyncio's loop with "
        "that selector), got %s" % v for v in ("'kqueue'", "''", "1")], r.stdout + r.stderr
