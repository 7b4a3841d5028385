"""What a freshly forked worker does before it serves: the child side of spawn.

Order matters: forget the master's signal handling and file descriptors,
take a readable process title, drop privileges, and only then let the
Worker import any app code.
"""
import faulthandler
import os
import signal
import sys
import traceback

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


def master_title(prefix=""):
    """`skitaid: master`; an app script's `skitaid/NAME: master`, as the pages show."""
    return "%s: master" % (prefix or "skitaid")


def worker_title(server, index):
    """`skitaid: SERVER worker #0`; an app script's `skitaid/NAME: worker #0`."""
    if server.title:
        return "%s: worker #%d" % (server.title, index)
    return "skitaid: %s worker #%d" % (server.name, index)


def _prctl():
    """libc's prctl, loaded while still privileged (the workers' user may not
    be able to read the Python installation); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None


def die_with_parent(prctl, master_pid):
    """Linux: SIGTERM this process when the master dies (a graceful stop).
    Set after the privilege drop, which clears it; the channel's EOF and a
    parent-pid check cover other systems and the moment before this call."""
    if prctl is not None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)      # PR_SET_PDEATHSIG
    if os.getppid() != master_pid:      # died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def boot_failure(e):
    """The last line of the traceback (and the config key that would fix it):
    what a reload or `status` reports."""
    hint = getattr(e, "hint", "")
    while e.__cause__ is not None:
        e = e.__cause__
    lines = traceback.format_exception_only(type(e), e)
    return (lines[-1].strip() if lines else type(e).__name__) + hint


def app_traceback(e):
    """The traceback of what the app raised (the first cause), without the
    frames of skitaid's own import machinery around it."""
    while e.__cause__ is not None:
        e = e.__cause__
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def _devel_watched(server):
    from .. import devel
    return devel.watched(server)


def worker_main(server, sockets, forward_sockets, index, slot, credentials, request_log_path,
                close, tls_context=None, link=None, quic_socket=None):
    """Runs in the child after fork(); never returns.

    `link`: the worker's end of its channel to the master (channel.MasterLink);
    `quic_socket`: this worker's UDP socket for HTTP/3 (daemon/udp.py), or None."""
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
        set_title(worker_title(server, index))
        if server.devel:                # skitaid.is_devel() in this server's apps
            from .. import mode
            mode.set_mode(devel=True)
        # skitaid's own modules load while still privileged (the user may not
        # be able to read the Python installation); app code loads after the drop
        from ..routing import preload_handlers
        from ..worker.worker import Worker
        preload_handlers(server)
        worker = Worker(server, sockets, index, request_log_path, slot,
                        forward_sockets=forward_sockets, tls_context=tls_context, link=link,
                        quic_socket=quic_socket)
        worker.tls_context()            # (built by the master; else here: keys may be root's only)
        prctl = _prctl()
        if credentials is not None:
            from .privileges import drop
            drop(credentials)
        if link is not None:
            die_with_parent(prctl, link.master_pid)
        # SIGABRT from the master (hung worker): every thread's stack goes to
        # the error log (stderr), then the worker dies of the signal
        faulthandler.enable(file=sys.stderr, all_threads=True)
        code = worker.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if code and link is not None:
            link.failed("exit status %s" % code)
    except BaseException as e:
        if link is not None and _devel_watched(server):
            # the master logs it, once for the generation (not once per worker)
            link.traceback(app_traceback(e))
        else:
            error_log.exception("server %r: worker #%d could not start", server.name, index)
        code = 3
        if link is not None:
            link.failed(boot_failure(e))
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
