"""Foreground serving: bind the listeners, then run the worker(s).

This is `skitaid run` and `skitaid.run()` until the daemon's master exists:
one server runs in this process; several servers get one forked process
each (apps of different servers never share a process), and this process
waits for them and passes SIGTERM/SIGINT/SIGQUIT on.
"""
import os
import signal
import sys

from ..daemon.listeners import ListenError, bind_listener, listeners_for
from ..logs import error_log, setup_error_log
from .worker import Worker


def bind_socket(address, port, backlog=2048):
    """A listening, non-blocking socket (IPv4, IPv6 or unix:/path): see daemon.listeners."""
    return bind_listener(address, port, backlog)


def _url(server):
    if server.unix_path:
        return "http+" + server.address
    host = "[%s]" % server.address if ":" in server.address else server.address
    return "http://%s:%d/" % (host or "0.0.0.0", server.port)


def serve(config):
    """Serve every server of `config` in the foreground; returns an exit code."""
    setup_error_log(None, any(s.debug for s in config.servers))
    try:
        listening = listeners_for(config.servers)
    except ListenError as e:
        print("skitaid: %s" % e, file=sys.stderr)
        return 1
    bound = [(server, listening[server.name]) for server in config.servers]
    for server, _ in bound:
        error_log.info("server %r listening on %s (threads=%d, pid %d)",
                       server.name, _url(server), server.threads, os.getpid())
    if len(bound) == 1:
        server, sockets = bound[0]
        return _run_worker(server, sockets)
    return _fork_servers(bound)


def _run_worker(server, sockets):
    try:
        return Worker(server, sockets).run()
    except Exception:
        error_log.exception("server %r failed", server.name)
        return 1


def _fork_servers(bound):
    children = {}
    for server, sockets in bound:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_worker(server, sockets)
            finally:
                os._exit(code)
        children[pid] = server.name
        for s in sockets:
            s.close()

    def forward(sig, frame):
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
        signal.signal(sig, forward)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        name = children.pop(pid, None)
        if name is not None and code:
            error_log.warning("server %r exited with status %d", name, os.waitstatus_to_exitcode(code))
            status = 1
    return status
