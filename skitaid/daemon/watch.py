"""The development reloader: watch a server's sources, reload on a change.

The watching runs in a process of its own (`python -m skitaid.daemon.watch`,
titled "skitaid: source watcher") that the master starts only when a server
is in development mode (--devel, `devel = yes`, pref/app use_reloader). It
uses watchfiles (inotify), prints one JSON line per batch of relevant
changes, and exits when the master closes its stdin, however the master
ended. The master never imports app code for this: what to watch comes from
the config (app files, their directories, the module dirs, config files).

In the master, a change waits QUIET seconds for more (an editor writing
several files, `git checkout`) and then one reload starts a new generation,
as `skitaid reload` does; a generation that fails to boot is abandoned and
the old one keeps serving.
"""
import json
import os
import subprocess
import sys

from ..config.model import APP
from ..logs import error_log
from .. import devel, reimport

QUIET = 0.2                 # seconds without a change before the reload starts
STEP_MS = 50                # watchfiles: a batch ends after this long without events
IGNORED_DIRS = frozenset(("__pycache__", ".git", ".hg", ".svn", ".tox", ".nox", ".venv",
                          "venv", ".env", "env", "node_modules", ".mypy_cache",
                          ".pytest_cache", "site-packages", "dist-packages", ".idea"))
CONFIG_SUFFIXES = (".conf", ".yaml", ".yml")


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _module_dirs(where, server):
    """The directory holding module `where` ('pkg.mod'), looked up where the
    workers import from, without importing it."""
    top = where.split(".")[0]
    for folder in (server.working_dir,) + tuple(server.pythonpath) + (os.getcwd(),):
        if not folder:
            continue
        if os.path.isdir(os.path.join(folder, top)):
            return [os.path.join(folder, top)]
        if os.path.isfile(os.path.join(folder, top + ".py")):
            return [folder]
    return []


def _app_dirs(route, server):
    target = route.target
    if callable(target):
        found = reimport.binding(target)
        path = getattr(found[0], "__file__", "") if found else ""
        return [os.path.dirname(path)] if path else []
    if not isinstance(target, str):
        return []
    where = target.rpartition(":")[0] or target
    if where.endswith(".py") or os.sep in where:
        return [os.path.dirname(os.path.abspath(where))]
    return _module_dirs(where, server)


def sources(config, asked=()):
    """What to watch for the servers in development mode (and those whose
    workers asked, `asked`: names): {"roots", "files", "config_dirs",
    "ignore"}; None when no server wants a watcher."""
    roots, files, config_dirs = set(), set(), set()
    for server in config.servers:
        if not (devel.watched(server) or server.name in asked):
            continue
        for group in server.hosts:
            for route in group.routes:
                if route.kind == APP:
                    roots.update(_real(d) for d in _app_dirs(route, server) if os.path.isdir(d))
        if server.source and os.path.isfile(server.source):
            files.update((os.path.abspath(server.source), _real(server.source)))
            if server.source.endswith(".py"):       # a script: its directory is the app's
                roots.add(_real(os.path.dirname(server.source)))
        if server.working_dir and os.path.isdir(server.working_dir):
            roots.add(_real(server.working_dir))
    if not roots and not files:
        return None
    g = config.globals
    if g.config_dir and os.path.isdir(g.config_dir):
        base = _real(g.config_dir)
        files.add(os.path.join(base, "skitaid.conf"))
        config_dirs.update(os.path.join(base, d) for d in ("servers-enabled", "servers-available"))
    # the log/run/var dirs are skipped when they sit inside a watched tree
    ignore = set()
    for path in (g.log_path, g.run_path, g.var_path):
        if path:
            path = _real(path)
            if any(path.startswith(r + os.sep) for r in roots):
                ignore.add(path)
    return {"roots": sorted(roots), "files": sorted(files),
            "config_dirs": sorted(config_dirs), "ignore": sorted(ignore)}


def relevant(path, spec):
    """Is a change of `path` one that reloads? The same rules in the watcher
    process and in the tests."""
    if path in spec["files"]:
        return True
    parent = os.path.dirname(path)
    if parent in spec["config_dirs"] and path.endswith(CONFIG_SUFFIXES):
        return True
    for ignored in spec["ignore"]:
        if path == ignored or path.startswith(ignored + os.sep):
            return False
    for root in spec["roots"]:
        if not path.startswith(root + os.sep):
            continue
        parts = path[len(root) + 1:].split(os.sep)
        if any(p in IGNORED_DIRS for p in parts[:-1]):
            return False
        name = parts[-1]
        if name.startswith(".#") or name.endswith("~"):
            return False                    # editor lock and backup files
        if name.endswith(".py") or "templates" in parts[:-1]:
            return True
    return False


def watch_paths(spec):
    """The directories handed to watchfiles: no directory inside another."""
    wanted = set(spec["roots"]) | set(os.path.dirname(f) for f in spec["files"])
    wanted |= set(spec["config_dirs"])
    wanted = sorted(p for p in wanted if os.path.isdir(p))
    out = []
    for p in wanted:
        if not any(p == o or p.startswith(o + os.sep) for o in out):
            out.append(p)
    return out


# -- the master's side ---------------------------------------------------------------
class Reloader:
    """Starts and stops the watcher process as the config asks; turns its
    reports into at most one reload per quiet period."""

    def __init__(self, selector):
        self.selector = selector
        self.proc = None
        self.spec = None
        self.asked = set()          # servers whose app set use_reloader = True
        self.due = None             # monotonic time the reload starts
        self.changed = []           # paths seen since the last reload
        self._buffer = b""

    def update(self, config):
        """After start and every reload: watch what the config now asks for."""
        self.asked &= set(s.name for s in config.servers)
        spec = sources(config, self.asked)
        if spec == self.spec and (self.proc is not None or spec is None):
            return
        self.close()
        self.spec = spec
        if spec is None:
            return
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "skitaid.daemon.watch"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, close_fds=True)
            self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as e:
            error_log.error("the source watcher could not start: %s", e)
            self.close()
            return
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.selector.register(self.proc.stdout, 1, "watch")    # EVENT_READ

    def ask(self, server_name, config):
        """A worker's app set use_reloader = True."""
        if server_name and server_name not in self.asked:
            self.asked.add(server_name)
            self.update(config)

    def readable(self, now):
        """Take the watcher's lines; a relevant change schedules the reload."""
        try:
            data = self.proc.stdout.read()
        except (BlockingIOError, InterruptedError):
            return
        if data is None:
            return
        if not data:                # the watcher died: say so once, watch no more
            code = self.proc.poll()
            error_log.error("the source watcher exited (%s); changes are not followed "
                            "until the next reload", "status %s" % code if code is not None
                            else "its output closed")
            self.close(keep_spec=True)
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                paths = json.loads(line)
            except ValueError:
                continue
            if paths == READY:
                error_log.info("watching the sources for changes (pid %d): %s", self.proc.pid,
                               ", ".join(watch_paths(self.spec)))
            elif paths:
                self.changed.extend(paths)
                self.due = now + QUIET          # wait for the rest of the burst

    def take_due(self, now):
        """True once: the burst is over, reload now."""
        if self.due is None or now < self.due:
            return False
        self.due = None
        changed = sorted(set(self.changed))
        self.changed = []
        more = " and %d more" % (len(changed) - 1) if len(changed) > 1 else ""
        error_log.info("source changed: %s%s; reloading", changed[0] if changed else "?", more)
        return True

    def close(self, keep_spec=False):
        proc, self.proc = self.proc, None
        if not keep_spec:
            self.spec = None
        if proc is None:
            return
        try:
            self.selector.unregister(proc.stdout)
        except (KeyError, ValueError):
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()          # EOF on stdin: it exits by itself
            except OSError:
                pass
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the watcher process ------------------------------------------------------------------
READY = "ready"             # the watcher's first line: inotify is set up, saves are seen


def _exit_on_eof(probe_dir):
    """The master closed our stdin (or died): stop at once."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        _remove(probe_dir)
        os._exit(0)


def _remove(probe_dir):
    import shutil
    shutil.rmtree(probe_dir, ignore_errors=True)


def _probe(path, seen):
    """watchfiles' public API does not say when its watches are in place: a
    file of our own is touched until a change of it comes through."""
    while not seen.wait(0.05):
        with open(path, "w") as f:
            f.write("probe\n")


def main():
    import signal
    import tempfile
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the master's to handle
    spec = json.loads(sys.stdin.buffer.readline() or b"null")
    if not spec:
        return 0
    try:
        from setproctitle import setproctitle
        setproctitle("skitaid: source watcher")
    except ImportError:
        pass
    try:
        import watchfiles
    except ImportError:
        print("skitaid: the development reloader needs the watchfiles package "
              "(pip install watchfiles)", file=sys.stderr, flush=True)
        return 1
    probe_dir = os.path.realpath(tempfile.mkdtemp(prefix="skitaid-watch-"))
    probe = os.path.join(probe_dir, "probe")
    seen = threading.Event()
    threading.Thread(target=_exit_on_eof, args=(probe_dir,), daemon=True).start()
    threading.Thread(target=_probe, args=(probe, seen), daemon=True).start()

    def wanted(change, path):
        return path == probe or relevant(path, spec)

    out = sys.stdout
    try:
        for changes in watchfiles.watch(*watch_paths(spec), probe_dir, watch_filter=wanted,
                                        step=STEP_MS, debounce=1600, raise_interrupt=False,
                                        ignore_permission_denied=True):
            paths = sorted(set(p for _, p in changes if p != probe))
            if not seen.is_set() and any(p == probe for _, p in changes):
                seen.set()
                out.write(json.dumps(READY) + "\n")
            if paths:
                out.write(json.dumps(paths) + "\n")
            out.flush()
    finally:
        _remove(probe_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
