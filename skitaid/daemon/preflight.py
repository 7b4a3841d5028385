"""`skitaid check`, beyond parsing: can this config actually be served?

Parsing problems already come from load_config() as ConfigError (config/
reads files into the model and nothing else). This looks at the world the
config meets, with the daemon's own means (it binds sockets, resolves users,
loads certificates and imports apps in a subprocess):
- every listener can be bound (addresses a running master already holds are fine);
- every app route imports, in a subprocess running as the user the workers
  will run as, with a time limit;
- the directories for logs, state, the control socket and the pid file can
  be created or written by the master, and the request log files (the
  `request_log_file`, else `skitaid start`'s NAME-request.log in log_path) by
  the workers' user: the master creates a missing one for them, owned by that
  user, but the workers open it by name (on every USR1 too).

Each problem names the file, section and key, like the parser's.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
from typing import Iterable, List, Optional

from ..config.errors import Problem
from ..config.model import APP, Config, GlobalConfig, ServerConfig
from ..config.where import add_lines, read_text
from . import listeners
from .privileges import PrivilegeError, worker_credentials

IMPORT_TIMEOUT = 20.0
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def deep_check(config: Config, held: Iterable = (), timeout: float = IMPORT_TIMEOUT) -> List[Problem]:
    """Every problem that would stop `config` from being served.

    `held`: (address, port) pairs a running master already listens on; they
    count as bindable."""
    held_keys = {listeners.listen_key(a, p) for a, p in held}
    g = config.globals
    problems = _global_paths(g)
    for server in config.servers:
        problems += _listener(g, server, held_keys)
        problems += _apps(g, server, timeout)
        problems += _certificates(g, server)
    paths = {_file(g, s): s.source for s in config.servers}
    if g.config_dir:
        paths["skitaid.conf"] = os.path.join(g.config_dir, "skitaid.conf")
    return add_lines(problems, lambda file: read_text(paths[file]) if file in paths else None)


def _certificates(g: GlobalConfig, server: ServerConfig) -> List[Problem]:
    """Certificates that exist but do not load (not PEM, key mismatch, bad passphrase)."""
    if not server.ssl:
        return []
    from ..tlsctx import server_context
    problems = []
    wanted = [(_file(g, server), "server", server.certfile, server.keyfile, server.passphrase)]
    wanted += [hc.where + (hc.certfile, hc.keyfile, hc.passphrase) for hc in server.host_certs]
    for file, section, certfile, keyfile, passphrase in wanted:
        if not (os.path.isfile(certfile) and (not keyfile or os.path.isfile(keyfile))):
            continue            # the parser has said so already
        try:
            server_context(certfile, keyfile, passphrase)
        except ValueError as e:
            problems.append(Problem(file, section, "certfile", certfile,
                                    "a certificate that loads (%s)" % e))
    return problems


# ---------------------------------------------------------------- where

def _file(globals_: GlobalConfig, server: ServerConfig) -> str:
    cdir = globals_.config_dir
    if cdir and server.source.startswith(os.path.join(cdir, "")):
        return os.path.relpath(server.source, cdir)
    return server.source or server.name


def _route_where(route, fallback_file):
    """Route.source is "file [section] prefix" → (file, section)."""
    head, sep, _ = route.source.partition("] ")
    file, sep2, section = head.partition(" [")
    if sep and sep2:
        return file, section
    return fallback_file, "routes"


def _whoami() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


def _dir_problem(path: str) -> Optional[str]:
    """Why `path` cannot be used as a directory to write in (None: it can)."""
    probe = path
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return "%s is not a directory" % probe
    if not os.access(probe, os.W_OK | os.X_OK):
        verb = "writable" if probe == path else "writable, so %s cannot be created," % path
        return "%s is not %s by %s" % (probe, verb, _whoami())
    return None


# ---------------------------------------------------------------- [global] paths

def _global_paths(g: GlobalConfig) -> List[Problem]:
    problems = []
    wanted = [("log_path", g.log_path), ("var_path", g.var_path), ("run_path", g.run_path),
              ("pidfile", os.path.dirname(g.pidfile) if g.pidfile else "")]
    for key, path in wanted:
        if not path:
            continue
        why = _dir_problem(path)
        if why:
            shown = g.pidfile if key == "pidfile" else path
            problems.append(Problem("skitaid.conf", "global", key, shown,
                                    "a directory the master can create or write to (%s)" % why))
    return problems


# ---------------------------------------------------------------- listeners

def _listener(g: GlobalConfig, server: ServerConfig, held) -> List[Problem]:
    """Can each of the server's listeners (its own, its forward port) be bound?"""
    file = _file(g, server)
    problems = []
    for n, (address, port) in enumerate(server.listen_addresses):
        if listeners.listen_key(address, port) in held:
            continue
        key = "forward" if n else "port"
        path = listeners.unix_path(address)
        if path:
            why = None
            if os.path.lexists(path):
                if stat.S_ISSOCK(os.lstat(path).st_mode) and listeners.unix_listening(path):
                    why = "another process listens on it"
            else:
                why = _dir_problem(os.path.dirname(path))
            if why:
                problems.append(Problem(file, "server", "address", address,
                                        "a UNIX socket path that can be bound (%s)" % why))
            continue
        try:
            sock = listeners.bind_listener(address, port, 1)
        except OSError as e:
            reason = e.strerror or str(e)
            if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
                problems.append(Problem(file, "server", "address", address,
                                        "an address of this host (%s)" % reason))
                break
            problems.append(Problem(file, "server", key, str(port), "a port that can be bound "
                                    "on %s (%s)" % (listeners.display(address, port), reason)))
            continue
        sock.close()
    return problems


# ---------------------------------------------------------------- apps

# Runs in the subprocess. Mirrors a worker: skitaid is imported first, then
# privileges are dropped, then the apps are imported with nothing but
# PYTHONPATH and site-packages on sys.path. Results go to a private copy of
# stdout as JSON lines; whatever the apps print goes to stderr.
_CHILD = r"""
import json, os, sys, traceback
if sys.path and sys.path[0] == "":
    del sys.path[0]
args = json.loads(sys.argv[1])
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
def say(**kw):
    out.write(json.dumps(kw) + "\n")
    out.flush()
from skitaid.apps import load_app, prepare_imports
from skitaid.daemon.privileges import Credentials, drop
import skitaid.worker.worker, skitaid.routing   # loaded in a worker before the drop too
if args["creds"]:
    drop(Credentials(**args["creds"]))
for n, log in enumerate(args["logs"]):
    probe = os.path.dirname(log)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    say(log=n, exists=os.path.lexists(log), dir=os.path.isdir(os.path.dirname(log)),
        writable=os.path.isfile(log) and os.access(log, os.W_OK),
        reach=os.path.isdir(probe) and os.access(probe, os.X_OK),
        create=os.path.isdir(os.path.dirname(log)) and os.access(os.path.dirname(log), os.W_OK | os.X_OK))
try:
    prepare_imports(args["pythonpath"], args["working_dir"])
except OSError as e:
    say(workdir="%s: %s" % (type(e).__name__, e.strerror or e))
for i, target in args["apps"]:
    say(start=i)
    path = target.rpartition(":")[0]
    if path.endswith(".py") and not os.access(path, os.R_OK):
        # the parent saw it exist: only this user cannot reach it
        say(done=i, error="PermissionError: cannot read %s" % path)
        continue
    try:
        load_app(target)            # (refuses what is not callable)
    except BaseException as e:
        cause = e.__cause__ or e
        lines = traceback.format_exception_only(type(cause), cause)
        say(done=i, error=(lines[-1].strip() if lines else type(cause).__name__)
                          + getattr(e, "hint", ""))
    else:
        say(done=i)
say(end=True)
"""


def _who(g: GlobalConfig, server: ServerConfig, file: str):
    """(file, section, key, value) of the setting that chose the workers' user."""
    if server.user:
        return file, "server", "user", server.user
    if g.user:
        return "skitaid.conf", "global", "user", g.user
    return file, "server", "user", None


def _apps(g: GlobalConfig, server: ServerConfig, timeout: float) -> List[Problem]:
    file = _file(g, server)
    routes = [r for group in server.hosts for r in group.routes
              if r.kind == APP and isinstance(r.target, str)]
    logs = _request_logs(g, server, file)
    # [gateway] auth_handler: imported as the workers will, as the apps are
    handler = server.gateway.auth_handler if server.gateway.enabled else ""
    if not routes and not logs and not handler:
        return []
    try:
        creds = worker_credentials(server.user, server.group, g.user, g.group)
    except PrivilegeError as e:
        wfile, section, key, value = _who(g, server, file)
        return [Problem(wfile, section, key, value, "a user and group the workers can run as (%s)" % e)]
    as_user = (creds.name or "uid %d" % creds.uid) if creds else _whoami()
    payload = {"creds": creds.__dict__ if creds else None, "logs": [p for p, _ in logs],
               "pythonpath": list(server.pythonpath), "working_dir": server.working_dir,
               "apps": [[i, r.target] for i, r in enumerate(routes)]
               + ([[len(routes), handler]] if handler else [])}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    timed_out = False
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(payload)], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              cwd="/")
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code, timed_out = e.stdout or b"", e.stderr or b"", None, True
    results, started, log_seen, ended, workdir = {}, set(), {}, False, None
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "start" in msg:
            started.add(msg["start"])
        elif "done" in msg:
            results[msg["done"]] = msg.get("error")
        elif "log" in msg:
            log_seen[msg["log"]] = msg
        elif "workdir" in msg:
            workdir = msg["workdir"]
        elif "end" in msg:
            ended = True
    err_lines = stderr.decode("utf-8", "replace").strip().splitlines()
    last_err = err_lines[-1] if err_lines else "exit status %s" % code

    problems = []
    for n, (path, where) in enumerate(logs):
        seen = log_seen.get(n)
        if seen is None:
            continue                # the subprocess did not get this far: said below
        why = _log_problem(path, seen, creds is not None, where[2] != "request_log_file")
        if why:
            wfile, section, key, value = where
            expected = ("a file %s can create or append to" % as_user if key == "request_log_file"
                        else "a directory where %s can append to %s (%s)"
                        % (as_user, os.path.basename(path), why))
            problems.append(Problem(wfile, section, key, value, expected))
    if workdir:
        key = "working_dir" if server.working_dir else "pythonpath"
        value = server.working_dir or ", ".join(server.pythonpath)
        problems.append(Problem(file, "server", key, value,
                                "a directory %s can enter (%s)" % (as_user, workdir)))
    if not started and not ended:
        # the subprocess failed before any app: python, skitaid or the drop itself
        wfile, section, key, value = _who(g, server, file)
        problems.append(Problem(wfile, section, key, value or as_user,
                                "a user that can run this server's workers (%s)"
                                % ("no answer within %g s" % timeout if timed_out else last_err)))
        return problems
    for i, route in enumerate(routes):
        rfile, section = _route_where(route, file)
        if i in results:
            if results[i] is not None:
                problems.append(Problem(rfile, section, route.prefix, route.target,
                                        "an app that imports as %s (%s)" % (as_user, results[i])))
        elif i in started:
            if timed_out:
                why = "the import did not finish within %g s" % timeout
            else:
                why = "the import ended the process: %s" % last_err
            problems.append(Problem(rfile, section, route.prefix, route.target,
                                    "an app that imports as %s (%s)" % (as_user, why)))
    if handler:
        i = len(routes)
        why = None
        if i in results:
            why = results[i]
        elif i in started:
            why = ("the import did not finish within %g s" % timeout if timed_out
                   else "the import ended the process: %s" % last_err)
        if why is not None:
            problems.append(Problem(file, "gateway", "auth_handler", handler,
                                    "a function (request, claims) that imports as %s (%s)"
                                    % (as_user, why)))
    return problems


def _request_logs(g: GlobalConfig, server: ServerConfig, file: str):
    """[(path, (file, section, key, value))]: the request log files the workers open."""
    if not server.request_log:
        return []
    if server.request_log_file:
        return [(server.request_log_file,
                 (file, "server", "request_log_file", server.request_log_file))]
    if not g.pidfile:
        return []                   # no `skitaid start` without a pid file: console only
    log_dir = g.log_path or os.path.dirname(g.pidfile)
    if _dir_problem(log_dir):
        return []                   # the master cannot make it: _global_paths says so
    key, value = ("log_path", g.log_path) if g.log_path else ("pidfile", g.pidfile)
    return [(os.path.join(log_dir, "%s-request.log" % server.name),
             ("skitaid.conf", "global", key, value))]


def _log_problem(path: str, seen: dict, master_creates: bool, dir_made: bool) -> Optional[str]:
    """Why the workers could not open the request log `path` (None: they can).
    `master_creates`: the master (root) creates a missing file for them;
    `dir_made`: `skitaid start` creates its directory (log_path) if missing."""
    if seen["exists"]:
        return None if seen["writable"] else "%s exists and is not writable by them" % path
    if not seen["dir"] and not dir_made:
        return "%s is not a directory" % os.path.dirname(path)
    if master_creates:
        return None if seen["reach"] else "%s cannot be reached by them" % os.path.dirname(path)
    if seen["create"]:
        return None
    # the master (the same user) creates a missing log directory at start
    return _dir_problem(os.path.dirname(path))


# ---------------------------------------------------------------- a running master

def held_by(pid: int) -> set:
    """(address, port) pairs process `pid` and its children listen on (needs psutil)."""
    try:
        import psutil
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except Exception:
        return set()
    held = set()
    for proc in procs:
        try:
            conns = getattr(proc, "net_connections", proc.connections)(kind="all")
        except Exception:
            continue
        for c in conns:
            if c.family == socket.AF_UNIX:
                if c.laddr and isinstance(c.laddr, str):
                    held.add(("unix:" + c.laddr, 0))
            elif c.status == "LISTEN" and c.laddr:
                held.add((c.laddr[0], c.laddr[1]))
    return held
