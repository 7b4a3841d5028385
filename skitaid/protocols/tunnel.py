"""A byte tunnel: two transports joined, bytes pass both ways as they come.

Used after the reverse proxy relayed a backend's `101 Switching Protocols`
(WebSocket through `/x = @alias`) and after the forward proxy answered a
`CONNECT`. It never looks at the bytes.

Backpressure: when one side's write buffer goes over its high-water mark,
reading from the other side pauses until it drains, so a fast sender in
front of a slow reader costs no memory. A half-close (EOF) is passed on
where the transport can (`write_eof`); once both sides have finished, or
either side is gone, both close (what is buffered still goes out).

The tunnel sits in `worker.connections` like an HTTP connection: the sweep
closes it after `tunnel_timeout` seconds without a byte either way, and a
graceful stop closes it as soon as it has been quiet for `QUIET` seconds
(a transfer in progress may finish until `graceful_timeout`).
"""
import asyncio
import time

from .base import Tracked
from .host import ConnectionHost

QUIET = 1.0     # graceful stop: a tunnel this long without traffic counts as idle


class _End(asyncio.Protocol):
    """One side of the tunnel (the client's connection, or the backend's)."""

    __slots__ = ("tunnel", "transport", "peer", "eof", "write_paused", "paused_reading", "gone")

    def __init__(self, tunnel):
        self.tunnel = tunnel
        self.transport = None
        self.peer = None
        self.eof = False             # this side finished sending
        self.write_paused = False
        self.paused_reading = True   # until both sides are joined
        self.gone = False

    def takeover(self, transport, leftover):
        """H1Connection.switch_protocol hands the client's connection over."""
        self.tunnel.join(transport, leftover)

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport):
        # a connection we opened ourselves (CONNECT): hold its input until joined
        self.transport = transport
        transport.pause_reading()

    def data_received(self, data):
        tunnel = self.tunnel
        tunnel.last_active = time.monotonic()
        peer = self.peer.transport
        if peer is not None and not peer.is_closing():
            peer.write(data)

    def eof_received(self):
        self.eof = True
        self.tunnel.last_active = time.monotonic()
        peer = self.peer
        if peer.eof or peer.transport is None or peer.transport.is_closing() \
                or not peer.transport.can_write_eof():
            self.tunnel.close()
            return False
        peer.transport.write_eof()   # after what is buffered for it
        return True                  # keep our sending side open for the answer

    def connection_lost(self, exc):
        self.gone = True
        self.tunnel.lost()

    def pause_writing(self):
        # our transport's buffer is full: stop reading what fills it
        self.write_paused = True
        self.peer.pause()

    def resume_writing(self):
        self.write_paused = False
        self.peer.resume()

    # -- flow control ---------------------------------------------------------------
    def pause(self):
        if not self.paused_reading and self.transport is not None \
                and not self.transport.is_closing():
            self.paused_reading = True
            self.transport.pause_reading()

    def resume(self):
        if self.paused_reading and not self.peer.write_paused and self.transport is not None \
                and not self.transport.is_closing():
            self.paused_reading = False
            self.transport.resume_reading()


class Tunnel(Tracked):
    """`backend` first (its transport attached or being connected), then the
    client's transport through `client.takeover()` (the H1 switch_protocol
    hand-over), which joins the two and starts the flow."""
    kind = "tunnel"

    def __init__(self, worker: ConnectionHost, timeout):
        self.worker = worker
        self.timeout = timeout
        self.client = _End(self)
        self.backend = _End(self)
        self.client.peer = self.backend
        self.backend.peer = self.client
        self.last_active = time.monotonic()
        self.closed = False
        self.closed_at = 0.0
        self.on_close = None         # called once, when the tunnel starts closing
        self._backend_tail = b""

    def attach_backend(self, transport, tail=b""):
        """An open backend connection whose protocol is now ours; `tail` is
        what it sent after its HTTP head (already read, owed to the client)."""
        transport.set_protocol(self.backend)
        self.backend.transport = transport
        transport.pause_reading()
        self._backend_tail = tail

    def join(self, transport, leftover):
        """The client's connection is ours: join, pass what each side sent
        early, and start reading both."""
        client, backend = self.client, self.backend
        client.transport = transport
        self.worker.connections.add(self)
        if self.closed or backend.transport is None or backend.transport.is_closing():
            self.close_now()
            return
        tail, self._backend_tail = self._backend_tail, b""
        if tail:
            transport.write(tail)
        if leftover:
            backend.transport.write(leftover)
        client.resume()
        backend.resume()

    # -- closing ---------------------------------------------------------------------
    def lost(self):
        """One side is gone: the other gets what is buffered for it, then
        closes. The tunnel leaves the worker's view once both are gone (the
        sweep aborts a side that does not take its last bytes in time)."""
        self.close()
        if all(end.gone or end.transport is None for end in (self.client, self.backend)):
            self.worker.connections.discard(self)

    def _closing(self):
        self.closed = True
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()

    def close(self):
        if self.closed:
            return
        self._closing()
        self.closed_at = time.monotonic()
        for end in (self.client, self.backend):
            if end.transport is not None and not end.transport.is_closing():
                end.transport.close()

    def close_now(self):
        self._closing()
        self.worker.connections.discard(self)
        for end in (self.client, self.backend):
            if end.transport is not None and not end.gone:
                end.transport.abort()

    # -- the worker's view --------------------------------------------------------------
    def close_idle(self):
        """Graceful stop: close once nothing has moved for QUIET seconds."""
        if self.closed:
            return False         # closing: gone once the last bytes are out
        if time.monotonic() - self.last_active >= QUIET and not self._buffered():
            self.close()
            return True
        return False

    def _buffered(self):
        for end in (self.client, self.backend):
            t = end.transport
            if t is not None and not t.is_closing() and t.get_write_buffer_size():
                return True
        return False

    def sweep(self, now):
        if self.closed:
            if now - self.closed_at > self.worker.limits.response_timeout:
                self.close_now()     # a side that will not take its last bytes
        elif now - self.last_active > self.timeout:
            # also the way out of a side that never reads: nothing moves
            self.close_now()
