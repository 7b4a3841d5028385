"""Development mode: the master watches the sources and reloads on a save.

Real servers (`skitaid run -c DIR` and app scripts), real edits of the files
they serve, a real HTTP client. Every wait polls with a deadline.
"""
import http.client
import json
import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for
from test_daemon import Site, get, write

WSGI_APP = '''
import helper
def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("kaboom")
    body = ("%s %s" % ({text!r}, helper.WORD)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

FLASK_APP = '''
from flask import Flask
app = Flask(__name__)
{extra}
@app.route("/")
def index():
    return {text!r}
@app.route("/boom")
def boom():
    raise RuntimeError("kaboom")
'''


def save(path, text):
    """Write as an editor does: the whole file, a new mtime."""
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


def body(port, path="/"):
    try:
        return get(port, path, timeout=5)[1]
    except OSError as e:
        return "error: %r" % e


def served(port, text, timeout=15.0):
    return wait_for(lambda: body(port) == text, timeout, 0.05)


def status(site):
    return site.status()["servers"][0]


def settled(site):
    """No reload in progress: one generation, every worker ready."""
    s = site.status()
    server = s["servers"][0]
    return (not s["reloading"] and server["pending_generation"] is None
            and {w["generation"] for w in server["workers"]} == {server["generation"]}
            and all(w["state"] == "ready" for w in server["workers"]) and s)


def watchers(master_pid):
    try:
        kids = psutil.Process(master_pid).children()
    except psutil.Error:
        return []
    out = []
    for p in kids:
        try:
            if "skitaid.daemon.watch" in " ".join(p.cmdline()) or "watcher" in p.name():
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def devel_site(tmp_path):
    """A config dir serving app.py (+ helper.py next to it) with devel = yes."""
    site = Site(tmp_path)
    started = []

    def start(app_text=None, args=("run",), **keys):
        port = free_port()
        save(os.path.join(site.root, "helper.py"), 'WORD = "one"\n')
        save(os.path.join(site.root, "app.py"), app_text or WSGI_APP.format(text="v1"))
        keys.setdefault("devel", "yes")
        site.ini("web", port, graceful_timeout=5, **keys)
        proc = ServerProc([sys.executable, "-m", "skitaid"] + list(args) + ["-c", site.root],
                          site.root, port=port)
        started.append(proc)
        site.port, site.proc = port, proc
        if (keys["devel"] == "yes" or "--devel" in args) and "--silent" not in args:
            assert proc.wait_log("watching the sources", 15), proc.log
        return site

    yield start
    for proc in started:
        proc.stop()


def test_an_edited_wsgi_app_and_its_imported_module_are_served(devel_site):
    site = devel_site()
    assert body(site.port) == "v1 one"
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v2"))
    assert served(site.port, "v2 one"), site.proc.log
    save(os.path.join(site.root, "helper.py"), 'WORD = "two"\n')
    assert served(site.port, "v2 two"), site.proc.log
    assert "source changed:" in site.proc.log


def test_a_broken_save_keeps_the_old_generation_and_logs_the_traceback_once(devel_site):
    site = devel_site(processes=2)
    assert settled(site)
    generation = status(site)["generation"]
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v1") + "\ndef broken(:\n")
    assert site.proc.wait_log("abandoned", 15), site.proc.log
    assert wait_for(lambda: settled(site), 15)
    assert body(site.port) == "v1 one"
    assert status(site)["generation"] == generation
    log = site.proc.log
    assert "SyntaxError" in log and "def broken(:" in log, log
    assert log.count("could not start") == 1, log       # not one per worker
    assert log.count("SyntaxError: invalid syntax") == 1, log
    # the next good save recovers
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v3"))
    assert served(site.port, "v3 one"), site.proc.log


def test_an_exception_at_import_keeps_serving_and_recovers(devel_site):
    site = devel_site()
    save(os.path.join(site.root, "app.py"), "import no_such_module_anywhere\n")
    assert site.proc.wait_log("abandoned", 15), site.proc.log
    assert body(site.port) == "v1 one"
    assert "No module named 'no_such_module_anywhere'" in site.proc.log
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v4"))
    assert served(site.port, "v4 one"), site.proc.log


def test_twenty_saves_in_a_second_make_one_reload(devel_site):
    site = devel_site()
    assert settled(site)
    before = status(site)["generation"]
    path = os.path.join(site.root, "app.py")
    start = time.monotonic()
    for n in range(20):
        save(path, WSGI_APP.format(text="burst %d" % n))
        time.sleep(max(0.0, start + (n + 1) * 0.045 - time.monotonic()))
    assert time.monotonic() - start < 1.5
    assert served(site.port, "burst 19 one"), site.proc.log
    assert wait_for(lambda: settled(site), 15)
    time.sleep(0.5)         # a second reload would have started by now (QUIET is 0.2 s)
    s = settled(site)
    assert s and s["servers"][0]["generation"] == before + 1, s
    assert site.proc.log.count("source changed:") == 1


def test_caches_logs_and_vcs_files_do_not_reload(devel_site, tmp_path):
    # (the directory exists before: a file written into a directory created a moment
    # ago can come before inotify watches that directory)
    os.makedirs(str(tmp_path / "templates"))
    site = devel_site()
    assert settled(site)
    before = status(site)["generation"]
    for rel in ("__pycache__/app.cpython-311.pyc", "__pycache__/x.py", ".git/index",
                ".git/hooks/x.py", "venv/lib/mod.py", "log/extra.py", "run/other.py",
                "notes.txt", "static/style.css", ".#app.py", "app.py~"):
        write(os.path.join(site.root, rel), "x = 1\n")
    time.sleep(1.0)         # a reload would have begun: QUIET is 0.2 s
    assert status(site)["generation"] == before
    assert "source changed" not in site.proc.log
    # a template is a source
    write(os.path.join(site.root, "templates", "page.html"), "<p>hi</p>\n")
    assert wait_for(lambda: status(site)["generation"] == before + 1, 10), site.proc.log


def test_without_devel_no_watcher_runs(devel_site):
    site = devel_site(devel="no")
    pid = site.status()["pid"]
    assert not watchers(pid)
    assert "watching the sources" not in site.proc.log
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v2"))
    time.sleep(1.0)
    assert body(site.port) == "v1 one"


def test_run_devel_switch_watches_and_silent_wins(devel_site, tmp_path):
    site = devel_site(devel="no", args=("run", "--devel"))
    assert watchers(site.status()["pid"])
    assert "kaboom" in get(site.port, "/boom")[1]        # --devel: debug pages
    save(os.path.join(site.root, "app.py"), WSGI_APP.format(text="v2"))
    assert served(site.port, "v2 one"), site.proc.log
    site.proc.stop()
    site = devel_site(args=("run", "--silent"))
    assert not watchers(site.status()["pid"])
    status_, text = get(site.port, "/boom")
    assert status_ == 500 and "kaboom" not in text and "Traceback" not in text


def test_an_app_file_asking_for_the_reloader_gets_it(devel_site):
    """app.use_reloader = True in an app file: the master (which never imports
    it) hears it from the worker and starts watching."""
    site = devel_site(FLASK_APP.format(text="flask v1", extra="app.use_reloader = True"),
                      devel="no")
    assert site.proc.wait_log("watching the sources", 15), site.proc.log
    assert watchers(site.status()["pid"])
    save(os.path.join(site.root, "app.py"),
         FLASK_APP.format(text="flask v2", extra="app.use_reloader = True"))
    assert served(site.port, "flask v2"), site.proc.log


def test_debug_pages_per_mount(tmp_path):
    """app.debug = True (Flask's) shows the traceback for that mount only."""
    site = Site(tmp_path)
    save(os.path.join(site.root, "loud.py"), FLASK_APP.format(text="a", extra="app.debug = True"))
    save(os.path.join(site.root, "quiet.py"), FLASK_APP.format(text="b", extra=""))
    save(os.path.join(site.root, "plain.py"), '''
        def app(environ, start_response):
            raise RuntimeError("plain kaboom")
        app.debug = True
        ''')
    port = free_port()
    write(os.path.join(site.root, "servers-enabled", "web.conf"), """
        [server]
        ip = 127.0.0.1
        port = %d
        [routes:line]
        /loud = %s/loud.py:app
        /quiet = %s/quiet.py:app
        /plain = %s/plain.py:app
        """ % (port, site.root, site.root, site.root))
    proc = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", site.root], site.root,
                      port=port)
    try:
        code, text = get(port, "/loud/boom")
        assert code == 500 and "kaboom" in text and "Traceback" in text
        code, text = get(port, "/quiet/boom")
        assert code == 500 and "kaboom" not in text
        code, text = get(port, "/plain/")
        assert code == 500 and "plain kaboom" in text
    finally:
        proc.stop()
    # --silent: no traceback anywhere
    proc = ServerProc([sys.executable, "-m", "skitaid", "run", "--silent", "-c", site.root],
                      site.root, port=port)
    try:
        for path in ("/loud/boom", "/plain/"):
            code, text = get(port, path)
            assert code == 500 and "kaboom" not in text, path
    finally:
        proc.stop()


SCRIPT = '''
import os
import skitaid
import helper
{flask}
def plain(environ, start_response):
    body = ("%s %s %s" % ({text!r}, helper.WORD, skitaid.is_devel())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
{flag}
if __name__ == "__main__":
    skitaid.mount("/", plain)
    {mount_flask}
    skitaid.run(port=int(os.environ["PORT"]), name="devel-script")
'''


def test_a_script_app_reloads_with_use_reloader(serve, tmp_path):
    """The script is the master too: each new worker imports its code afresh."""
    (tmp_path / "helper.py").write_text('WORD = "one"\n')
    flask = 'from flask import Flask\nfl = Flask(__name__)\nfl.route("/")(lambda: {ftext!r})\n'
    def script(text, ftext):
        return SCRIPT.format(text=text, flag="plain.use_reloader = True",
                             flask=flask.format(ftext=ftext),
                             mount_flask='skitaid.mount("/flask", fl)')
    s = serve(script("s1", "f1"))
    assert s.wait_log("watching the sources", 15), s.log
    assert body(s.port) == "s1 one False"
    assert body(s.port, "/flask/") == "f1"
    save(str(tmp_path / "app.py"), script("s2", "f2"))
    assert served(s.port, "s2 one False"), s.log
    assert body(s.port, "/flask/") == "f2"
    (tmp_path / "helper.py").write_text('WORD = "two"\n')
    assert served(s.port, "s2 two False"), s.log
    # broken: the old code serves; fixed: the new one
    save(str(tmp_path / "app.py"), script("s3", "f3") + "\nraise ValueError('bad save')\n")
    assert wait_for(lambda: "abandoned" in s.log, 15), s.log
    assert body(s.port) == "s2 two False"
    assert "ValueError: bad save" in s.log
    save(str(tmp_path / "app.py"), script("s4", "f4"))
    assert served(s.port, "s4 two False"), s.log


def test_a_script_with_devel_mode_set(serve, tmp_path):
    """What the script's --devel switch does: mode.set_mode(devel=True)."""
    (tmp_path / "helper.py").write_text('WORD = "one"\n')
    text = SCRIPT.format(text="d1", flag="from skitaid import mode\nmode.set_mode(devel=True)",
                         flask="", mount_flask="")
    s = serve(text)
    assert s.wait_log("watching the sources", 15), s.log
    assert body(s.port) == "d1 one True"
    save(str(tmp_path / "app.py"), text.replace("'d1'", "'d2'"))
    assert served(s.port, "d2 one True"), s.log
