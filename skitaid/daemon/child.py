"""What a freshly forked worker does before it serves: the child side of spawn.

Order matters: forget the master's signal handling and file descriptors,
take a readable process title, drop privileges, and only then let the
Worker import any app code.
"""
import faulthandler
import os
import signal
import sys

from ..logs import error_log

_MASTER_ONLY = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH)
_DEFAULTS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGABRT)


def set_title(title):
    try:
        from setproctitle import setproctitle
    except ImportError:     # only cosmetic
        return
    setproctitle(title)


def worker_main(server, sockets, forward_sockets, index, slot, credentials, request_log_path,
                close):
    """Runs in the child after fork(); never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in _MASTER_ONLY:
            signal.signal(sig, signal.SIG_IGN)
        for sig in _DEFAULTS:
            signal.signal(sig, signal.SIG_DFL)
        # (the master blocked them across fork: one that came meanwhile
        # is delivered now, with its default meaning)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_ONLY + _DEFAULTS)
        for obj in close:               # the master's copies of what this worker must not hold
            try:
                obj.close()
            except OSError:
                pass
        set_title("skitaid: %s worker #%d" % (server.name, index))
        # skitaid's own modules load while still privileged (the user may not
        # be able to read the Python installation); app code loads after the drop
        from ..worker.worker import Worker
        from ..handlers import static  # noqa: F401  (imported lazily by the router)
        worker = Worker(server, sockets, index, request_log_path, slot,
                        forward_sockets=forward_sockets)
        worker.tls_context()            # the key file may be readable by root only
        if credentials is not None:
            from .privileges import drop
            drop(credentials)
        # SIGABRT from the master (hung worker): every thread's stack goes to
        # the error log (stderr), then the worker dies of the signal
        faulthandler.enable(file=sys.stderr, all_threads=True)
        code = worker.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        error_log.exception("server %r: worker #%d could not start", server.name, index)
        code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
