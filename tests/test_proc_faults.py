"""The daemon under process faults, with real processes and signals.

A master killed with -9 (its workers must stop by themselves, and `start`
must say who holds the port), a stale pid file naming an unrelated process,
workers as `nobody` with the default log files, a reload whose import hangs
or fails, a CPU-runaway worker, a kill -9 loop on the workers, and a Django
project mounted from its own layout.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from conftest import free_port, wait_for
from skitaid.config import ConfigError, load_config
from test_daemon import Site, answer, get, master, site, write  # noqa: F401  (fixtures)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def alive(pid):
    """A process that exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def master_pid(site):
    return int(open(site.pidfile).read())


def workers_of(pid):
    return [p.pid for p in psutil.Process(pid).children()]


def error_log(site):
    path = os.path.join(site.log_path, "error.log")
    return open(path).read() if os.path.exists(path) else ""


def kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def open_site():
    """A Site in a 0755 directory, so workers running as nobody can read the app."""
    root = tempfile.mkdtemp(prefix="skitaid-faults-", dir="/tmp")
    os.chmod(root, 0o755)
    yield Site(root)
    shutil.rmtree(root, ignore_errors=True)


def nobody_globals(site, **extra):
    lines = ["[global]", "user = nobody", "group = nogroup", "run_path = " + site.run_path,
             "pidfile = " + site.pidfile]
    lines += ["%s = %s" % kv for kv in extra.items()]
    write(os.path.join(site.root, "skitaid.conf"), "\n".join(lines) + "\n")


# -- 3: workers die with their master --------------------------------------------------

def test_workers_stop_when_their_master_is_killed(site):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2)
    assert site.cli("start").returncode == 0
    pid = master_pid(site)
    workers = workers_of(pid)
    assert len(workers) == 2
    try:
        os.kill(pid, signal.SIGKILL)
        # they notice within a couple of seconds and stop (they are idle: at once)
        assert wait_for(lambda: not any(alive(w) for w in workers), 3.0), \
            [psutil.Process(w).cmdline() for w in workers if alive(w)]
        assert error_log(site).count("master pid %d is gone: stopping" % pid) == 2
        # the port is free again: a new master starts on it
        again = site.cli("start")
        assert again.returncode == 0, again.stderr
        assert answer(port)[0] == "v1"
    finally:
        site.cli("stop")
        kill_all(workers)


def test_channel_eof_tells_workers_their_master_is_gone():
    """The portable check, without PR_SET_PDEATHSIG: a "master" forks two
    "workers" the way spawn does (each closes the other's master end); once
    the master is killed, each worker's end reads EOF."""
    from skitaid.daemon.channel import MasterLink, WorkerChannel
    import select
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:                         # the "master"
        code = 1
        try:
            channels = []
            for _ in range(2):
                ch = WorkerChannel()
                others = [c.master_end for c in channels] + [ch.master_end]
                if os.fork() == 0:          # a "worker"
                    for sock in others:
                        sock.close()
                    link = MasterLink(ch.worker_end, os.getppid())
                    readable = select.select([link.fileno()], [], [], 10)[0]
                    os.write(report_w, b"E" if readable and link.sock.recv(1) == b"" else b"?")
                    os._exit(0)
                ch.forked()
                channels.append(ch)
            time.sleep(60)
        finally:
            os._exit(code)
    os.close(report_w)
    try:
        time.sleep(0.3)
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            if select.select([report_r], [], [], 0.5)[0]:
                chunk = os.read(report_r, 2)
                if not chunk:
                    break
                got += chunk
        assert got == b"EE"
    finally:
        os.close(report_r)


def test_start_names_orphaned_workers_that_still_hold_the_port(site):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1)
    assert site.cli("start").returncode == 0
    pid = master_pid(site)
    (worker,) = workers_of(pid)
    try:
        # a stopped worker cannot notice that its master is gone: it keeps the port
        os.kill(worker, signal.SIGSTOP)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not alive(pid))
        status = site.cli("status")
        assert status.returncode == 3
        assert "orphaned skitaid worker(s) still running, their master gone: pid %d " \
            "(skitaid: web worker #0)" % worker in status.stdout, status.stdout
        stray = json.loads(site.cli("status", "--json").stdout)["orphans"]
        assert {"pid": worker, "title": "skitaid: web worker #0"} in stray
        result = site.cli("start")
        assert result.returncode == 1
        assert "cannot listen on http://127.0.0.1:%d: Address already in use" % port in result.stderr
        assert "held by skitaid worker(s) whose master is gone: pid %d (skitaid: web worker #0)" \
            % worker in result.stderr
        # once it runs again it sees the master is gone and stops by itself
        os.kill(worker, signal.SIGCONT)
        assert wait_for(lambda: not alive(worker), 5.0)
        assert site.cli("start").returncode == 0
        assert answer(port)[0] == "v1"
    finally:
        site.cli("stop")
        kill_all([worker])


# -- 6: a stale pid file naming another process ---------------------------------------------

def test_stop_and_status_never_trust_a_pid_file_naming_another_process(site):
    site.app()
    port = free_port()
    site.ini("web", port)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        os.makedirs(site.run_path, exist_ok=True)
        with open(site.pidfile, "w") as f:
            f.write("%d\n" % sleeper.pid)
        stop = site.cli("stop")
        assert stop.returncode == 0
        assert "not running" in stop.stdout and "stale pid file" in stop.stdout
        assert "pid %d is 'sleep 60', not a skitaid master" % sleeper.pid in stop.stdout
        assert sleeper.poll() is None                   # never signalled
        status = site.cli("status")
        assert status.returncode == 3 and "not running" in status.stdout
        # and start takes the pid file over
        started = site.cli("start")
        assert started.returncode == 0, started.stderr
        assert master_pid(site) != sleeper.pid
        assert site.cli("stop").returncode == 0
        assert sleeper.poll() is None
    finally:
        site.cli("stop")
        sleeper.kill()
        sleeper.wait()


# -- 7: workers as nobody and the default log files ---------------------------------------------

@as_root
def test_nobody_workers_with_the_default_log_path_start_and_log(open_site):
    site = open_site
    nobody_globals(site, log_path=site.log_path)
    site.app()
    port = free_port()
    site.ini("web", port)
    check = site.cli("check")
    assert check.returncode == 0, check.stderr
    started = site.cli("start")
    try:
        assert started.returncode == 0, started.stderr
        assert answer(port, "/logged")[2] == 65534
        request_log = os.path.join(site.log_path, "web-request.log")
        assert wait_for(lambda: "/logged" in open(request_log).read())
        assert os.stat(request_log).st_uid == 65534     # the master made it theirs
    finally:
        site.cli("stop")


@as_root
def test_check_reports_a_log_path_the_workers_cannot_reach(open_site):
    site = open_site
    private = os.path.join(site.root, "private")
    os.makedirs(private, mode=0o700)
    log_path = os.path.join(private, "log")
    nobody_globals(site, log_path=log_path)
    site.app()
    site.ini("web", free_port())
    check = site.cli("check")
    assert check.returncode == 1
    assert "skitaid.conf:" in check.stderr       # file:line, like nginx -t
    assert ("[global] log_path: found '%s', expected a directory where nobody can "
            "append to web-request.log (%s cannot be reached by them)" % (log_path, log_path)
            in check.stderr), check.stderr
    # what check says is what start meets
    started = site.cli("start")
    site.cli("stop")
    assert started.returncode == 1


# -- 8: boot_timeout and the reasons a reload rolled back ---------------------------------------

def test_boot_timeout_is_a_checked_key_in_ini_and_yaml(site):
    site.app()
    site.ini("web", free_port(), boot_timeout=5)
    site.yaml("api", free_port(), boot_timeout=2.5)
    config = load_config(site.root)
    assert sorted(s.boot_timeout for s in config.servers) == [2.5, 5.0]
    site.ini("web", free_port(), boot_timeout="soon")
    site.yaml("api", free_port(), boot_timeout=0)
    with pytest.raises(ConfigError) as e:
        load_config(site.root)
    problems = sorted(str(p) for p in e.value.problems)
    assert problems == [
        "servers-enabled/api.yaml [server] boot_timeout: found '0', expected a number of "
        "seconds >= 1",
        "servers-enabled/web.conf [server] boot_timeout: found 'soon', expected a number of "
        "seconds >= 1"]


def test_reload_with_a_hung_import_reports_the_boot_timeout(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, boot_timeout=2)
    master(port)
    before = site.pids("web")
    write(os.path.join(site.root, "app.py"), "import time\ntime.sleep(600)\n")
    t0 = time.monotonic()
    result = site.cli("reload")
    took = time.monotonic() - t0
    assert result.returncode == 1
    assert "still in progress" not in result.stderr
    assert "server 'web': the new generation failed to start: the app import did not finish " \
           "within 2 s (boot_timeout); generation 1 keeps serving" in result.stderr, result.stderr
    assert took < 10
    assert site.pids("web") == before and answer(port)[0] == "v1"
    status = site.cli("status")
    assert status.returncode == 0
    assert "last reload failed" in status.stdout
    assert "the app import did not finish within 2 s" in status.stdout


def test_reload_with_a_failing_import_reports_the_traceback_line(site, master):
    site.app()
    port = free_port()
    site.ini("web", port)
    master(port)
    write(os.path.join(site.root, "app.py"), "import no_such_module_here\n")
    result = site.cli("reload")
    assert result.returncode == 1
    assert "server 'web': the new generation failed to start: ModuleNotFoundError: No module " \
           "named 'no_such_module_here'; generation 1 keeps serving" in result.stderr
    status = site.cli("status").stdout
    assert "last reload failed" in status
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in status
    assert answer(port)[0] == "v1"


# -- 9: a CPU-runaway worker goes soon after its replacement serves --------------------------------

def test_cpu_runaway_worker_is_killed_soon_after_its_replacement_serves(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=1, threads=2, graceful_timeout=60,
             critical_point="50, 2, 0.5")
    m = master(port)
    old = answer(port)[1]
    spinning = socket.create_connection(("127.0.0.1", port))
    try:
        # an app thread spinning forever on a request that can never finish
        spinning.sendall(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        assert m.wait_log("critical_point", timeout=15)
        assert wait_for(lambda: site.pids("web") and old not in site.pids("web"), 10)
        replaced_at = time.monotonic()
        assert wait_for(lambda: not alive(old), 15)
        assert time.monotonic() - replaced_at < 8           # not graceful_timeout's 60 s
        assert m.wait_log("(pid %d) still spinning 3 s after its replacement took over "
                          "(critical_point); killed (SIGKILL)" % old)
    finally:
        spinning.close()
    assert answer(port)[1] != old


# -- 10: replacements under a kill -9 loop -----------------------------------------------------------

def test_kill_loop_every_replacement_serves_within_2s(site, master):
    """Each worker is killed right after its first answer; the master must not
    take those for boot failures (backing off, then failing the server)."""
    site.app()
    port = free_port()
    site.ini("web", port, processes=1)
    master(port)
    pid = answer(port)[1]
    for _ in range(8):
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        new = answer(port)[1]
        assert time.monotonic() - t0 < 2.0
        assert new != pid
        pid = new
    assert site.server("web")["state"] == "running"


# -- 11: a Django project from its own layout ---------------------------------------------------------

@pytest.fixture
def django_site(site):
    pytest.importorskip("django")
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite"], cwd=site.root,
                   check=True, capture_output=True)
    return site


def django_ini(site, port, **keys):
    lines = ["[server]", "ip = 127.0.0.1", "port = %d" % port]
    lines += ["%s = %s" % kv for kv in keys.items()]
    lines += ["[routes:line]", "/ = mysite/mysite/wsgi.py:application"]
    write(os.path.join(site.root, "servers-enabled", "web.conf"), "\n".join(lines) + "\n")


def test_django_project_layout_without_pythonpath_says_which_key_to_set(django_site):
    site = django_site
    django_ini(site, free_port())
    result = site.cli("check")
    assert result.returncode == 1
    project = os.path.join(site.root, "mysite")
    assert "ModuleNotFoundError: No module named 'mysite'" in result.stderr
    assert ("mysite is in %s, which is not on the import path: set the server's pythonpath = "
            "%s, or working_dir = %s" % (project, project, project)) in result.stderr


@pytest.mark.parametrize("key", ["pythonpath", "working_dir"])
def test_django_project_layout_serves_with_pythonpath_or_working_dir(django_site, master, key):
    site = django_site
    port = free_port()
    django_ini(site, port, **{key: "mysite"})
    check = site.cli("check")
    assert check.returncode == 0, check.stderr
    master(port)
    status, body = get(port, "/")
    assert status == 200 and "django" in body.lower()
    status, body = get(port, "/admin/login/")
    assert status == 200 and "csrfmiddlewaretoken" in body


def test_pythonpath_must_name_directories(site):
    site.app()
    site.ini("web", free_port(), pythonpath="lib, %s" % site.root)
    with pytest.raises(ConfigError) as e:
        load_config(site.root)
    (problem,) = e.value.problems
    assert str(problem) == (
        "servers-enabled/web.conf [server] pythonpath: found 'lib, %s', expected existing "
        "directories separated by commas (%s/lib is not a directory)" % (site.root, site.root))
    os.makedirs(os.path.join(site.root, "lib"))
    (server,) = load_config(site.root).servers
    assert server.pythonpath == (os.path.join(site.root, "lib"), site.root)
