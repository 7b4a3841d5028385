"""What the connection protocols share: their addresses, writing pauses,
closing, and output batched per loop iteration."""
import asyncio
import select
import time


def addresses(transport):
    """(client, server) addresses of a connection. A UNIX socket (a proxy in
    front) has no addresses or ports to speak of: its sockname is a path."""
    server = transport.get_extra_info("sockname")
    if not isinstance(server, tuple):
        return ("unix", 0), ("localhost", 0)
    return transport.get_extra_info("peername"), server


def input_waiting(transport):
    """Bytes (or the client's FIN) are in the socket, not read yet: the loop's
    next poll delivers them. A retiring connection checks this before it
    closes as idle: a loop that fell behind may decide before that poll, with
    a last_active from before they came."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


class Tracked:
    """What the worker asks of everything in `worker.connections` (HTTP
    connections, WebSocket, tunnels, the forwarder) besides its attributes."""

    __slots__ = ()
    kind = "http"           # "websocket", "tunnel": what the status page counts it as

    def in_flight(self):
        """The exchanges handed to a handler and not finished (a stop that
        cuts them logs each one); none for a tunnel or a WebSocket."""
        return ()


class Connection(Tracked, asyncio.Protocol):
    """A connection the worker keeps in `worker.connections`.
    `self.worker` is a ConnectionHost (protocols/host.py), not the Worker."""

    def __init__(self, worker, scheme="http"):
        """What every HTTP connection starts with; the subclass adds its own."""
        self.worker = worker
        self.loop = worker.loop
        self.limits = worker.limits
        self.scheme = scheme
        self.transport = None
        self.client = None
        self.server = None
        self.closing = False
        self.write_paused = False
        self._paused_since = 0.0

    def pause_writing(self):
        self.write_paused = True
        self._paused_since = time.monotonic()

    def close_soon(self):
        """Close after what is queued has been written."""
        self.closing = True
        self.flush()
        self.transport.close()

    def close_now(self):
        self.closing = True
        self.transport.abort()


class Batched(Connection):
    """Output queued by `send()` and written by `flush()`, which the worker
    calls once per loop iteration for every connection that sent something:
    pipelined responses go out in one write, and writes stay out of the read
    path (measurably faster under load). `_out` starts as None."""

    def send(self, data):
        out = self._out
        if out is None:
            self._out = [data]
            self.worker.queue_flush(self)
        else:
            out.append(data)

    def flush(self):
        out = self._out
        if out is not None:
            self._out = None
            if self.transport.is_closing():
                return      # (also once connection_lost came)
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
