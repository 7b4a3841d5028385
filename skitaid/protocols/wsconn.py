"""A WebSocket connection: takes the transport over after the 101 answer.

It reads frames (protocols/websocket.py), answers pings, runs the close
handshake, sends keep-alive pings, closes idle connections, and hands whole
messages to a session (the app side, handlers/websocket.py) on the loop.
It stays in `worker.connections`, so the worker's sweep and graceful stop
reach it like any HTTP connection (graceful stop closes with 1001).

Backpressure both ways: reading pauses while the session has too many
messages not yet handled; app threads sending wait while the socket is not
draining; sends that cannot wait (from the loop, broadcasts) drop a client
whose unsent output is over `HARD_LIMIT` instead of buffering it.
"""
import os
import threading
import time

from . import websocket as wsp
from .base import Batched, addresses
from .host import ConnectionHost

OPEN, CLOSING, CLOSED = range(3)

HIGH_WATER = 256 * 1024         # bytes app threads may queue before they wait
HARD_LIMIT = 8 * 1024 * 1024    # unsent bytes at which a client that does not read is dropped
CLOSE_TIMEOUT = 5.0             # seconds to wait for the client's close frame / its close of TCP
FAIL_GRACE = 2.0                # seconds the app gets to answer messages sent before a violation


class WSConnection(Batched):
    kind = "websocket"

    def __init__(self, worker: ConnectionHost, session, max_message_size, idle_timeout, ping_interval,
                 deflate=None):
        self.worker = worker
        self.loop = worker.loop
        self.session = session
        self.parser = wsp.FrameParser(max_message_size, deflate)
        self.deflate = deflate
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.transport = None
        self.closing = False          # close_soon() / close_now() came
        self.state = OPEN
        self.failed = False           # protocol error: input is no longer parsed
        self.last_recv = self.last_active = time.monotonic()
        self._ping_sent = 0.0
        self._closing_since = 0.0
        self._failure = None          # (code, reason) to fail with once earlier messages are answered
        self._fail_at = 0.0
        self._out = None
        self.write_paused = False
        self._paused_since = 0.0
        self._reading_paused = False
        # thread → loop output accounting (send_threadsafe)
        self._cond = threading.Condition(threading.Lock())
        self._queued = 0
        self._waiting = 0
        self.client = None

    # -- taking over -------------------------------------------------------------
    def takeover(self, transport, leftover):
        """Called on the loop right after the 101 went out and the transport
        was pointed at us (reading is paused until now)."""
        self.transport = transport
        self.client = addresses(transport)[0]
        self.worker.connections.add(self)
        self.session.opened(self)
        if leftover:
            self.data_received(leftover)
        if not self._reading_paused and not transport.is_closing():
            transport.resume_reading()

    # -- asyncio.Protocol ------------------------------------------------------------
    def data_received(self, data):
        self.last_recv = time.monotonic()
        if self.failed:
            return            # after a protocol error: wait for the client's close
        error = None
        try:
            events = self.parser.feed(data)
        except wsp.ProtocolError as e:
            error = e
            events = e.events
        for ev in events:
            kind = ev[0]
            if kind == wsp.MESSAGE:
                if self.state == OPEN:
                    self.last_active = self.last_recv
                    if self.session.received(ev[1]):
                        self.pause_input()
            elif kind == wsp.PING:
                if self.state == OPEN:
                    self.send(wsp.frame(wsp.OP_PONG, ev[1]))
            elif kind == wsp.PONG:
                self._ping_sent = 0.0
            else:
                self._close_received(ev[1], ev[2])
        if error is not None:
            if self.state == OPEN and self.session is not None:
                # Messages that came before the mistake are answered first:
                # the session fails the connection once it has handled them
                # (or the sweeper does, should the app take too long).
                self.failed = True
                self._fail_at = self.last_recv + FAIL_GRACE
                self._failure = (error.code, error.reason)
                self.session.fail_after(error.code, error.reason)
            else:
                self.fail(error.code, error.reason)

    def eof_received(self):
        self._end_session(1006)
        return False          # let the transport close

    def connection_lost(self, exc):
        self.state = CLOSED         # (sends are dropped from now on)
        self.worker.connections.discard(self)
        with self._cond:
            self._cond.notify_all()
        self._end_session(1006)

    def resume_writing(self):
        self.write_paused = False
        with self._cond:
            if self._waiting:
                self._cond.notify_all()

    # -- input flow control (called by the session) ---------------------------------
    def pause_input(self):
        if not self._reading_paused and self.state != CLOSED:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_input(self):
        if self._reading_paused and self.state != CLOSED:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- output (loop thread; send() / flush() from base.Batched) ----------------------------
    def message_frame(self, msg):
        """A str as a text frame, bytes as a binary frame, compressed when
        permessage-deflate was agreed (then on the loop thread only: with
        context takeover, messages must be compressed in sending order)."""
        if isinstance(msg, str):
            op, data = wsp.OP_TEXT, msg.encode("utf-8")
        else:
            op, data = wsp.OP_BINARY, bytes(msg)
        d = self.deflate
        if d is not None:
            return wsp.frame(op, d.compress(data), rsv1=True)
        return wsp.frame(op, data)

    def send_message(self, msg):
        """Send one message from the loop thread without waiting: a client
        that lets HARD_LIMIT bytes pile up is dropped."""
        if self.state != OPEN:
            return False
        self.send_frame(self.message_frame(msg))
        return True

    def send_frame(self, data):
        if self.state != OPEN:
            return
        self.last_active = time.monotonic()
        self.send(data)
        if self.transport.get_write_buffer_size() + len(data) > HARD_LIMIT:
            self.close_now()

    # -- output from app threads -----------------------------------------------------------
    def send_threadsafe(self, msg):
        """Hand a message to the loop from an app thread; wait while the
        client is not keeping up. False when the connection is gone. The
        frame is built here (off the loop) unless it is to be compressed."""
        data = self.message_frame(msg) if self.deflate is None else msg
        cond = self._cond
        with cond:
            while (self._queued > HIGH_WATER or self.write_paused) and self.state == OPEN:
                self._waiting += 1
                try:
                    cond.wait(1.0)
                finally:
                    self._waiting -= 1
            if self.state != OPEN:
                return False
            self._queued += len(data)
        self.loop.call_soon_threadsafe(self._deliver, data)
        return True

    def _deliver(self, data):
        if self.state == OPEN:
            self.last_active = time.monotonic()
            self.send(self.message_frame(data) if self.deflate is not None else data)
        with self._cond:
            self._queued -= len(data)
            if self._waiting and not self.write_paused:
                self._cond.notify_all()

    # -- closing ---------------------------------------------------------------------------
    def close(self, code=wsp.NORMAL, reason=""):
        """Start the close handshake (loop thread)."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        self._closing_since = time.monotonic()
        self.send(wsp.frame(wsp.OP_CLOSE, wsp.close_payload(code, reason)))
        with self._cond:
            self._cond.notify_all()     # app threads waiting to send give up
        self._end_session(code)
        self.resume_input()     # the client's close frame must be read

    def fail(self, code, reason):
        """A protocol violation: close frame with `code`, parse nothing more."""
        self.failed = True
        self._failure = None
        self.worker.count_rejected(code, "websocket: " + reason, self.client)
        if self.state == OPEN:
            self.close(code, reason)
            # The client's close frame can no longer be found in the input:
            # end our side after the close frame instead (a client waits for
            # the server to close TCP first), and close when it ends its own.
            self.flush()
            if self.transport.can_write_eof():
                self.transport.write_eof()
        else:
            self.close_soon()

    def _close_received(self, code, reason):
        if self.state == OPEN:
            # echo the code (an empty close gets an empty one back), then end
            self.state = CLOSING
            self.send(wsp.frame(wsp.OP_CLOSE, wsp.close_payload(code)))
            self._end_session(code)
        self.close_soon()       # the server closes TCP first (RFC 6455 7.1.1)

    def _end_session(self, code):
        s = self.session
        if s is not None:
            self.session = None
            try:
                s.closed(code)
            except Exception:
                self.worker.log_exception("closing a websocket session")

    def close_idle(self):
        """Graceful stop: 1001 to every open connection; done when they are gone."""
        if self.state == OPEN:
            self.close(wsp.GOING_AWAY, "server shutting down")
        return self.state == CLOSED

    def sweep(self, now):
        state = self.state
        if state == CLOSING:
            if now - self._closing_since > CLOSE_TIMEOUT:
                self.close_now()
            return
        if state != OPEN:
            return
        if self._failure is not None and now > self._fail_at:
            self.fail(*self._failure)
            return
        if self.write_paused and now - self._paused_since > self.worker.limits.response_timeout:
            self.close_now()    # the client stopped reading
            return
        if self.idle_timeout and now - self.last_active > self.idle_timeout:
            self.close(wsp.NORMAL, "idle timeout")
            return
        iv = self.ping_interval
        if iv:
            if self._ping_sent:
                if now - self._ping_sent > max(iv, 1.0) * 2:
                    self.close_now()      # no pong: the peer is gone
            elif now - self.last_recv >= iv:
                self._ping_sent = now
                self.send(wsp.frame(wsp.OP_PING, os.urandom(4)))
