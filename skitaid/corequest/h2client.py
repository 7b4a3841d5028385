"""The HTTP/2 side of the corequest client: one connection per origin, many streams.

When a TLS server picks `h2` by ALPN, `was` calls to it share one
connection per worker instead of opening one HTTP/1.1 connection each.
Streams open up to the peer's MAX_CONCURRENT_STREAMS; further requests wait
for one to end. Request bodies go out as the peer's windows allow; response
data is acknowledged (WINDOW_UPDATE) as the sink takes it. After a GOAWAY
the connection takes no new stream: the streams the server did not take
(above its last-stream-id, or refused) are retried on a new connection,
the others finish. The reverse proxy stays on HTTP/1.1 (it never offers h2).
"""
import asyncio
import collections
import time

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       ResponseReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.exceptions import H2Error
from h2.settings import SettingCodes, Settings

from ..http_status import REASONS
from ..http.headers import BODY_METHODS, bad_value, is_request_target, is_token

STREAM_WINDOW = 1024 * 1024          # per stream: what the server may send before we ack
CONN_WINDOW = 16 * 1024 * 1024
MAX_HEAD_SIZE = 64 * 1024
# connection-specific headers have no place in HTTP/2 (RFC 9113 8.2.2); Host is
# :authority, and content-length is made here from the body that is sent
_DROP = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                   "upgrade", "host", "te", "content-length"))


# HTTP/2 names are lowercase: results get the usual HTTP/1.1 spelling, so they
# look the same whichever protocol carried them. Memoised: backends repeat names.
_CASE = {"etag": "ETag", "www-authenticate": "WWW-Authenticate", "te": "TE"}
_CASE_MAX = 1024


def _spelling(name):
    spelt = _CASE.get(name)
    if spelt is None:
        spelt = "-".join(part[:1].upper() + part[1:] for part in name.split("-"))
        if len(_CASE) < _CASE_MAX:      # odd names from a backend must not grow it forever
            _CASE[name] = spelt
    return spelt


class StreamRefused(ConnectionError):
    """The server did not process the stream (GOAWAY above it, REFUSED_STREAM):
    it may be sent again on a new connection, whatever its method."""


class _State(H2Connection):
    """h2's connection, kept open after a graceful GOAWAY from the server: the
    package would otherwise refuse the data of the streams still finishing."""

    def _receive_goaway_frame(self, frame):
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = state
        return frames, events


class _Stream:
    __slots__ = ("sid", "future", "status", "headers", "body", "max_size", "window",
                 "answered")

    def __init__(self, loop, max_size):
        self.sid = None
        self.future = loop.create_future()
        self.status = 0
        self.headers = []
        self.body = bytearray()
        self.max_size = max_size
        self.window = None           # a future while the body waits for the peer's window
        self.answered = False        # any response frame seen: not retryable


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to an origin, on the worker's loop."""

    def __init__(self, pool, key):
        self.pool = pool
        self.loop = pool.loop
        self.key = key
        self.transport = None
        self.h2 = _State(H2Configuration(client_side=True, header_encoding="latin-1"))
        self.streams = {}
        self.closed = False
        self.goaway = False            # no new streams (GOAWAY received, or closing)
        self.idle_since = time.monotonic()
        self._reserved = 0             # streams waiting to send their head
        self._slots = collections.deque()
        self._write_paused = False
        self._drain = None

    # -- asyncio ----------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        # in force from the first stream: a pending change would leave the
        # streams opened before the server's ACK with h2's default window
        self.h2.local_settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD_SIZE})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONN_WINDOW - self.h2.inbound_flow_control_window)
        self._flush()

    def data_received(self, data):
        try:
            events = self.h2.receive_data(data)
        except H2Error as e:
            self._flush()
            self._lost(ConnectionError("HTTP/2 protocol error from backend: %s" % e))
            return
        for ev in events:
            if isinstance(ev, ResponseReceived):
                self._head(ev)
            elif isinstance(ev, DataReceived):
                self._data(ev)
            elif isinstance(ev, StreamEnded):
                self._end(ev.stream_id)
            elif isinstance(ev, StreamReset):
                self._reset(ev)
            elif isinstance(ev, WindowUpdated):
                self._window(ev.stream_id)
            elif isinstance(ev, RemoteSettingsChanged):
                self._window(0)
                self._wake_slots()
            elif isinstance(ev, ConnectionTerminated):
                self._goaway(ev)
        self._flush()
        if self.goaway and not self.streams and not self._reserved:
            self.close()

    def connection_lost(self, exc):
        self._lost(exc or ConnectionResetError("backend closed the HTTP/2 connection"))

    def eof_received(self):
        return False

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # -- events -----------------------------------------------------------------------
    def _head(self, ev):
        st = self.streams.get(ev.stream_id)
        if st is None:
            return
        st.answered = True
        size = 0
        for name, value in ev.headers:
            size += len(name) + len(value)
            if name == ":status":
                st.status = int(value)
            elif not name.startswith(":"):
                st.headers.append((_spelling(name), value))
        if size > MAX_HEAD_SIZE:
            self._fail_stream(st, ConnectionError("response head too large"))

    def _data(self, ev):
        st = self.streams.get(ev.stream_id)
        if ev.flow_controlled_length:
            # acknowledged as soon as taken: a buffered (was) response is bounded by max_size
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        if st is None:
            return
        st.answered = True
        st.body += ev.data
        if len(st.body) > st.max_size:
            self._fail_stream(st, ConnectionError("response larger than %d bytes" % st.max_size))

    def _end(self, sid):
        st = self.streams.pop(sid, None)
        if st is not None:
            if st.status < 200:
                st.future.set_exception(ConnectionError("HTTP/2 response without a status"))
            elif not st.future.done():
                st.future.set_result(None)
            self._wake_slots()

    def _reset(self, ev):
        st = self.streams.pop(ev.stream_id, None)
        if st is None:
            return
        if ev.error_code == ErrorCodes.REFUSED_STREAM and not st.answered:
            exc = StreamRefused("backend refused the stream")
        else:
            exc = ConnectionResetError("backend reset the stream (%s)" % ev.error_code)
        self._settle(st, exc)
        self._wake_slots()

    def _window(self, sid):
        sts = self.streams.values() if sid == 0 else [self.streams.get(sid)]
        for st in list(sts):
            if st is not None and st.window is not None and not st.window.done():
                st.window.set_result(None)

    def _goaway(self, ev):
        """The server takes no new stream: those above its last one go elsewhere."""
        self.goaway = True
        self.pool.h2.forget(self)
        graceful = ev.error_code == ErrorCodes.NO_ERROR
        for sid, st in list(self.streams.items()):
            if sid > ev.last_stream_id:
                del self.streams[sid]
                self._settle(st, StreamRefused("backend went away before the stream"))
            elif not graceful:
                del self.streams[sid]
                self._settle(st, ConnectionResetError("backend ended the connection (%s)"
                                                      % ev.error_code))
        self._wake_slots()

    # -- helpers ----------------------------------------------------------------------
    def _settle(self, st, exc):
        if not st.future.done():
            st.future.set_exception(exc)
            st.future.exception()        # looked at by the requester, or by nobody
        if st.window is not None and not st.window.done():
            st.window.set_result(None)

    def _fail_stream(self, st, exc):
        self.streams.pop(st.sid, None)
        try:
            self.h2.reset_stream(st.sid, ErrorCodes.CANCEL)
        except H2Error:
            pass
        self._settle(st, exc)
        self._wake_slots()

    def _wake_slots(self):
        while self._slots and self._free() > 0:
            fut = self._slots.popleft()
            if not fut.done():
                fut.set_result(None)
                self._reserved += 1
        if self.goaway or self.closed:
            while self._slots:
                fut = self._slots.popleft()
                if not fut.done():
                    fut.set_result(None)
                    self._reserved += 1      # it sees the goaway and gives its slot back
        if not self.streams and not self._reserved:
            self.idle_since = time.monotonic()

    def _free(self):
        return self.h2.remote_settings.max_concurrent_streams - len(self.streams) - self._reserved

    def _flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def _lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.goaway = True
        self.pool.h2.forget(self)
        streams, self.streams = self.streams, {}
        for st in streams.values():
            if not st.answered and isinstance(exc, StreamRefused):
                self._settle(st, exc)
            else:
                self._settle(st, exc if isinstance(exc, ConnectionError)
                             else ConnectionResetError(str(exc)))
        self._wake_slots()
        if self.transport is not None:
            self.transport.abort()

    def close(self):
        """No stream left, or given up: close (nothing to say to the server)."""
        self._lost(ConnectionResetError("HTTP/2 connection closed"))

    @property
    def usable(self):
        return not self.closed and not self.goaway

    # -- requests ---------------------------------------------------------------------
    async def _take_slot(self):
        if self._free() > 0 and not self._slots:
            self._reserved += 1
            return
        fut = self.loop.create_future()
        self._slots.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._reserved -= 1
                self._wake_slots()
            raise

    async def request(self, method, target, headers, host_header, body, max_size):
        """(status, reason, headers, body bytes); StreamRefused when it may go elsewhere."""
        if not is_token(method) or not is_request_target(target) or bad_value(host_header):
            raise ValueError("bad method, :path or :authority for %r" % target)
        await self._take_slot()
        try:
            if not self.usable:
                raise StreamRefused("HTTP/2 connection going away")
            st = _Stream(self.loop, max_size)
            head = [(":method", method), (":scheme", self.key[0]),
                    (":authority", host_header), (":path", target)]
            for name, value in headers:
                lname = name.lower()
                if lname in _DROP:
                    continue
                if not is_token(name) or bad_value(value):
                    raise ValueError("header %r cannot be sent" % name)
                head.append((lname, value))
            if body or method in BODY_METHODS:
                head.append(("content-length", str(len(body or b""))))
            sid = st.sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, head, end_stream=not body)
            self.streams[sid] = st
        finally:
            self._reserved -= 1
        self._flush()
        try:
            if body:
                await self._send_body(st, body)
            await st.future
        except asyncio.CancelledError:
            if self.streams.pop(sid, None) is not None and not self.closed:
                try:
                    self.h2.reset_stream(sid, ErrorCodes.CANCEL)
                except H2Error:
                    pass
                self._flush()
                self._wake_slots()
            raise
        finally:
            if self.goaway and not self.streams and not self._reserved:
                self.close()
        return st.status, REASONS.get(st.status, ""), st.headers, bytes(st.body)

    async def _send_body(self, st, body):
        view = memoryview(body)
        sent = 0
        while sent < len(view):
            if st.future.done():
                return               # answered (or failed) before the body was all out
            if self.closed:
                raise ConnectionResetError("HTTP/2 connection closed")
            try:
                room = min(self.h2.local_flow_control_window(st.sid),
                           self.h2.max_outbound_frame_size, len(view) - sent)
            except H2Error:
                return               # the stream is closed: the future says why
            if room <= 0:
                st.window = self.loop.create_future()
                await st.window
                st.window = None
                continue
            end = sent + room == len(view)
            self.h2.send_data(st.sid, bytes(view[sent:sent + room]), end_stream=end)
            sent += room
            self._flush()
            if self._write_paused and not self.closed:
                self._drain = self._drain or self.loop.create_future()
                await self._drain


class H2Origins:
    """The pool's HTTP/2 side: one live connection per origin, and the
    origins known to answer HTTP/1.1 over TLS."""

    def __init__(self, pool):
        self.pool = pool
        self.conns = {}
        self.h1 = set()
        self._pending = {}

    async def get(self, key, connect_timeout):
        """The origin's HTTP/2 connection, or (None, h1 connection or None)."""
        while True:
            conn = self.conns.get(key)
            if conn is not None and conn.usable:
                return conn, None
            if key in self.h1:
                return None, None
            pending = self._pending.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        # the first caller finds out what the origin speaks; the others wait
        pending = self._pending[key] = self.pool.loop.create_future()
        try:
            h1 = await self.pool.connect_counted(key, connect_timeout, alpn=True)
        finally:
            del self._pending[key]
            pending.set_result(None)
        if h1.h2 is not None:
            self.conns[key] = h1.h2
            return h1.h2, None
        self.h1.add(key)
        return None, h1

    def adopt(self, conn):
        """A connection negotiated h2 on the HTTP/1.1 path."""
        old = self.conns.get(conn.key)
        if old is None or not old.usable:
            self.conns[conn.key] = conn
        self.h1.discard(conn.key)

    def forget(self, conn):
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]

    def sweep(self, limit):
        for conn in list(self.conns.values()):
            if not conn.streams and not conn._reserved and conn.idle_since < limit:
                conn.close()

    def close(self):
        for conn in list(self.conns.values()):
            conn.close()
        self.conns.clear()
