"""Request bodies: fed by the event loop, read by app threads (`wsgi.input`).

The loop appends what arrives; the reader takes it. When more than
HIGH_WATER bytes wait unread, the connection stops reading from the socket
until the app has consumed them, so a 100 MB upload never sits in memory.
"""
import threading

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class ClientDisconnected(IOError):
    """The client went away while the app was reading the body."""


class EmptyBody:
    """wsgi.input for requests without a body (shared, stateless)."""

    received = 0
    complete = True
    continue_pending = False

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __iter__(self):
        return iter(())

    def on_complete(self, callback):
        callback()

    on_ready = on_complete

    def discard(self):
        pass


EMPTY_BODY = EmptyBody()


class RequestBody:
    """A streamed request body.

    `flow` is the connection side: it gets `body_paused()` when too much
    waits unread and `body_resume()` (called through the loop) when the
    reader caught up, and `send_continue()` for Expect: 100-continue.
    """

    def __init__(self, flow, loop, expect_continue=False):
        self._flow = flow
        self._loop = loop
        self._buf = bytearray()
        self._pos = 0
        self._cond = threading.Condition(threading.Lock())
        self._error = None
        self._paused = False
        # True while the client waits for "100 Continue" before sending the
        # body: sent on the first read, never if the app does not read.
        self.continue_pending = expect_continue
        self._waiters = None
        self._ready = None        # on_ready() callback
        self.received = 0
        self.complete = False
        self.discarding = False
        self.notify = None        # loop-side reader (the proxy): called on data, end, error

    # -- loop side ---------------------------------------------------------
    def feed(self, data):
        self.received += len(data)
        # the client sent the body without waiting for 100 Continue
        self.continue_pending = False
        if self.discarding:
            return
        full = False
        with self._cond:
            self._buf += data
            self._cond.notify()
            if len(self._buf) - self._pos > HIGH_WATER and not self._paused:
                self._paused = full = True
                self._flow.body_paused()
        if full and self._ready is not None:
            self._fire_ready()      # (outside the lock: the callback may answer)
        if self.notify is not None:
            self.notify()

    def finish(self):
        self.continue_pending = False
        with self._cond:
            self.complete = True
            self._cond.notify_all()
        if self._waiters:
            for cb in self._waiters:
                cb()
            self._waiters = None
        if self._ready is not None:
            self._fire_ready()
        if self.notify is not None:
            self.notify()

    def fail(self, error):
        with self._cond:
            self._error = error
            self._cond.notify_all()
        if self.notify is not None:
            self.notify()

    def discard(self):
        """The response is done: throw away what is left of the body."""
        with self._cond:
            self.discarding = True
            self._buf = bytearray()
            self._pos = 0
            self.continue_pending = False
            if self._paused:
                self._paused = False
                self._flow.body_resume()

    def buffer_all(self):
        """Keep everything until the end: no reader will drain this body before
        it is complete (threads = 0 runs the app after the whole body is here),
        so flow control must not stop the socket. Bounded by max_upload_size."""
        with self._cond:
            was_paused = self._paused
            self._paused = True       # "already paused": feed() never pauses again
        if was_paused:
            self._flow.body_resume()

    def on_complete(self, callback):
        """Call `callback` (loop thread) once the whole body has arrived."""
        if self.complete:
            callback()
        else:
            if self.continue_pending:
                self.continue_pending = False
                self._flow.send_continue()
            self._waiters = (self._waiters or []) + [callback]

    def on_ready(self, callback):
        """Call `callback` (loop thread) once the whole body has arrived or
        HIGH_WATER bytes of it wait unread, whichever comes first: from then
        on a reader has data that a slow client cannot hold back. (A body
        that fails first never calls it: its exchange is closed.)"""
        if self.complete or self._paused:
            callback()
        else:
            self._ready = callback

    def _fire_ready(self):
        callback, self._ready = self._ready, None
        callback()

    def take_available(self):
        """Loop thread, for a reader on the loop (the proxy): what has arrived so
        far, without blocking; the socket is resumed if it was paused. Raises
        the body's error (client gone, bad chunk)."""
        if self.continue_pending:
            self.continue_pending = False
            self._flow.send_continue()
        with self._cond:
            if self._error is not None:
                raise self._error
            data = bytes(self._buf[self._pos:])
            self._buf = bytearray()
            self._pos = 0
            resume = self._paused
            self._paused = False
        if resume:
            self._flow.body_resume()
        return data

    def take_all(self):
        """Everything received (loop thread, after completion: threads = 0 mode)."""
        data = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = 0
        return data

    # -- reader side (app thread) --------------------------------------------
    def _available(self):
        return len(self._buf) - self._pos

    def _wait(self):
        """Block until more data, the end, or an error (lock held)."""
        if self.continue_pending:
            self.continue_pending = False
            self._loop.call_soon_threadsafe(self._flow.send_continue)
        if self._error is not None:
            raise self._error
        if not self.complete:
            if not self._cond.wait(300):
                raise ClientDisconnected("timed out waiting for the request body")
            if self._error is not None:
                raise self._error

    def _take(self, n):
        pos = self._pos
        data = bytes(self._buf[pos:pos + n])
        self._pos = pos + len(data)
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]      # compact once half of it is consumed
            self._pos = 0
        if self._paused and len(self._buf) - self._pos < LOW_WATER:
            self._paused = False
            self._loop.call_soon_threadsafe(self._flow.body_resume)
        return data

    def _want_all(self):
        """The reader needs more than HIGH_WATER at once (read() of everything,
        a line longer than that): it will hold it all anyway, bounded by
        max_upload_size, so flow control must not stop the client (it would
        wait for a reader that waits for it). Lock held."""
        was_paused = self._paused
        self._paused = True       # "already paused": feed() never pauses again
        if was_paused:
            self._loop.call_soon_threadsafe(self._flow.body_resume)

    def read(self, size=-1):
        with self._cond:
            if size is None or size < 0:
                if not self.complete:
                    self._want_all()
                while not self.complete:
                    self._wait()
                return self._take(self._available())
            while self._available() < size and not self.complete:
                self._wait()
            return self._take(min(size, self._available()))

    def read1(self, size=-1):
        """Whatever is there (at least one byte unless at the end)."""
        with self._cond:
            while not self._available() and not self.complete:
                self._wait()
            n = self._available() if size is None or size < 0 else min(size, self._available())
            return self._take(n)

    def readline(self, size=-1):
        with self._cond:
            start = self._pos
            while True:
                nl = self._buf.find(b"\n", start)
                if nl >= 0:
                    n = nl + 1 - self._pos
                    break
                if size is not None and 0 <= size <= self._available():
                    n = size
                    break
                if self.complete:
                    n = self._available()
                    break
                start = len(self._buf)
                if self._paused:
                    self._want_all()
                self._wait()
                start = min(start, len(self._buf))
                start = max(start, self._pos)
            if size is not None and size >= 0:
                n = min(n, size)
            return self._take(n)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line
