"""HTTP/3 over QUIC, framed by aioquic's sans-IO `QuicConnection` and
`H3Connection`, on the worker's own loop and UDP socket.

`QuicEndpoint` is the worker's UDP socket (one per worker, see
daemon/udp.py): it finds the connection a datagram belongs to by its
destination connection ID and opens connections for Initial packets. Each
`H3Conn` turns HEADERS and DATA into `Request`s and dispatches them to the
same router and handlers as HTTP/1.1 and HTTP/2 through `H3Exchange`.
Datagrams go out once per loop iteration (the worker's flush queue).

Flow control, both ways:
- in: a request stream's window (MAX_STREAM_DATA) slides with what reached
  the app, STREAM_WINDOW ahead, and stays shut while the app has more than
  body.HIGH_WATER unread (aioquic on its own doubles windows as data arrives,
  whether anyone reads it or not: `_Quic` replaces that for request streams);
- out: QUIC's congestion control paces what is sent; a stream's data not yet
  acknowledged above OUT_HIGH_WATER makes producers wait on `drain()`.

Safety: address validation (Retry) for every new connection when
`quic_retry` is on, and on its own while more than MAX_HANDSHAKES
connections are in their handshake (a flood of Initials from spoofed
sources then costs one stateless packet each, not a TLS handshake);
handshakes that do not complete in HANDSHAKE_TIMEOUT are dropped; aioquic
keeps to the 3x amplification limit before an address is validated (RFC
9000 8.1). QPACK is aioquic's: a 4096-byte dynamic table and 16 blocked
streams at most.

A graceful close (stop, reload) sends GOAWAY with the first stream id not
taken, answers every stream below it, then closes with H3_NO_ERROR.
"""
import asyncio
import os
import time

from aioquic.buffer import Buffer, encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.events import (ConnectionIdIssued, ConnectionIdRetired, ConnectionTerminated,
                                 HandshakeCompleted,
                                 StopSendingReceived, StreamReset)
from aioquic.quic.packet import (QuicFrameType, QuicPacketType, encode_quic_retry,
                                 encode_quic_version_negotiation, pull_quic_header)
from aioquic.quic.retry import QuicRetryTokenHandler

from ..body import EMPTY_BODY, ClientDisconnected, RequestBody
from ..exchange import Request
from ..http.headers import HOP_BY_HOP, host_without_port
from ..http_status import plain_error, status_code
from . import dates
from .base import Tracked
from .framing import FramedExchange, add_waiter, wake
from .h2 import _field, malformed_pseudo
from .host import ConnectionHost

MAX_STREAMS = 128               # request streams per connection being answered at once
STREAM_WINDOW = 256 * 1024      # per-stream receive window ahead of what the app took
CONN_WINDOW = 16 * 1024 * 1024  # connection receive window at the start (aioquic grows it)
OUT_HIGH_WATER = 256 * 1024     # per-stream unacknowledged output before producers wait
MAX_HANDSHAKES = 100            # handshakes in progress per worker before Retry is forced
HANDSHAKE_TIMEOUT = 5.0         # a connection not through its handshake by then is dropped
CLOSE_TIMEOUT = 2.0             # closing: longest wait for the last responses' acknowledgements

NO_ERROR = ErrorCode.H3_NO_ERROR
REJECTED = ErrorCode.H3_REQUEST_REJECTED
CANCELLED = ErrorCode.H3_REQUEST_CANCELLED
MESSAGE_ERROR = ErrorCode.H3_MESSAGE_ERROR
INTERNAL = ErrorCode.H3_INTERNAL_ERROR


def quic_configuration(config):
    """The QUIC/TLS settings of a server with `quic = PORT`: its certificate
    (read here: call before privileges are dropped), ALPN h3, the windows."""
    qc = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN,
                           idle_timeout=max(config.limits.keep_alive, 5.0),
                           max_stream_data=STREAM_WINDOW, max_data=CONN_WINDOW)
    qc.load_cert_chain(config.certfile, config.keyfile or None,
                       config.passphrase.encode() if config.passphrase else None)
    return qc


class _Quic(QuicConnection):
    """aioquic's connection with request-stream receive windows of our own:
    `windows[stream_id]()` says how far the client may send (None: leave
    the stream to aioquic)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.windows = {}

    def _write_stream_limits(self, builder, space, stream):
        window = self.windows.get(stream.stream_id)
        if window is None:
            return super()._write_stream_limits(builder, space, stream)
        limit = window()
        if limit > stream.max_stream_data_local:
            stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA,
                                      capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery,
                                      handler_args=(stream,))
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


class QuicEndpoint(asyncio.DatagramProtocol):
    """A worker's UDP socket: datagrams → the QUIC connection they belong to."""

    def __init__(self, worker: ConnectionHost, configuration, retry=False):
        self.worker = worker
        self.loop = worker.loop
        self.configuration = configuration
        self.always_retry = retry
        self.retry = QuicRetryTokenHandler()
        self.transport = None
        self.by_cid = {}            # every connection ID we issued (and the client's first)
        self.handshaking = set()    # connections whose handshake is not complete
        self.accepting = True
        self._out = set()           # connections with datagrams to send this iteration
        self._flush_queued = False

    def connection_made(self, transport):
        self.transport = transport

    def stop_accepting(self):
        """Graceful stop: Initials of new connections are dropped from now on
        (under a reload, the next generation's worker reads this port too)."""
        self.accepting = False

    def datagram_received(self, data, addr):
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            return
        conn = self.by_cid.get(header.destination_cid)
        if conn is not None:
            conn.received(data, addr)
            return
        if header.version is not None and header.packet_type != QuicPacketType.VERSION_NEGOTIATION \
                and header.version not in self.configuration.supported_versions:
            if len(data) >= SMALLEST_MAX_DATAGRAM_SIZE:     # (never more than it came with)
                self.transport.sendto(encode_quic_version_negotiation(
                    source_cid=header.destination_cid, destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions), addr)
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return
        if not self.accepting or len(self.worker.connections) >= self.worker.limits.max_connections:
            return          # the client tries again (another worker, later)
        odcid, retry_scid = header.destination_cid, None
        if self.always_retry or len(self.handshaking) >= MAX_HANDSHAKES:
            if not header.token:
                scid = os.urandom(8)
                self.transport.sendto(encode_quic_retry(
                    version=header.version, source_cid=scid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=self.retry.create_token(
                        address=addr, original_destination_connection_id=header.destination_cid,
                        retry_source_connection_id=scid, now=self.loop.time())), addr)
                return
            try:
                odcid = self.retry.validate_token(address=addr,
                                                  destination_cid=header.destination_cid,
                                                  token=header.token, now=self.loop.time())
            except ValueError:
                return
            retry_scid = header.destination_cid
        quic = _Quic(configuration=self.configuration,
                     original_destination_connection_id=odcid,
                     retry_source_connection_id=retry_scid)
        quic._local_max_streams_bidi.value = quic._local_max_streams_bidi.sent = MAX_STREAMS
        conn = H3Conn(self, quic, addr)
        self.by_cid[header.destination_cid] = conn
        self.by_cid[quic.host_cid] = conn
        conn.cids.update((header.destination_cid, quic.host_cid))
        conn.received(data, addr)

    # -- output: once per loop iteration ------------------------------------------------
    def queue(self, conn):
        self._out.add(conn)
        if not self._flush_queued:
            self._flush_queued = True
            self.worker.queue_flush(self)

    def flush(self):
        self._flush_queued = False
        out, self._out = self._out, set()
        for conn in out:
            conn.transmit()

    def forget(self, conn):
        for cid in conn.cids:
            if self.by_cid.get(cid) is conn:
                del self.by_cid[cid]
        self.handshaking.discard(conn)
        self._out.discard(conn)

    def error_received(self, exc):
        pass        # ICMP errors for one client's address: its connection times out

    def close(self):
        if self.transport is not None:
            self.transport.close()


class H3Exchange(FramedExchange):
    """One request stream and its response (loop thread only)."""

    __slots__ = ("conn", "sid", "request", "is_head", "closed", "status", "sent", "head_sent",
                 "done", "t_start", "t_handled", "ending", "trailers", "remaining", "waiters",
                 "in_paused", "taken", "remote_done", "last_in")

    supports_trailers = True

    def __init__(self, conn, sid, request):
        FramedExchange.__init__(self, conn, request)
        self.sid = sid
        self.ending = False
        self.trailers = None
        self.waiters = None
        self.in_paused = False
        self.taken = 0              # request body bytes let in so far
        self.remote_done = False
        self.last_in = request.started

    def _head(self, status, headers, length):
        code = status_code(status)
        self.status = code
        out = [(b":status", str(code).encode()), (b"date", dates.value().encode()),
               (b"server", b"skitaid")]
        explicit = None
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                continue        # connection-specific: malformed in HTTP/3 (RFC 9114 4.2)
            if lname == "content-length":
                explicit = _field(lname, value)
                continue
            out.append(_field(lname, value))
        announced = self._announced_length(code, explicit, length)
        if self.is_head:
            # HEAD, 304: RFC 9110 lets a content-length say what a GET would
            # get, but aioquic-based clients (and its forks) take it as the
            # length of a body that never comes and close the connection
            announced = None
        if announced is not None:
            out.append(announced if announced is explicit
                       else (b"content-length", str(announced).encode()))
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
        if self.is_head:
            body = b""
        self.sent = len(body)
        self.ending = True
        self.conn.send(self, head, body, True)

    def _send_head(self, head):
        self.conn.send(self, head, b"", False)

    def write(self, data):
        if self.closed or self.is_head or not data or self.ending:
            return
        data = self._counted(data)
        if data:
            self.conn.send(self, None, data, False)

    def finish(self):
        if self.ending or self.closed:
            return
        if self.remaining:
            return self.abort()     # short of the declared Content-Length
        self.ending = True
        self.conn.send(self, None, b"", True)

    def abort(self):
        self.conn.reset(self, INTERNAL)

    def set_trailers(self, headers):
        if self.ending or self.closed:
            return
        try:
            self.trailers = [_field(n.lower(), v) for n, v in headers
                             if n.lower() not in HOP_BY_HOP]
        except ValueError:
            self.conn.worker.log_exception("setting the response trailers for %s %s"
                                           % (self.request.method, self.request.target))
            self.abort()

    # -- output pacing ---------------------------------------------------------------------
    def writing_paused(self):
        return not self.closed and self.conn.unacked(self.sid) > OUT_HIGH_WATER

    async def drain(self):
        self.conn.endpoint.flush()
        while self.writing_paused():
            self.waiters, fut = add_waiter(self.conn.loop, self.waiters)
            await fut

    def wake(self):
        waiters = self.waiters
        if waiters and not self.writing_paused():
            self.waiters = None
            wake(waiters)

    # -- request body flow (RequestBody calls these) -----------------------------------------
    def body_paused(self):
        self.in_paused = True

    def body_resume(self):
        self.in_paused = False
        self.conn.queue()       # the window opens with the next packet

    def send_continue(self):
        pass

    def window(self):
        """How far the client may send on this stream (_Quic asks)."""
        body = self.request.body
        if not self.in_paused and body is not EMPTY_BODY:
            self.taken = body.received
        return self.taken + STREAM_WINDOW


class H3Conn(Tracked):
    """One QUIC connection carrying HTTP/3; in `worker.connections`."""

    def __init__(self, endpoint, quic, addr):
        self.endpoint = endpoint
        self.worker = endpoint.worker
        self.loop = endpoint.loop
        self.limits = self.worker.limits
        self.quic = quic
        self.h3 = H3Connection(quic)
        self.addr = addr
        self.client = addr[:2]
        sockname = endpoint.transport.get_extra_info("sockname")
        self.server = sockname[:2] if sockname else ("", 0)
        self.cids = set()
        self.streams = {}
        self.closing = False        # GOAWAY sent: no new request streams
        self.closed = False
        self.write_paused = False
        self.started = self.last_active = time.monotonic()
        self.handshake_done = False
        self.goaway_sid = None
        self.max_sid = -4           # highest client stream id taken
        self._timer = None
        self._timer_at = None
        self._close_at = None
        endpoint.handshaking.add(self)
        self.worker.connections.add(self)

    # -- input -----------------------------------------------------------------------------
    def received(self, data, addr):
        now = time.monotonic()
        self.last_active = now
        self.quic.receive_datagram(data, addr, now=self.loop.time())
        self._process(now)
        self.queue()

    def _process(self, now):
        quic = self.quic
        event = quic.next_event()
        while event is not None:
            t = type(event)
            if t is ConnectionIdIssued:
                self.cids.add(event.connection_id)
                self.endpoint.by_cid[event.connection_id] = self
            elif t is ConnectionIdRetired:
                self.cids.discard(event.connection_id)
                if self.endpoint.by_cid.get(event.connection_id) is self:
                    del self.endpoint.by_cid[event.connection_id]
            elif t is ConnectionTerminated:
                self._lost()
                return
            elif t is StreamReset or t is StopSendingReceived:
                self._stream_gone(event.stream_id)
            elif t is HandshakeCompleted:
                self.handshake_done = True
                self.endpoint.handshaking.discard(self)
            try:
                for ev in self.h3.handle_event(event):
                    if type(ev) is HeadersReceived:
                        self._headers(ev, now)
                    elif type(ev) is DataReceived:
                        self._data(ev, now)
            except H3Error as e:
                self.worker.count_rejected(400, "HTTP/3 error %s" % e, self.client)
                quic.close(error_code=getattr(e, "error_code", ErrorCode.H3_GENERAL_PROTOCOL_ERROR),
                           reason_phrase=str(e)[:100])
            event = quic.next_event()

    def _headers(self, ev, now):
        sid = ev.stream_id
        ex = self.streams.get(sid)
        if ex is not None:
            # trailers of the request body
            body = ex.request.body
            if body is not EMPTY_BODY and not body.complete:
                ex.request.trailers = [(k.decode("latin-1"), v.decode("latin-1"))
                                       for k, v in ev.headers]
            if ev.stream_ended:
                self._ended(ex)
            return
        if sid & 3 != 0:
            return                  # (only client bidirectional streams carry requests)
        if self.closing and sid >= self.goaway_sid or len(self.streams) >= MAX_STREAMS:
            self._refuse(sid)
            return
        self.max_sid = max(self.max_sid, sid)
        self._request(sid, ev, now)

    def _request(self, sid, ev, now):
        method = scheme = path = authority = None
        headers = []
        bad = None
        size = 0
        for k, v in ev.headers:
            size += len(k) + len(v) + 32
            name = k.decode("latin-1")
            value = v.decode("latin-1")
            if name.startswith(":"):
                if headers:
                    bad = 400   # a pseudo-header after a regular one
                if name == ":method":
                    method = value
                elif name == ":scheme":
                    scheme = value
                elif name == ":path":
                    path = value
                elif name == ":authority":
                    authority = value
                elif name != ":protocol":
                    bad = 400
                continue
            if name in HOP_BY_HOP and not (name == "te" and value == "trailers"):
                bad = 400
            headers.append((name, value))
        host = authority
        if host is None:
            for name, value in headers:
                if name == "host":
                    host = value
                    break
        elif not any(n == "host" for n, _ in headers):
            headers.insert(0, ("host", authority))
        if malformed_pseudo(method, scheme, path, authority):
            bad = 400
        length = None
        for name, value in headers:
            if name == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    bad = 400
                else:
                    length = int(value)
        if method == "CONNECT" and bad is None:
            bad = 405
            path = ""
        path = path or ""
        target = path
        path, _, query = path.partition("#")[0].partition("?")
        req = Request(method or "GET", target, path, query, "3", headers, "https",
                      self.client, self.server)
        req.started = now
        req.host = host_without_port(host or "")
        req.content_length = length
        ex = H3Exchange(self, sid, req)
        self.streams[sid] = ex
        if ev.stream_ended:
            req.body = EMPTY_BODY
            ex.remote_done = True
        else:
            req.body = RequestBody(ex, self.loop)
            req.chunked = length is None
            req.trailers = []
            self.quic.windows[sid] = ex.window
        limits = self.limits
        if bad is None:
            if len(headers) > limits.max_headers or size > limits.max_header_size:
                bad = 431
            elif len(target) > limits.max_url_size:
                bad = 414
            elif length is not None and length > limits.max_upload_size:
                bad = 413
        if bad is not None:
            self.worker.count_rejected(bad, "bad HTTP/3 request", self.client)
            ex.respond(*plain_error(bad))
            return
        self.worker.dispatch(ex)

    def _data(self, ev, now):
        ex = self.streams.get(ev.stream_id)
        if ex is None or ex.closed or ex.request.body is EMPTY_BODY:
            return
        ex.last_in = now
        body = ex.request.body
        if ev.data:
            length = ex.request.content_length
            n = body.received + len(ev.data)
            if length is not None and n > length:
                return self._bad_length(ex)
            if n > self.limits.max_upload_size:
                if not ex.head_sent:
                    ex.respond(*plain_error(413))
                self.reset(ex, CANCELLED)
                return
            body.feed(ev.data)
        if ev.stream_ended:
            self._ended(ex)

    def _ended(self, ex):
        body = ex.request.body
        length = ex.request.content_length
        if body is not EMPTY_BODY and length is not None and body.received != length:
            return self._bad_length(ex)
        ex.remote_done = True
        self.quic.windows.pop(ex.sid, None)
        if body is not EMPTY_BODY:
            body.finish()
        if ex.done:
            self._forget(ex)

    def _bad_length(self, ex):
        self.worker.count_rejected(400, "HTTP/3 body length differs from content-length",
                                   self.client)
        self.reset(ex, MESSAGE_ERROR)

    def _refuse(self, sid):
        try:
            self.quic.reset_stream(sid, REJECTED)
            self.quic.stop_stream(sid, REJECTED)
        except Exception:
            pass
        self.queue()

    def _stream_gone(self, sid):
        """The client reset the stream or asked us to stop sending."""
        ex = self.streams.pop(sid, None)
        if ex is not None:
            self._drop(ex)
            try:
                self.quic.reset_stream(sid, CANCELLED)
            except Exception:
                pass

    def _drop(self, ex):
        ex.closed = True
        self.quic.windows.pop(ex.sid, None)
        body = ex.request.body
        if body is not EMPTY_BODY and not body.complete:
            body.fail(ClientDisconnected("stream reset"))
        ex.wake()
        if not ex.done:
            self.worker.exchange_aborted(ex)

    def _forget(self, ex):
        if self.streams.get(ex.sid) is ex:
            del self.streams[ex.sid]
        self.quic.windows.pop(ex.sid, None)
        if self.closing and not self.streams:
            self._maybe_close()

    # -- output ------------------------------------------------------------------------------
    def send(self, ex, head, data, end):
        """Head (or None), data and END_STREAM of one response, as aioquic frames them."""
        if ex.closed:
            return
        h3 = self.h3
        try:
            if head is not None:
                h3.send_headers(ex.sid, head, end_stream=end and not data and not ex.trailers)
            if data:
                h3.send_data(ex.sid, data, end_stream=end and not ex.trailers)
            if end:
                if ex.trailers:
                    h3.send_headers(ex.sid, ex.trailers, end_stream=True)
                elif head is None and not data:
                    h3.send_data(ex.sid, b"", end_stream=True)
        except Exception:
            # the stream is gone under us (reset, STOP_SENDING, connection closed)
            self.streams.pop(ex.sid, None)
            self._drop(ex)
            return
        self.queue()
        if end:
            self._finished(ex)

    def _finished(self, ex):
        ex.done = True
        ex.ending = True
        self.worker.exchange_finished(ex)
        body = ex.request.body
        if body is not EMPTY_BODY and not body.complete:
            body.discard()
        if not ex.remote_done:
            try:        # answered before the whole body came: the rest is not wanted
                self.quic.stop_stream(ex.sid, NO_ERROR)
            except Exception:
                pass
            ex.remote_done = True
        self._forget(ex)

    def unacked(self, sid):
        """Bytes of stream `sid` sent or queued and not acknowledged yet."""
        stream = self.quic._streams.get(sid)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def reset(self, ex, code):
        if ex.closed:
            return
        try:
            self.quic.reset_stream(ex.sid, code)
            if not ex.remote_done:
                self.quic.stop_stream(ex.sid, code)
        except Exception:
            pass
        self.streams.pop(ex.sid, None)
        self._drop(ex)
        self.queue()
        if self.closing and not self.streams:
            self._maybe_close()

    def queue(self):
        if not self.closed:
            self.endpoint.queue(self)

    def flush(self):
        self.endpoint.flush()

    def transmit(self):
        """Send what aioquic has ready and re-arm its timer."""
        if self.closed:
            return
        quic = self.quic
        sendto = self.endpoint.transport.sendto
        for data, addr in quic.datagrams_to_send(now=self.loop.time()):
            sendto(data, addr)
        at = quic.get_timer()
        if at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at
        waiting = [ex for ex in self.streams.values() if ex.waiters]
        for ex in waiting:
            ex.wake()
        if self.closing and not self.streams:
            self._maybe_close()

    def _on_timer(self):
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(now=self.loop.time())
        self._process(time.monotonic())
        self.transmit()

    # -- closing --------------------------------------------------------------------------------
    def _goaway(self):
        """GOAWAY on our control stream (RFC 9114 5.2): streams from the next id on
        are not taken. aioquic has no call for it; the frame is written by hand."""
        self.closing = True
        self.goaway_sid = self.max_sid + 4
        control = self.h3._local_control_stream_id
        if control is not None:
            try:
                self.quic.send_stream_data(control, encode_frame(
                    FrameType.GOAWAY, encode_uint_var(self.goaway_sid)))
            except Exception:
                pass
        self.queue()

    def _settled(self):
        """Every response stream's data and end are acknowledged (or reset):
        aioquic drops what is not, once it closes."""
        for sid, stream in self.quic._streams.items():
            if sid & 3 == 0 and not stream.sender.is_finished:
                return False
        return True

    def _maybe_close(self):
        """Closing, and no stream left: close once the client has all of the
        responses (or CLOSE_TIMEOUT after the GOAWAY)."""
        if self.closed:
            return
        now = time.monotonic()
        if self._close_at is None:
            self._close_at = now + CLOSE_TIMEOUT
        if now > self._close_at or self._settled():
            self._close(NO_ERROR)

    def _close(self, code):
        """CONNECTION_CLOSE (aioquic then drains, and tells us when it is done)."""
        if self.closed:
            return
        try:
            self.quic.close(error_code=code)
        except Exception:
            pass
        self.transmit()
        self._lost()

    def _lost(self):
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for ex in list(self.streams.values()):
            self._drop(ex)
        self.streams.clear()
        self.endpoint.forget(self)
        self.worker.connections.discard(self)

    def close_idle(self):
        """Graceful stop: GOAWAY, then close once what it let in is answered."""
        if self.closed:
            return True
        if not self.handshake_done:
            self._lost()
            return True
        if not self.closing:
            self._goaway()
        if not self.streams:
            self._maybe_close()
        return self.closed

    def close_now(self):
        self._close(NO_ERROR if not self.streams else INTERNAL)

    def in_flight(self):
        return [ex for ex in self.streams.values() if not ex.done]

    def sweep(self, now):
        if self.closed:
            return
        limits = self.limits
        if not self.handshake_done:
            if now - self.started > HANDSHAKE_TIMEOUT:
                self._lost()        # silently: nothing was established
            return
        if not self.streams:
            if self.closing:
                self._maybe_close()
            elif now - self.last_active > limits.keep_alive:
                self._goaway()
            return
        for ex in list(self.streams.values()):
            body = ex.request.body
            if not ex.remote_done and not ex.in_paused and body is not EMPTY_BODY \
                    and not body.complete and now - ex.last_in > limits.request_timeout:
                self.reset(ex, CANCELLED)       # a stalled upload
            elif ex.writing_paused() and now - self.last_active > limits.response_timeout:
                self.reset(ex, CANCELLED)       # the client stopped acknowledging
