"""Listening sockets: bind them (IPv4, IPv6, UNIX) or take them from systemd.

The master binds every server's listener before forking workers, so workers
never need the privilege to bind, and a reload reuses listeners whose
address did not change.

A UNIX socket address is written `unix:/abs/path`. The socket file gets mode
0o666 by default: access is meant to be controlled by the directory that
holds it (the usual setup is a front proxy running as another user).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

UNIX_PREFIX = "unix:"
UNIX_MODE = 0o666           # socket file mode; the parent directory restricts access
UNIX_DIR_MODE = 0o755       # for a directory we create to hold the socket

# fd → (path, dev, ino) of the socket files this process created, so
# close_listener() removes our file and never one a newer socket put there.
_created: Dict[int, Tuple[str, int, int]] = {}


class ListenError(OSError):
    """A server's listener cannot be bound; str() names server, address and reason."""

    def __init__(self, server: str, where: str, err: OSError):
        super().__init__(err.errno, err.strerror)
        self.server = server
        self.where = where
        self.reason = err.strerror or str(err)

    def __str__(self):
        return "server %r: cannot listen on %s: %s" % (self.server, self.where, self.reason)


def unix_path(address: str) -> str:
    """'unix:/run/x.sock' → '/run/x.sock'; '' for an IP address or host name."""
    return address[len(UNIX_PREFIX):] if address.startswith(UNIX_PREFIX) else ""


def url(address: str, port: int, ssl: bool = False) -> str:
    """How a listener reads in logs and status: 'unix:/p', 'http://[::1]:80', 'https://…'."""
    if unix_path(address):
        return address
    return "%s://%s" % ("https" if ssl else "http", display(address, port))


def display(address: str, port: int) -> str:
    """How an address reads in messages: 'unix:/p', '127.0.0.1:80', '[::1]:80'."""
    if unix_path(address):
        return address
    if ":" in address:
        return "[%s]:%d" % (address, port)
    return "%s:%d" % (address, port)


def listen_key(address: str, port: int):
    """A comparable identity of a listening address (the port does not count for UNIX)."""
    path = unix_path(address)
    if path:
        return ("unix", os.path.normpath(path))
    return (address, int(port))


def unix_listening(path: str) -> bool:
    """Does a process accept connections on the UNIX socket at `path`?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False            # stale: left behind by a server that is gone
    except OSError:
        return True             # e.g. a full backlog: somebody is there, just busy
    finally:
        probe.close()
    return True


def _unlink_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live socket or any other file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, "%s exists and is not a socket" % path)
    if unix_listening(path):
        raise OSError(errno.EADDRINUSE, "another process listens on %s" % path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _bind_unix(path: str, backlog: int, mode: int) -> socket.socket:
    if not os.path.isabs(path):
        raise OSError(errno.EINVAL, "a UNIX socket path must be absolute")
    os.makedirs(os.path.dirname(path), mode=UNIX_DIR_MODE, exist_ok=True)
    _unlink_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        st = os.stat(path)
        _created[sock.fileno()] = (path, st.st_dev, st.st_ino)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_listener(address: str, port: int, backlog: int = 2048,
                  unix_mode: int = UNIX_MODE) -> socket.socket:
    """A listening, non-blocking socket for a server address.

    `address` is an IPv4/IPv6 address, a host name, or 'unix:/path' (then
    `port` is ignored). IPv6 sockets are V6ONLY, so '::' and '0.0.0.0' can be
    two servers. Raises OSError (errno EADDRINUSE, EACCES, …)."""
    path = unix_path(address)
    if path:
        return _bind_unix(path, backlog, unix_mode)
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


def close_listener(sock: socket.socket) -> None:
    """Close a listener; a UNIX socket file this process created is removed too."""
    created = _created.pop(sock.fileno(), None) if sock.fileno() >= 0 else None
    sock.close()
    if created:
        path, dev, ino = created
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.unlink(path)
        except FileNotFoundError:
            pass


def _sock_keys(sock: socket.socket) -> List[tuple]:
    """listen_key()s a bound socket answers to."""
    try:
        name = sock.getsockname()
    except OSError:
        return []
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):                 # abstract namespace
            return []
        return [("unix", os.path.normpath(name))] if name else []
    return [(name[0], name[1])]


def _server_keys(address: str, port: int) -> List[tuple]:
    """The sockname(s) a server address would have: host names resolve."""
    if unix_path(address) or ":" in address:
        return [listen_key(address, port)]
    try:
        socket.inet_aton(address)
        return [(address, port)]
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [(info[4][0], port) for info in infos]


def inherited_pool(socks: Iterable[socket.socket]) -> Dict[tuple, socket.socket]:
    """Sockets handed over (systemd's LISTEN_FDS) by every listen_key they answer to."""
    pool: Dict[tuple, socket.socket] = {}
    for sock in socks:
        sock.setblocking(False)
        for key in _sock_keys(sock):
            pool.setdefault(key, sock)
    return pool


def take_inherited(pool: Dict[tuple, socket.socket], address: str, port: int
                   ) -> Optional[socket.socket]:
    """The socket in `pool` bound to this address (host names resolved), removed
    from the pool under all its keys; None when there is none."""
    for key in _server_keys(address, port):
        sock = pool.get(key)
        if sock is not None:
            for k in [k for k, s in pool.items() if s is sock]:
                del pool[k]
            return sock
    return None


def listeners_for(servers: Sequence, inherited: Optional[Iterable[socket.socket]] = None
                  ) -> Dict[str, List[socket.socket]]:
    """{server name: [listening socket]} for every server.

    A socket in `inherited` bound to the server's address is taken as it is;
    the others are bound. The first failure closes what this call bound and
    raises ListenError naming the server, address and reason. Inherited
    sockets no server asked for are left to the caller to close."""
    pool = inherited_pool(inherited or ())
    result: Dict[str, List[socket.socket]] = {}
    bound: List[socket.socket] = []
    for server in servers:
        sock = take_inherited(pool, server.address, server.port)
        if sock is None:
            try:
                sock = bind_listener(server.address, server.port, server.backlog)
            except OSError as e:
                for s in bound:
                    close_listener(s)
                raise ListenError(server.name, display(server.address, server.port), e) from e
            bound.append(sock)
        result[server.name] = [sock]
    return result
