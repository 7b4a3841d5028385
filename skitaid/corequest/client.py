"""An asyncio HTTP/1.1 client with a bounded keep-alive pool per origin.

One pool per worker (loop thread only). Responses are parsed by httptools
(llhttp) and handed to a *sink*: `Collect` buffers a whole response for
`was` calls, the reverse proxy streams it on. Reading stops while a sink
asks for it (`pause_reading`), so a slow consumer never makes a buffer grow.
"""
import asyncio
import collections
import ssl
import time

import httptools

from ..http.headers import BODY_METHODS, bad_value, is_request_target, is_token
from .cluster import ConnectFailed, host_header
from .h2client import H2ClientConnection, H2Origins, StreamRefused

__all__ = ["ClientPool", "ConnectFailed", "ProtocolError", "http_request"]

MAX_RESPONSE_SIZE = 64 * 1024 * 1024     # a buffered (was) response larger than this fails
MAX_HEAD_SIZE = 64 * 1024
MAX_PER_ORIGIN = 32
# written by start() from its own arguments, never copied from a caller's header list
_OWN = frozenset(("host", "content-length", "transfer-encoding"))
# below the usual servers' keep-alive timeouts, so we rarely reuse a
# connection the other side is closing
IDLE_TIMEOUT = 4.0
CONNECT_TIMEOUT = 10.0


class ProtocolError(ConnectionError):
    """The backend sent something that is not HTTP/1.1."""


class ClientConnection(asyncio.Protocol):
    """One connection to an origin; one request at a time."""

    def __init__(self, pool, key):
        self.pool = pool
        self.key = key
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink = None
        self.closed = False
        self.requests = 0            # requests sent on it (reused when > 1)
        self.idle_since = 0.0
        self.idle_limit = 0.0       # kept idle this long at most (0: the pool's idle_timeout)
        self.got_response_bytes = False
        self.head_only = False       # HEAD: no body follows whatever the headers say
        self._status = b""
        self._headers = []
        self._head_size = 0
        self._headers_done = False
        self._framed = False         # Content-Length or chunked: the end is known
        self._write_paused = False
        self._drain_waiter = None
        self._read_paused = False
        self.upgrade_tail = None     # bytes after a 101 head (the new protocol's)
        self.h2 = None               # the HTTP/2 connection that took over (ALPN h2)

    # -- asyncio ----------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            # the server chose HTTP/2: hand the transport over before any byte arrives
            self.closed = True
            self.h2 = H2ClientConnection(self.pool, self.key)
            transport.set_protocol(self.h2)
            self.h2.connection_made(transport)

    def connection_lost(self, exc):
        self.closed = True
        self._wake_drain()
        sink = self.sink
        if sink is not None:
            self.sink = None
            if self._headers_done and not self._framed:
                sink.on_end(False)           # a close-delimited body ends here
            else:
                sink.on_error(exc or ConnectionResetError("backend closed the connection"))
        self.pool.forget(self)

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self):
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    async def drain(self):
        if self._write_paused and not self.closed:
            self._drain_waiter = self.pool.loop.create_future()
            await self._drain_waiter

    def data_received(self, data):
        self.got_response_bytes = True
        if self.sink is None:
            self.close()                     # bytes nobody asked for: not reusable
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # 101: the proxy's tunnel takes over (detach); keep what follows the head
            at = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
            self.upgrade_tail = bytes(data[at:])
            self.pause_reading()
        except httptools.HttpParserError as e:
            if self.upgrade_tail is None and self.parser.get_status_code() == 101:
                # a 101 without "Connection: upgrade": llhttp stops all the same
                self.upgrade_tail = b""
                self.pause_reading()
                return
            self._fail(ProtocolError("bad response from backend: %s" % e))

    def eof_received(self):
        return False

    # -- httptools callbacks ------------------------------------------------------
    def on_status(self, status):
        self._status += status

    def on_header(self, name, value):
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD_SIZE:
            raise ProtocolError("response head too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self):
        code = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        reason, self._status = self._status.decode("latin-1"), b""
        self._head_size = 0
        if 100 <= code < 200 and code != 101:
            return                           # interim response: the real one follows
        self._headers_done = True
        self._framed = False
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length" or (lname == "transfer-encoding" and "chunked" in value.lower()):
                self._framed = True
        if code in (204, 304) or self.head_only:
            self._framed = True
        sink = self.sink
        if sink is not None:
            sink.on_head(code, reason, headers, self)
        if self.head_only and self.sink is not None:
            # llhttp would wait for the body the headers announce: end here and
            # give up the connection rather than confuse the next response
            self.sink = None
            sink.on_end(False)
            self.close()

    def on_body(self, body):
        sink = self.sink
        if sink is not None:
            sink.on_body(body)

    def on_message_complete(self):
        if not self._headers_done:
            return                           # the end of an interim 1xx
        sink = self.sink
        self.sink = None
        self._headers_done = False
        keep = self.parser.should_keep_alive()
        if sink is not None:
            sink.on_end(keep)

    # -- used by requesters -----------------------------------------------------------
    def start(self, sink, method, target, headers, host_header, body=None, length=None,
              chunked=False):
        """Send a request head (and a complete body, if given).

        The framing and Host are the writer's own: Content-Length is len(body)
        or `length` (the caller then writes exactly that many bytes), or with
        `chunked` Transfer-Encoding: chunked (the caller writes the chunks and
        the last one); Host is `host_header`. Fields of those names in
        `headers` are never written, so no list of headers can make the head
        disagree with the bytes that follow. ValueError for a method, target
        or field that cannot be written as it is."""
        if not is_token(method) or not is_request_target(target) or bad_value(host_header):
            raise ValueError("bad request line or Host for %r" % target)
        lines = ["%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host_header)]
        for name, value in headers:
            if not is_token(name) or bad_value(value):
                raise ValueError("header %r cannot be sent" % name)
            if name.lower() not in _OWN:
                lines.append("%s: %s\r\n" % (name, value))
        if body:
            if chunked:
                raise ValueError("a complete body is not sent chunked")
            length = len(body)
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif length is not None:
            lines.append("Content-Length: %d\r\n" % length)
        elif method in BODY_METHODS:
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.sink = sink
        self.requests += 1
        self.got_response_bytes = False
        self.head_only = method == "HEAD"
        self._headers_done = False
        if body:
            self.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self.transport.write(body)
        else:
            self.transport.write(head)

    def write(self, data):
        if not self.closed:
            self.transport.write(data)

    def pause_reading(self):
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self):
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def detach(self):
        """Give up the transport (after a 101) for another protocol to use:
        (transport, bytes already read after the head), or None if it closed.
        The pool forgets the connection; reading stays paused."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return None
        self.closed = True
        self.sink = None
        self.pool.forget(self)
        return self.transport, self.upgrade_tail or b""

    def _fail(self, exc):
        sink = self.sink
        self.sink = None
        self.close()
        if sink is not None:
            sink.on_error(exc)

    def close(self):
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class Collect:
    """A sink that keeps the whole response (for `was` calls)."""

    def __init__(self, loop, max_size=MAX_RESPONSE_SIZE):
        self.future = loop.create_future()
        self.status = 0
        self.reason = ""
        self.headers = []
        self.body = bytearray()
        self.max_size = max_size
        self.conn = None

    def on_head(self, status, reason, headers, conn):
        self.status, self.reason, self.headers, self.conn = status, reason, headers, conn

    def on_body(self, data):
        self.body += data
        if len(self.body) > self.max_size:
            self.conn._fail(ProtocolError("response larger than %d bytes" % self.max_size))

    def on_end(self, keep_alive):
        if not self.future.done():
            self.future.set_result(keep_alive)

    def on_error(self, exc):
        if not self.future.done():
            self.future.set_exception(exc)


class ClientPool:
    """Keep-alive connections per (scheme, host, port), at most `max_per_origin`
    open at once; further requests wait for one to come back."""

    def __init__(self, loop):
        self.loop = loop
        self.max_per_origin = MAX_PER_ORIGIN
        self.idle_timeout = IDLE_TIMEOUT
        self.connect_timeout = CONNECT_TIMEOUT
        self._ssl = None
        self._ssl_alpn = None
        self.h2 = H2Origins(self)
        self._idle = {}          # key → deque of idle connections (most recent last)
        self._open = collections.Counter()
        self._waiters = {}       # key → deque of futures
        self._closed = False
        self._sweeper = loop.call_later(1.0, self._sweep)

    def ssl_context(self, alpn=False):
        """Verifies the certificate and the name (trust: the system's CA store,
        or the file named by SSL_CERT_FILE). `alpn`: offer h2, then http/1.1."""
        if alpn:
            if self._ssl_alpn is None:
                ctx = self._ssl_alpn = ssl.create_default_context()
                ctx.set_alpn_protocols(["h2", "http/1.1"])
            return self._ssl_alpn
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def acquire(self, key, h2=False):
        """(connection, reused) for key = (scheme, host, port). With `h2`, an
        https origin that picks HTTP/2 gives its H2ClientConnection instead."""
        if self._closed:
            raise ConnectionError("the client pool is closed")
        h2 = h2 and key[0] == "https"
        if h2:
            conn, h1 = await self.h2.get(key, self.connect_timeout)
            if conn is not None:
                return conn, True
            if h1 is not None:
                return h1, False
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.idle_since < now - (conn.idle_limit or self.idle_timeout):
                # idle too long: the sweep has not come yet
                conn.close()
            elif not conn.closed:
                return conn, True
        while self._open[key] >= self.max_per_origin:
            fut = self.loop.create_future()
            self._waiters.setdefault(key, collections.deque()).append(fut)
            try:
                conn = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.result() is not None:
                    self.release(fut.result(), True)
                raise
            if conn is not None and not conn.closed:
                return conn, True
        conn = await self.connect_counted(key, self.connect_timeout, h2)
        if conn.h2 is not None:
            self.h2.adopt(conn.h2)
            return conn.h2, False
        return conn, False

    async def connect_counted(self, key, timeout, alpn=False):
        """A new connection, counted in the origin's open ones unless it is HTTP/2."""
        self._open[key] += 1
        try:
            conn = await self._connect(key, timeout, alpn)
        except BaseException:
            self._open[key] -= 1
            self._wake(key, None)
            raise
        if conn.h2 is not None:
            self._open[key] -= 1
            self._wake(key, None)
        return conn

    async def _connect(self, key, timeout, alpn=False):
        scheme, host, port = key
        tls = self.ssl_context(alpn) if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: ClientConnection(self, key), host, port,
                                            ssl=tls, server_hostname=host if tls else None),
                timeout)
        except asyncio.TimeoutError:
            raise ConnectFailed("connect to %s:%d timed out" % (host, port))
        except ssl.SSLError as e:
            raise ConnectFailed("TLS with %s:%d failed: %s" % (host, port, e))
        except OSError as e:
            raise ConnectFailed("connect to %s:%d failed: %s" % (host, port, e.strerror or e))
        return conn

    def release(self, conn, keep_alive, idle_limit=0.0):
        """The response is complete: keep the connection for the next request
        (idle for `idle_limit` seconds at most; 0: the pool's idle_timeout)."""
        if conn.sink is not None or not keep_alive or conn.closed or self._closed:
            conn.close()
            return
        conn.idle_limit = idle_limit
        if not self._wake(conn.key, conn):
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, collections.deque()).append(conn)

    def forget(self, conn):
        """A connection closed (either side): free its place."""
        key = conn.key
        if self._open[key] > 0:
            self._open[key] -= 1
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake(key, None)

    def _wake(self, key, conn):
        """Hand `conn` (None: "open a connection yourself") to the first
        request waiting for `key`; False when none waits."""
        waiters = self._waiters.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    def _sweep(self):
        now = time.monotonic()
        limit = now - self.idle_timeout
        for idle in list(self._idle.values()):
            for conn in [c for c in idle if c.idle_since < now - (c.idle_limit or
                                                                 self.idle_timeout)]:
                idle.remove(conn)
                conn.close()
        self.h2.sweep(limit)
        if not self._closed:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def close(self):
        self._closed = True
        self._sweeper.cancel()
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self.h2.close()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError("the client pool is closed"))


async def http_request(pool, key, method, target, headers, body=b"", host=None,
                       max_size=MAX_RESPONSE_SIZE):
    """One buffered request: (status, reason, headers, body bytes). `host`:
    the Host header (by default made from `key`). No time limit: the caller
    bounds the whole call (cancelling it closes the connection or stream).

    A reused keep-alive connection that breaks before any response byte is
    retried once on a new one: the backend closed it while it sat idle. Over
    HTTP/2 (https origins that choose it), a stream the server did not take
    (GOAWAY, REFUSED_STREAM) is sent again, up to twice."""
    if host is None:
        host = host_header(*key)
    for attempt in (0, 1, 2):
        conn, reused = await pool.acquire(key, h2=True)
        if isinstance(conn, H2ClientConnection):
            try:
                return await conn.request(method, target, headers, host, body, max_size)
            except StreamRefused:
                if attempt < 2:
                    continue
                raise
        sink = Collect(pool.loop, max_size)
        try:
            conn.start(sink, method, target, headers, host, body)
            keep = await sink.future
        except ConnectionError:
            conn.close()
            if reused and not conn.got_response_bytes and attempt == 0:
                continue
            raise
        except BaseException:
            # cancelled (timed out), or a header start() refused: the connection
            # is in an unknown state, and nobody waits for its sink any more
            conn.sink = None
            conn.close()
            raise
        pool.release(conn, keep)
        return sink.status, sink.reason, sink.headers, bytes(sink.body)
