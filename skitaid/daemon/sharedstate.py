"""The master's link to Redis for `[global] shared_state`: one helper process.

The master forks it right after it made the shared region and before any
worker: it inherits the region and runs sharedsync.Syncer in its main
thread. A process, not a thread of the master, because the master forks
workers all the time and a fork taken while another thread holds a lock
(an import, a socket pool) leaves the worker stuck on it. It drops
privileges like the workers, dies with the master, and the master starts a
new one if it exits.
"""
import os
import signal
import time

from ..logs import error_log
from .. import sharedsync
from .child import die_with_parent, set_title, _prctl

_helper = None          # (pid, options, prefix, credentials, started)
RESTART_AFTER = 5.0     # a helper that lived less than this is not restarted


def start(config, credentials=None):
    """Fork the helper if [global] shared_state is set; its pid (or None)."""
    options = sharedsync.options_for(config.globals, config.servers)
    if options is None:
        return None
    import redis  # noqa: F401  (imported here, once, not in every helper)
    return _fork(options, config.globals.shared_state_prefix, credentials)


def _fork(options, prefix, credentials):
    global _helper
    master = os.getpid()
    prctl = _prctl()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _child(options, prefix, credentials, prctl, master)
            code = 0
        except BaseException:
            error_log.exception("shared state: the helper failed")
        finally:
            os._exit(code)
    _helper = (pid, options, prefix, credentials, time.monotonic())
    return pid


def _child(options, prefix, credentials, prctl, master):
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGQUIT,
                signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C: the master stops us
    set_title("skitaid: shared state")
    if credentials is not None:
        from .privileges import drop
        drop(credentials)
    die_with_parent(prctl, master)
    syncer = sharedsync.Syncer(options, prefix, master_pid=master)
    signal.signal(signal.SIGTERM, lambda *_: syncer.stop())
    syncer.run()


def reaped(pid):
    """The master reaped `pid`: when it was the helper, start another (unless it
    died right after starting: then the state stays local, said in the log)."""
    global _helper
    if _helper is None or _helper[0] != pid:
        return False
    _, options, prefix, credentials, started = _helper
    _helper = None
    if time.monotonic() - started < RESTART_AFTER:
        error_log.error("shared state: the helper (pid %d) exited at once; not restarted, "
                        "setlu/setgs stay on this host (see the messages above)", pid)
        return True
    error_log.warning("shared state: the helper (pid %d) exited; starting another", pid)
    _fork(options, prefix, credentials)
    return True


def stop():
    """Master cleanup: TERM the helper and wait for it (briefly)."""
    global _helper
    if _helper is None:
        return
    pid = _helper[0]
    _helper = None
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
