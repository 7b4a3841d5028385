"""The master and its workers, with real processes and real signals.

Each test builds a config dir (skitaid.conf + servers-enabled/), runs
`python -m skitaid run -c DIR` (or `start`) and acts on the processes the
way an operator would: kill, HUP, TERM, USR1, TTIN/TTOU, `skitaid status`.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for

APP = """
import os, time
VERSION = {version!r}
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        open(os.path.join(os.path.dirname(__file__), "sleeping"), "w").close()
        time.sleep(float(environ.get("QUERY_STRING") or 2))
    elif path == "/spin":
        while True:
            pass
    elif path == "/burn":
        import threading
        def burn():
            while True:
                pass
        threading.Thread(target=burn, daemon=True).start()
    body = ("%s %d %d\\n" % (VERSION, os.getpid(), os.getuid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


class Site:
    """A config dir with its own run/log paths."""

    def __init__(self, root):
        self.root = str(root)
        self.run_path = os.path.join(self.root, "run")
        self.log_path = os.path.join(self.root, "log")
        self.pidfile = os.path.join(self.run_path, "skitaid.pid")
        write(os.path.join(self.root, "skitaid.conf"), """
            [global]
            run_path = %s
            log_path = %s
            pidfile = %s
            """ % (self.run_path, self.log_path, self.pidfile))

    def app(self, name="app.py", version="v1"):
        write(os.path.join(self.root, name), APP.format(version=version))

    def ini(self, name, port, app="app.py", **keys):
        lines = ["[server]", "ip = %s" % keys.pop("ip", "127.0.0.1"), "port = %d" % port]
        lines += ["%s = %s" % kv for kv in keys.items()]
        lines += ["[routes:line]", "/ = %s:app" % os.path.join(self.root, app)]
        write(os.path.join(self.root, "servers-enabled", name + ".conf"), "\n".join(lines) + "\n")

    def yaml(self, name, port, app="app.py", **keys):
        server = {"ip": "127.0.0.1", "port": port}
        server.update(keys)
        body = "server:\n" + "".join("  %s: %s\n" % kv for kv in server.items())
        body += "routes:\n  /: %s:app\n" % os.path.join(self.root, app)
        write(os.path.join(self.root, "servers-enabled", name + ".yaml"), body)

    def cli(self, *args, timeout=60):
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, "-m", "skitaid", "-c", self.root] + list(args),
                              capture_output=True, text=True, timeout=timeout, env=env)

    def status(self):
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def server(self, name):
        return next(s for s in self.status()["servers"] if s["name"] == name)

    def pids(self, name, generation=None):
        return sorted(w["pid"] for w in self.server(name)["workers"]
                      if w["state"] == "ready" and (generation is None or w["generation"] == generation))


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


@pytest.fixture
def master(site):
    """master(port) → ServerProc running `skitaid run -c DIR` until the test ends."""
    started = []

    def start(port, env=None):
        proc = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", site.root],
                          site.root, env=env, port=port)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def get(port, path="/", timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def replaced(site, name, old):
    """The server's one ready worker is no longer `old`."""
    pids = site.pids(name)
    return bool(pids) and old not in pids


def title(pid):
    """The process title as ps shows it (setproctitle pads it with blanks)."""
    return " ".join(psutil.Process(pid).cmdline()).strip()


def answer(port, path="/"):
    """(version, pid, uid) from the test app."""
    status, body = get(port, path)
    assert status == 200, body
    version, pid, uid = body.split()
    return version, int(pid), int(uid)


# -- two servers, status, titles ------------------------------------------------------

def test_two_servers_ini_and_yaml_status_and_titles(site, master):
    site.app("a.py", "from-a")
    site.app("b.py", "from-b")
    pa, pb = free_port(), free_port()
    site.ini("alpha", pa, app="a.py", processes=2)
    site.yaml("beta", pb, app="b.py", workers=1)
    m = master(pa)
    assert wait_for(lambda: len(site.pids("alpha")) == 2 and len(site.pids("beta")) == 1)
    assert answer(pa)[0] == "from-a"
    assert answer(pb)[0] == "from-b"

    status = site.status()
    assert status["pid"] == m.proc.pid
    by_name = {s["name"]: s for s in status["servers"]}
    assert by_name["alpha"]["address"] == "http://127.0.0.1:%d" % pa
    assert by_name["beta"]["state"] == "running" and by_name["beta"]["generation"] == 1
    for w in by_name["alpha"]["workers"]:
        assert w["rss"] > 1000000 and w["uptime"] >= 0 and "cpu_percent" in w

    titles = {p.pid: title(p.pid) for p in psutil.Process(m.proc.pid).children()}
    titles[m.proc.pid] = title(m.proc.pid)
    assert titles[m.proc.pid] == "skitaid: master"
    assert sorted(t for pid, t in titles.items() if pid != m.proc.pid) == [
        "skitaid: alpha worker #0", "skitaid: alpha worker #1", "skitaid: beta worker #0"]

    text = site.cli("status")
    assert text.returncode == 0
    assert "server alpha: running" in text.stdout and "server beta: running" in text.stdout


def test_status_when_not_running_exits_3(site):
    site.app()
    site.ini("web", free_port())
    result = site.cli("status")
    assert result.returncode == 3 and "not running" in result.stdout


# -- supervision ------------------------------------------------------------------------

def test_killed_worker_is_replaced_quickly(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2)
    m = master(port)
    assert wait_for(lambda: len(site.pids("web")) == 2)
    victim = site.pids("web")[0]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_for(lambda: len(site.pids("web")) == 2 and victim not in site.pids("web"), 2.0)
    assert time.monotonic() - t0 < 2.0
    for _ in range(6):
        assert answer(port)[1] != victim
    assert m.wait_log("(pid %d) died: killed by SIGKILL" % victim)


def test_hung_worker_is_aborted_with_its_stack_logged(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1, threads=0, worker_timeout=2)
    m = master(port)
    old = answer(port)[1]
    # threads = 0: the app runs on the event loop, so /spin freezes the whole worker
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        assert m.wait_log("silent for", timeout=10)
    assert wait_for(lambda: replaced(site, "web", old), 10)
    assert answer(port)[1] != old
    log = m.log
    assert "Fatal Python error: Aborted" in log
    assert 'in app' in log and "app.py" in log        # the hung frame, from faulthandler


def test_worker_with_every_app_thread_stuck_is_replaced(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1, threads=1, worker_timeout=2)
    m = master(port)
    old = answer(port)[1]
    # the only app thread spins forever; the loop still runs, but the next
    # request waits behind it: that worker is hung for its clients
    stuck = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        stuck[0].sendall(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_for(lambda: psutil.Process(old).cpu_percent(0.1) > 50)   # it spins
        stuck[1].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert m.wait_log("app threads busy for over 2 s", timeout=10)
        assert wait_for(lambda: replaced(site, "web", old), 10)
    finally:
        for s in stuck:
            s.close()
    assert answer(port)[1] != old
    assert "in app" in m.log        # the spinning frame, from faulthandler


def test_cpu_runaway_worker_is_replaced_by_the_critical_point(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1, critical_point="50, 2, 0.5")
    m = master(port)
    old = answer(port)[1]
    # a thread burning CPU: the loop stays responsive, only the critical point sees it
    answer(port, "/burn")
    assert m.wait_log("critical_point", timeout=15)
    assert wait_for(lambda: replaced(site, "web", old), 10)
    assert not psutil.pid_exists(old) or wait_for(lambda: not psutil.pid_exists(old), 35)
    assert answer(port)[1] != old


def test_max_requests_recycles_gracefully(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1, max_requests=5)
    m = master(port)
    first = answer(port)[1]
    for _ in range(6):
        answer(port)
    assert wait_for(lambda: replaced(site, "web", first), 10)
    assert m.wait_log("max_requests")
    assert answer(port)[1] != first


def test_server_failing_at_boot_is_marked_failed_others_keep_serving(site, master):
    site.app()
    write(os.path.join(site.root, "broken.py"), "raise RuntimeError('no database')\napp = None\n")
    good, bad = free_port(), free_port()
    site.ini("good", good)
    site.ini("bad", bad, app="broken.py")
    m = master(good)
    assert wait_for(lambda: site.server("bad")["state"] == "failed", 20)
    assert "failed to start" in site.server("bad")["reason"]
    assert site.server("good")["state"] == "running"
    assert answer(good)[0] == "v1"
    assert "RuntimeError: no database" in m.log


def test_ttin_ttou_change_the_worker_count(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1)
    m = master(port)
    assert wait_for(lambda: len(site.pids("web")) == 1)
    # one at a time: a signal sent again before the first is handled merges with it
    os.kill(m.proc.pid, signal.SIGTTIN)
    assert wait_for(lambda: len(site.pids("web")) == 2)
    os.kill(m.proc.pid, signal.SIGTTIN)
    assert wait_for(lambda: len(site.pids("web")) == 3)
    os.kill(m.proc.pid, signal.SIGTTOU)
    assert wait_for(lambda: len(site.pids("web")) == 2 and
                    len(site.server("web")["workers"]) == 2, 10)


# -- reload -------------------------------------------------------------------------------

class Load:
    """Clients hammering the server while the test reloads it.

    One client keeps its connection alive, one opens a new connection per
    request. A request on a reused keep-alive connection that the server
    closed before sending any byte of the response is retried on a new
    connection, as HTTP clients do for idempotent requests (RFC 9112 9.3.1);
    anything else (an error status, a reset mid-response, a refused
    connection) is a failure."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.retried = 0
        self.failures = []
        self.versions = set()
        self.last = None
        self.threads = [threading.Thread(target=self._keep_alive, daemon=True),
                        threading.Thread(target=self._fresh, daemon=True)]
        for t in self.threads:
            t.start()

    def _record(self, status, body):
        if status != 200:
            self.failures.append("status %d: %s" % (status, body[:80]))
        else:
            self.ok += 1
            self.last = body.split()[0]
            self.versions.add(self.last)

    def _keep_alive(self):
        conn = None
        while not self.stop.is_set():
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                self._record(resp.status, resp.read().decode())
                if resp.will_close:
                    conn.close()
                    conn = None
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as e:
                conn.close()
                conn = None
                if reused:
                    self.retried += 1
                else:
                    self.failures.append("keep-alive: %r" % e)
            except Exception as e:
                conn.close()
                conn = None
                self.failures.append("keep-alive: %r" % e)

    def _fresh(self):
        while not self.stop.is_set():
            try:
                self._record(*get(self.port))
            except Exception as e:
                self.failures.append("new connection: %r" % e)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_reload_under_load_drops_nothing(site, master):
    site.app(version="v1")
    port = free_port()
    site.ini("web", port, processes=2, graceful_timeout=5)
    m = master(port)
    load = Load(port)
    try:
        for version in ("v2", "v3", "v4"):
            site.app(version=version)
            os.kill(m.proc.pid, signal.SIGHUP)
            assert wait_for(lambda: load.last == version, 20), (version, load.failures)
            assert wait_for(lambda: not site.status()["reloading"], 20)
        before = load.ok
        assert wait_for(lambda: load.ok > before + 20)
    finally:
        load.finish()
    assert load.failures == []
    assert {"v1", "v2", "v3", "v4"} <= load.versions
    status = site.server("web")
    assert status["generation"] == 4
    assert all(w["generation"] == 4 for w in status["workers"])
    assert m.log.count("reload done") == 3


def test_reload_with_broken_config_keeps_serving(site, master):
    site.app()
    port = free_port()
    site.ini("web", port)
    m = master(port)
    pid = answer(port)[1]
    site.ini("web", port, threads="many", bogus_key=1)
    # `skitaid reload` validates first and leaves the master alone
    result = site.cli("reload")
    assert result.returncode == 1
    assert "servers-enabled/web.conf [server] threads: found 'many'" in result.stderr
    assert "bogus_key" in result.stderr
    # a HUP (systemctl reload, kill) makes the master re-read, refuse and keep serving
    os.kill(m.proc.pid, signal.SIGHUP)
    assert m.wait_log("reload refused: the config has 2 problem(s)")
    assert "servers-enabled/web.conf [server] bogus_key: found '1'" in m.log
    assert answer(port) == ("v1", pid, 0)
    # status and stop need only skitaid.conf, so a broken server file never locks them out
    assert site.cli("status").returncode == 0


def test_reload_with_app_failing_to_import_keeps_old_generation(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2)
    m = master(port)
    before = site.pids("web")
    write(os.path.join(site.root, "app.py"), "import no_such_module_here\n")
    load = Load(port)
    try:
        result = site.cli("reload")
    finally:
        load.finish()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed to start" in result.stderr
    assert load.failures == []
    assert "No module named 'no_such_module_here'" in m.log
    assert "abandoned" in m.log
    assert site.pids("web") == before
    assert answer(port)[0] == "v1"
    # fixed app: the next reload goes through
    site.app(version="v2")
    assert site.cli("reload").returncode == 0
    assert answer(port)[0] == "v2"


def test_reload_adds_and_removes_servers(site, master):
    site.app()
    p1, p2 = free_port(), free_port()
    site.ini("one", p1)
    m = master(p1)
    site.ini("two", p2)
    assert site.cli("reload").returncode == 0
    assert answer(p2)[0] == "v1"
    os.unlink(os.path.join(site.root, "servers-enabled", "one.conf"))
    assert site.cli("reload").returncode == 0
    assert wait_for(lambda: [s["name"] for s in site.status()["servers"]] == ["two"])

    def refused():
        try:
            socket.create_connection(("127.0.0.1", p1), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
    assert wait_for(refused, 10)
    assert answer(p2)[0] == "v1"
    assert m.proc.poll() is None


def test_removed_server_drains_then_gives_its_port_back(site, master):
    """A server removed while a request is in flight finishes it; once its
    workers are gone the master closes the listener (no connection is queued
    for nobody), and a server re-added under that name while it drains starts."""
    site.app()
    p1, p2 = free_port(), free_port()
    site.ini("one", p1, graceful_timeout=10)
    site.ini("two", p2)
    m = master(p1)
    results = []
    t = threading.Thread(target=lambda: results.append(get(p1, "/sleep?1.5")))
    t.start()
    assert wait_for(lambda: os.path.exists(os.path.join(site.root, "sleeping")))
    os.unlink(os.path.join(site.root, "servers-enabled", "one.conf"))
    assert site.cli("reload").returncode == 0
    t.join(10)
    assert results and results[0][0] == 200

    def refused():
        try:
            socket.create_connection(("127.0.0.1", p1), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
    assert wait_for(refused, 10)
    assert [s["name"] for s in site.status()["servers"]] == ["two"]
    # back again (its old pool is gone; a new one starts on the same port)
    site.ini("one", p1)
    assert site.cli("reload").returncode == 0
    assert answer(p1)[0] == "v1"
    assert m.proc.poll() is None


def test_reload_re_adds_a_server_that_is_still_draining(site, master):
    site.app()
    p1, p2 = free_port(), free_port()
    site.ini("one", p1, graceful_timeout=10)
    site.ini("two", p2)
    master(p2)
    results = []
    t = threading.Thread(target=lambda: results.append(get(p1, "/sleep?2")))
    t.start()
    assert wait_for(lambda: os.path.exists(os.path.join(site.root, "sleeping")))
    conf = os.path.join(site.root, "servers-enabled", "one.conf")
    saved = open(conf).read()
    os.unlink(conf)
    assert site.cli("reload").returncode == 0
    with open(conf, "w") as f:             # back before the old workers are done
        f.write(saved)
    assert site.cli("reload").returncode == 0
    assert answer(p1)[0] == "v1"           # the new pool serves; the old one drains
    t.join(10)
    assert results and results[0][0] == 200
    # the drained pool leaves the status list; the new "one" stays
    assert wait_for(lambda: sorted((s["name"], s["state"]) for s in site.status()["servers"])
                    == [("one", "running"), ("two", "running")], 10)


def test_restart_one_server_leaves_the_other(site, master):
    site.app()
    p1, p2 = free_port(), free_port()
    site.ini("one", p1)
    site.ini("two", p2)
    master(p1)
    two = site.pids("two")
    one = site.pids("one")
    result = site.cli("restart", "one")
    assert result.returncode == 0, result.stderr
    assert site.pids("two") == two
    assert site.pids("one") != one and site.server("one")["generation"] == 2


# -- stopping -------------------------------------------------------------------------------

def test_graceful_stop_finishes_the_request_in_flight(site):
    site.app()
    port = free_port()
    site.ini("web", port, graceful_timeout=10)
    assert site.cli("start").returncode == 0
    try:
        results = []
        t = threading.Thread(target=lambda: results.append(get(port, "/sleep?2")))
        t.start()
        assert wait_for(lambda: os.path.exists(os.path.join(site.root, "sleeping")))
        stop = site.cli("stop")
        t.join(10)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert results and results[0][0] == 200 and results[0][1].startswith("v1")
    finally:
        site.cli("stop")
    assert not os.path.exists(site.pidfile)


def test_start_refuses_a_second_master_and_handles_a_stale_pidfile(site):
    site.app()
    port = free_port()
    site.ini("web", port)
    os.makedirs(site.run_path, exist_ok=True)
    with open(site.pidfile, "w") as f:
        f.write("999999\n")                  # stale: no such process
    try:
        first = site.cli("start")
        assert first.returncode == 0, first.stderr
        pid = int(open(site.pidfile).read())
        assert title(pid) == "skitaid: master"
        assert answer(port)[0] == "v1"
        second = site.cli("start")
        assert second.returncode == 0 and "already running (pid %d" % pid in second.stdout
        assert site.cli("status").returncode == 0
        assert os.path.exists(os.path.join(site.log_path, "error.log"))
    finally:
        assert site.cli("stop").returncode == 0
    assert site.cli("status").returncode == 3


def test_start_reports_a_port_in_use(site):
    site.app()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        site.ini("web", port)
        result = site.cli("start")
    assert result.returncode == 1
    assert "cannot listen on http://127.0.0.1:%d" % port in result.stderr


# -- logs ------------------------------------------------------------------------------------

def test_usr1_reopens_logs_after_rename(site):
    site.app()
    port = free_port()
    site.ini("web", port)
    assert site.cli("start").returncode == 0
    try:
        request_log = os.path.join(site.log_path, "web-request.log")
        error_log = os.path.join(site.log_path, "error.log")
        get(port, "/first")
        assert wait_for(lambda: os.path.exists(request_log) and "/first" in open(request_log).read())
        os.rename(request_log, request_log + ".1")
        os.rename(error_log, error_log + ".1")
        os.kill(int(open(site.pidfile).read()), signal.SIGUSR1)
        assert wait_for(lambda: os.path.exists(error_log) and "log files reopened" in open(error_log).read())
        # workers reopen too: poll, since USR1 reaches them a moment later
        assert wait_for(lambda: get(port, "/second") and os.path.exists(request_log)
                        and "/second" in open(request_log).read(), 5)
        assert "/second" not in open(request_log + ".1").read()
    finally:
        site.cli("stop")


# -- privileges ----------------------------------------------------------------------------

def _free_low_port():
    for port in range(900, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_workers_drop_privileges_below_1024_and_master_binds_on_reload():
    # the unprivileged user must be able to read the app: a world-readable dir
    root = tempfile.mkdtemp(prefix="skitaid-priv-", dir="/tmp")
    os.chmod(root, 0o755)
    site = Site(root)
    write(os.path.join(site.root, "skitaid.conf"), """
        [global]
        user = nobody
        group = nogroup
        run_path = %s
        log_path = %s
        pidfile = %s
        """ % (site.run_path, site.log_path, site.pidfile))
    site.app()
    port = _free_low_port()
    site.ini("web", port)
    proc = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", root], root, port=port)
    try:
        nobody = 65534
        version, pid, uid = answer(port)
        assert uid == nobody
        p = psutil.Process(pid)
        assert p.uids().real == nobody and p.uids().effective == nobody
        assert p.gids().real == nobody
        assert psutil.Process(proc.proc.pid).uids().effective == 0      # the master stays root
        # a new server on another low port: the master binds it at reload
        port2 = _free_low_port()
        site.ini("more", port2)
        assert site.cli("reload").returncode == 0
        assert answer(port2)[2] == nobody
    finally:
        proc.stop()


# -- systemd -------------------------------------------------------------------------------

def test_sd_notify_ready_reloading_stopping(site, tmp_path):
    site.app()
    port = free_port()
    site.ini("web", port)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    messages = []

    def expect(word):
        while True:
            msg = sock.recv(4096).decode()
            messages.append(msg)
            if word in msg.split("\n"):
                return msg

    proc = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", site.root], site.root,
                      env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}, port=port)
    try:
        ready = expect("READY=1")
        assert "STATUS=web running (1 workers)" in ready
        assert expect("WATCHDOG=1")
        os.kill(proc.proc.pid, signal.SIGHUP)
        reloading = expect("RELOADING=1")
        usec = int([l for l in reloading.split("\n") if l.startswith("MONOTONIC_USEC=")][0][15:])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 10
        expect("READY=1")
        proc.stop()
        expect("STOPPING=1")
    finally:
        proc.stop()
        sock.close()


# -- the Python API ------------------------------------------------------------------------

def test_script_start_status_stop(tmp_path):
    port = free_port()
    script = tmp_path / "myapp.py"
    script.write_text(textwrap.dedent("""
        import os, skitaid
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"script %d" % os.getpid()]
        skitaid.mount("/", app)
        skitaid.run(port=PORT, workers=2, name="myapp-PORT")
        """).replace("PORT", str(port)))
    env = dict(os.environ, PYTHONPATH=ROOT)

    def run(*args):
        return subprocess.run([sys.executable, str(script)] + list(args), capture_output=True,
                              text=True, timeout=60, env=env, cwd=str(tmp_path))
    started = run("start")
    try:
        assert started.returncode == 0, started.stderr
        assert get(port)[1].startswith("script ")
        status = run("status")
        assert status.returncode == 0
        assert "server myapp-%d: running" % port in status.stdout
        assert status.stdout.count(" ready ") == 2
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run("status").returncode == 3


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_socket_activation_serves_on_the_inherited_listener(site, address):
    site.app()
    # the "systemd" side: a listening socket handed over as fd 3
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    site.ini("web", port, ip=address)       # a host name matches the socket it resolves to
    fd = listener.fileno()
    # what systemd does before exec: the socket at fd 3, LISTEN_PID = the pid to be
    shim = ("import os, sys; os.dup2(%d, 3); os.environ.update(LISTEN_PID=str(os.getpid()), "
            "LISTEN_FDS='1', LISTEN_FDNAMES='web'); "
            "os.execv(sys.executable, [sys.executable, '-m', 'skitaid', 'run', '-c', %r])"
            % (fd, site.root))
    log = open(os.path.join(site.root, "activation.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-c", shim], pass_fds=[fd], stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        listener.close()        # only the master holds it now
        # binding the port itself would have failed: the test's socket held it
        assert wait_for(lambda: "ready: web running" in open(log.name).read(), 15)
        assert answer(port)[0] == "v1"
        assert "cannot listen" not in open(log.name).read()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
