"""Apps as users deploy them: mounts, virtual hosts, Flask, `skitaid run`,
the request log and graceful stop — each against a real server process."""
import base64
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import ROOT, ServerProc, free_port, wait_for, wait_for_port
from helpers.clients import fetch


def get(port, path, host=None, headers=None, method="GET", body=None, timeout=10):
    r = fetch(port, path, method, body, headers, host, timeout)
    return r.status, r.body


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "w") as f:
        f.write(textwrap.dedent(text))


NAMED_APP = '''
NAME = %r
def app(environ, start_response):
    body = ("%%s %%s|%%s" %% (NAME, environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


# -- mounts (Python API) -------------------------------------------------------------

MOUNTS_SCRIPT = '''
import os, skitaid
HERE = os.path.dirname(os.path.abspath(__file__))

def named(name):
    def app(environ, start_response):
        body = ("%s %s|%s" % (name, environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return app

skitaid.mount("/", named("root"))
skitaid.mount("/", "www")                    # relative to this script
skitaid.mount("/api", named("api"))
skitaid.mount("/api/v2", named("v2"))
skitaid.mount("/api/v2/", "v2files")         # same prefix as the v2 app
skitaid.mount("/docs", os.path.join(HERE, "docs"))
skitaid.mount("/mod", "modapp.py:application")
skitaid.run(port=int(os.environ["PORT"]))
'''


def test_mounts_longest_prefix_and_static_first(serve, tmp_path):
    write(tmp_path / "www" / "index.html", "<h1>welcome</h1>\n")
    write(tmp_path / "www" / "style.css", "body{}\n")
    write(tmp_path / "v2files" / "schema.json", "{}\n")
    write(tmp_path / "docs" / "guide.txt", "the guide\n")
    write(tmp_path / "modapp.py", NAMED_APP.replace("def app", "def application") % "mod")
    s = serve(MOUNTS_SCRIPT)
    # at "/" an existing file wins, anything else goes to the app
    assert get(s.port, "/") == (200, b"<h1>welcome</h1>\n")
    assert get(s.port, "/style.css") == (200, b"body{}\n")
    assert get(s.port, "/nothing-here") == (200, b"root |/nothing-here")
    assert get(s.port, "/apix") == (200, b"root |/apix")
    # the longest prefix wins
    assert get(s.port, "/api") == (200, b"api /api|")
    assert get(s.port, "/api/users/1") == (200, b"api /api|/users/1")
    assert get(s.port, "/api/v2") == (200, b"v2 /api/v2|")
    assert get(s.port, "/api/v2/items") == (200, b"v2 /api/v2|/items")
    assert get(s.port, "/api/v2x") == (200, b"api /api|/v2x")
    assert get(s.port, "/api/v2/schema.json") == (200, b"{}\n")
    # a directory alone at a prefix: missing files are 404, and never the root app
    assert get(s.port, "/docs/guide.txt") == (200, b"the guide\n")
    status, _ = get(s.port, "/docs/missing.txt")
    assert status == 404
    # an app given as "file.py:name"
    assert get(s.port, "/mod/x") == (200, b"mod /mod|/x")


VHOST_SCRIPT = '''
import os, skitaid

def named(name):
    def app(environ, start_response):
        body = ("%s %s" % (name, environ["PATH_INFO"])).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return app

skitaid.mount("/", named("default"))
skitaid.mount("/", named("a"), host="a.example.com")
skitaid.mount("/admin", named("a-admin"), host="a.example.com")
skitaid.mount("/", named("b"), host=".b.example.com")
skitaid.mount("/", named("multi"), host=["one.test", "two.test"])
skitaid.mount("/", named("wild"), host="*.wild.test")
skitaid.mount("/", named("port"), host="ported.test:8080")
skitaid.run(port=int(os.environ["PORT"]))
'''


def test_virtual_hosts_api(serve):
    s = serve(VHOST_SCRIPT)
    p = s.port
    assert get(p, "/x", host="a.example.com") == (200, b"a /x")
    assert get(p, "/x", host="A.Example.COM:%d" % p) == (200, b"a /x")       # case, port
    assert get(p, "/admin/u", host="a.example.com") == (200, b"a-admin /u")
    assert get(p, "/x", host="b.example.com") == (200, b"b /x")               # the domain
    assert get(p, "/x", host="deep.sub.b.example.com") == (200, b"b /x")      # its subdomains
    assert get(p, "/x", host="notb.example.com") == (200, b"default /x")
    assert get(p, "/x", host="one.test") == (200, b"multi /x")
    assert get(p, "/x", host="two.test") == (200, b"multi /x")
    assert get(p, "/x", host="x.wild.test") == (200, b"wild /x")
    assert get(p, "/x", host="wild.test") == (200, b"default /x")           # *. is subdomains only
    assert get(p, "/x", host="ported.test:8080") == (200, b"port /x")
    assert get(p, "/x", host="ported.test") == (200, b"default /x")
    assert get(p, "/x", host="other.test") == (200, b"default /x")
    assert get(p, "/x") == (200, b"default /x")                               # 127.0.0.1:port
    # HTTP/1.0 without Host: the default group
    with socket.create_connection(("127.0.0.1", p), timeout=5) as sock:
        sock.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    assert data.endswith(b"\r\n\r\ndefault /x")


# -- config dirs ---------------------------------------------------------------------

SERVER_CONF = '''
[server]
ip = 127.0.0.1
port = %(port)d
threads = %(threads)d

[routes:line]
%(first)s
/ = sites/main/static
/ = sites/main/app.py:app
/svc = sites/svc.py:app

[routes:line]
api.example.com
/ = sites/api.py:app

[routes:line]
.example.com
/ = sites/sub.py:app
'''


def make_config_dir(base, port, first="default", threads=2, extra=None):
    """A config dir in the layout of skitaid/default_config, serving on `port`."""
    d = base / ("conf-%d" % port)
    write(d / "skitaid.conf", "[global]\nuser =\n")
    write(d / "servers-enabled" / "web.conf",
          SERVER_CONF % {"port": port, "threads": threads, "first": first})
    write(d / "sites" / "main" / "static" / "index.html", "<p>main index</p>\n")
    write(d / "sites" / "main" / "app.py", NAMED_APP % "main")
    write(d / "sites" / "svc.py", NAMED_APP % "svc")
    write(d / "sites" / "api.py", NAMED_APP % "api")
    write(d / "sites" / "sub.py", NAMED_APP % "sub")
    for name, text in (extra or {}).items():
        write(d / name, text)
    return str(d)


@pytest.mark.parametrize("first", ["default", "*"])
def test_virtual_hosts_config_dir(serve_cli, tmp_path, first):
    port = free_port()
    conf = make_config_dir(tmp_path, port, first=first)
    s = serve_cli("run", "-c", conf, port=port)
    assert get(port, "/") == (200, b"<p>main index</p>\n")
    assert get(port, "/page") == (200, b"main |/page")
    assert get(port, "/svc/a") == (200, b"svc /svc|/a")
    assert get(port, "/x", host="api.example.com") == (200, b"api |/x")
    assert get(port, "/svc/a", host="api.example.com")[1] == b"api |/svc/a"
    assert get(port, "/x", host="www.example.com") == (200, b"sub |/x")
    assert get(port, "/x", host="example.com") == (200, b"sub |/x")
    assert get(port, "/", host="elsewhere.org") == (200, b"<p>main index</p>\n")
    assert "Traceback" not in s.log


def test_two_servers_in_one_config_dir(serve_cli, tmp_path):
    port, port2 = free_port(), free_port()
    second = textwrap.dedent('''
        [server]
        ip = 127.0.0.1
        port = %d
        threads = 1

        [routes:line]
        default
        / = sites/other.py:app
        ''' % port2)
    conf = make_config_dir(tmp_path, port, extra={
        "servers-enabled/other.conf": second,
        "sites/other.py": NAMED_APP % "other"})
    s = serve_cli("run", "-c", conf, port=port)
    wait_for_port(port2, s.proc)
    assert get(port, "/q") == (200, b"main |/q")
    assert get(port2, "/q") == (200, b"other |/q")
    # both stop on SIGTERM, and the command exits 0
    assert s.stop() == 0


# -- Flask ---------------------------------------------------------------------------

FLASK_SCRIPT = '''
import os, skitaid
from flask import Flask, url_for, request, redirect

app = Flask(__name__)

@app.route("/")
def index():
    return "index " + url_for("item", n=7) + " " + url_for("static", filename="a.css")

@app.route("/item/<int:n>")
def item(n):
    return "item %d at %s (script_root %s)" % (n, request.path, request.script_root)

@app.route("/go")
def go():
    return redirect(url_for("item", n=1))

@app.route("/post", methods=["POST"])
def post():
    return "got %s" % request.form["v"]

def plain(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain root"]

skitaid.mount("/", plain)
skitaid.mount("/flask", app)
skitaid.run(port=int(os.environ["PORT"]))
'''


def test_flask_mounted_with_prefix(serve):
    pytest.importorskip("flask")
    s = serve(FLASK_SCRIPT)
    assert get(s.port, "/flask/") == (200, b"index /flask/item/7 /flask/static/a.css")
    assert get(s.port, "/flask/item/3") == (200, b"item 3 at /item/3 (script_root /flask)")
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("GET", "/flask/go")
    r = c.getresponse()
    r.read()
    assert r.status in (302, 303) and r.getheader("Location").endswith("/flask/item/1")
    c.close()
    assert get(s.port, "/flask/post", method="POST", body="v=hi+there",
               headers={"Content-Type": "application/x-www-form-urlencoded"}) == (200, b"got hi there")
    assert get(s.port, "/other") == (200, b"plain root")
    status, _ = get(s.port, "/flask/missing")
    assert status == 404


# -- skitaid run ----------------------------------------------------------------------

def port_busy(port):
    with socket.socket() as sk:
        return sk.connect_ex(("127.0.0.1", port)) == 0


def test_run_without_config_serves_builtin_site(tmp_path):
    if port_busy(5000):
        pytest.skip("port 5000 is busy")
    if os.path.isdir("/etc/skitaid"):
        pytest.skip("/etc/skitaid exists: it would be served instead of the built-in site")
    env = {k: v for k, v in os.environ.items() if k != "SKITAID_CONFIG_DIR"}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = ROOT
    log = open(str(tmp_path / "run.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "skitaid", "run"], cwd=str(tmp_path), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(5000, proc)
        status, body = get(5000, "/")
        assert status == 200 and b"<html" in body.lower()
        status, body = get(5000, "/hello")
        assert (status, body) == (200, b"Hello from skitaid\n")
        status, body = get(5000, "/echo?x=1", method="POST", body=b"ping")
        assert status == 200 and body.endswith(b"ping")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        log.close()


@pytest.mark.parametrize("how", ["run -c", "-c run", "env"])
def test_run_with_config_dir(serve_cli, tmp_path, how):
    port = free_port()
    conf = make_config_dir(tmp_path, port)
    if how == "run -c":
        s = serve_cli("run", "-c", conf, port=port)
    elif how == "-c run":
        s = serve_cli("-c", conf, "run", port=port)
    else:
        s = serve_cli("run", env={"SKITAID_CONFIG_DIR": conf}, port=port)
    assert get(port, "/svc/z") == (200, b"svc /svc|/z")
    assert s.stop() == 0


def test_run_reports_a_busy_port(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        conf = make_config_dir(tmp_path, port)
        r = subprocess.run([sys.executable, "-m", "skitaid", "run", "-c", conf],
                           env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, timeout=20)
    assert r.returncode != 0
    assert b"cannot listen" in r.stderr and str(port).encode() in r.stderr


# -- request log ---------------------------------------------------------------------

LOG_SCRIPT = '''
import os, time, skitaid

def app(environ, start_response):
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/stream":     # ~250 ms of transfer after the head
        def gen():
            for _ in range(5):
                yield b"x" * 1000
                time.sleep(0.05)
        return gen()
    return [b"got %d" % len(data)]

skitaid.mount("/", app)
skitaid.mount("/static", "static")
skitaid.log_off("/static/", "*.css")
opts = {}
if os.environ.get("NOLOG"):
    opts["request_log"] = False
skitaid.run(port=int(os.environ["PORT"]), **opts)
'''

LOG_LINE = re.compile(r'(?m)^\d{4}\.\d\d\.\d\d \d\d:\d\d:\d\d .*$')
FIELD = re.compile(r'"[^"]*"|\S+')


def log_lines(srv):
    return [l for l in LOG_LINE.findall(srv.log) if "[" not in l.split(" ", 3)[2]]


def log_line_for(srv, uri):
    def find():
        for line in log_lines(srv):
            fields = FIELD.findall(line)
            if len(fields) > 5 and fields[5] == uri:
                return fields
    return wait_for(find, 5)


def test_request_log_format(serve, tmp_path):
    write(tmp_path / "static" / "a.txt", "static text\n")
    s = serve(LOG_SCRIPT)
    auth = "Basic " + base64.b64encode(b"alice:secret").decode()
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("POST", "/form?a=1&b=2", body=b"x" * 1234, headers={
        "Host": "www.example.com:%d" % s.port, "Authorization": auth,
        "Referer": "http://ref.example/page", "User-Agent": 'Tester/1.0 (say "hi")',
        "X-Forwarded-For": "10.1.2.3, 10.0.0.1"})
    r = c.getresponse()
    assert r.read() == b"got 1234"
    c.request("GET", "/tok", headers={"Authorization": "Bearer tkn123"})
    c.getresponse().read()
    c.request("GET", "/stream")
    assert len(c.getresponse().read()) == 5000
    c.close()

    f = log_line_for(s, "/form?a=1&b=2")
    assert f, s.log
    assert len(f) == 21, f
    (date, tm, ip, host, method, uri, version, req_size, status, resp_size, gtxid, ltxid,
     user, bearer, referer, ua, xff, worker, active, handling, transfer) = f
    assert re.fullmatch(r"\d{4}\.\d\d\.\d\d", date) and re.fullmatch(r"\d\d:\d\d:\d\d", tm)
    assert time.strftime("%Y.%m.%d") == date or time.strftime("%Y.%m.%d", time.localtime(time.time() - 60)) == date
    assert ip == "127.0.0.1"
    assert host == "www.example.com"
    assert (method, version) == ("POST", "HTTP/1.1")
    assert (req_size, status, resp_size) == ("1234", "200", str(len(b"got 1234")))
    assert (gtxid, ltxid) == ("-", "-")
    assert user == '"alice"' and bearer == "-"
    assert referer == '"http://ref.example/page"'
    assert ua.startswith('"Tester/1.0 (say') and ua.endswith('"')
    assert xff.startswith("10.1.2.3") and "10.0.0.1" in xff
    assert re.fullmatch(r"W\d+", worker)
    assert int(active) >= 1
    assert float(handling) >= 0 and float(transfer) >= 0

    f = log_line_for(s, "/tok")
    assert len(f) == 21 and f[12] == "-" and f[13] == "sha256:" + hashlib.sha256(b"tkn123").hexdigest()[:12] and f[3] == "127.0.0.1"
    assert f[14] == "-" and f[16] == "-"
    f = log_line_for(s, "/stream")
    assert len(f) == 21 and (f[7], f[8], f[9]) == ("0", "200", "5000")
    # handling ends when the head goes out; the streaming is transfer time
    assert float(f[19]) < 150 and float(f[20]) >= 200, f


def test_request_log_off_paths_and_disabled(serve, tmp_path):
    write(tmp_path / "static" / "a.txt", "static text\n")
    s = serve(LOG_SCRIPT)
    assert get(s.port, "/static/a.txt") == (200, b"static text\n")
    assert get(s.port, "/theme.css")[0] == 200
    assert get(s.port, "/marker")[0] == 200
    assert log_line_for(s, "/marker")
    lines = "\n".join(log_lines(s))
    assert "/static/a.txt" not in lines and "/theme.css" not in lines

    s2 = serve(LOG_SCRIPT, env={"NOLOG": "1"}, filename="app2.py")
    assert get(s2.port, "/quiet")[0] == 200
    assert get(s2.port, "/quiet2")[0] == 200
    time.sleep(0.4)            # lines are flushed every 0.1 s: give them a chance to show up
    assert " /quiet" not in s2.log


# -- graceful stop -------------------------------------------------------------------

STOP_SCRIPT = '''
import os, time, skitaid

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "started"), "w").close()
        time.sleep(2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"finished " + environ["PATH_INFO"].encode()]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=int(os.environ.get("THREADS", "2")))
'''


def test_graceful_stop_finishes_in_flight_request(serve, tmp_path):
    s = serve(STOP_SCRIPT)
    idle = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    idle.request("GET", "/idle")
    assert idle.getresponse().read() == b"finished /idle"        # a keep-alive connection, idle
    result = {}

    def slow():
        try:
            result["r"] = get(s.port, "/slow", timeout=15)
        except Exception as e:      # reported below
            result["r"] = e

    t = threading.Thread(target=slow)
    t.start()
    assert wait_for(lambda: os.path.exists(str(tmp_path / "started")), 5)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    # new connections are refused once the stop began (the slow request is still running)
    def refused():
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
    assert wait_for(refused, 1.5), "still accepting connections after SIGTERM"
    assert time.monotonic() - t0 < 1.9
    t.join(10)
    assert result.get("r") == (200, b"finished /slow"), result
    assert s.proc.wait(10) == 0
    assert "stopping gracefully" in s.log


def test_request_log_to_a_file_and_reopen_on_usr1(serve, tmp_path):
    log_file = tmp_path / "request.log"
    s = serve('''
import os, skitaid
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
skitaid.mount("/", app)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]), request_log_file=%r)
''' % str(log_file))
    assert get(s.port, "/first")[0] == 200
    assert wait_for(lambda: log_file.exists() and " /first " in log_file.read_text())
    assert " /first " not in s.log            # not on the console
    # logrotate: rename, USR1, and the next line goes to a new file
    log_file.rename(tmp_path / "request.log.1")
    s.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: get(s.port, "/second")[0] == 200 and log_file.exists()
                    and " /second " in log_file.read_text(), timeout=5)
