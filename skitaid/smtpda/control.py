"""`skitaid smtpda start|stop|status|run`: the delivery agent as a daemon of its own.

The agent has its own pid file (<run_path>/smtpda.pid), log file
(<log_path>/smtpda.log) and process title (`skitaid: smtpda`), and it is
not stopped when the app server stops. A lock on <spool>/.lock keeps a
second agent off the same spool, whatever pid file it was given.
"""
import fcntl
import os
import signal
import sys
import time

from . import compose

TITLE = "skitaid: smtpda"
ACTIONS = ("start", "stop", "status", "run")
EXIT_NOT_RUNNING = 3


def _err(msg):
    print("skitaid smtpda: %s" % msg, file=sys.stderr)


def paths(config):
    """(spool, pid file, log file) of the config's agent; "" where nothing says."""
    g = config.globals
    m = g.mail
    spool = m.spool or (os.path.join(g.var_path, "smtpda") if g.var_path else "")
    run_dir = g.run_path or (os.path.dirname(g.pidfile) if g.pidfile else "")
    pidfile = m.pidfile or (os.path.join(run_dir, "smtpda.pid") if run_dir else "")
    log_dir = g.log_path or run_dir
    log_file = m.log_file or (os.path.join(log_dir, "smtpda.log") if log_dir else "")
    return spool, pidfile, log_file


def prepare(config):
    """Tell send() where the spool is, in this process and the workers it forks."""
    spool = paths(config)[0]
    if spool:
        compose.configure_spool(spool, config.globals.mail.fsync)


def with_server(config, command):
    """Called as the app server starts: the spool path for its workers and,
    with `smtpda = yes` ([global], or run(smtpda=True), or --smtpda), the agent
    started unless it runs already. The server starts even if the agent cannot."""
    prepare(config)
    if config.globals.smtpda and command in ("run", "start", "restart"):
        if start(config):
            _err("the mail delivery agent did not start; the server starts without it")


def take_option(argv):
    """Remove `--smtpda` from a script's argv; True if it was there."""
    if "--smtpda" in argv:
        argv[:] = [a for a in argv if a != "--smtpda"]
        return True
    return False


def main(action, config):
    if action not in ACTIONS:
        raise ValueError("skitaid smtpda: one of %s, not %r" % (", ".join(ACTIONS), action))
    return {"start": start, "stop": stop, "status": status, "run": run}[action](config)


def _running(pidfile):
    from ..daemon.pidfile import read_pid
    return read_pid(pidfile, TITLE) if pidfile else None


def _check(config):
    spool, pidfile, log_file = paths(config)
    if not spool:
        _err("no spool: set [global] var_path or [smtpda] spool in skitaid.conf")
        return None
    if not pidfile:
        _err("no pid file: set [global] run_path or [smtpda] pidfile in skitaid.conf")
        return None
    return spool, pidfile, log_file


# -- start / run -------------------------------------------------------------------
def start(config, wait=15.0):
    """Daemonize the agent; return 0 once it serves (or runs already), 1 if it failed."""
    found = _check(config)
    if found is None:
        return 1
    spool, pidfile, log_file = found
    pid = _running(pidfile)
    if pid:
        print("smtpda is already running (pid %d, %s)" % (pid, pidfile))
        return 0
    try:
        for d in (os.path.dirname(pidfile), os.path.dirname(log_file)):
            os.makedirs(d, mode=0o755, exist_ok=True)
    except OSError as e:
        _err("cannot create %s: %s" % (e.filename, e.strerror))
        return 1
    offset = os.path.getsize(log_file) if os.path.exists(log_file) else 0
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(ready_r)
            code = _daemon_main(config, spool, pidfile, log_file, ready_w)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.waitpid(child, 0)            # the intermediate process exits once detached
    try:
        import select
        said = os.read(ready_r, 1) if select.select([ready_r], [], [], wait)[0] else None
    finally:
        os.close(ready_r)
    if said == b"R":
        print("smtpda started (pid %s), spool %s, log %s" % (_running(pidfile), spool, log_file))
        return 0
    _err("failed to start%s; from %s:\n%s" % (" in %d s" % wait if said is None else "",
                                              log_file, _tail(log_file, offset)))
    return 1


def _tail(path, offset, lines=20):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _daemon_main(config, spool, pidfile, log_file, ready_w):
    import daemon
    from ..logs import redirect_stdio
    context = daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True,
                                   prevent_core=False, files_preserve=[ready_w])
    with context:
        redirect_stdio(log_file)
        return serve(config, spool, pidfile, log_file, ready_w)


def run(config):
    """The agent in the foreground, logging to stderr (systemd, tests)."""
    found = _check(config)
    if found is None:
        return 1
    spool, pidfile, _ = found
    return serve(config, spool, pidfile, None, None)


def _setup_log():
    import logging
    log = logging.getLogger("skitaid.smtpda")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s",
                                           "%Y.%m.%d %H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _lock(spool):
    """Hold <spool>/.lock for the agent's life; False if another agent has it."""
    fd = os.open(os.path.join(spool, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _credentials(config):
    """Who the agent runs as: the workers' user ([global] user) when started as root."""
    g = config.globals
    if os.geteuid() != 0 or not g.user:
        return None
    from ..daemon.privileges import resolve
    creds = resolve(g.user, g.group or None)
    return creds if creds.uid != 0 else None


def serve(config, spool_path, pidfile, log_file, ready_w):
    """Become the agent: title, spool, lock, pid file, privileges, then deliver
    until SIGTERM/SIGINT. SIGUSR1 reopens the log file."""
    from setproctitle import setproctitle
    from ..daemon.pidfile import PidFile
    from ..daemon.privileges import PrivilegeError, drop
    from .agent import Agent
    from .spool import Spool
    setproctitle(TITLE)
    log = _setup_log()
    try:
        creds = _credentials(config)
        uid, gid = (creds.uid, creds.gid) if creds else (-1, -1)
        Spool(spool_path).create(uid, gid)
        if creds and log_file:
            os.chown(log_file, creds.uid, creds.gid)
    except (OSError, PrivilegeError) as e:
        log.error("cannot prepare the spool %s: %s", spool_path, e)
        return 1
    lock = _lock(spool_path)
    if lock is None:
        log.error("another agent serves the spool %s", spool_path)
        return 1
    pid = PidFile(pidfile)
    try:
        pid.write()
    except OSError as e:
        log.error("cannot write the pid file %s: %s", pidfile, e)
        return 1
    try:
        if creds:
            drop(creds)
        agent = Agent(config.globals.mail, spool_path)

        def on_stop(signum, frame):
            agent.stopping.set()

        def on_reopen(signum, frame):
            if log_file:
                from ..logs import redirect_stdio
                redirect_stdio(log_file)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_reopen)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if ready_w is not None:
            os.write(ready_w, b"R")
            os.close(ready_w)
        agent.run()
        return 0
    except PrivilegeError as e:
        log.error("cannot drop privileges: %s", e)
        return 1
    finally:
        pid.remove()
        os.close(lock)


# -- stop / status --------------------------------------------------------------------
def stop(config):
    """SIGTERM, then wait until the agent is gone (in-flight deliveries finish)."""
    _, pidfile, _ = paths(config)
    pid = _running(pidfile)
    if pid is None:
        print("smtpda is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    timeout = config.globals.mail.timeout + 10
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("smtpda stopped (pid %d)" % pid)
            return 0
        time.sleep(0.05)
    _err("pid %d still running after %d s" % (pid, timeout))
    return 1


def _age(seconds):
    from .agent import _age as age
    return age(seconds)


def status(config):
    """Whether it runs, and the spool: queued, deferred, failed, the oldest queued."""
    from .spool import Spool
    spool, pidfile, _ = paths(config)
    pid = _running(pidfile)
    print("smtpda is running (pid %d)" % pid if pid else "smtpda is not running")
    if spool and os.path.isdir(spool):
        c = Spool(spool).counts()
        print("spool %s: %d queued, %d deferred, %d sending, %d failed%s" % (
            spool, c["queued"], c["deferred"], c["sending"], c["failed"],
            ", oldest queued %s" % _age(c["oldest_age"]) if c["oldest_age"] else ""))
    elif spool:
        print("spool %s: not created yet" % spool)
    return 0 if pid else EXIT_NOT_RUNNING
