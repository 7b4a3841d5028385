"""Reloads that overlap: HUPs arriving while a generation is still starting.

A generation that has begun serving (one of its workers is ready and takes
connections from the shared listener) is never thrown away for a newer
reload: the newer one waits until it is promoted or has failed. So a
generation that fails to boot leaves the newest generation that was serving
in place, and the versions clients see only ever move forward.

Real processes and signals, as in test_daemon.py. The apps make one worker
of every generation slow to import (they take turns by numbered files), so
there is a window, two seconds long, in which a generation is half ready.
"""
import glob
import os
import signal
import threading
import time

from conftest import free_port, wait_for
from test_daemon import get, master, site, write  # noqa: F401  (fixtures)

SLOW = 2.0

# Importers take numbers 0, 1, 2 … (a file each, holding the pid): odd ones
# are slow. Two workers of one generation take two consecutive numbers, so
# one is fast and one is slow.
APP = """
import os, time
VERSION = {version!r}
HERE = os.path.dirname(os.path.abspath(__file__))
n = 0
while True:
    try:
        fd = os.open(os.path.join(HERE, "import-%d" % n), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        break
    except FileExistsError:
        n += 1
if {slow!r} == "all" or ({slow!r} == "odd" and n % 2):
    time.sleep({seconds!r})
def app(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

BROKEN = "import no_such_module_here\n"


def app(site, version, slow="odd"):
    write(os.path.join(site.root, "app.py"), APP.format(version=version, slow=slow, seconds=SLOW))


class Watch:
    """Asks for the version on a new connection, over and over, and keeps
    (when the request started, version) for each answer."""

    def __init__(self, port):
        self.port = port
        self.answers = []
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, body = get(self.port, timeout=10)
            except Exception as e:
                self.errors.append(repr(e))
                continue
            if status != 200:
                self.errors.append("%d %s" % (status, body[:80]))
            else:
                self.answers.append((started, body))
            time.sleep(0.005)

    def last(self):
        return self.answers[-1][1] if self.answers else None

    def since(self, mark=0.0):
        """The versions answered to requests started after `mark`, each change once."""
        out = []
        for started, version in list(self.answers):
            if started >= mark and (not out or out[-1] != version):
                out.append(version)
        return out

    def finish(self):
        self.stop.set()
        self.thread.join(15)
def serve_web(site, master, processes=2):  # noqa: F811
    port = free_port()
    site.ini("web", port, processes=processes, graceful_timeout=5)
    m = master(port)
    return port, m


def settled(site):
    """No reload in progress, and every worker ready and of one generation."""
    status = site.status()
    server = status["servers"][0]
    gens = {w["generation"] for w in server["workers"]}
    return (not status["reloading"] and server["pending_generation"] is None
            and all(w["state"] == "ready" for w in server["workers"])
            and len(server["workers"]) == server["target_workers"]
            and gens == {server["generation"]} and server)


def have_read_the_app(site, generation):
    """Every worker of `generation` runs its app module (has read app.py): the
    file may change now without changing what that generation serves."""
    pids = {w["pid"] for w in site.server("web")["workers"] if w["generation"] == generation}
    taken = set()
    for path in glob.glob(os.path.join(site.root, "import-*")):
        with open(path) as f:
            taken.add(f.read())
    return bool(pids) and {str(p) for p in pids} <= taken


def without(site, generation):
    """No worker of `generation` is left (its last one has exited)."""
    return all(w["generation"] != generation for w in site.server("web")["workers"])


def test_two_quick_hups_then_a_broken_generation_keep_v2(site, master):  # noqa: F811
    """The report: v1 serves; v2, HUP, HUP ~60 ms later; v2 serves; v3 fails
    to import, HUP: v2 keeps serving (not v1)."""
    app(site, "v1", slow="none")
    port, m = serve_web(site, master)
    watch = Watch(port)
    try:
        app(site, "v2")
        os.kill(m.proc.pid, signal.SIGHUP)
        time.sleep(0.06)
        os.kill(m.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: watch.last() == "v2", 20), watch.since()
        pending = site.server("web")["pending_generation"]
        assert pending and wait_for(lambda: have_read_the_app(site, pending))
        write(os.path.join(site.root, "app.py"), BROKEN)
        os.kill(m.proc.pid, signal.SIGHUP)
        assert m.wait_log("a worker failed to start", 20), m.log
        server = wait_for(lambda: settled(site), 20)
        assert server, site.status()
        mark = time.monotonic()
        assert wait_for(lambda: len(watch.since(mark)) and watch.answers[-1][0] > mark + 0.3)
    finally:
        watch.finish()
    assert watch.since(mark) == ["v2"], watch.since()
    assert watch.errors == []
    assert get(port) == (200, "v2")
    assert "No module named 'no_such_module_here'" in m.log
    assert server["generation"] != 1
    assert "(a worker failed to start); generation %d keeps serving" % server["generation"] in m.log


def test_hup_while_a_generation_is_half_ready_waits_for_it(site, master):  # noqa: F811
    """v2 is half ready (serving from one worker, next to v1) when v3 is
    HUPed: v2 is promoted first, then v3 starts; once v1 has retired it
    never comes back."""
    app(site, "v1", slow="none")
    port, m = serve_web(site, master)
    watch = Watch(port)
    try:
        app(site, "v2")
        os.kill(m.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: watch.last() == "v2", 20), watch.since()
        assert site.server("web")["pending_generation"] == 2    # the slow worker still boots
        assert wait_for(lambda: have_read_the_app(site, 2))
        app(site, "v3", slow="none")
        os.kill(m.proc.pid, signal.SIGHUP)
        assert m.wait_log("generation 2 serving", 20), m.log
        assert wait_for(lambda: without(site, 1), 20)
        mark = time.monotonic()
        server = wait_for(lambda: settled(site) and watch.last() == "v3" and settled(site), 20)
        assert server, site.status()
    finally:
        watch.finish()
    assert watch.since(mark) in (["v2", "v3"], ["v3"]), watch.since()
    assert watch.errors == []
    assert server["generation"] == 3
    assert "abandoned" not in m.log
    assert m.log.index("generation 2 serving") < m.log.index("generation 3 serving")


def test_half_ready_generation_then_broken_one_keeps_the_half_ready(site, master):  # noqa: F811
    """v2 half ready, then a broken v3 HUPed: v2 finishes booting and serves,
    the broken generation is abandoned, v2 keeps serving."""
    app(site, "v1", slow="none")
    port, m = serve_web(site, master)
    watch = Watch(port)
    try:
        app(site, "v2")
        os.kill(m.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: watch.last() == "v2", 20), watch.since()
        assert site.server("web")["pending_generation"] == 2
        assert wait_for(lambda: have_read_the_app(site, 2))
        write(os.path.join(site.root, "app.py"), BROKEN)
        os.kill(m.proc.pid, signal.SIGHUP)
        assert m.wait_log("a worker failed to start", 20), m.log
        server = wait_for(lambda: settled(site), 20)
        assert server, site.status()
        mark = time.monotonic()
        assert wait_for(lambda: len(watch.since(mark)) and watch.answers[-1][0] > mark + 0.3)
    finally:
        watch.finish()
    assert watch.since(mark) == ["v2"], watch.since()
    assert watch.errors == []
    assert server["generation"] == 2
    assert "(a worker failed to start); generation 2 keeps serving" in m.log
    assert site.status()["last_reload"]["ok"] is False


def test_unready_generation_superseded_by_a_broken_one_keeps_v1(site, master):  # noqa: F811
    """A generation none of whose workers is ready has served nobody: a newer
    reload replaces it at once; when that one fails, v1 (the newest that was
    serving) keeps serving, and v2 was never seen."""
    app(site, "v1", slow="none")
    port, m = serve_web(site, master)
    watch = Watch(port)
    try:
        app(site, "v2", slow="all")
        os.kill(m.proc.pid, signal.SIGHUP)
        assert m.wait_log("reloading (HUP)")
        assert wait_for(lambda: have_read_the_app(site, 2))    # v2, now asleep in its import
        write(os.path.join(site.root, "app.py"), BROKEN)
        os.kill(m.proc.pid, signal.SIGHUP)
        assert m.wait_log("generation 2 abandoned (superseded", 10), m.log
        assert m.wait_log("a worker failed to start", 20), m.log
        server = wait_for(lambda: settled(site), 20)
        assert server, site.status()
        mark = time.monotonic()
        assert wait_for(lambda: watch.answers[-1][0] > mark + 0.3)
    finally:
        watch.finish()
    assert watch.since() == ["v1"], watch.since()
    assert watch.errors == []
    assert server["generation"] == 1
