"""An app script's command line and the rest of the original Skitai's script
API, run as real scripts: `python app.py [OPTION]... [COMMAND]`.

Each test writes a script (and what it mounts) to a directory and runs it
with this Python as a subprocess: served ones answer a real client on a free
port; refused ones are checked for their message and exit status.
"""
import email.utils
import http.client
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for, wait_for_port
from helpers.clients import fetch

ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
ENV.pop("SUDO_USER", None)

SCRIPT = r'''
import json, os, sys, threading
import skitaid
skitaid.add_option("-D", "--dist", "distribute mode")
skitaid.add_option(None, "--db=DB_NAME", "use this database")
EARLY = {"db": skitaid.options.get("--db", "testdb"), "devel": skitaid.mode.is_devel()}

def app(env, start):
    path = env["PATH_INFO"]
    if path == "/file":
        with open("data/note.txt") as f:        # relative to the working directory
            out = {"text": f.read()}
    else:
        out = {}
    out.update(early=EARLY, db=skitaid.options.get("--db", "testdb"),
               dist=skitaid.get_option("-D", "--dist"), argv=sys.argv[1:],
               devel=skitaid.mode.is_devel(), cwd=os.getcwd(), uid=os.geteuid(),
               user=__import__("pwd").getpwuid(os.geteuid()).pw_name)
    body = json.dumps(out).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ.get("PORT", "1")))
'''


@pytest.fixture
def site():
    """A world-readable directory holding the script (workers may run as nobody)."""
    d = tempfile.mkdtemp(prefix="skitaid-script-")
    os.chmod(d, 0o755)
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "data", "note.txt"), "w") as f:
        f.write("next to the script")
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(SCRIPT)
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def script(site, *args, env=None, timeout=40, cwd=None):
    return subprocess.run([sys.executable, os.path.join(site, "app.py")] + list(args),
                          cwd=cwd or "/", env=dict(ENV, **(env or {})), capture_output=True,
                          text=True, timeout=timeout)


def get(port, path="/"):
    return json.loads(fetch(port, path).body)


# -- the command line -------------------------------------------------------------------
def test_help_lists_commands_skitaids_options_and_the_apps(site):
    r = script(site, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("usage: app.py [OPTION]... [COMMAND]")
    for word in ("start, -d", "stop, -s", "restart, -r", "reload", "status", "install",
                 "update", "remove", "--devel", "--silent", "--port=PORT_NUMBER",
                 "--user=NAME", "--unit-path=PATH"):
        assert word in out, word
    assert "-D, --dist" in out and "distribute mode" in out
    assert "--db=DB_NAME" in out and "use this database" in out


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option --bogus"),
    (["-x"], "unknown option -x"),
    (["stpo"], "unknown command 'stpo'"),
    (["---profile"], "unknown option ---profile"),
    (["--port=abc"], "--port: a port number 1-65535, got 'abc'"),
    (["--port=0"], "--port: a port number 1-65535, got '0'"),
    (["--port"], "--port needs a value"),
    (["--devel=yes"], "--devel takes no value"),
    (["--dist=1"], "--dist takes no value"),
    (["--db"], "--db needs a value: --db=DB_NAME"),
    (["--db=a", "--db=b"], "--db given twice"),
    (["--devel", "--silent"], "--devel and --silent contradict each other"),
    (["--json", "start"], "--json goes with status, not start"),
    (["--user=nobody"], "--user goes with install/update, not run"),
    (["start", "stop"], "one command at a time: start and stop"),
    (["-d", "-s"], "one command at a time: start and -s"),
])
def test_bad_command_lines_are_usage_errors(site, args, message):
    r = script(site, *args, timeout=20)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage: app.py [OPTION]... [COMMAND]" in r.stderr
    assert message in r.stderr, r.stderr


def test_add_option_refuses_what_cannot_work(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import skitaid
        for args in [("-d", None), (None, "--devel"), (None, "--port=N"), ("D", None),
                     (None, "db"), (None, "--db="), (None, None), ("-DD", None),
                     (None, "---x")]:
            try:
                skitaid.add_option(*args)
                print("ACCEPTED", args)
            except ValueError as e:
                print("ValueError", e)
        skitaid.add_option("-D", "--dist")
        for args in [("-D", None), (None, "--dist")]:
            try:
                skitaid.add_option(*args)
                print("ACCEPTED", args)
            except ValueError as e:
                print("ValueError", e)
        try:
            skitaid.options.get("--undeclared")
        except KeyError as e:
            print("KeyError", e)
        '''))
    r = subprocess.run([sys.executable, str(tmp_path / "app.py")], env=ENV,
                       capture_output=True, text=True, timeout=20)
    lines = r.stdout.splitlines()
    assert "ACCEPTED" not in r.stdout and len(lines) == 12, r.stdout + r.stderr
    assert "-d is skitaid's own option" in lines[0]
    assert "--devel is skitaid's own option" in lines[1]
    assert "--port is skitaid's own option" in lines[2]
    assert "must look like '-D'" in lines[3] and "must look like '--dist'" in lines[4]
    assert "give the value a name" in lines[5]
    assert "give a short option" in lines[6]
    assert "-D is declared already" in lines[9] and "--dist is declared already" in lines[10]
    assert "--undeclared was not declared" in lines[11]


def test_options_reach_the_app_and_skitaids_are_taken_out(site):
    port = free_port()
    with ServerProc([sys.executable, os.path.join(site, "app.py"), "--db=prod", "-D",
                     "--devel", "--port=%d" % port, "--", "extra", "--raw"], site,
                    port=port, env={"PORT": "1"}) as s:     # --port wins over run(port=)
        got = get(s.port)
    assert got["early"] == {"db": "prod", "devel": True}      # at import, before run()
    assert got["db"] == "prod" and got["dist"] is True and got["devel"] is True
    # skitaid's options and the command are gone; the app's own stay, and
    # what follows -- is the app's as written
    assert got["argv"] == ["--db=prod", "-D", "extra", "--raw"]


def test_silent_forces_development_mode_off(site):
    port = free_port()
    with ServerProc([sys.executable, os.path.join(site, "app.py"), "--silent"], site,
                    port=port) as s:
        got = get(s.port)
    assert got["devel"] is False and got["dist"] is None and got["db"] == "testdb"


# -- daemon, working directory, titles -------------------------------------------------------
def _titles(port):
    titles = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []).strip()
        except psutil.Error:
            continue
        if title.startswith("skitaid/app: "):
            try:
                if any(c.laddr and c.laddr[1] == port and c.status == "LISTEN"
                       for c in proc.net_connections("inet")):
                    titles.append((proc.pid, title))
            except psutil.Error:
                pass
    return titles


def test_d_daemonizes_s_stops_and_relative_files_work(site, tmp_path):
    port = str(free_port())
    env = {"PORT": port}
    try:
        started = time.monotonic()
        r = script(site, "-d", env=env, cwd=str(tmp_path))   # another cwd: the script's counts
        assert r.returncode == 0, r.stdout + r.stderr
        assert "skitaid started" in r.stdout
        assert time.monotonic() - started < 30                 # it came back: a daemon
        wait_for_port(int(port))
        got = get(int(port), "/file")
        assert got["text"] == "next to the script" and got["cwd"] == site
        titles = wait_for(lambda: sorted(t for _, t in _titles(int(port))), 10)
        assert titles == ["skitaid/app: master", "skitaid/app: worker #0"], titles
        st = script(site, "status", env=env)
        assert st.returncode == 0 and "server app: running" in st.stdout, st.stdout + st.stderr
        again = script(site, "start", env=env)
        assert again.returncode == 0 and "already running" in again.stdout
        stopped = script(site, "-s", env=env)
        assert stopped.returncode == 0 and "skitaid stopped" in stopped.stdout, stopped.stderr
        with pytest.raises(OSError):
            fetch(int(port), "/", timeout=2)
        assert script(site, "status", env=env).returncode == 3
    finally:
        script(site, "stop", env=env)


def test_restart_and_reload_reach_the_daemon(site):
    port = str(free_port())
    env = {"PORT": port}
    try:
        assert script(site, "start", env=env).returncode == 0
        first = psutil.Process(int(wait_for(lambda: _master(int(port)), 10)))
        r = script(site, "reload", env=env)
        assert r.returncode == 0 and "generation 2" in r.stdout, r.stdout + r.stderr
        r = script(site, "-r", env=env)
        assert r.returncode == 0 and "skitaid stopped" in r.stdout and "skitaid started" in r.stdout
        second = wait_for(lambda: _master(int(port)), 10)
        assert second and second != first.pid
        assert get(int(port))["cwd"] == site
    finally:
        script(site, "stop", env=env)


def _master(port):
    for pid, title in _titles(port):
        if title.endswith(": master"):
            return pid
    return None


# -- systemd unit -------------------------------------------------------------------------
def _unit(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return {k: v for k, _, v in (line.partition("=") for line in lines if "=" in line)}


def test_install_writes_a_unit_whose_execstart_runs(site, tmp_path):
    dest = str(tmp_path / "myapp.service")
    port = free_port()
    r = script(site, "--port=%d" % port, "--db=prod", "install", "--unit-path=" + dest,
               "--user=nobody")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installed %s (User=nobody)" % dest in r.stdout
    unit = _unit(dest)
    assert unit["User"] == "nobody" and unit["WorkingDirectory"] == site
    argv = shlex.split(unit["ExecStart"])
    assert argv == [os.path.abspath(sys.executable), os.path.join(site, "app.py"),
                    "--port=%d" % port, "--db=prod"]
    # what systemd would run: the command, in that directory (as root here)
    with ServerProc(argv, unit["WorkingDirectory"], port=port) as s:
        got = get(s.port, "/file")
    assert got["db"] == "prod" and got["text"] == "next to the script"
    assert got["argv"] == ["--db=prod"]

    # without --user: the one who ran sudo
    r = script(site, "update", "--unit-path=" + dest, env={"SUDO_USER": "nobody"})
    assert r.returncode == 0 and _unit(dest)["User"] == "nobody", r.stderr
    assert shlex.split(_unit(dest)["ExecStart"])[2:] == []
    r = script(site, "install", "--user", "root", "--unit-path", dest)    # the page's spelling
    assert r.returncode == 0 and _unit(dest)["User"] == "root", r.stderr
    r = script(site, "install", "--unit-path=" + dest, "--user=no-such-user-here")
    assert r.returncode == 1 and "no user 'no-such-user-here'" in r.stderr
    r = script(site, "remove", "--unit-path=" + dest)
    assert r.returncode == 0 and "removed %s" % dest in r.stdout
    assert not os.path.exists(dest)
    r = script(site, "update", "--unit-path=" + dest)
    assert r.returncode == 1 and "no unit at %s to update" % dest in r.stderr


def test_install_never_replaces_a_unit_skitaid_did_not_write(site, tmp_path):
    dest = tmp_path / "other.service"
    dest.write_text("[Service]\nExecStart=/bin/true\n")
    r = script(site, "install", "--unit-path=" + str(dest))
    assert r.returncode == 1 and "was not written by skitaid install" in r.stderr
    assert dest.read_text() == "[Service]\nExecStart=/bin/true\n"
    r = script(site, "install", "--unit-path=" + str(dest), "--force")
    assert r.returncode == 0 and "ExecStart=" in dest.read_text()


# -- privileges ------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as sudo would give")
def test_started_with_sudo_workers_run_as_the_sudo_user(site):
    nobody = pwd.getpwnam("nobody")
    port = free_port()
    with ServerProc([sys.executable, os.path.join(site, "app.py")], site, port=port,
                    env={"SUDO_USER": "nobody"}) as s:
        got = get(s.port, "/file")
        assert psutil.Process(s.proc.pid).uids().effective == 0      # the master keeps root
    assert got["uid"] == nobody.pw_uid and got["user"] == "nobody"
    assert got["text"] == "next to the script"
    # the same as a daemon
    env = {"PORT": str(free_port()), "SUDO_USER": "nobody"}
    try:
        r = script(site, "start", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        got = get(int(env["PORT"]), "/file")
        assert got["user"] == "nobody" and got["cwd"] == site
        master = wait_for(lambda: _master(int(env["PORT"])), 10)
        assert psutil.Process(master).uids().effective == 0
    finally:
        script(site, "stop", env=env)


# -- setup functions -------------------------------------------------------------------------
def run_code(tmp_path, code, args=()):
    (tmp_path / "app.py").write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(tmp_path / "app.py")] + list(args), env=ENV,
                          capture_output=True, text=True, timeout=30, cwd=str(tmp_path))


def test_setup_functions_refuse_bad_values(tmp_path):
    r = run_code(tmp_path, '''
        import skitaid
        def app(env, start):
            pass
        cases = [lambda: skitaid.config_executors(workers=-1),
                 lambda: skitaid.config_executors(workers="four"),
                 lambda: skitaid.config_executors(zombie_timeout=-5),
                 lambda: skitaid.config_executors(process_start_method="threads"),
                 lambda: skitaid.set_proxy_keep_alive(),
                 lambda: skitaid.set_proxy_keep_alive(channel=-1),
                 lambda: skitaid.set_proxy_keep_alive(tunnel="long"),
                 lambda: skitaid.enable_file_logging(42),
                 lambda: skitaid.enable_file_logging("app.py"),
                 lambda: skitaid.mount("/", app, pref=object()),
                 lambda: skitaid.mount("/s", ".", pref=skitaid.preference()),
                 lambda: setattr(skitaid.preference(), "debgu", True),
                 lambda: setattr(skitaid.preference(), "debug", "yes")]
        for case in cases:
            try:
                case()
                print("ACCEPTED")
            except (ValueError, TypeError, AttributeError) as e:
                print(type(e).__name__, e)
        ''')
    lines = r.stdout.splitlines()
    assert len(lines) == 13 and "ACCEPTED" not in r.stdout, r.stdout + r.stderr
    assert lines[0] == "ValueError skitaid.config_executors(): expected an integer >= 0, got -1"
    assert lines[1].startswith("ValueError skitaid.config_executors(): expected an integer")
    assert "config_executors(): expected a number of seconds >= 0" in lines[2]
    assert "config_executors(): expected forkserver, spawn or fork" in lines[3]
    assert "set_proxy_keep_alive(): give channel= or tunnel=" in lines[4]
    assert "set_proxy_keep_alive(): expected a number of seconds >= 0, got -1" in lines[5]
    assert "set_proxy_keep_alive(): expected a number of seconds >= 1, got 'long'" in lines[6]
    assert "enable_file_logging(): expected a directory path, got 42" in lines[7]
    assert "enable_file_logging(): expected a directory" in lines[8]
    assert lines[9].startswith("TypeError") and "pref comes from skitaid.preference()" in lines[9]
    assert "pref applies to apps, not to static mounts" in lines[10]
    assert lines[11].startswith("AttributeError") and "not 'debgu'" in lines[11]
    assert "pref.debug is True or False, got 'yes'" in lines[12]


def test_setup_functions_are_the_config_keys(tmp_path):
    r = run_code(tmp_path, '''
        import skitaid
        from skitaid import api
        def app(env, start):
            pass
        skitaid.config_executors(workers=3, zombie_timeout=7, process_start_method="spawn")
        skitaid.set_proxy_keep_alive(channel=30, tunnel=100)
        with skitaid.preference() as pref:
            pref.debug = True
            pref.use_reloader = True
            pref.config["A"] = 1
            pref.config.B = 2
            skitaid.mount("/", app, pref=pref)
        s = api.build_config().servers[0]
        r = s.hosts[0].routes[0]
        print(s.executor_workers, s.zombie_timeout, s.process_start_method,
              s.proxy_keep_alive, s.tunnel_timeout, r.debug, r.reload, sorted(r.app_config.items()))
        ''')
    assert r.stdout.split() == ["3", "7.0", "spawn", "30.0", "100.0", "True", "True",
                                "[('A',", "1),", "('B',", "2)]"], r.stdout + r.stderr


def test_pref_config_is_merged_into_the_apps_config(serve):
    s = serve('''
        import json, os, skitaid
        def flask_like(env, start):
            body = json.dumps(flask_like.config).encode()
            start("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        flask_like.config = {"A": "app", "B": "app"}
        def bare(env, start):
            body = json.dumps(bare.config).encode()
            start("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        with skitaid.preference() as pref:
            pref.config["B"] = "pref"
            pref.config.C = 3
            skitaid.mount("/f", flask_like, pref=pref)
        with skitaid.preference() as pref:
            pref.config = {"only": True}
            skitaid.mount("/b", bare, pref=pref)
        skitaid.run(port=int(os.environ["PORT"]))
        ''')
    assert json.loads(fetch(s.port, "/f/").body) == {"A": "app", "B": "pref", "C": 3}
    assert json.loads(fetch(s.port, "/b/").body) == {"only": True}


def test_config_executors_size_and_zombie_timeout(serve):
    s = serve('''
        import json, os, threading, time, skitaid
        from skitaid import was
        skitaid.config_executors(workers=1, zombie_timeout=1)
        def name():
            return threading.current_thread().name
        def app(env, start):
            if env["PATH_INFO"] == "/slow":
                t = time.monotonic()
                r = was.Thread(time.sleep, 5).dispatch(timeout=20)
                out = {"status": r.status, "took": time.monotonic() - t}
            else:
                out = {"names": sorted({was.Thread(name).fetch(10) for _ in range(4)})}
            body = json.dumps(out).encode()
            start("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        skitaid.mount("/", app)
        skitaid.run(port=int(os.environ["PORT"]))
        ''')
    assert len(json.loads(fetch(s.port, "/").body)["names"]) == 1     # one thread in the pool
    got = json.loads(fetch(s.port, "/slow", timeout=30).body)
    from skitaid import STA_TIMEOUT
    assert got["status"] == STA_TIMEOUT and got["took"] < 4.5, got


def test_enable_file_logging_writes_request_and_error_logs(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import os, skitaid
        def app(env, start):
            start("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        skitaid.enable_file_logging("logs")
        skitaid.mount("/", app)
        skitaid.run(port=int(os.environ["PORT"]))
        '''))
    port = free_port()
    console = open(tmp_path / "console.txt", "wb")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "app.py")], cwd="/",
                            env=dict(ENV, PORT=str(port)), stdout=console,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        logs = tmp_path / "logs"
        assert wait_for(lambda: (logs / "error.log").exists() and
                        " ready: " in (logs / "error.log").read_text(), 15)
        assert fetch(port, "/hello").body == b"ok"
        request_log = logs / "app-request.log"
        assert wait_for(lambda: request_log.exists() and "/hello" in request_log.read_text(), 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        console.close()
    assert "/hello" not in (tmp_path / "console.txt").read_text()


# -- HTTP details -----------------------------------------------------------------------------
def test_static_files_carry_expires_and_devel_turns_max_age_off(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "a.css").write_text("body{}")
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import os, skitaid
        skitaid.mount("/", "static")
        skitaid.set_max_age("/", 3600)
        skitaid.run(port=int(os.environ["PORT"]))
        '''))
    with ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path)) as s:
        r = fetch(s.port, "/a.css")
        again = fetch(s.port, "/a.css", headers={"If-None-Match": r.header("ETag")})
    assert r.status == 200 and r.header("Cache-Control") == "max-age=3600"
    expires = email.utils.parsedate_to_datetime(r.header("Expires")).timestamp()
    assert abs(expires - (time.time() + 3600)) < 30
    assert again.status == 304 and again.header("Expires")
    with ServerProc([sys.executable, str(tmp_path / "app.py"), "--devel"], str(tmp_path)) as s:
        r = fetch(s.port, "/a.css")
    assert r.header("Cache-Control") == "no-cache" and r.header("Expires") is None


RANGE_APP = '''
import os, skitaid
def app(env, start):
    headers = [("Content-Type", "text/plain"), ("Content-Length", "10"), ("ETag", '"v1"')]
    if env["PATH_INFO"] == "/own" and env.get("HTTP_RANGE"):
        start("206 Partial Content", [("Content-Range", "bytes 0-0/10"), ("Content-Length", "1")])
        return [b"X"]
    if env["PATH_INFO"] == "/stream":
        start("200 OK", [("Content-Type", "text/plain")])
        return iter([b"01234", b"56789"])
    start("200 OK", headers)
    return [b"01234", b"56789"]
skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]))
'''


def test_range_on_a_wsgi_apps_complete_answer(serve):
    s = serve(RANGE_APP)
    r = fetch(s.port, "/", headers={"Range": "bytes=2-4"})
    assert (r.status, r.body, r.header("Content-Range")) == (206, b"234", "bytes 2-4/10")
    assert r.header("Content-Length") == "3"
    r = fetch(s.port, "/", headers={"Range": "bytes=-3"})
    assert (r.status, r.body) == (206, b"789")
    r = fetch(s.port, "/", headers={"Range": "bytes=20-"})
    assert r.status == 416 and r.header("Content-Range") == "bytes */10"
    # what stays the app's answer
    assert fetch(s.port, "/", headers={"Range": "bytes=0-1,4-5"}).status == 200
    assert fetch(s.port, "/", headers={"Range": "bytes=2-4", "If-Range": '"v0"'}).body == \
        b"0123456789"
    r = fetch(s.port, "/", headers={"Range": "bytes=2-4", "If-Range": '"v1"'})
    assert r.status == 206
    assert fetch(s.port, "/", method="HEAD", headers={"Range": "bytes=2-4"}).status == 200
    assert fetch(s.port, "/own", headers={"Range": "bytes=5-"}).body == b"X"
    assert fetch(s.port, "/stream", headers={"Range": "bytes=2-4"}).body == b"0123456789"


# -- the 0.20 page's run() -------------------------------------------------------------------
def test_run_with_mount_list_proxy_and_certificate(tmp_path):
    from test_sni import make_cert
    make_cert(tmp_path, "site", "localhost", ["localhost"], passphrase="s3cret")
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import os, skitaid
        def app(env, start):
            start("200 OK", [("Content-Length", "3")])
            return [b"one"]
        def app2(env, start):
            start("200 OK", [("Content-Length", "3")])
            return [b"two"]
        if __name__ == "__main__":
            skitaid.run(mount=[("/", __file__), ("/flask", (__file__, "app2"))], proxy=True,
                        certfile="site.pem", keyfile="site.key", passphrase="s3cret",
                        port=int(os.environ["PORT"]))
        '''))
    import ssl
    port = free_port()
    with ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path), port=port):
        ctx = ssl.create_default_context(cafile=str(tmp_path / "site.pem"))
        got = {}
        for path in ("/", "/flask/"):
            conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
            conn.request("GET", path)
            got[path] = conn.getresponse().read()
            conn.close()
        # the forward proxy is on: an absolute URI is fetched from that origin
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
        conn.request("GET", "http://127.0.0.1:1/")
        proxied = conn.getresponse().status
        conn.close()
    assert got == {"/": b"one", "/flask/": b"two"}
    assert proxied == 502           # tried (nothing listens there), not served as a page


# -- working directory of config-file servers -------------------------------------------------
def test_config_file_servers_work_in_their_first_app_files_directory(serve_cli, tmp_path):
    port = free_port()
    conf = tmp_path / "conf"
    (conf / "servers-enabled").mkdir(parents=True)
    (conf / "sites" / "main" / "data").mkdir(parents=True)
    (conf / "skitaid.conf").write_text("[global]\nuser =\n")
    (conf / "sites" / "main" / "data" / "note.txt").write_text("beside the app")
    (conf / "sites" / "main" / "app.py").write_text(textwrap.dedent('''
        import os
        def app(env, start):
            body = (os.getcwd() + "|" + open("data/note.txt").read()).encode()
            start("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        '''))
    (conf / "servers-enabled" / "web.conf").write_text(
        "[server]\nip = 127.0.0.1\nport = %d\n\n[routes:line]\n/ = sites/main/app.py:app\n" % port)
    s = serve_cli("run", "-c", str(conf), port=port)
    assert fetch(s.port, "/").body.decode() == "%s|beside the app" % (conf / "sites" / "main")


# -- the forward proxy's keep-alive --------------------------------------------------------
def test_proxy_channel_keep_alive_keeps_origin_connections_longer(serve):
    from test_script_api import CountingBackend
    backend = CountingBackend()
    try:
        s = serve('''
            import os, skitaid
            def app(env, start):
                start("200 OK", [("Content-Length", "0")])
                return [b""]
            skitaid.enable_proxy()
            skitaid.set_backend_keep_alive(1)
            skitaid.set_proxy_keep_alive(channel=30, tunnel=60)
            skitaid.mount("/", app)
            skitaid.run(port=int(os.environ["PORT"]))
            ''')
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            conn.request("GET", backend.url + "/x")
            assert conn.getresponse().read() is not None
            conn.close()
            time.sleep(2.5)         # longer than backend_keep_alive, shorter than channel
        assert backend.hits == 2 and backend.connections == 1
    finally:
        backend.close()
