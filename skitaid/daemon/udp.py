"""The UDP sockets of HTTP/3 (`quic = PORT`): one per worker, all bound to the
same port with SO_REUSEPORT.

Why one per worker: QUIC has no accept(). A socket shared by every worker
would give each datagram to whichever worker reads first, and a connection
lives in one worker's memory. With one socket per worker in a SO_REUSEPORT
group the kernel picks the socket by a hash of the datagram's 4-tuple, so
every datagram of one client address reaches the same worker (the limits:
see docs/http3.md — a client that migrates, or NAT that rebinds its port,
lands on another worker and its connection is lost).

The master binds them (ports below 1024 need root) and keeps every one open
for the life of the server, so the group — and the hash — do not change when
a worker dies and is replaced or a reload starts a new generation: worker
#i of every generation reads socket #i.
"""
import errno
import socket

RCVBUF = 4 * 1024 * 1024        # asked for; the kernel caps it at net.core.rmem_max


def _udp(family, reuse):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _check_free(family, address, port):
    """EADDRINUSE when any other socket holds the port, even one that set
    SO_REUSEPORT itself (a stray server of the same user would otherwise
    share the port silently and take part of the traffic)."""
    probe = _udp(family, False)
    try:
        probe.bind((address, port))
    finally:
        probe.close()


def bind_udp(address, port, count, probe=True):
    """`count` non-blocking UDP sockets bound to (address, port) in one
    SO_REUSEPORT group. Raises OSError (EADDRINUSE, EACCES, …)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    if probe:
        _check_free(family, address, port)
    socks = []
    try:
        for _ in range(count):
            sock = _udp(family, True)
            socks.append(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            except OSError:
                pass
            sock.bind((address, port))
            sock.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class QuicGroups:
    """The master's UDP sockets: {(address, port): [socket per worker index]}."""

    def __init__(self):
        self.groups = {}

    def ensure(self, address, port, count):
        """At least `count` sockets for (address, port); OSError if the port
        cannot be had (nothing changes then)."""
        key = (address, port)
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = bind_udp(address, port, count)
        elif len(group) < count:
            group += bind_udp(address, port, count - len(group), probe=False)

    def socket(self, address, port, index):
        """Worker #index's socket (the group grows for workers added by TTIN)."""
        self.ensure(address, port, index + 1)
        return self.groups[(address, port)][index]

    def all(self):
        return [s for group in self.groups.values() for s in group]

    def fit(self, wanted):
        """`wanted`: {(address, port): workers}. Groups no server uses are
        closed, and sockets beyond a group's worker count: a worker still
        reading one (retiring) holds its own copy until it exits."""
        for key in list(self.groups):
            keep = wanted.get(key, 0)
            group = self.groups[key]
            for s in group[keep:]:
                s.close()
            del group[keep:]
            if not group:
                del self.groups[key]

    def close(self):
        self.fit({})
