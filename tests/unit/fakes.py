"""A fake host and a fake transport for driving the protocol state machines.

`FakeHost` stands in for the worker: it offers exactly the members the
connections (protocols/h1.py, h2.py, wsconn.py, base.py) use of it today, and
nothing else: it satisfies `ConnectionHost` (protocols/host.py), which
tests/unit/test_host_contract.py checks. `FakeTransport` records what a
connection writes and what it does to its transport (pause/resume,
write_eof, close, abort).

The loop is a real asyncio loop (a new one per test): connections schedule
flushes and drain waiters on it. `host.step()` runs it for a few iterations;
no sockets, no processes, no threads.
"""
import asyncio
import dataclasses

from skitaid.config.model import Limits


class FakeConfig:
    """The part of the server config a connection reads (h1: `http2`)."""

    def __init__(self, http2=False):
        self.http2 = http2
        self.alt_svc = ""


class FakeHost:
    """What a connection uses of its worker: loop, limits, config, the
    connection set, dispatch, the per-iteration flush queue, the exchange
    life-cycle reports, rejections and exception logging."""

    def __init__(self, loop, handler=None, http2=False, **limits):
        self.loop = loop
        self.limits = dataclasses.replace(Limits(), **limits)
        self.config = FakeConfig(http2)
        self.connections = set()
        self.handshaking = set()    # (TLS only; the fake serves no TLS)
        # handler(exchange) answers each dispatched exchange; None leaves
        # them to the test (they collect in `dispatched`)
        self.handler = handler
        self.dispatched = []
        self.finished = []
        self.aborted = []
        self.rejected = []          # (status, detail)
        self.exceptions = []        # `what` of each log_exception()
        self._flush_queue = []

    # -- what the connections call ---------------------------------------------------
    def dispatch(self, exchange):
        self.dispatched.append(exchange)
        if self.handler is not None:
            self.handler(exchange)

    def queue_flush(self, conn):
        # as the worker does: one flush per loop iteration for every connection that sent
        if not self._flush_queue:
            self.loop.call_soon(self._flush)
        self._flush_queue.append(conn)

    def _flush(self):
        queue, self._flush_queue = self._flush_queue, []
        for conn in queue:
            conn.flush()

    def exchange_finished(self, exchange):
        self.finished.append(exchange)

    def exchange_aborted(self, exchange):
        if not exchange.done:
            exchange.done = True
            exchange.status = exchange.status or 499
            self.aborted.append(exchange)

    def count_rejected(self, status, detail, client):
        self.rejected.append((status, detail))

    def log_exception(self, what):
        self.exceptions.append(what)

    # -- for the tests ----------------------------------------------------------------
    def step(self, n=3):
        """Run the loop for `n` iterations (flushes, call_soon callbacks, tasks)."""
        for _ in range(n):
            self.loop.run_until_complete(asyncio.sleep(0))


class FakeTransport:
    """Records writes and state changes; tells `protocol` it lost the
    connection (on the loop, as asyncio does) after close() or abort()."""

    def __init__(self, loop, can_eof=True, sockname=("127.0.0.1", 8080),
                 peername=("127.0.0.1", 50000)):
        self.loop = loop
        self.protocol = None
        self.can_eof = can_eof
        self.extra = {"sockname": sockname, "peername": peername, "socket": None}
        self.written = bytearray()
        self.writes = 0
        self.reading = True
        self.pauses = 0
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.buffer_size = 0        # what get_write_buffer_size() says

    def connect(self, protocol):
        """connection_made(), as a server's accept would."""
        self.protocol = protocol
        protocol.connection_made(self)
        return protocol

    def take(self):
        """The bytes written since the last take()."""
        data = bytes(self.written)
        del self.written[:]
        return data

    # -- asyncio.Transport -----------------------------------------------------------
    def get_extra_info(self, name, default=None):
        return self.extra.get(name, default)

    def write(self, data):
        assert not self.closed, "write after close"
        # asyncio refuses it too (RuntimeError): nothing may follow our FIN
        assert not self.eof_written, "write after write_eof"
        self.written += data
        self.writes += 1

    def writelines(self, pieces):
        for p in pieces:
            self.write(p)

    def is_closing(self):
        return self.closed

    def can_write_eof(self):
        return self.can_eof

    def write_eof(self):
        assert self.can_eof
        self.eof_written = True

    def pause_reading(self):
        self.reading = False
        self.pauses += 1

    def resume_reading(self):
        self.reading = True

    def is_reading(self):
        return self.reading

    def get_write_buffer_size(self):
        return self.buffer_size

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def close(self):
        self._lose()

    def abort(self):
        self.aborted = True
        self._lose()

    def _lose(self):
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)
