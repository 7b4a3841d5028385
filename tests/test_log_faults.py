"""Logs and operator commands under faults, with real daemons and real signals.

Log files rotated away under the workers' feet (logrotate, USR1), log
directories that vanish, hung workers, a worker out of file descriptors,
broken operator input: what the operator sees, and that the server keeps
serving through all of it.
"""
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for
from helpers.clients import read_until_close
from skitaid.logs import token_fingerprint

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (workers run as nobody)")

APP = """
import os, signal, time
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        open(os.path.join(os.path.dirname(__file__), "sleeping"), "w").close()
        time.sleep(float(environ.get("QUERY_STRING") or 2))
    elif path == "/boom":
        raise RuntimeError("boom " + environ.get("QUERY_STRING", ""))
    elif path == "/hang":
        # hung past SIGABRT too (threads = 0: this is the loop's thread)
        signal.signal(signal.SIGABRT, signal.SIG_IGN)
        while True:
            pass
    body = ("ok %d\\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


class Site:
    """A config dir with its own run and log paths; `user` for the workers."""

    def __init__(self, root, user=""):
        self.root = str(root)
        self.run_path = os.path.join(self.root, "run")
        self.log_path = os.path.join(self.root, "log")
        self.pidfile = os.path.join(self.run_path, "skitaid.pid")
        self.error_log = os.path.join(self.log_path, "error.log")
        self.conf = os.path.join(self.root, "skitaid.conf")
        write(self.conf, """
            [global]
            user = %s
            run_path = %s
            log_path = %s
            pidfile = %s
            """ % (user, self.run_path, self.log_path, self.pidfile))
        write(os.path.join(self.root, "app.py"), APP)

    def ini(self, name, port, **keys):
        lines = ["[server]", "ip = 127.0.0.1", "port = %d" % port]
        lines += ["%s = %s" % kv for kv in keys.items()]
        lines += ["[routes:line]", "/ = %s:app" % os.path.join(self.root, "app.py")]
        write(os.path.join(self.root, "servers-enabled", name + ".conf"), "\n".join(lines) + "\n")

    def request_log(self, name):
        return os.path.join(self.log_path, "%s-request.log" % name)

    def cli(self, *args, timeout=60, stdout=subprocess.PIPE):
        env = dict(os.environ, PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, "-m", "skitaid", "-c", self.root] + list(args),
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env=env)

    def master_pid(self):
        with open(self.pidfile) as f:
            return int(f.read())

    def status(self):
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def worker_pids(self, name):
        server = next(s for s in self.status()["servers"] if s["name"] == name)
        return sorted(w["pid"] for w in server["workers"] if w["state"] == "ready")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


@pytest.fixture
def nobody_site():
    """Workers as nobody: the config dir must be readable by them (not tmp_path, 0700)."""
    root = tempfile.mkdtemp(prefix="skitaid-logs-", dir="/tmp")
    os.chmod(root, 0o755)
    yield Site(root, user="nobody")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def started():
    """started(site) → `skitaid start` it; stopped at the end of the test, whatever
    happens (by its pid when `stop` cannot: a test may leave the config broken)."""
    masters = []

    def start(site):
        result = site.cli("start")
        assert result.returncode == 0, result.stdout + result.stderr
        pid = site.master_pid()
        masters.append((site, psutil.Process(pid)))
        return pid

    yield start
    for site, master in masters:
        site.cli("stop")
        if master.is_running():
            master.terminate()
            try:
                master.wait(15)
            except psutil.TimeoutExpired:
                for proc in master.children(recursive=True) + [master]:
                    proc.kill()


def exchange(port, path="/", token=None, timeout=5.0):
    """One request on its own connection; the whole raw response (the server closes)."""
    head = "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % path
    if token:
        head += "Authorization: Bearer %s\r\n" % token
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((head + "\r\n").encode())
        return read_until_close(s)


def get_ok(port, path="/"):
    data = exchange(port, path)
    return data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\n")


def serves(port):
    """get_ok, where a refused or reset connection is a no (for wait_for)."""
    try:
        return get_ok(port)
    except OSError:
        return False


# -- 1. a request log that cannot be reopened ------------------------------------------

@root_only
def test_request_log_reopen_failure_never_writes_to_a_client_socket(nobody_site, started):
    """logrotate renamed the request log and created a new one 0640 root:root; the
    workers (nobody) cannot open it. Before: the old fd was closed first, the next
    accepted socket took its number and idle clients received log lines with other
    users' bearer tokens."""
    site = nobody_site
    port = free_port()
    site.ini("web", port, processes=1)
    nobody = pwd.getpwnam("nobody")
    os.makedirs(site.log_path)
    request_log = site.request_log("web")
    with open(request_log, "w"):
        pass
    os.chown(request_log, nobody.pw_uid, nobody.pw_gid)       # the workers' own file
    master = started(site)
    assert b"SECRET-TOKEN-OF-ALICE-0" not in exchange(port, "/alice/account",
                                                      "SECRET-TOKEN-OF-ALICE-0")
    # the log keeps a fingerprint of the token, never the token
    assert wait_for(lambda: token_fingerprint("SECRET-TOKEN-OF-ALICE-0") in read(request_log))
    assert "SECRET" not in read(request_log)

    # what `create 0640 root root` in a logrotate config does, for every log
    for path in (request_log, site.error_log):
        os.rename(path, path + ".1")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.fchmod(fd, 0o640)
        os.close(fd)
    os.kill(master, signal.SIGUSR1)
    # the worker has met the root-owned file (wherever it reports that)
    assert wait_for(lambda: "Permission denied" in read(site.error_log)
                    + read(site.error_log + ".1"), 5), read(site.error_log)

    # new connections take the lowest free fd numbers: an fd the log let go of
    # would be one of theirs
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        tokens = ["SECRET-TOKEN-OF-ALICE-%d" % n for n in range(1, 7)]
        for token in tokens:
            data = exchange(port, "/alice/account", token)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and token.encode() not in data
        # the lines are flushed 0.1 s after a request: well within this
        deadline = time.monotonic() + 1.5
        for s in idle:
            received = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([s], [], [], left)[0]:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
            # an idle client sent nothing: it may only ever get HTTP (a 408), never a log line
            assert received == b"" or received.startswith(b"HTTP/1.1 "), received[:200]
            assert b"SECRET" not in received and b"/alice/account" not in received
    finally:
        for s in idle:
            s.close()
    # the old file stays in use; the root-owned one is never written
    assert wait_for(lambda: all(token_fingerprint(t) in read(request_log + ".1")
                                for t in tokens), 5)
    assert read(request_log) == ""
    # one clear line in the new error log, naming the file and the reason
    log = read(site.error_log)
    failure = "cannot reopen the request log %s: Permission denied (EACCES)" % request_log
    assert failure in log and log.count("cannot reopen the request log") == 1, log
    assert "Traceback" not in log
    assert get_ok(port)
    assert site.status()["servers"][0]["state"] == "running"


# -- 2. USR1 that cannot reopen the error log ---------------------------------------------

@pytest.mark.parametrize("fault", ["directory removed", "a directory in the file's place"])
def test_usr1_with_an_unusable_log_dir_leaves_the_master_serving(site, started, fault):
    port = free_port()
    site.ini("web", port, processes=2)
    master = started(site)
    workers = site.worker_pids("web")
    assert get_ok(port)
    if fault == "directory removed":
        moved = site.log_path + ".gone"
        os.rename(site.log_path, moved)
        old_log = os.path.join(moved, "error.log")
        reason = "No such file or directory (ENOENT)"
    else:
        old_log = site.error_log + ".1"
        os.rename(site.error_log, old_log)
        os.mkdir(site.error_log)
        reason = "Is a directory (EISDIR)"
    os.kill(master, signal.SIGUSR1)
    failure = "cannot reopen the error log %s: %s" % (site.error_log, reason)
    # the master and both workers each say so once, in the log they still write to
    assert wait_for(lambda: read(old_log).count(failure) == 3, 5), read(old_log)
    assert psutil.pid_exists(master)
    assert site.status()["pid"] == master
    assert site.worker_pids("web") == workers
    for _ in range(4):
        assert get_ok(port)
    # `skitaid reopen-logs` (logrotate's postrotate) reports the failure, and the master stays
    again = site.cli("reopen-logs")
    assert again.returncode == 1 and "could not reopen" in again.stderr, again.stderr
    assert site.status()["pid"] == master
    assert "Traceback" not in read(old_log)


def test_a_control_request_that_fails_does_not_take_the_master_down(site, started):
    port = free_port()
    site.ini("web", port)
    master = started(site)
    path = os.path.join(site.run_path, "skitaid.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b'{"command": "restart", "server": ["not", "a", "name"]}\n')
        reply = json.loads(s.makefile().readline())
    assert reply["ok"] is False and "internal error" in reply["messages"][0]
    assert site.status()["pid"] == master
    assert get_ok(port)
    assert "error while answering the control request 'restart'" in read(site.error_log)


# -- 9. what an operator could not see ------------------------------------------------------

@pytest.fixture
def foreground(site):
    """foreground(port) → `skitaid run -c DIR` (its log is the process's output)."""
    procs = []

    def start(port):
        proc = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", site.root],
                          site.root, port=port)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def test_a_request_cut_at_graceful_timeout_is_logged(site, foreground):
    port = free_port()
    site.ini("web", port, graceful_timeout=1)
    m = foreground(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /sleep?5 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_for(lambda: os.path.exists(os.path.join(site.root, "sleeping")))
        os.kill(m.proc.pid, signal.SIGHUP)          # a reload retires the worker
        assert m.wait_log("request cut at graceful_timeout (1 s): GET /sleep?5 from "
                          "127.0.0.1, running for 1.", timeout=10), m.log
    finally:
        s.close()
    assert get_ok(port)
    assert m.log.count("request cut") == 1


def test_sigkill_after_sigabrt_and_the_replacement_are_logged(site, foreground):
    port = free_port()
    site.ini("web", port, processes=1, threads=0, worker_timeout=2)
    m = foreground(port)
    old = int(exchange(port).split()[-1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        assert m.wait_log("(pid %d) still running 1 s after SIGABRT; killing it (SIGKILL)"
                          % old, timeout=10), m.log
    assert m.wait_log("hung worker #0 (pid %d) ended: killed by SIGKILL" % old), m.log
    assert m.wait_log("in place of pid %d" % old), m.log
    new = int(m.log.split("in place of pid %d" % old)[0].rsplit("(pid ", 1)[1].split(")")[0])
    assert wait_for(lambda: serves(port))
    assert int(exchange(port).split()[-1]) == new != old


FD_APP = """
import os, resource
# this worker may hold only a few descriptors more than it has after its start
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 12, hard))
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""


def test_running_out_of_fds_is_logged_once_and_serving_resumes(site, foreground):
    write(os.path.join(site.root, "fdapp.py"), FD_APP)
    port = free_port()
    site.ini("web", port, processes=1, threads=1)
    with open(os.path.join(site.root, "servers-enabled", "web.conf")) as f:
        conf = f.read().replace("app.py:app", "fdapp.py:app")
    write(os.path.join(site.root, "servers-enabled", "web.conf"), conf)
    m = foreground(port)
    assert get_ok(port)
    idle = []
    try:
        for _ in range(40):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert m.wait_log("out of file descriptors (EMFILE; limit ", timeout=5), m.log
        assert "new connections are dropped until some close" in m.log
        # still out of them a few sweeps later: said once (once a minute at most)
        probe = time.monotonic() + 2.5
        while time.monotonic() < probe:
            time.sleep(0.1)
        assert m.log.count("out of file descriptors") == 1, m.log
    finally:
        for s in idle:
            s.close()
    assert wait_for(lambda: serves(port), 5)
    for _ in range(20):
        assert get_ok(port)


def test_start_on_a_running_daemon_says_so_and_exits_0(site, started):
    """LSB: `start` of a service that runs already succeeds."""
    port = free_port()
    site.ini("web", port)
    master = started(site)
    again = site.cli("start")
    assert again.returncode == 0, again.stderr
    assert "already running (pid %d" % master in again.stdout
    assert site.status()["pid"] == master


def test_status_into_a_closed_pipe_exits_quietly(site, started):
    """`skitaid status | head`: the reader may be gone before status writes."""
    port = free_port()
    site.ini("web", port, processes=3)
    started(site)
    for args in (["status"], ["status", "--json"]):
        r, w = os.pipe()
        os.close(r)
        try:
            result = site.cli(*args, stdout=w)
        finally:
            os.close(w)
        assert result.stderr == "", result.stderr
        assert result.returncode == 128 + signal.SIGPIPE
    # and for real, through a shell pipe
    head = subprocess.run("%s -m skitaid -c %s status | head -c1" % (sys.executable, site.root),
                          shell=True, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert head.stdout == "s" and head.stderr == "", head.stderr


def test_broken_skitaid_conf_does_not_lock_out_status_and_stop(site, started):
    port = free_port()
    site.ini("web", port)
    master = started(site)
    with open(site.conf) as f:
        text = f.read()
    # an operator's edit in progress: the header lost its bracket, a key its '='
    broken = text.replace("[global]", "[global").replace("user =", "user")
    with open(site.conf, "w") as f:
        f.write(broken)
    header = 1 + broken.splitlines().index("[global")
    status = site.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "skitaid master pid %d" % master in status.stdout
    assert ("skitaid: warning: skitaid.conf:%d: found '[global', expected a [section] header first"
            % header) in status.stderr, status.stderr
    assert ("going on with what could be read: pidfile %s, run_path %s"
            % (site.pidfile, site.run_path)) in status.stderr
    assert get_ok(port)
    stop = site.cli("stop")
    assert stop.returncode == 0 and "stopped (pid %d)" % master in stop.stdout, stop.stderr
    assert wait_for(lambda: not psutil.pid_exists(master), 10)
    # `start` still refuses a broken config: it would have to read it all
    start = site.cli("start")
    assert start.returncode == 1 and "skitaid.conf" in start.stderr


def test_check_names_the_line_of_each_mistake(tmp_path):
    root = tmp_path
    os.makedirs(str(root / "www"))
    write(str(root / "skitaid.conf"), """\
        ; global settings
        [global]
        log_path = %s
        logpath = /var/log/elsewhere
        """ % (root / "log"))
    write(str(root / "servers-enabled" / "web.conf"), """\
        [server]
        ; a comment, then a blank line

        port = 8080
        threads = many       ; inline comment
        [routes:line]
        / = www
        /api = @nowhere
        """)
    write(str(root / "servers-enabled" / "api.yaml"), """\
        server:
          port: 9090
          prot: 80
        routes:
          /: [www, www/nope.py:app]
        hosts:
          .example.com:
            /x: '@ghost'
        """)
    result = subprocess.run([sys.executable, "-m", "skitaid", "check", "-c", str(root)],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    for expected in [
            "skitaid.conf:4 [global] logpath: found '/var/log/elsewhere', expected a known key",
            "servers-enabled/web.conf:5 [server] threads: found 'many', expected an integer",
            "servers-enabled/web.conf:8 [routes:line] /api: found '@nowhere', expected an alias",
            "servers-enabled/api.yaml:3 [server] prot: found '80', expected a known key",
            "servers-enabled/api.yaml:5 [routes] /: found 'www/nope.py:app', expected an "
            "existing Python file",
            "servers-enabled/api.yaml:8 [hosts: .example.com] /x: found '@ghost'"]:
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    # a YAML syntax error: the line the parser stopped at
    write(str(root / "servers-enabled" / "api.yaml"), "server:\n  port: [9090\nroutes: {}\n")
    result = subprocess.run([sys.executable, "-m", "skitaid", "check", "-c", str(root)],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert any(line.startswith("servers-enabled/api.yaml:3: expected valid YAML")
               for line in result.stderr.splitlines()), result.stderr


# -- 12. logs as operators rotate them ------------------------------------------------------

LOGROTATE = "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="needs logrotate")


@root_only
@needs_logrotate
def test_logrotate_with_the_installed_config_and_workers_as_nobody(nobody_site, started, tmp_path):
    site = nobody_site
    port = free_port()
    site.ini("web", port, processes=2)
    nobody = pwd.getpwnam("nobody")
    os.makedirs(site.log_path)
    request_log = site.request_log("web")
    with open(request_log, "w"):
        pass
    os.chown(request_log, nobody.pw_uid, nobody.pw_gid)       # the workers' own file
    started(site)
    unit, conf = str(tmp_path / "skitaid.service"), str(tmp_path / "skitaid.logrotate")
    installed = site.cli("install", "--unit-path", unit, "--logrotate-path", conf)
    assert installed.returncode == 0, installed.stderr
    assert "installed %s" % conf in installed.stdout
    with open(conf) as f:
        text = f.read()
    assert "%s %s {" % (site.error_log, os.path.join(site.log_path, "*-request.log")) in text
    assert "reopen-logs -c %s" % site.root in text
    state = str(tmp_path / "logrotate.state")

    for rotation in (1, 2):
        assert exchange(port, "/before-%d" % rotation).startswith(b"HTTP/1.1 200 ")
        assert wait_for(lambda: "/before-%d" % rotation in read(request_log))
        run = subprocess.run([LOGROTATE, "-f", "-s", state, conf], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        # the rotated files keep what was written before; the new ones get the rest
        assert "/before-%d" % rotation in read(request_log + ".1")
        assert wait_for(lambda: read(site.error_log).count("log files reopened") == 1, 5)
        for n in range(4):          # both workers, whichever takes the connection
            assert exchange(port, "/after-%d-%d" % (rotation, n)).startswith(b"HTTP/1.1 200 ")
        assert wait_for(lambda: all("/after-%d-%d" % (rotation, n) in read(request_log)
                                    for n in range(4)), 5), read(site.error_log)
        assert "/after-%d" % rotation not in read(request_log + ".1")
        assert os.stat(request_log).st_uid == nobody.pw_uid     # `create`: the old owner
        # the workers' errors (their stderr) go to the new error log too
        for n in range(4):
            assert exchange(port, "/boom?after-%d-%d" % (rotation, n)).startswith(
                b"HTTP/1.1 500 ")
        assert wait_for(lambda: all("RuntimeError: boom after-%d-%d" % (rotation, n)
                                    in read(site.error_log) for n in range(4)), 5)
        old_logs = read(site.error_log + ".1")
        assert "boom after-%d" % rotation not in old_logs
        for text in (read(site.error_log), old_logs):
            assert "cannot reopen" not in text and "Permission" not in text
    # the second rotation compressed the first (delaycompress)
    assert os.path.exists(request_log + ".2.gz") and os.path.exists(site.error_log + ".2.gz")

    removed = site.cli("remove", "--unit-path", unit, "--logrotate-path", conf)
    assert removed.returncode == 0 and not os.path.exists(conf) and not os.path.exists(unit)


def test_logrotate_config_install_rules(site, tmp_path):
    port = free_port()
    site.ini("web", port)
    unit, conf = str(tmp_path / "skitaid.service"), str(tmp_path / "skitaid.logrotate")
    with open(conf, "w") as f:
        f.write("/var/log/mine/*.log {\n    weekly\n}\n")
    # a file skitaid did not write: left alone by install and remove, unless --force
    result = site.cli("install", "--unit-path", unit, "--logrotate-path", conf)
    assert result.returncode == 1 and "was not written by skitaid install" in result.stderr
    assert read(conf) == "/var/log/mine/*.log {\n    weekly\n}\n"
    result = site.cli("remove", "--unit-path", unit, "--logrotate-path", conf)
    assert result.returncode == 1 and os.path.exists(conf)
    assert site.cli("install", "--unit-path", unit, "--logrotate-path", conf,
                    "--force").returncode == 0
    assert read(conf).startswith("# Written by `skitaid install`")
    again = site.cli("install", "--unit-path", unit, "--logrotate-path", conf)
    assert again.returncode == 0 and "%s is up to date" % conf in again.stdout
    # a unit written elsewhere without --logrotate-path: no config in /etc/logrotate.d
    other = str(tmp_path / "other.service")
    result = site.cli("install", "--unit-path", other)
    assert result.returncode == 0 and result.stdout.count("installed ") == 1, result.stdout
    assert site.cli("remove", "--unit-path", unit, "--logrotate-path", conf).returncode == 0
    assert not os.path.exists(conf)


@needs_logrotate
def test_shipped_logrotate_config_parses_and_is_packaged(tmp_path):
    path = os.path.join(ROOT, "etc", "logrotate.d", "skitaid")
    assert os.path.islink(path) and os.path.samefile(
        path, os.path.join(ROOT, "skitaid", "daemon", "skitaid.logrotate"))
    copy = tmp_path / "skitaid"
    copy.write_text(read(path))             # logrotate wants a root-owned, private config
    os.chmod(str(copy), 0o644)
    debug = subprocess.run([LOGROTATE, "-d", "-s", str(tmp_path / "state"), str(copy)],
                           capture_output=True, text=True, timeout=60)
    assert debug.returncode == 0 and "error:" not in debug.stderr, debug.stderr
    assert "/usr/local/bin/skitaid reopen-logs" in read(path)
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        assert "daemon/skitaid.logrotate" in f.read()
