"""HTTP/2 over an asyncio transport, framed by the `h2` state machine.

`H2Connection` owns one connection: it turns frames into `Request`s and
dispatches each stream to the same router and handlers as HTTP/1.1 through
`H2Exchange`. Output is written once per loop iteration (the worker's flush
queue), never per frame.

Flow control, both ways:
- in: a stream's window is re-opened (WINDOW_UPDATE) as its body is fed to the
  app, and held while the app has more than body.HIGH_WATER unread, so an
  upload that the app reads slowly sits in the client, not in memory;
- out: each stream queues at most OUT_HIGH_WATER bytes beyond what the peer's
  window lets us send; producers wait on `drain()` above that.

Abuse (rapid reset, PING/SETTINGS floods, oversized or endless header
blocks, too many streams) ends the connection with GOAWAY; the `h2` package
enforces the frame-level rules and we map its errors to GOAWAY codes.

Malformed requests (RFC 9113 8.1.1) reach no handler: pseudo-header fields
that break the method/target/scheme/authority grammar, a field name that is
not a token, a content-length that the DATA frames do not add up to. Each is
a stream error (RST_STREAM PROTOCOL_ERROR), the connection goes on; what `h2`
itself refuses (CR/LF/NUL in a value, upper-case or connection-specific
fields) ends the connection, which RFC 9113 5.4 allows.

A graceful close (stop, reload, idle) takes two GOAWAYs (RFC 9113 6.8): one
with the highest possible stream id and a PING, then, once the PING comes
back (or after DRAIN_TIMEOUT), one with the last stream really taken. Every
stream the client opened before it read the first is served.
"""
import re
import time
from collections import deque

from h2.config import H2Configuration
from h2.connection import H2Connection as _H2State
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, PingAckReceived, PingReceived,
                       RemoteSettingsChanged, RequestReceived, StreamEnded, StreamReset,
                       TrailersReceived, WindowUpdated)
from h2.exceptions import H2Error, InvalidBodyLengthError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from ..body import EMPTY_BODY, ClientDisconnected, RequestBody
from ..exchange import Request
from ..http.headers import (HOP_BY_HOP, KNOWN_NAMES, bad_value, host_without_port, is_token,
                            response_field_error, trailer_fields)
from ..http_status import plain_error, status_code
from . import dates
from .base import Connection, addresses
from .framing import FramedExchange, add_waiter, wake
from .host import ConnectionHost

MAX_STREAMS = 100                   # concurrent streams a client may open
STREAM_WINDOW = 512 * 1024          # per-stream receive window we advertise
CONN_WINDOW = 16 * 1024 * 1024      # connection receive window
OUT_HIGH_WATER = 256 * 1024         # per-stream queued output before producers wait
DRAIN_TIMEOUT = 1.0                 # graceful close: longest wait for the PING's answer
LINGER = 2.0                        # after the last GOAWAY: read (and drop) this long at most
MAX_STREAM_ID = 2 ** 31 - 1
DRAIN_PING = b"skidrain"

NO_ERROR = ErrorCodes.NO_ERROR
CANCEL = ErrorCodes.CANCEL
REFUSED = ErrorCodes.REFUSED_STREAM
CALM = ErrorCodes.ENHANCE_YOUR_CALM
MALFORMED = ErrorCodes.PROTOCOL_ERROR

# What the request's pseudo-header fields may hold (RFC 9113 8.3.1, RFC 9110
# 9.1 token, RFC 3986 scheme and authority without userinfo). Anything else
# could turn into a different request line on the way to an HTTP/1.1 backend.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)"
                        r"(?::[0-9]{0,5})?")
_PATH = re.compile(r"/[\x21-\x7e]*")      # origin-form: no SP, HTAB, CTL, DEL or non-ASCII


def malformed_pseudo(method, scheme, path, authority):
    """True when the pseudo-header fields of a request do not make a request
    line that means one thing (`h2` has already checked which are present)."""
    if method is None or not is_token(method):
        return True
    if authority is not None and not _AUTHORITY.fullmatch(authority):
        return True
    if method == "CONNECT":
        # authority-form only: host and port (RFC 9113 8.5)
        return (path is not None or scheme is not None or authority is None
                or not authority.rpartition(":")[2].isdigit())
    if scheme is None or not _SCHEME.fullmatch(scheme):
        return True
    if path == "*":
        return method != "OPTIONS"
    return path is None or not _PATH.fullmatch(path)


def _field(name, value):
    """A response field as the bytes HTTP/1.1 would write (latin-1). ValueError
    (UnicodeEncodeError is one) for what can never go out: a name that is not
    a token (or a pseudo-header), CR, LF or NUL in the value, a character
    latin-1 cannot hold. Surrounding blanks are not part of a value (RFC 9110
    5.5) and HTTP/2 forbids them (RFC 9113 8.2.1)."""
    if name not in KNOWN_NAMES or bad_value(value):
        error = response_field_error(name, value)
        if error:
            raise ValueError(error)
    return name.encode("latin-1"), value.strip(" \t").encode("latin-1")


class _Flood(ProtocolError):
    """Too many malformed requests on one connection."""
    error_code = CALM


class _BadLength:
    """Not an `h2` event: DATA on `stream_id` disagreed with its content-length
    and the stream was reset (see _State)."""

    __slots__ = ("stream_id", "flow_controlled_length")

    def __init__(self, stream_id, flow_controlled_length):
        self.stream_id = stream_id
        self.flow_controlled_length = flow_controlled_length


class _State(_H2State):
    """`h2`'s state machine with one change: DATA that disagrees with the
    stream's content-length is a stream error (RFC 9113 8.1.1), not the end
    of the connection. (Should `h2` rename the hook, the connection error
    comes back; H2Connection checks the lengths itself too.)"""

    def _receive_data_frame(self, frame):
        try:
            return super()._receive_data_frame(frame)
        except InvalidBodyLengthError:
            self.reset_stream(frame.stream_id, MALFORMED)
            return [], [_BadLength(frame.stream_id, frame.flow_controlled_length)]


class Budget:
    """A token bucket: `burst` events at once, refilled at `rate` per second."""

    __slots__ = ("burst", "rate", "tokens", "stamp")

    def __init__(self, burst, rate):
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now):
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class H2Exchange(FramedExchange):
    """One stream: a request and its response (loop thread only)."""

    __slots__ = ("conn", "sid", "request", "is_head", "closed", "status", "sent", "head_sent",
                 "done", "t_start", "t_handled", "out", "out_len", "ending", "trailers",
                 "remaining", "waiters", "in_paused", "in_unacked", "remote_done", "pushed",
                 "authority", "last_in")

    supports_push = True
    supports_trailers = True

    def __init__(self, conn, sid, request, authority, pushed=False):
        FramedExchange.__init__(self, conn, request)
        self.sid = sid
        self.out = deque()
        self.out_len = 0
        self.ending = False
        self.trailers = None
        self.waiters = None
        self.in_paused = False
        self.in_unacked = 0
        self.remote_done = pushed
        self.pushed = pushed
        self.authority = authority
        self.last_in = request.started

    # -- the head --------------------------------------------------------------
    def _head(self, status, headers, length):
        code = status_code(status)
        self.status = code
        out = [(":status", str(code)), ("date", dates.value()), ("server", "skitaid")]
        explicit = None
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                continue        # connection-specific: malformed in HTTP/2 (RFC 9113 8.2.2)
            if lname == "content-length":
                explicit = _field(lname, value)
                continue
            out.append(_field(lname, value))
        announced = self._announced_length(code, explicit, length)
        if announced is not None:
            out.append(announced if announced is explicit else ("content-length", str(announced)))
        self.head_sent = True
        return out

    def _bad_head(self):
        self.conn.worker.log_exception("sending the response head for %s %s"
                                       % (self.request.method, self.request.target))
        self.head_sent = False
        self.is_head = self.request.method == "HEAD"
        self.respond(*plain_error(500))
        self.closed = True

    def respond(self, status, headers, body=b""):
        if self.closed or self.head_sent:
            return
        try:
            head = self._head(status, headers, len(body))
        except ValueError:
            return self._bad_head()
        conn = self.conn
        if self.is_head or not body:
            self.ending = True
            conn.send_head(self, head, not self.trailers)
            if self.trailers:
                conn.pump(self)
            return
        conn.send_head(self, head, False)
        self.sent = len(body)
        self.out.append(body)
        self.out_len = len(body)
        self.ending = True
        conn.pump(self)

    def _send_head(self, head):
        self.conn.send_head(self, head, False)

    def write(self, data):
        if self.closed or self.is_head or not data or self.ending:
            return
        data = self._counted(data)
        if not data:
            return
        self.out.append(data)
        self.out_len += len(data)
        self.conn.pump(self)

    def finish(self):
        if self.ending or self.closed:
            return
        if self.remaining:
            # short of the declared Content-Length: the client must not take it as whole
            return self.abort()
        self.ending = True
        self.conn.pump(self)

    def abort(self):
        """The response cannot be completed: reset this stream only."""
        self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)

    def set_trailers(self, headers):
        """Response trailers, sent after the body (HEADERS with END_STREAM).
        One that cannot be sent (see _field) resets the stream: the response
        cannot end the way the app meant it to."""
        if self.ending or self.closed:
            return
        try:
            self.trailers = [_field(n.lower(), v) for n, v in headers
                             if n.lower() not in HOP_BY_HOP]
        except ValueError:
            self.conn.worker.log_exception("setting the response trailers for %s %s"
                                           % (self.request.method, self.request.target))
            self.abort()

    # -- flow control ----------------------------------------------------------
    def writing_paused(self):
        return not self.closed and (self.out_len > OUT_HIGH_WATER or self.conn.write_paused)

    async def drain(self):
        self.conn.flush()
        while self.writing_paused():
            self.waiters, fut = add_waiter(self.conn.loop, self.waiters)
            await fut

    def wake(self):
        waiters = self.waiters
        if waiters and not self.writing_paused():
            self.waiters = None
            wake(waiters)

    # -- request body flow (RequestBody calls these) ---------------------------
    def body_paused(self):
        self.in_paused = True

    def body_resume(self):
        self.in_paused = False
        self.conn.ack(self)

    def send_continue(self):
        pass     # HTTP/2 clients do not wait for 100 Continue here

    # -- server push -------------------------------------------------------------
    def can_push(self):
        conn = self.conn
        return (not self.pushed and not self.closed and not self.ending and not conn.closing
                and not conn.draining and conn.h2.remote_settings.enable_push)

    def push(self, path):
        return self.conn.push(self, path)


class H2Connection(Connection):
    """One HTTP/2 connection (TLS with ALPN h2, or cleartext h2c)."""

    def __init__(self, worker: ConnectionHost, scheme="http"):
        super().__init__(worker, scheme)
        # inbound validation stays on: it refuses CR, LF and NUL in values,
        # upper-case names and connection-specific fields
        config = H2Configuration(client_side=False, header_encoding="latin-1",
                                 validate_inbound_headers=True,
                                 validate_outbound_headers=False,
                                 normalize_outbound_headers=False)
        self.h2 = _State(config=config)
        # in force from the start (the client may only send less before it reads them)
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_size,
            SettingCodes.ENABLE_PUSH: 0,
        })
        self.streams = {}
        self.closing = False        # the last GOAWAY went out (or the client's came)
        self.draining = False       # the first of a graceful close's two GOAWAYs went out
        self.last_active = time.monotonic()
        self.last_sid = 0           # highest client stream we took
        self._goaway_sid = None     # set once the last GOAWAY went out
        self._drain_timer = None
        self._lingering = False
        self._linger_timer = None
        self._blocked = set()       # streams waiting for the peer's window
        self._flush_queued = False
        self._conn_unacked = 0
        self._hold = False          # h2c upgrade: output waits for the HTTP/1.1 body
        self._h1_left = 0           # bytes of that body still to come
        self._h1_stream = None
        self._switching = b""
        self._resets = Budget(200, 100)     # client-cancelled streams (CVE-2023-44487)
        self._control = Budget(100, 20)     # PING / SETTINGS / PRIORITY / empty DATA frames

    # -- set-up ------------------------------------------------------------------
    def connection_made(self, transport, preamble=True):
        self.transport = transport
        self.client, self.server = addresses(transport)
        self.last_active = time.monotonic()
        worker = self.worker
        worker.connections.add(self)
        if preamble:
            self.h2.initiate_connection()
            self._open_window()
        if len(worker.connections) > self.limits.max_connections:
            self.closing = True
            self._goaway(NO_ERROR)     # last stream 0: nothing taken, try again later
            self.close_soon()
            return
        self._queue_flush()

    def _open_window(self):
        grow = CONN_WINDOW - self.h2.inbound_flow_control_window
        if grow > 0:
            self.h2.increment_flow_control_window(grow)

    def upgrade(self, request, settings, body_left, rest):
        """h2c via `Upgrade:` (RFC 7540 3.2): stream 1 is `request`, whose body
        (`body_left` bytes) still comes as HTTP/1.1 bytes before any frame."""
        self.h2.initiate_upgrade_connection(settings)
        self._open_window()
        switching = (b"HTTP/1.1 101 Switching Protocols\r\n"
                     b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        request.version = "2"
        ex = H2Exchange(self, 1, request, request.header("host", ""))
        ex.remote_done = True
        if body_left:
            # 101 only after the whole body: a client switches when it reads it
            self._switching = switching
            request.body = RequestBody(ex, self.loop)
            self._h1_left = body_left
            self._h1_stream = ex
            self._hold = True
        else:
            self.transport.write(switching)
            request.body = EMPTY_BODY
        self.streams[1] = ex
        self.last_sid = 1
        self.worker.dispatch(ex)
        self._queue_flush()
        if rest:
            self.data_received(rest)

    def _h1_body(self, data):
        """Bytes of the upgrade request's body; returns what follows it."""
        ex = self._h1_stream
        n = min(self._h1_left, len(data))
        self._h1_left -= n
        body = ex.request.body
        if not ex.closed and body.received + n <= self.limits.max_upload_size:
            body.feed(data[:n])      # (dropped by the body once the answer is out)
            if ex.in_paused and not ex.done:
                self.transport.pause_reading()
        if not self._h1_left:
            body.finish()
            self._hold = False
            self.transport.write(self._switching)
            self._h1_stream = None
            self._queue_flush()
        return data[n:]

    # -- asyncio.Protocol ----------------------------------------------------------
    def data_received(self, data):
        if self._lingering:
            return      # every stream is done: what comes now is not taken
        now = self.last_active = time.monotonic()
        if self._h1_left:
            data = self._h1_body(data)
            if not data:
                return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as e:
            return self._fail(e.error_code if isinstance(e.error_code, int) else ErrorCodes.PROTOCOL_ERROR)
        try:
            for ev in events:
                t = type(ev)
                if t is RequestReceived:
                    self._request(ev, now)
                elif t is DataReceived:
                    self._data(ev, now)
                elif t is StreamEnded:
                    self._ended(ev.stream_id)
                elif t is WindowUpdated:
                    self._window(ev.stream_id)
                elif t is StreamReset:
                    if not self._reset_by_peer(ev.stream_id, now):
                        return self._fail(CALM)
                elif t is TrailersReceived:
                    ex = self.streams.get(ev.stream_id)
                    if ex is not None and type(ex.request.trailers) is list:
                        # never header fields; framing, routing, auth, content ones dropped
                        ex.request.trailers.extend(trailer_fields(ev.headers))
                elif t is _BadLength:
                    self._consumed(ev.flow_controlled_length)
                    ex = self.streams.get(ev.stream_id)
                    if ex is not None:
                        self._gone(ex)          # (_State reset it)
                    if not self._resets.take(now):
                        return self._fail(CALM)
                elif t is PingReceived:
                    if not self._control.take(now):
                        return self._fail(CALM)
                elif t is PingAckReceived:
                    if self.draining and ev.ping_data == DRAIN_PING:
                        # after the rest of this read: a client sends the ACK
                        # before HEADERS it opened meanwhile, and those count
                        self.loop.call_soon(self._drained)
                    elif not self._control.take(now):
                        return self._fail(CALM)
                elif t is RemoteSettingsChanged:
                    if not self._control.take(now):
                        return self._fail(CALM)
                    if SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                        self._window(0)
                elif t is ConnectionTerminated:
                    # the client is done: answer what it already asked, then close
                    self.closing = True
                    if not self.streams:
                        self.close_soon()
                        return
                    break
        except ProtocolError as e:
            return self._fail(e.error_code if isinstance(e.error_code, int) else ErrorCodes.PROTOCOL_ERROR)
        except Exception:
            self.worker.log_exception("handling HTTP/2 frames")
            return self._fail(ErrorCodes.INTERNAL_ERROR)
        self._queue_flush()

    def connection_lost(self, exc):
        self.worker.connections.discard(self)
        self.closing = True
        for timer in (self._drain_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        streams = list(self.streams.values())
        self.streams.clear()
        self._blocked.clear()
        for ex in streams:
            self._drop(ex)

    def resume_writing(self):
        self.write_paused = False
        for ex in list(self.streams.values()):
            ex.wake()

    def eof_received(self):
        return False     # close: a half-closed HTTP/2 client cannot read GOAWAY/responses anyway

    # -- incoming streams ------------------------------------------------------------
    def _request(self, ev, now):
        sid = ev.stream_id
        if sid > self.last_sid:
            self.last_sid = sid
        if self._goaway_sid is not None and sid > self._goaway_sid:
            self.h2.reset_stream(sid, REFUSED)       # after the last GOAWAY: not taken
            return
        method = path = authority = scheme = host = length = bad = None
        headers = []
        for name, value in ev.headers:
            if name[0] == ":":
                if name == ":method":
                    method = value
                elif name == ":path":
                    path = value
                elif name == ":authority":
                    authority = value
                elif name == ":scheme":
                    scheme = value
                else:
                    # :protocol: extended CONNECT was never offered (RFC 8441 3)
                    return self._malformed(sid, now)
            else:
                if not is_token(name):
                    return self._malformed(sid, now)
                if name == "host":
                    if host is None:
                        host = value
                elif name == "content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        bad = 400
                headers.append((name, value))
        if malformed_pseudo(method, scheme, path, authority):
            return self._malformed(sid, now)
        if ev.stream_ended is not None and length:
            return self._malformed(sid, now)    # a content-length, and no DATA to match it
        if authority is not None:
            if host is None:
                headers.append(("host", authority))     # (apps look for Host)
            host = authority        # :authority wins over Host (RFC 9113 8.3.1)
        elif host and not _AUTHORITY.fullmatch(host):
            bad = bad or 400        # as HTTP/1.1 answers a bad Host (RFC 9112 3.2)
        if method == "CONNECT":
            target, path, query = authority, "", ""
            bad = bad or 405
        else:
            target = path
            # a fragment is the client's own business (RFC 9110 4.2.5): never passed on
            path, _, query = path.partition("#")[0].partition("?")
        req = Request(method, target, path, query, "2", headers, self.scheme,
                      self.client, self.server)
        req.started = now
        host = host or ""
        req.host = host_without_port(host)
        req.content_length = length
        ex = H2Exchange(self, sid, req, host)
        self.streams[sid] = ex
        if ev.stream_ended is not None:
            req.body = EMPTY_BODY
            ex.remote_done = True
        else:
            req.body = RequestBody(ex, self.loop)
            # a body follows: without content-length its length is not known
            # until END_STREAM (a proxy must frame it, e.g. chunked)
            req.chunked = length is None
            req.trailers = []
        limits = self.limits
        if bad is None:
            if len(headers) > limits.max_headers:
                bad = 431
            elif length is not None and length > limits.max_upload_size:
                bad = 413
        if bad is not None:
            self.worker.count_rejected(bad, "bad HTTP/2 request", self.client)
            ex.respond(*plain_error(bad))
            return
        self.worker.dispatch(ex)

    def _malformed(self, sid, now):
        """A malformed request (RFC 9113 8.1.1): a stream error, no handler sees it."""
        self.worker.count_rejected(400, "malformed HTTP/2 request", self.client)
        if not self._resets.take(now):
            raise _Flood("malformed request flood")
        self.h2.reset_stream(sid, MALFORMED)

    def _consumed(self, n):
        """`n` flow-controlled bytes arrived: re-open the connection window in steps."""
        self._conn_unacked += n
        if self._conn_unacked >= CONN_WINDOW // 4:
            self.h2.increment_flow_control_window(self._conn_unacked)
            self._conn_unacked = 0

    def _data(self, ev, now):
        n = ev.flow_controlled_length
        self._consumed(n)
        if not ev.data and ev.stream_ended is None and not self._control.take(now):
            raise ProtocolError("empty DATA flood")
        ex = self.streams.get(ev.stream_id)
        if ex is None or ex.closed or ex.request.body is EMPTY_BODY:
            return
        ex.last_in = now
        body = ex.request.body
        length = ex.request.content_length
        if length is not None and body.received + len(ev.data) > length:
            return self._bad_length(ex, now)      # (`h2` normally sees it first)
        if body.received + len(ev.data) > self.limits.max_upload_size:
            if not ex.head_sent:
                ex.respond(*plain_error(413))
            self.reset(ex, CANCEL)
            return
        body.feed(ev.data)
        ex.in_unacked += n
        if not ex.in_paused and ex.in_unacked >= STREAM_WINDOW // 4:
            self.ack(ex)

    def ack(self, ex):
        """Re-open a stream's window for what the app has taken (or will)."""
        n = ex.in_unacked
        if n and not ex.remote_done and not ex.closed:
            ex.in_unacked = 0
            try:
                self.h2.increment_flow_control_window(n, ex.sid)
            except (StreamClosedError, ProtocolError):
                return
            self._queue_flush()
        if ex is self._h1_stream and not ex.in_paused:
            self.transport.resume_reading()

    def _ended(self, sid):
        ex = self.streams.get(sid)
        if ex is None:
            return
        body = ex.request.body
        length = ex.request.content_length
        if body is not EMPTY_BODY and length is not None and body.received != length \
                and not ex.closed:
            # short of its content-length, ended by trailers (`h2` checks DATA only)
            return self._bad_length(ex, time.monotonic())
        ex.remote_done = True
        if body is not EMPTY_BODY:
            body.finish()
        if ex.done:
            self._forget(ex)

    def _bad_length(self, ex, now):
        """The body does not add up to its content-length: malformed, and
        never handed on as if it were whole."""
        self.worker.count_rejected(400, "HTTP/2 body length differs from content-length",
                                   self.client)
        self.reset(ex, MALFORMED)
        if not self._resets.take(now):
            raise _Flood("malformed request flood")

    def _reset_by_peer(self, sid, now):
        ex = self.streams.pop(sid, None)
        if ex is None:
            return True
        self._blocked.discard(ex)
        unfinished = not ex.done
        self._drop(ex)
        # many streams opened and cancelled before their answer: rapid reset
        return not unfinished or ex.pushed or self._resets.take(now)

    def _drop(self, ex):
        """The stream is gone (reset or connection lost): stop its work."""
        ex.closed = True
        ex.out.clear()
        ex.out_len = 0
        body = ex.request.body
        if body is not EMPTY_BODY and not body.complete:
            body.fail(ClientDisconnected("stream reset"))
        ex.wake()
        if not ex.done:
            self.worker.exchange_aborted(ex)

    def _forget(self, ex):
        if self.streams.get(ex.sid) is ex:
            del self.streams[ex.sid]
        self._blocked.discard(ex)
        if self.closing and not self.streams:
            self._linger()

    # -- output ------------------------------------------------------------------------
    def send_head(self, ex, headers, end):
        if ex.closed:
            return
        try:
            self.h2.send_headers(ex.sid, headers, end_stream=end)
        except H2Error:
            return self._gone(ex)
        if end:
            self._finished(ex)
        self._queue_flush()

    def pump(self, ex):
        """Send what `ex` has queued, as far as the windows allow."""
        if ex.closed:
            return
        h2c = self.h2
        sid = ex.sid
        out = ex.out
        try:
            while ex.out_len:
                window = h2c.local_flow_control_window(sid)
                if window <= 0:
                    self._blocked.add(ex)
                    break
                n = min(window, h2c.max_outbound_frame_size)
                data = out[0]
                if len(data) > n:
                    if type(data) is not memoryview:
                        data = memoryview(data)
                    out[0] = data[n:]
                    data = data[:n]
                else:
                    out.popleft()
                ex.out_len -= len(data)
                end = ex.ending and not ex.out_len and not ex.trailers
                h2c.send_data(sid, data, end_stream=end)
                if end:
                    self._finished(ex)
            else:
                if ex.ending and not ex.done:
                    if ex.trailers:
                        h2c.send_headers(sid, ex.trailers, end_stream=True)
                    else:
                        h2c.end_stream(sid)
                    self._finished(ex)
        except H2Error:
            self._gone(ex)
        self._queue_flush()
        if ex.waiters:
            ex.wake()

    def _finished(self, ex):
        """END_STREAM went out: the response is complete."""
        ex.done = True
        ex.ending = True
        self._blocked.discard(ex)
        self.worker.exchange_finished(ex)
        body = ex.request.body
        if body is not EMPTY_BODY and not body.complete:
            body.discard()       # answered before the whole body came
        if not ex.remote_done:
            # ask the client to stop sending the rest (RFC 9113 8.1)
            try:
                self.h2.reset_stream(ex.sid, NO_ERROR)
            except H2Error:
                pass
            ex.remote_done = True
        self._forget(ex)

    def _gone(self, ex):
        self.streams.pop(ex.sid, None)
        self._drop(ex)
        if self.closing and not self.streams:
            self._linger()

    def _window(self, sid):
        if sid == 0:
            blocked = list(self._blocked)
            self._blocked.clear()
            for ex in blocked:
                self.pump(ex)
        else:
            ex = self.streams.get(sid)
            if ex is not None and ex in self._blocked:
                self._blocked.discard(ex)
                self.pump(ex)

    def reset(self, ex, code):
        if ex.closed:
            return
        try:
            self.h2.reset_stream(ex.sid, code)
        except H2Error:
            pass
        self._gone(ex)
        self._queue_flush()

    def push(self, parent, path):
        """PUSH_PROMISE for `path`, then answer it like a GET from the client."""
        if not parent.can_push() or not path.startswith("/"):
            return False
        preq = parent.request
        h2c = self.h2
        headers = [("host", parent.authority)]
        for name in ("accept-encoding", "user-agent", "accept-language"):
            value = preq.header(name)
            if value is not None:
                headers.append((name, value))
        try:
            sid = h2c.get_next_available_stream_id()
            h2c.push_stream(parent.sid, sid,
                            [(":method", "GET"), (":scheme", self.scheme),
                             (":authority", parent.authority), (":path", path)] + headers[1:])
        except H2Error:
            return False
        target = path
        p, _, query = path.partition("?")
        req = Request("GET", target, p, query, "2", headers, self.scheme, self.client, self.server)
        req.started = time.monotonic()
        req.host = preq.host
        req.body = EMPTY_BODY
        ex = H2Exchange(self, sid, req, parent.authority, pushed=True)
        self.streams[sid] = ex
        self._queue_flush()
        self.loop.call_soon(self._dispatch_pushed, ex)
        return True

    def _dispatch_pushed(self, ex):
        if not ex.closed:
            self.worker.dispatch(ex)

    def _queue_flush(self):
        if not self._flush_queued:
            self._flush_queued = True
            self.worker.queue_flush(self)

    def flush(self):
        self._flush_queued = False
        if self._hold:
            return
        data = self.h2.data_to_send()
        if data and not self._lingering and not self.transport.is_closing():
            self.transport.write(data)

    # -- errors and closing -------------------------------------------------------------
    def _send_goaway(self, last, code):
        """GOAWAY written by hand: h2's state machine refuses to send anything
        after its own GOAWAY, and in-flight streams still have to finish."""
        self.flush()
        if not self._lingering and not self.transport.is_closing():
            self.transport.write(GoAwayFrame(stream_id=0, last_stream_id=last,
                                             error_code=code).serialize())

    def _goaway(self, code):
        """The last GOAWAY: streams above the last one taken are refused from now on."""
        if self._goaway_sid is None:
            self._goaway_sid = self.last_sid
            self._send_goaway(self.last_sid, code)

    def _drain(self):
        """Begin a graceful close (RFC 9113 6.8): a GOAWAY that still takes
        every stream, and a PING. Streams the client opened before it read the
        GOAWAY arrive before the PING's answer; then comes the real last id."""
        if self.draining or self.closing:
            return
        self.draining = True
        self._send_goaway(MAX_STREAM_ID, NO_ERROR)
        try:
            self.h2.ping(DRAIN_PING)
        except H2Error:
            return self._drained()
        self.flush()
        self._drain_timer = self.loop.call_later(DRAIN_TIMEOUT, self._drained)

    def _drained(self):
        """A round trip after the first GOAWAY (or DRAIN_TIMEOUT without one)."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self.closing:
            return
        self.closing = True
        self._goaway(NO_ERROR)
        if not self.streams:
            self._linger()

    def _linger(self):
        """Close once every stream is done, without a TCP reset: input still
        unread at close() makes the kernel send one, and that can destroy the
        responses the client has not read yet. So half-close, drop what still
        comes, and close when the client does (or after LINGER)."""
        if self._lingering:
            return
        self.closing = True
        self.flush()
        self._lingering = True      # (nothing is written from here on)
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()       # TLS: close_notify, then the peer's
        try:
            transport.resume_reading()
        except (AttributeError, RuntimeError):
            pass
        self._linger_timer = self.loop.call_later(LINGER, self.close_now)

    def _fail(self, code):
        """A connection error: GOAWAY with `code`, stop every stream, close."""
        self.worker.count_rejected(400, "HTTP/2 connection error %s" % code, self.client)
        self.closing = True
        self._goaway(code)
        self._hold = False
        for ex in list(self.streams.values()):
            self._drop(ex)
        self.streams.clear()
        self.close_soon()

    def in_flight(self):
        return [ex for ex in self.streams.values() if not ex.done]

    def close_idle(self):
        """Graceful stop (stop, reload, retirement): the two GOAWAYs, then
        close once the streams they let in are done."""
        if self._hold:
            return False        # the h2c upgrade's body is still coming: no frame yet
        self._drain()
        return self._lingering

    def sweep(self, now):
        limits = self.limits
        if not self.streams:
            if self.closing:
                self._linger()
            elif now - self.last_active > limits.keep_alive:
                self._drain()       # idle: a request may be on its way all the same
            return
        if self.write_paused and now - self._paused_since > limits.response_timeout:
            self.close_now()       # the client stopped reading
            return
        for ex in list(self.streams.values()):
            body = ex.request.body
            if not ex.remote_done and not ex.in_paused and body is not EMPTY_BODY \
                    and not body.complete and now - ex.last_in > limits.request_timeout:
                self.reset(ex, CANCEL)      # a stalled upload
            elif ex in self._blocked and now - self.last_active > limits.response_timeout:
                self.reset(ex, CANCEL)      # the peer never opens its window
