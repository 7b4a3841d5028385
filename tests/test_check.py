"""`skitaid check`: every kind of mistake, named by file, section and key.

Parse-level mistakes in INI are covered in test_config.py; here: their YAML
forms through the real command, and the deep checks (bind, import as the
workers' user, paths)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_for_port
from skitaid.config import DEFAULT_DIR, load_config
from skitaid.daemon.preflight import deep_check, held_by
from skitaid.daemon.pidfile import read_pid

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"


@pytest.fixture
def etc():
    """A config dir the workers' user (nobody, when the tests run as root) can read."""
    d = Path(tempfile.mkdtemp(prefix="skitaid-check-"))
    os.chmod(d, 0o755)
    (d / "servers-enabled").mkdir()
    (d / "www" / "static").mkdir(parents=True)
    (d / "www" / "app.py").write_text(APP)
    if os.geteuid() == 0:
        # workers keep the starting user unless one is set: set one, as in production
        (d / "skitaid.conf").write_text("[global]\nuser = nobody\ngroup = nogroup\n")
    yield d
    shutil.rmtree(d)


def write(root, name, text):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_check(root, env=None):
    full = dict(os.environ, PYTHONPATH=ROOT)
    full.pop("SKITAID_CONFIG_DIR", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "skitaid", "check", "-c", str(root)],
                          capture_output=True, text=True, env=full, timeout=90)


# ---------------------------------------------------------------- the command

def test_check_ok(etc):
    port = free_port()
    write(etc, "lib/mypkg/__init__.py", "")
    write(etc, "lib/mypkg/web.py", APP.replace("def app", "def application"))
    write(etc, "servers-enabled/web.conf", """\
        [server]
        ip = 127.0.0.1
        port = %d
        workers = 3
        [routes:line]
        default
        / = www/static
        / = www/app.py:app
        /api/ = @backend
        /mod = mypkg.web:application
        [@backend]
        members = 10.0.0.1:5000 2, 10.0.0.2:5000
    """ % port)
    result = run_check(etc, env={"PYTHONPATH": ROOT + os.pathsep + str(etc / "lib")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "configuration OK: 1 server(s)"
    assert "web" in lines[1] and "127.0.0.1:%d" % port in lines[1] and "@backend" in lines[1]


def test_check_parse_problems_only_on_stderr(etc):
    write(etc, "servers-enabled/web.conf", "[server]\nport = abc\nthreads = x\n"
                                            "[routes:line]\n/ = www/static\n")
    result = run_check(etc)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "servers-enabled/web.conf:2 [server] port: found 'abc', expected an integer 1-65535",
        "servers-enabled/web.conf:3 [server] threads: found 'x', expected an integer >= 0",
    ]


@as_root          # the sample logs to /var/log/skitaid: only root may create it
def test_check_builtin_default():
    result = run_check(DEFAULT_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK: 1 server(s)\n  default  http://127.0.0.1:5000")


YAML_CASES = [
    ("server: {prot: 80}\nroutes: {/: www/static}\n",
     "servers-enabled/web.yaml:1 [server] prot: found '80', expected a known key of [server] "
     "(did you mean 'port'?)"),
    ("server: {threads: many}\nroutes: {/: www/static}\n",
     "servers-enabled/web.yaml:1 [server] threads: found 'many', expected an integer >= 0"),
    ("server: {port: 0}\nroutes: {/: www/static}\n",
     "servers-enabled/web.yaml:1 [server] port: found '0', expected an integer 1-65535"),
    ("server: {ssl: yes, certfile: nope.pem}\nroutes: {/: www/static}\n",
     "servers-enabled/web.yaml:1 [server] certfile: found 'nope.pem', expected an existing file"),
    ("server: {}\nroutes: {/: www/nope.py:app}\n",
     "servers-enabled/web.yaml:2 [routes] /: found 'www/nope.py:app', expected an existing Python file"),
    ("server: {}\nhosts:\n  .example.com: {/api: '@ghost'}\n",
     "servers-enabled/web.yaml:3 [hosts: .example.com] /api: found '@ghost', expected an alias "
     "defined as [@ghost]"),
    ("server: {}\nroutes: {/: www/static}\n'@b': {members: 'h:1 heavy'}\n",
     "servers-enabled/web.yaml:3 [@b] members: found 'h:1 heavy', expected a positive integer weight"),
]


@pytest.mark.parametrize("text, expected", YAML_CASES)
def test_yaml_mistakes_through_the_command(etc, text, expected):
    write(etc, "servers-enabled/web.yaml", text)
    result = run_check(etc)
    assert result.returncode == 1
    assert any(line.startswith(expected) for line in result.stderr.splitlines()), result.stderr


def test_two_servers_same_address_ini_and_yaml(etc):
    port = free_port()
    write(etc, "servers-enabled/a.conf", "[server]\nip = 0.0.0.0\nport = %d\n"
                                          "[routes:line]\n/ = www/static\n" % port)
    write(etc, "servers-enabled/b.yaml", "server: {ip: 127.0.0.1, port: %d}\n"
                                          "routes: {/: www/static}\n" % port)
    result = run_check(etc)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "servers-enabled/b.yaml:1 [server] port: found '%d', expected a port not used by "
        "servers-enabled/a.conf (0.0.0.0:%d)" % (port, port))


# ---------------------------------------------------------------- apps

BROKEN_APPS = {
    "missing.py": ("import no_such_module_x\n", "ModuleNotFoundError: No module named 'no_such_module_x'"),
    "raises.py": ("print('noise on stdout')\nraise RuntimeError('database not configured')\n",
                  "RuntimeError: database not configured"),
    "syntax.py": ("def app(:\n", "SyntaxError: invalid syntax"),
    "noattr.py": ("x = 1\n", "has no attribute 'app'"),
    "exits.py": ("import os\nos._exit(3)\n", "the import ended the process"),
}


def test_each_broken_app_is_named(etc):
    port = free_port()
    routes = "".join("/%s = www/%s:app\n" % (name[:-3], name) for name in BROKEN_APPS)
    for name, (code, _) in BROKEN_APPS.items():
        write(etc, "www/" + name, code)
    write(etc, "servers-enabled/web.conf", "[server]\nport = %d\n[routes:line]\n/ = www/app.py:app\n%s"
          % (port, routes))
    write(etc, "servers-enabled/api.yaml", "server: {port: %d}\nroutes:\n  /: www/app.py:app\n"
                                            "  /m: no_such_pkg.web:app\n" % free_port())
    result = run_check(etc)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    user = "nobody" if os.geteuid() == 0 else None
    assert lines[0].startswith("servers-enabled/api.yaml:4 [routes] /m: found 'no_such_pkg.web:app', "
                               "expected an app that imports as %s" % (user or ""))
    assert lines[0].endswith("(ModuleNotFoundError: No module named 'no_such_pkg')")
    by_prefix = {}
    for line in lines[1:]:
        assert line.startswith("servers-enabled/web.conf:"), line
        where, section, prefix = line.split()[:3]
        assert section == "[routes:line]", line
        by_prefix[prefix.rstrip(":")] = line
        # each route's own line: they follow `/ = www/app.py:app` on line 4
        assert int(where.split(":")[1]) == 5 + list(BROKEN_APPS).index(prefix[1:-1] + ".py")
    # exits.py ends the process: the apps after it are not reached, so it is last
    assert list(by_prefix) == ["/missing", "/raises", "/syntax", "/noattr", "/exits"]
    for name, (_, error) in BROKEN_APPS.items():
        line = by_prefix["/" + name[:-3]]
        assert "found '%s:app'" % (etc / "www" / name) in line
        assert error in line, line
    assert "noise on stdout" not in result.stdout


def test_app_import_time_limit(etc):
    write(etc, "www/slow.py", "import time\ntime.sleep(30)\n")
    write(etc, "servers-enabled/web.conf", "[server]\nport = %d\n[routes:line]\n/ = www/app.py:app\n"
                                            "/slow = www/slow.py:app\n" % free_port())
    problems = deep_check(load_config(str(etc)), timeout=2)
    assert [(p.file, p.section, p.key) for p in problems] == [
        ("servers-enabled/web.conf", "routes:line", "/slow")]
    assert "the import did not finish within 2 s" in problems[0].expected


@as_root
def test_apps_import_as_the_workers_user(etc):
    """An app only root can read fails the check: workers would not import it."""
    private = etc / "private"
    private.mkdir(mode=0o700)
    write(private, "app.py", APP)
    os.chmod(private, 0o700)
    write(etc, "servers-enabled/web.conf", "[server]\nport = %d\n[routes:line]\n/ = private/app.py:app\n"
          % free_port())
    (p,) = deep_check(load_config(str(etc)))
    assert (p.file, p.section, p.key) == ("servers-enabled/web.conf", "routes:line", "/")
    assert p.expected.startswith("an app that imports as nobody (") and "PermissionError: cannot read %s" % (private / "app.py") in p.expected
    # the same app as a user who may read it
    write(etc, "skitaid.conf", "[global]\nuser = root\n")
    assert deep_check(load_config(str(etc))) == []


@as_root
def test_unknown_user_and_unwritable_request_log(etc):
    write(etc, "servers-enabled/web.conf", "[server]\nport = %d\nuser = no-such-user-x\n"
                                            "[routes:line]\n/ = www/app.py:app\n" % free_port())
    write(etc, "servers-enabled/api.conf", "[server]\nport = %d\nrequest_log_file = /root/api.log\n"
                                            "[routes:line]\n/ = www/app.py:app\n" % free_port())
    problems = [str(p) for p in deep_check(load_config(str(etc)))]
    assert problems == [
        "servers-enabled/api.conf [server] request_log_file: found '/root/api.log', expected a "
        "file nobody can create or append to",
        "servers-enabled/web.conf [server] user: found 'no-such-user-x', expected a user and group "
        "the workers can run as (unknown user 'no-such-user-x')",
    ]


# ---------------------------------------------------------------- listeners and paths

def test_port_bound_by_another_process(etc):
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""\
        import socket, sys, time
        s = socket.socket(); s.bind(("127.0.0.1", %d)); s.listen(1)
        print("ready", flush=True); time.sleep(60)
    """ % port)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        write(etc, "servers-enabled/web.yaml", "server: {ip: 127.0.0.1, port: %d}\n"
                                                "routes: {/: www/static}\n" % port)
        result = run_check(etc)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "servers-enabled/web.yaml:1 [server] port: found '%d', expected a port that can be "
            "bound on 127.0.0.1:%d (Address already in use)" % (port, port)]
        # held by the running master itself: fine
        assert deep_check(load_config(str(etc)), held=[("127.0.0.1", port)]) == []
    finally:
        holder.kill()
        holder.wait()


def test_addresses_of_a_running_server_count_as_held(etc):
    port = free_port()
    sock = str(etc / "run" / "api.sock")
    write(etc, "servers-enabled/web.conf", "[server]\nip = 127.0.0.1\nport = %d\n"
                                            "[routes:line]\n/ = www/app.py:app\n" % port)
    write(etc, "servers-enabled/api.conf", "[server]\naddress = unix:%s\n"
                                            "[routes:line]\n/ = www/app.py:app\n" % sock)
    proc = subprocess.Popen([sys.executable, "-m", "skitaid", "run", "-c", str(etc)],
                            env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        config = load_config(str(etc))
        busy = sorted(str(p) for p in deep_check(config))
        assert busy[0].startswith("servers-enabled/api.conf [server] address: found 'unix:%s', "
                                  "expected a UNIX socket path that can be bound (another process "
                                  "listens on it)" % sock)
        assert busy[1].startswith("servers-enabled/web.conf [server] port: found '%d'" % port)
        assert deep_check(config, held=held_by(proc.pid)) == []
        # `skitaid check` finds the running server through its pidfile
        write(etc, "skitaid.conf", "[global]\npidfile = %s\n" % (etc / "run" / "skitaid.pid"))
        (etc / "run" / "skitaid.pid").write_text("%d\n" % proc.pid)
        assert read_pid(str(etc / "run" / "skitaid.pid")) == proc.pid
        result = run_check(etc)
        assert result.returncode == 0, result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert read_pid(str(etc / "run" / "skitaid.pid")) is None


def test_global_paths_must_be_creatable(etc):
    write(etc, "www/afile", "x")
    write(etc, "skitaid.conf", """\
        [global]
        log_path = www/afile/logs
        var_path = www/new/deeper
        run_path = www/static
        pidfile = www/app.py/skitaid.pid
    """)
    write(etc, "servers-enabled/web.conf", "[server]\nport = %d\n[routes:line]\n/ = www/static\n"
          % free_port())
    result = run_check(etc)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "skitaid.conf:2 [global] log_path: found '%s/www/afile/logs', expected a directory the "
        "master can create or write to (%s/www/afile is not a directory)" % (etc, etc),
        "skitaid.conf:5 [global] pidfile: found '%s/www/app.py/skitaid.pid', expected a directory "
        "the master can create or write to (%s/www/app.py is not a directory)" % (etc, etc),
    ]
