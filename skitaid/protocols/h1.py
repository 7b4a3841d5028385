"""HTTP/1.1 over an asyncio transport, parsed by httptools (llhttp).

The connection parses request heads, queues pipelined requests, runs one
exchange at a time (responses leave in request order) and frames each
response with Content-Length, chunked encoding, or close-delimited for
HTTP/1.0. It knows nothing about apps: the router picks a handler, the
handler answers through `H1Exchange`.
"""
import os
import time
from collections import deque

import httptools

from ..body import EMPTY_BODY, ClientDisconnected, RequestBody
from ..exchange import Request, host_without_port
from ..http.headers import KNOWN_NAMES, bad_value, response_field_error, trailer_fields
from ..http_status import plain_error, status_code, status_line
from . import dates, h2c
from .base import Batched, addresses, input_waiting
from .framing import FramedExchange, add_waiter, bodiless, wake
from .host import ConnectionHost

SERVER_HEADER = b"Server: skitaid\r\n"
CHUNK_END = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_PIPELINE = 16          # queued requests before we stop reading
LINGER_SECONDS = 2.0       # after an early response, read and drop the rest for this long
LINGER_BYTES = 1024 * 1024
IDLE_GRACE = 1.0           # retiring: a connection quiet this long gets no more requests

# connection states the sweeper looks at. DRAIN: a later request was bad;
# earlier ones are still being answered, then the error goes out (input is
# ignored meanwhile). States >= LINGER never parse again.
IDLE, HEAD, BUSY, LINGER, DRAIN = range(5)


class _Reject(Exception):
    """Raised inside parser callbacks to stop parsing with an HTTP error."""

    def __init__(self, status, detail):
        self.status = status
        self.detail = detail


class _Stop(Exception):
    """Raised inside on_message_begin after the connection's last request:
    llhttp parses nothing more."""


def _closing_answer(status, detail, version="1.1", head_only=False):
    """A protocol-level answer (http_status.plain_error) that ends the
    connection: (its bytes, the body bytes among them)."""
    code, headers, body = plain_error(status, detail)
    fields = "".join("%s: %s\r\n" % h for h in headers).encode("latin-1")
    head = (status_line(code, version) + dates.header() + SERVER_HEADER + fields
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    if head_only:
        return head, 0
    return head + body, len(body)


class _BodyReader:
    """Parser callbacks for the body of an Upgrade request that is not
    upgraded (see H1Connection._body_after_upgrade): llhttp ends such a
    message at its head, so a fresh parser reads the body after a stand-in
    head that only carries the framing; that head itself is not passed on."""

    def __init__(self, conn):
        self.conn = conn
        self.in_head = True
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete

    def on_headers_complete(self):
        self.in_head = False

    def on_header(self, name, value):
        if not self.in_head:
            self.conn.on_header(name, value)     # the trailer section


class H1Exchange(FramedExchange):
    """One request/response on an HTTP/1.x connection."""

    __slots__ = ("conn", "request", "is_head", "closed", "status", "sent",
                 "head_sent", "chunked", "keep_alive", "done", "t_start",
                 "t_handled", "version", "remaining")

    # FramedExchange.__init__(conn, request); the connection then sets
    # `keep_alive`, `version` ("1.1" | "1.0": how we answer) and `chunked`
    # (one call fewer per request than an __init__ of our own)

    # -- framing ------------------------------------------------------------
    def _head(self, status, headers, length):
        """Serialise the response head; decides keep-alive and framing."""
        code = status_code(status)
        self.status = code
        keep = self.keep_alive
        explicit_length = None
        lines = []
        for name, value in headers:
            if name not in KNOWN_NAMES:
                error = response_field_error(name, "")
                if error:
                    raise ValueError(error)
            lname = name.lower()
            if lname == "content-length":
                explicit_length = value
                continue
            if lname == "connection":
                if "close" in value.lower():
                    keep = False
                continue
            if lname == "transfer-encoding" or lname == "keep-alive":
                continue   # framing is ours to decide
            lines.append("%s: %s\r\n" % (name, value))
        if code == 200 and not self.is_head:
            announced = length      # (what _announced_length says for a plain 200)
        else:
            announced = self._announced_length(code, explicit_length, length)
        if announced is not None:
            lines.append("Content-Length: %s\r\n" % announced)
        elif bodiless(code):
            pass            # 1xx, 204, 304: no body and no framing
        elif self.version == "1.1":
            self.chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            keep = False   # HTTP/1.0 without a length: the close ends the body
        conn = self.conn
        if keep and (conn.closing or (conn.retiring and not conn._queue)):
            # a retiring worker answers the requests it has, the last with close
            keep = False
        self.keep_alive = keep
        if not keep:
            lines.append("Connection: close\r\n")
        elif self.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        text = "".join(lines)
        n = len(lines)
        if text.count("\n") != n or text.count("\r") != n or "\x00" in text:
            # A CR, LF or NUL inside a value (an app's Content-Length is sent
            # as it is for HEAD and 304): one scan of the head finds it, the
            # rule's own check names it.
            for name, value in headers:
                error = response_field_error(name, value)
                if error:
                    raise ValueError(error)
            raise ValueError("CR, LF or NUL in a response header")
        self.head_sent = True
        return b"".join((status_line(status, self.version), dates.header(),
                         SERVER_HEADER, text.encode("latin-1"), b"\r\n"))

    def respond(self, status, headers, body=b""):
        if self.closed or self.head_sent:
            return
        try:
            head = self._head(status, headers, len(body))
        except ValueError:
            return self._bad_head()
        if self.is_head:       # HEAD, 1xx, 204, 304 (see _head)
            self.conn.send(head)
        else:
            self.conn.send(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self.conn.send(body)
            self.sent = len(body)
        self.done = True       # finish(), inlined: never chunked, length exact
        self.conn.exchange_done(self)

    def _send_head(self, head):
        self.conn.send(head)

    def _bad_head(self):
        """The handler's status or headers cannot be sent (CR/LF/NUL
        injection, not latin-1): answer 500 and close instead of leaving the
        client waiting; whatever the handler sends afterwards is dropped."""
        self.conn.worker.log_exception("sending the response head for %s %s"
                                       % (self.request.method, self.request.target))
        self.status = 500
        self.head_sent = True
        self.chunked = False
        self.keep_alive = False
        page, self.sent = _closing_answer(500, None, self.version, self.request.method == "HEAD")
        self.conn.send(page)
        self.finish()
        self.closed = True

    def write(self, data):
        if self.closed or self.is_head or not data:
            return
        if self.chunked:
            n = len(data)
            self.sent += n
            if n < 16384:
                self.conn.send(b"%x\r\n%b\r\n" % (n, data))
            else:
                self.conn.send(b"%x\r\n" % n)
                self.conn.send(data)
                self.conn.send(b"\r\n")
            return
        data = self._counted(data)
        if data:
            self.conn.send(data)

    def finish(self):
        if self.done:
            return
        self.done = True
        if not self.closed:
            if self.chunked:
                if not self.is_head:
                    self.conn.send(CHUNK_END)
            elif self.remaining:
                # short of the declared Content-Length: only a close tells the
                # client, which would otherwise wait for the missing bytes
                self.keep_alive = False
        self.conn.exchange_done(self)

    def abort(self):
        """The response cannot be completed: drop the connection."""
        self.keep_alive = False
        self.done = True
        self.conn.exchange_done(self)
        self.conn.close_now()

    def can_switch(self):
        return True

    def switch_protocol(self, headers, protocol, status=101):
        """Answer 101 with `headers` and give the connection to `protocol`
        (see H1Connection.switch_protocol). Loop thread; False if it cannot."""
        return self.conn.switch_protocol(self, headers, protocol, status)

    # -- flow control --------------------------------------------------------
    def writing_paused(self):
        return self.conn.write_paused

    async def drain(self):
        await self.conn.drain()

    def _sending(self):
        # (is_closing: after an abort, connection_lost comes a little later;
        # until then the socket's fd may be closed or even reused)
        return not self.closed and not self.conn.transport.is_closing()

    def _zero_copy(self, in_fd, offset, count):
        """os.sendfile while the transport's buffer is empty; when the socket
        is full, a chunk goes through the transport instead and we wait for
        it to drain (an asyncio transport owns the fd's polling)."""
        conn = self.conn
        conn.flush()
        fd = conn.fd
        if fd is None or self.chunked:
            return None
        if conn.transport.get_write_buffer_size():
            return 0
        try:
            n = os.sendfile(fd, in_fd, offset, min(count, 4 * 1024 * 1024))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return None       # not a plain socket (or gone): copy instead
        if n:
            self.sent += n
            if self.remaining is not None:
                self.remaining -= n
        return n


class _ExpectExchange(H1Exchange):
    """An exchange whose client sent `Expect: 100-continue` (a subclass, so
    ordinary requests pay nothing for the check)."""

    __slots__ = ()

    def _head(self, status, headers, length):
        head = H1Exchange._head(self, status, headers, length)
        if self.keep_alive and self.request.body.continue_pending:
            # Answered before the app read the body: the client never got its
            # 100 Continue and may or may not send the body now, so what
            # follows cannot be framed. Close after this response.
            self.keep_alive = False
            head = head[:-2] + b"Connection: close\r\n\r\n"
        return head


class H1Connection(Batched):
    """One client connection (HTTP/1.0 and 1.1)."""

    def __init__(self, worker: ConnectionHost, scheme="http"):
        super().__init__(worker, scheme)
        self.fd = None
        self.parser = httptools.HttpRequestParser(self)
        self.state = IDLE
        self.last_active = 0.0
        self.retiring = False      # the worker stops: answer what came, the last with close
        self._drain_waiters = None
        self._queue = deque()
        self.current = None
        self._parsing = None      # request whose head/body the parser is filling
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._reading_paused = False
        self._body_paused = False
        self._linger_bytes = 0
        self._in_head = False
        self._head_started = 0.0   # when the head being received began (request_timeout)
        self._header_size = 0
        self._eof = False          # the client shut down its sending side
        self._error_after = None   # (status, detail) to send once earlier responses are out
        self._out = None
        self._upgrade_tail = None  # bytes after a head that asked to switch protocols
        self._upgrade_body = False  # an Upgrade head with a body that is read as a plain request
        self._stop_after = False   # the request being parsed is the connection's last
        self._stopped = False      # ... and it is complete: nothing more is parsed
        self._client_closes = False   # the client said its last request was its last
        self._trailers = None      # trailer fields of the chunked body being parsed
        self._body_time = 0.0      # seconds the body being parsed was awaited (rate rule)
        self._body_swept = 0.0     # when the sweep last added to _body_time
        # cleartext HTTP/2 (protocols/h2c.py): the preface, or Upgrade: h2c
        self._h2c = scheme == "http" and worker.config.http2
        self._h2_sniff = b"" if self._h2c else None
        self._h2c_request = None

    # -- asyncio.Protocol -----------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.client, self.server = addresses(transport)
        if self.scheme == "http":
            sock = transport.get_extra_info("socket")
            self.fd = sock.fileno() if sock is not None else None
        self.last_active = time.monotonic()
        worker = self.worker
        worker.connections.add(self)
        if len(worker.connections) > self.limits.max_connections:
            # Linger rather than close: a request already on its way would
            # make close() send a reset that can destroy the 503 in flight.
            self.send(status_line(503) + dates.header() + SERVER_HEADER
                      + b"Content-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
            self._linger()

    def connection_lost(self, exc):
        self.worker.connections.discard(self)
        self.closing = True
        self.fd = None
        cur = self.current
        if cur is not None:
            cur.closed = True
            if cur.request.body is not EMPTY_BODY:
                cur.request.body.fail(ClientDisconnected("client disconnected"))
            self.worker.exchange_aborted(cur)
        for ex in self._queue:
            ex.closed = True
        self._queue.clear()
        self._wake_drain()

    def resume_writing(self):
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self):
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            wake(waiters)

    async def drain(self):
        self.flush()
        # Wait only while paused: resume_writing() comes only after a
        # pause_writing(), so waiting on a merely non-empty buffer (below the
        # high-water mark) could wait forever. Wait even if we mean to close
        # after this response (`closing`, e.g. the client half-closed), or a
        # producer outruns a slow reader without bound. connection_lost()
        # wakes every waiter.
        if self.write_paused and not self.transport.is_closing():
            self._drain_waiters, fut = add_waiter(self.loop, self._drain_waiters)
            await fut

    def eof_received(self):
        # The client finished sending. Requests it already sent are still
        # answered, in order (a client may shut down its side right after
        # pipelining them); the connection closes after the last one.
        self._eof = True
        if self.current is None:
            self.close_soon()
            return False
        req = self._parsing
        if req is not None and self.state < LINGER:
            # a request body cut short: that request can never complete
            self.reject(400, "request body incomplete")
        elif not self._queue:
            self.closing = True
        return True

    def data_received(self, data):
        self.last_active = time.monotonic()
        if self._h2_sniff is not None:
            if self._h2_sniff or data[0] == 0x50:     # b"P": perhaps the HTTP/2 preface
                data = self._sniff_preface(data)
                if data is None:
                    return
            else:
                self._h2_sniff = None
        if self.state >= LINGER or self._stopped:
            if self.state == LINGER:
                self._linger_bytes += len(data)
                if self._linger_bytes > LINGER_BYTES:
                    self.close_soon()
            else:
                self._pause_reading()   # after the last request: wait for its answer
            return      # DRAIN: nothing after a bad request is parsed (nor after the last one)
        try:
            self.parser.feed_data(data)      # (_feed, inlined on the hot path)
        except Exception as e:
            self._parse_failed(e, data)
        if self._in_head:
            # llhttp buffers an unfinished head for us: bound it. Where a head
            # starts inside a chunk is unknown (-1 from on_message_begin), so
            # only the chunks after that one count (it is bounded by the read
            # size); counting it whole would refuse a head that follows a big
            # pipelined body in the same read.
            n = self._head_bytes
            if n < 0:
                self._head_bytes = 0
            else:
                n += len(data)
                self._head_bytes = n
                if n > self.limits.max_header_size + self.limits.max_url_size:
                    self._too_big_head()

    def _feed(self, data):
        try:
            self.parser.feed_data(data)
        except Exception as e:
            self._parse_failed(e, data)

    def _parse_failed(self, e, data):
        """What llhttp's feed_data() raised: a refusal, an upgrade (the rest
        of `data` is not HTTP/1.1), a callback's stop or error, bad syntax.
        Anything else propagates: asyncio logs it and closes the connection."""
        if self._stopped:
            return      # llhttp read past the connection's last request: ignored
        if isinstance(e, httptools.HttpParserCallbackError):
            cause = e.__context__
            if isinstance(cause, _Stop):
                pass
            elif isinstance(cause, _Reject):
                self.reject(cause.status, cause.detail)
            else:
                self.worker.log_exception("parser callback")
                self.reject(500, "internal error")
        elif isinstance(e, httptools.HttpParserUpgrade):
            rest = data[e.args[0]:]     # after the head: not HTTP/1.1
            if self._h2c_request is not None:
                req, self._h2c_request = self._h2c_request, None
                h2c.switch_to_h2(self, upgraded=req, rest=rest)
            elif self._upgrade_body:
                self._body_after_upgrade(rest)
            else:
                self._upgrade_requested(rest)     # WebSocket, tunnels
        elif isinstance(e, _Reject):
            self.reject(e.status, e.detail)
        elif isinstance(e, httptools.HttpParserError):
            self.reject(400, str(e))
        else:
            raise e

    def _too_big_head(self):
        if self._headers or self._url:
            self.reject(431, "request header fields too large")
        else:
            self.reject(414, "request line too long")

    # -- parser callbacks -------------------------------------------------------
    def on_message_begin(self):
        if self._stopped:
            raise _Stop     # bytes after the connection's last request: never parsed
        self._in_head = True
        self._head_bytes = -1
        self._head_started = self.last_active
        if self.state == IDLE:
            self.state = HEAD
        self._url = b""
        self._headers = []
        self._header_size = 0
        self._trailers = None
        self._stop_after = False

    def on_url(self, url):
        self._url += url
        if len(self._url) > self.limits.max_url_size:
            raise _Reject(414, "request line too long")

    def on_header(self, name, value):
        # (llhttp strips the whitespace before a value, not after it: RFC 9110 5.5)
        field = (name.decode("latin-1").lower(), value.decode("latin-1").strip(" \t"))
        self._header_size += len(name) + len(value) + 4
        if self._in_head:
            headers = self._headers
            if len(headers) >= self.limits.max_headers \
                    or self._header_size > self.limits.max_header_size:
                raise _Reject(431, "request header fields too large")
            headers.append(field)
            return
        # llhttp reports the trailer section of a chunked body here too: kept
        # apart (on_message_complete), never among the request's headers, and
        # within the same limits as the head
        trailers = self._trailers
        if trailers is None:
            trailers = self._trailers = []
        if len(self._headers) + len(trailers) >= self.limits.max_headers \
                or self._header_size > self.limits.max_header_size:
            raise _Reject(431, "request header fields too large")
        trailers.append(field)

    def on_headers_complete(self):
        self._in_head = False
        parser = self.parser
        url = self._url
        try:
            raw = url.decode("latin-1")
        except UnicodeDecodeError:   # pragma: no cover - latin-1 decodes anything
            raise _Reject(400, "bad request target")
        authority = None
        if raw[:1] == "/":
            # a fragment is the client's own business (RFC 9110 4.2.5): never passed on
            path, _, query = raw.partition("#")[0].partition("?")
        elif raw == "*":
            path, query = "*", ""
        elif parser.get_method() == b"CONNECT":
            # authority-form "host:port" (RFC 9112 3.2.3): for the forward
            # proxy's tunnels (handlers/tunnel.py); the router checks the rest
            path, query = "", ""
            authority = raw.rpartition(":")[0].strip("[]").encode("latin-1")
        else:
            # absolute-form (proxies): keep the path part only
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise _Reject(400, "bad request target")
            path = (parsed.path or b"/").decode("latin-1")
            query = (parsed.query or b"").decode("latin-1")
            authority = parsed.host
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":   # (validated here, H1Exchange trusts it)
            # llhttp takes "GET /" as HTTP/0.9: a request line without a version
            raise _Reject(505 if version[:1] == "2" else 400, "unsupported HTTP version")
        req = Request(parser.get_method().decode("ascii"), raw, path, query, version,
                      self._headers, self.scheme, self.client, self.server)
        req.started = time.monotonic()
        host = None
        length = None
        codings = None
        expect = False
        for k, v in self._headers:
            if k == "host":
                if host is not None:
                    raise _Reject(400, "duplicate Host header")
                host = v
            elif k == "content-length":
                length = int(v)   # llhttp validated it
            elif k == "transfer-encoding":
                codings = v if codings is None else codings + "," + v
            elif k == "expect":
                if v.lower() == "100-continue":
                    expect = True
                else:
                    raise _Reject(417, "unsupported expectation")
        if host is None:
            if version == "1.1":
                raise _Reject(400, "missing Host header")
            host = ""
        chunked = codings is not None
        if chunked:
            # (llhttp refuses a last coding other than chunked only after this
            # callback, when the request would already be dispatched)
            codings = [c for c in (c.strip().lower() for c in codings.split(",")) if c]
            if not codings or codings[-1] != "chunked" or "chunked" in codings[:-1]:
                # RFC 9112 6.3: the body's length cannot be known
                raise _Reject(400, "transfer coding not ending in chunked")
            if len(codings) > 1:
                # RFC 9112 6.1: gzip, deflate… under chunked are not implemented
                raise _Reject(501, "unsupported transfer coding")
        if authority:
            # RFC 9112 3.2.2: the authority of an absolute-form target wins
            req.host = authority.decode("latin-1").lower()
        else:
            req.host = host_without_port(host)
        req.content_length = length
        req.chunked = chunked
        if length is not None and length > self.limits.max_upload_size:
            raise _Reject(413, "request body too large")
        has_body = length or chunked
        if has_body:
            # (1.0 clients do not wait for 100)
            expect = req.expect_continue = expect and version == "1.1"
        keep = parser.should_keep_alive()
        if not keep:
            self._client_closes = True    # it sends no more requests (RFC 9112 9.6)
        keep = keep and not self.closing and not self.retiring
        if chunked and version == "1.0":
            keep = False    # RFC 9112 6.1: its framing is suspect; close after the answer
        # Upgrade + Connection: upgrade, or CONNECT: llhttp stops after this
        # head (HttpParserUpgrade in _feed), so its HTTP answer is the
        # connection's last
        upgrade = parser.should_upgrade()
        if upgrade:
            if self._h2c and h2c.wants_upgrade(req, self.current is None and not self._queue):
                self._h2c_request = req
                return      # the connection becomes HTTP/2 after this head (_feed)
            if has_body and req.method != "CONNECT":
                # No handler takes an upgrade that carries a body (WebSocket and
                # the proxy's upgrades are bodiless GETs, h2c was just refused):
                # an ordinary request. llhttp would skip its body, so
                # _body_after_upgrade reads it; then the connection closes.
                self._upgrade_body = True
                upgrade = False
            keep = False
        self._stop_after = not keep and not upgrade
        if has_body:
            req.body = RequestBody(self, self.loop, expect)
            ex_class = _ExpectExchange if expect else H1Exchange
            if chunked:
                req.trailers = []    # filled in place when the trailer section arrives
            self._body_time = 0.0
            self._body_swept = req.started
        else:
            req.body = EMPTY_BODY
            ex_class = H1Exchange
        self._parsing = req
        self.state = BUSY
        ex = ex_class(self, req)
        ex.keep_alive = keep
        ex.version = version
        ex.chunked = False
        if self.current is None:
            self.current = ex
            self.worker.dispatch(ex)
        else:
            self._queue.append(ex)
            if len(self._queue) >= MAX_PIPELINE:
                self._pause_reading()

    def on_body(self, body):
        req = self._parsing
        b = req.body
        if b.received + len(body) > self.limits.max_upload_size:
            raise _Reject(413, "request body too large")
        b.feed(body)

    def on_message_complete(self):
        if self._upgrade_body:
            return      # an Upgrade head: its body is still to come (_body_after_upgrade)
        req = self._parsing
        self._parsing = None
        if req is not None and req.body is not EMPTY_BODY:
            if self._trailers:
                # before finish(): an app that read to the end finds them all
                req.trailers.extend(trailer_fields(self._trailers))
                self._trailers = None
            req.body.finish()
        if self.state == BUSY and self.current is None and not self._queue:
            self.state = IDLE
        if self._stop_after or self.state >= LINGER:
            # (LINGER: its answer, given at once, ended the connection: a
            # request pipelined behind it must not run, the client sends it again)
            self._stop()

    def _stop(self):
        """The request just parsed is the connection's last (it asked to
        close, HTTP/1.0 with Transfer-Encoding, an upgrade not taken).
        Whatever the client sent after it is never parsed; once the answer is
        out the connection closes (lingering, dropping that input, if any)."""
        self._stopped = True
        if self.current is None and not self._queue and self.state < LINGER:
            self._linger()
        # llhttp is stopped (on_message_begin raises _Stop) and reading paused
        # (data_received) only if the client does send more: the common last
        # request, alone in its read, costs no exception and no epoll change.

    # -- exchange life cycle -----------------------------------------------------
    def exchange_done(self, ex):
        """The response for `ex` is complete: log it and start the next one."""
        if ex is not self.current:
            return
        self.current = None
        self.worker.exchange_finished(ex)
        req = ex.request
        body = req.body
        if not ex.keep_alive or self.closing:
            if self._client_closes and not self._queue and body.complete \
                    and not input_waiting(self.transport):
                # The client asked to close, sent all of its request and
                # nothing after it: nothing unread can turn close() into a
                # reset, so no need to wait for its FIN.
                self.close_soon()
                return
            # Half-close and drop what still comes: a client that expected to
            # keep the connection may have sent its next request already, and
            # close() with unread input sends a reset that can destroy this
            # response in flight. (A client that shut down its side makes
            # _linger close at once.)
            self._linger()
            return
        if body is not EMPTY_BODY and not body.complete:
            # The app answered without reading everything. Drop the rest
            # unless the client was told to wait for 100 Continue (it will not
            # send it), in which case the connection cannot be reused.
            if req.expect_continue and body.received == 0:
                self._linger()
                return
            body.discard()
        if self._queue:
            nxt = self._queue.popleft()
            self.current = nxt
            if self._eof and not self._queue:
                self.closing = True    # the client's last request: close after it
            if self._reading_paused and len(self._queue) < MAX_PIPELINE // 2:
                self._resume_reading()
            self.worker.dispatch(nxt)
        elif self._parsing is None:
            if not self._in_head:
                self.state = IDLE
                self.last_active = time.monotonic()
            elif self.state == DRAIN:   # (reject() sets _in_head to get here)
                self._send_error(*self._error_after)
            else:
                # A pipelined head is still arriving: time it like any head
                # from now on (BUSY has no head timeout: a slowloris hole).
                self.state = HEAD
                self._head_started = time.monotonic()

    def send_continue(self):
        cur = self.current
        if cur is not None and not cur.head_sent and not self.closing:
            # the client starts sending only now: time the stall from here
            self.last_active = time.monotonic()
            self.send(CONTINUE)

    # -- input flow ------------------------------------------------------------------
    # (output: send() / flush() from base.Batched, batched per loop iteration)
    def body_paused(self):
        self._body_paused = True
        self._pause_reading()

    def body_resume(self):
        self._body_paused = False
        if len(self._queue) < MAX_PIPELINE:
            self._resume_reading()

    def _pause_reading(self):
        if not self._reading_paused and not self.closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self):
        if self._reading_paused and not self._body_paused and not self.closing \
                and self._upgrade_tail is None and not self._stopped:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- protocol switch (Upgrade) ---------------------------------------------------
    def _upgrade_requested(self, tail):
        """llhttp stopped after a head asking to switch protocols (already
        dispatched, not keep-alive). Keep the bytes after it for the new
        protocol and read nothing more: the handler either switches
        (switch_protocol) or answers in HTTP, after which the connection
        closes. Requests pipelined before it are answered as usual."""
        self._upgrade_tail = tail
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _body_after_upgrade(self, rest):
        """llhttp ended the message at an Upgrade head that has a body and is
        not upgraded (see on_headers_complete): read that body with a fresh
        parser, fed a stand-in head with the same framing first. The request
        is the connection's last: the parser stops after the body."""
        self._upgrade_body = False
        req = self._parsing
        if req is None or self.state >= LINGER:
            return      # already answered and closing, or refused
        self.parser = httptools.HttpRequestParser(_BodyReader(self))
        framing = (b"Transfer-Encoding: chunked\r\n" if req.chunked
                   else b"Content-Length: %d\r\n" % req.content_length)
        self._feed(b"PUT / HTTP/1.1\r\n" + framing + b"\r\n")
        if rest and self.state < LINGER and not self._stopped:
            self._feed(rest)

    def switch_protocol(self, ex, headers, protocol, status=101):
        """Send `101 Switching Protocols` + `headers` for `ex` and hand the
        transport to `protocol`, an asyncio.Protocol with
        `takeover(transport, leftover_bytes)` (it resumes reading).
        A CONNECT tunnel passes its 2xx `status` instead of 101."""
        tail = self._upgrade_tail
        if tail is None or ex is not self.current or ex.closed or ex.head_sent \
                or self.transport.is_closing():
            return False
        if any(bad_value(n) or bad_value(v) for n, v in headers):
            return False
        self._upgrade_tail = None
        lines = "".join("%s: %s\r\n" % h for h in headers).encode("latin-1")
        self.send(status_line(status) + dates.header() + SERVER_HEADER + lines + b"\r\n")
        ex.status = status_code(status)
        ex.head_sent = ex.done = True
        self.current = None
        self.worker.exchange_finished(ex)
        self.hand_off(protocol)
        protocol.takeover(self.transport, tail)
        return True

    def _sniff_preface(self, data):
        """The connection's first bytes: on the HTTP/2 preface, switch to
        HTTP/2 (None: taken, or too few yet to tell); else what to parse."""
        data = self._h2_sniff + data
        seen = h2c.preface(data)
        if seen is None:
            self._h2_sniff = data        # a prefix of the preface: wait for more
            return None
        self._h2_sniff = None
        if seen:
            h2c.switch_to_h2(self, preface_bytes=data)
            return None
        return data

    def hand_off(self, protocol):
        """Give the transport to `protocol` (WebSocket, a tunnel, HTTP/2):
        what is queued goes out first, in order, and this object is done."""
        self.flush()
        self.closing = True
        self.state = LINGER        # (the sweeper no longer sees it)
        self.worker.connections.discard(self)
        self.transport.set_protocol(protocol)

    # -- errors and closing --------------------------------------------------------
    def reject(self, status, detail):
        """Answer a request we could not parse or will not take, then close.

        The error belongs to the request being parsed (or to a new one):
        requests received before it are still answered first, in order, or a
        pipelining client would take our error for the answer to one of them.
        """
        if self.state >= LINGER:
            return      # already failed: a broken parser repeats its error
        self.worker.count_rejected(status, detail, self.client)
        req = self._parsing
        self._parsing = None
        if req is not None and req.body is not EMPTY_BODY and not req.body.complete:
            req.body.fail(ClientDisconnected(detail))   # wakes an app thread reading it
        cur = self.current
        if req is not None:
            if cur is not None and cur.request is req:
                if cur.head_sent:
                    self.close_now()    # its answer is under way: no status fits now
                    return
                cur.closed = True       # its handler's output is dropped
                self.current = cur = None
            elif self._queue and self._queue[-1].request is req:
                self._queue.pop().closed = True
            else:
                # answered already (the rest of its body was being dropped):
                # a status now would be taken for the answer to a later request
                self._linger()
                return
        if cur is None:
            self._send_error(status, detail)
        else:
            self._error_after = (status, detail)
            self.state = DRAIN
            self._in_head = True    # keeps exchange_done off its fast path
            self._pause_reading()

    def _send_error(self, status, detail):
        self.send(_closing_answer(status, detail)[0])
        self._linger()

    def _linger(self):
        """Half-close after our response and drop what the client still sends,
        so a client in mid-upload reads our answer instead of a reset."""
        self.closing = True
        self.state = LINGER
        self.last_active = time.monotonic()
        self._linger_bytes = 0
        if self._eof or self.transport.is_closing() or not self.transport.can_write_eof():
            self.close_soon()     # nothing more will come (or it is gone): no need to linger
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        self.flush()
        self.transport.write_eof()

    def in_flight(self):
        return (self.current,) if self.current is not None else ()

    def close_idle(self):
        """Graceful stop (the worker calls this every few ms until the
        connection is gone). A request may be on its way on any idle
        connection, a fresh one or one whose client just read an answer, and
        closing now would lose it: the connection keeps reading, its next
        request is answered with Connection: close (see H1Exchange._head),
        and only a connection quiet for IDLE_GRACE is closed, by half-close
        and linger, never with input unread. True once it is closing."""
        self.retiring = True
        if self.state == IDLE and self.current is None and not self._queue \
                and time.monotonic() - self.last_active >= IDLE_GRACE \
                and not input_waiting(self.transport):
            self._linger()
        return self.state >= LINGER

    def sweep(self, now):
        """Called about once a second by the worker to enforce timeouts."""
        state = self.state
        limits = self.limits
        if state == IDLE:
            if now - self.last_active > limits.keep_alive:
                self.close_soon()
        elif state == HEAD:
            # The whole head must arrive in time, however it trickles in
            # (a byte now and then would otherwise hold the connection forever).
            if now - self._head_started > limits.request_timeout:
                self.reject(408, "request timeout")
        elif state == LINGER:
            if now - self.last_active > LINGER_SECONDS:
                self.close_soon()
        else:   # BUSY, DRAIN
            req = self._parsing
            body = req.body if req is not None else EMPTY_BODY
            if body is not EMPTY_BODY and not body.complete and self._body_too_slow(body, now):
                self.reject(408, "request timeout")
            elif self.write_paused and now - self._paused_since > limits.response_timeout:
                self.close_now()   # the client stopped reading

    def _body_too_slow(self, body, now):
        """The body being received stalled for request_timeout, or came slower
        than min_body_rate once a grace of request_timeout is used up (apache
        mod_reqtimeout's body=T,MinRate=R: the time allowed grows by one
        second per R bytes). Only time the client is expected to be sending
        counts: not while we pause reading (the app is behind, the pipeline
        is full) nor while it waits for our 100 Continue. Sampled per sweep."""
        since = self._body_swept
        self._body_swept = now
        if self._reading_paused or body.continue_pending:
            return False
        self._body_time += now - since
        limits = self.limits
        if now - self.last_active > limits.request_timeout:
            return True     # a stalled upload
        rate = limits.min_body_rate
        return rate > 0 and self._body_time > limits.request_timeout + body.received / rate
