"""Foreground serving: bind the listeners, then run the worker(s).

This is `skitaid run` and `skitaid.run()` until the daemon's master exists:
one server runs in this process; several servers get one forked process
each (apps of different servers never share a process), and this process
waits for them and passes SIGTERM/SIGINT/SIGQUIT on.
"""
import os
import signal
import socket
import sys

from ..logs import error_log, setup_error_log
from .worker import Worker


def bind_socket(address, port, backlog=2048):
    """A listening, non-blocking TCP socket (IPv6 when the address says so)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _url(server):
    host = "[%s]" % server.address if ":" in server.address else server.address
    return "%s://%s:%d/" % ("https" if server.ssl else "http", host or "0.0.0.0", server.port)


def serve(config):
    """Serve every server of `config` in the foreground; returns an exit code."""
    setup_error_log(None, any(s.debug for s in config.servers))
    for server in config.servers:
        if server.ssl:       # a bad certificate or passphrase: say so before listening
            from ..protocols.tls import server_context
            try:
                server_context(server.certfile, server.keyfile, server.passphrase, server.http2)
            except ValueError as e:
                print("skitaid: server %r: %s" % (server.name, e), file=sys.stderr)
                return 1
    bound = []
    for server in config.servers:
        port = server.port
        try:
            sockets = [bind_socket(server.address, port, server.backlog)]
            forward = []
            if server.forward:       # (http port, https port, domain)
                port = server.forward[0]
                forward.append(bind_socket(server.address, port, server.backlog))
            bound.append((server, sockets, forward))
        except OSError as e:
            print("skitaid: cannot listen on %s:%d for server %r: %s"
                  % (server.address, port, server.name, e.strerror), file=sys.stderr)
            return 1
    for server, _, forward in bound:
        error_log.info("server %r listening on %s (threads=%d, pid %d)",
                       server.name, _url(server), server.threads, os.getpid())
        if forward:
            error_log.info("server %r forwards http port %d to https port %d",
                           server.name, server.forward[0], server.forward[1])
    if len(bound) == 1:
        return _run_worker(*bound[0])
    return _fork_servers(bound)


def _run_worker(server, sockets, forward_sockets=()):
    try:
        return Worker(server, sockets, forward_sockets=forward_sockets).run()
    except Exception:
        error_log.exception("server %r failed", server.name)
        return 1


def _fork_servers(bound):
    children = {}
    for server, sockets, forward in bound:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_worker(server, sockets, forward)
            finally:
                os._exit(code)
        children[pid] = server.name
        for s in sockets + forward:
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
