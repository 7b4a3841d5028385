"""The operator's verbs, shared by `skitaid COMMAND` and `python app.py COMMAND`.

Each function takes a loaded Config (and, for start/run, a loader that
re-reads it on reload) and returns an exit code, printing what an operator
needs to know. The master itself lives in master.py.
"""
import json
import os
import signal
import sys
import time

from ..config.model import ServerConfig
from ..logs import error_log, redirect_stdio, setup_error_log
from . import control, orphans
from .pidfile import check_pid, read_pid
from .unit import stop_timeout

EXIT_NOT_RUNNING = 3        # LSB: program is not running
EXIT_UNKNOWN = 4            # LSB: program or service status is unknown
BOOT_WAIT_MARGIN = 5.0      # reload: wait this much past the longest boot_timeout


def _err(msg):
    print("skitaid: %s" % msg, file=sys.stderr)


def _control_path(config):
    g = config.globals
    return control.socket_path(g.run_path) if g.run_path else None


def _ask(config, request, timeout=10.0):
    path = _control_path(config)
    if path is None:
        raise control.NotRunning("no run_path configured")
    return control.call(path, request, timeout)


def _master_pid(config):
    g = config.globals
    return read_pid(g.pidfile) if g.pidfile else None


def _stale_note(config):
    """' (stale pid file …: why)' when the pid file names no live master, else ''."""
    g = config.globals
    if not g.pidfile:
        return ""
    pid, why = check_pid(g.pidfile)
    return " (stale pid file %s: %s)" % (g.pidfile, why) if pid is None and why else ""


def dispatch(command, config, loader=None, server=None, as_json=False):
    """One operator verb: run, start, stop, restart [server], reload, status."""
    if command == "run":
        return run(config, loader)
    if command == "start":
        return start(config, loader)
    if command == "stop":
        return stop(config)
    if command == "restart":
        return restart_server(config, server) if server else restart(config, loader)
    if command == "reload":
        return reload(config)
    if command == "status":
        return status(config, as_json)
    if command == "reopen-logs":
        return reopen_logs(config)
    raise ValueError("unknown command %r" % command)


# -- run / start ---------------------------------------------------------------
def run(config, loader=None):
    """Foreground: the master with logs on the console (systemd's ExecStart)."""
    from .master import Master
    setup_error_log(None, any(s.debug for s in config.servers))
    return Master(config, loader).run()


def start(config, loader=None, wait=30.0):
    """Daemonize the master; return once it serves (0) or has failed (1)."""
    g = config.globals
    if not g.pidfile:
        _err("start needs a pidfile (the [global] pidfile key)")
        return 1
    pid = read_pid(g.pidfile)
    if pid:
        # LSB: starting a service that runs already is a success
        print("skitaid is already running (pid %d, %s)" % (pid, g.pidfile))
        return 0
    log_dir = g.log_path or os.path.dirname(g.pidfile)
    try:
        os.makedirs(log_dir, mode=0o755, exist_ok=True)
    except OSError as e:
        _err("cannot create the log directory %s: %s" % (log_dir, e.strerror))
        return 1
    error_file = os.path.join(log_dir, "error.log")
    offset = os.path.getsize(error_file) if os.path.exists(error_file) else 0
    sys.stdout.flush()
    sys.stderr.flush()
    # the master writes "R" on this pipe once every server serves; EOF
    # without it means it failed (the reason is in the error log)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(ready_r)
            code = _daemon_main(config, loader, log_dir, error_file, ready_w)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.waitpid(child, 0)        # the intermediate process exits once detached
    try:
        return _wait_started(config, ready_r, error_file, offset, wait)
    finally:
        os.close(ready_r)


def _daemon_main(config, loader, log_dir, error_file, ready_w):
    import daemon
    from .master import Master
    context = daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True,
                                   prevent_core=False, files_preserve=[ready_w])
    with context:
        redirect_stdio(error_file)
        setup_error_log(None, any(s.debug for s in config.servers))
        return Master(config, loader, daemon=True, log_path=log_dir, ready_fd=ready_w).run()


def _wait_started(config, ready_r, error_file, offset, wait):
    import select
    ready = select.select([ready_r], [], [], wait)[0]
    said = os.read(ready_r, 1) if ready else None
    if said == b"R":
        pid = _master_pid(config)
        try:
            status = _ask(config, {"command": "status"}, timeout=5.0)
        except (control.NotRunning, OSError, ValueError):
            status = {"servers": []}
        failed = [s for s in status["servers"] if s["state"] == "failed"]
        for s in status["servers"]:
            print("%-12s %-8s %s" % (s["name"], s["state"], s["address"]))
        if failed:
            _err("%d server(s) failed to start; see %s" % (len(failed), error_file))
            return 1
        print("skitaid started (pid %s)" % pid)
        return 0
    if said is None:
        _err("not ready after %d s; see %s" % (wait, error_file))
    else:
        _err("failed to start; from %s:\n%s" % (error_file, _log_tail(error_file, offset)))
    return 1


def _log_tail(path, offset, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- stop / restart ----------------------------------------------------------------
def stop(config, graceful=True):
    """Stop the master and wait until it is gone (in-flight requests finish first)."""
    pid = _master_pid(config)
    if pid is None:
        # a pid file left by a master that died may name a process that is
        # not skitaid at all: never signal that one
        print("skitaid is not running%s" % _stale_note(config))
        return 0
    os.kill(pid, signal.SIGTERM if graceful else signal.SIGQUIT)
    timeout = stop_timeout(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("skitaid stopped (pid %d)" % pid)
            return 0
        time.sleep(0.1)
    _err("pid %d still running after %d s" % (pid, timeout))
    return 1


def restart(config, loader=None):
    code = stop(config)
    if code:
        return code
    return start(config, loader)


def _boot_wait(config):
    """How long a reload may take: the master abandons a new generation after its
    boot_timeout, so the CLI waits a little longer and reports why."""
    longest = max((s.boot_timeout for s in config.servers), default=ServerConfig.boot_timeout)
    return longest + BOOT_WAIT_MARGIN


def restart_server(config, name, wait=None):
    """Replace one server's workers gracefully (new code), leaving the others alone."""
    try:
        reply = _ask(config, {"command": "restart", "server": name})
    except control.NotRunning:
        _err("not running")
        return EXIT_NOT_RUNNING
    if not reply.get("ok"):
        for m in reply.get("messages", []):
            _err(m)
        return 1
    return _wait_reloaded(config, wait or _boot_wait(config))


# -- reload ----------------------------------------------------------------------------
def reload(config, wait=None):
    """Re-read the config in the master; report problems or the new generations."""
    try:
        reply = _ask(config, {"command": "reload"})
    except control.NotRunning:
        pid = _master_pid(config)
        if pid is None:
            _err("not running")
            return EXIT_NOT_RUNNING
        os.kill(pid, signal.SIGHUP)
        print("reload signalled (pid %d)" % pid)
        return 0
    if not reply.get("ok") and reply.get("messages"):
        print("reload refused; the running config keeps serving:", file=sys.stderr)
        for m in reply["messages"]:
            print("  " + m, file=sys.stderr)
        return 1
    return _wait_reloaded(config, wait or _boot_wait(config))


def _wait_reloaded(config, wait):
    deadline = time.monotonic() + wait
    status = None
    while time.monotonic() < deadline:
        status = _ask(config, {"command": "status"})
        if not status.get("reloading"):
            break
        time.sleep(0.1)
    if status is None or status.get("reloading"):
        _err("reload still in progress after %d s" % wait)
        return 1
    last = status.get("last_reload") or {}
    for m in last.get("messages", []):
        _err(m)
    for s in status["servers"]:
        print("%-12s %-8s generation %d" % (s["name"], s["state"], s["generation"]))
    return 0 if last.get("ok", True) else 1


# -- reopen-logs ---------------------------------------------------------------------------
def reopen_logs(config):
    """After logrotate: the master reopens its error log and has every worker
    reopen its logs. Not running is no failure: there is nothing to reopen."""
    try:
        reply = _ask(config, {"command": "reopen-logs"})
    except (control.NotRunning, OSError):
        pid = _master_pid(config)
        if pid is None:
            print("skitaid is not running: no log files to reopen")
            return 0
        os.kill(pid, signal.SIGUSR1)
        print("reopen signalled (pid %d)" % pid)
        return 0
    if not reply.get("ok"):
        for m in reply.get("messages") or [reply.get("error", "failed")]:
            _err(m)
        return 1
    print("log files reopened")
    return 0


# -- status ------------------------------------------------------------------------------
def status(config, as_json=False):
    g = config.globals
    if not g.pidfile and not g.run_path:
        _err("status unknown: no pidfile or run_path to find the daemon by")
        return EXIT_UNKNOWN
    try:
        reply = _ask(config, {"command": "status"}, timeout=5.0)
    except (control.NotRunning, OSError) as e:
        pid = _master_pid(config)
        if pid is not None:
            print("skitaid is running (pid %d) but its control socket does not answer (%s)"
                  % (pid, e))
            return 0
        stray = orphans.orphaned_workers()
        if as_json:
            print(json.dumps({"running": False,
                              "orphans": [{"pid": pid, "title": t} for pid, t in stray]}))
        else:
            print("skitaid is not running%s" % _stale_note(config))
            if stray:
                print(orphans.describe_orphans(stray))
        return EXIT_NOT_RUNNING
    if as_json:
        reply["running"] = True
        print(json.dumps(reply, indent=2))
        return 0
    print("skitaid master pid %d, up %s%s" % (reply["pid"], _duration(reply["uptime"]),
                                             ", reloading" if reply.get("reloading") else ""))
    last = reply.get("last_reload") or {}
    if last and not last.get("ok", True) and not reply.get("reloading"):
        print("last reload failed; the running config keeps serving:")
        for m in last.get("messages", []):
            print("  " + m)
    for s in reply["servers"]:
        extra = " (%s)" % s["reason"] if s.get("reason") else ""
        print("server %s: %s%s  %s  generation %d%s" % (
            s["name"], s["state"], extra, s["address"], s["generation"],
            ", generation %d starting" % s["pending_generation"]
            if s.get("pending_generation") else ""))
        print("  %-3s %-8s %-4s %-9s %-9s %6s %9s %9s" % (
            "#", "pid", "gen", "state", "uptime", "cpu%", "rss", "requests"))
        for w in s["workers"]:
            print("  %-3d %-8d %-4d %-9s %-9s %6.1f %8.1fM %9d" % (
                w["index"], w["pid"], w["generation"], w["state"], _duration(w["uptime"]),
                w["cpu_percent"], w["rss"] / 1048576.0, w["requests"]))
        if s.get("cachefs"):
            from .cachecmd import status_line
            print(status_line(s["cachefs"]))
    return 0


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    h, rest = divmod(seconds, 3600)
    return "%dh%02dm" % (h, rest // 60)
