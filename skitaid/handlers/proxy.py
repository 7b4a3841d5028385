"""Reverse proxy: a mount `/path = @alias[/subpath]` passes requests to the cluster.

Runs on the loop, no app thread. Bodies stream both ways with backpressure:
the client's body is read only as fast as the backend takes it, and the
backend's response is read only as fast as the client takes it, so a
gigabyte passes through in bounded memory. Members are picked like `was`
calls (fewest in flight per weight); a connection that cannot be made moves
on to the next member, and a request that failed after it was sent is
retried only when it is idempotent and has no body to replay. 502 when no
member answers, 504 when the answer takes longer than `backend_timeout`.

WebSocket upgrades go the same way with Upgrade/Connection passed on; a
backend's 101 is relayed and the two connections become a byte tunnel
(protocols/tunnel.py); any other answer is relayed as a normal response.
The forward proxy also opens CONNECT tunnels (ForwardProxyHandler).

The framing is the proxy's own, both ways. The client's Content-Length and
Transfer-Encoding are never copied: the backend gets a canonical
Content-Length for a body of known length, chunked for one of unknown length
(an HTTP/2 stream without content-length), and the client gets the length
the backend's parser framed the response by. `Connection` removes only the
client's own end-to-end fields, never what the proxy writes (framing, Host,
X-Forwarded-*), and names with an underscore are not forwarded (they could
stand for a dash-named field behind a CGI-style mapping).
"""
import asyncio
import time

from ..body import EMPTY_BODY
from ..http.headers import BODY_METHODS, HOP_BY_HOP, bad_value, header_tokens, is_token
from ..logs import error_log
from ..corequest.client import ConnectFailed
from ..context import adopt_txn_ids
from .errors import error_response
from .proxy_cache import serve_fresh, through_cache

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
CHUNK_END = b"0\r\n\r\n"
CHUNKED = "chunked"
# written by the proxy (or the request writer) itself: a client's are never copied
OWN = frozenset(("host", "content-length", "transfer-encoding", "expect",
                 "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"))

# a backend's 101 fields that are not relayed (ours, or framing that no longer applies)
_NOT_ON_101 = frozenset(("connection", "date", "server", "content-length", "transfer-encoding",
                         "keep-alive"))


class BodyMismatch(Exception):
    """The body that arrived does not match the length the backend was promised."""


def request_framing(request):
    """How the request body goes to the backend: an int (Content-Length, 0 for
    "no body" where the method expects one), CHUNKED (a body of unknown
    length), or None (no body and nothing to say about it)."""
    body = request.body
    if body is None or body is EMPTY_BODY:
        if request.content_length is not None or request.method in BODY_METHODS:
            return 0
        return None
    if request.chunked or request.content_length is None:
        return CHUNKED
    return request.content_length


def wants_websocket(exchange):
    """An HTTP/1.1 `Upgrade: websocket` this connection can hand over."""
    request = exchange.request
    upgrade = request.header("upgrade")
    return (upgrade is not None and "websocket" in header_tokens(upgrade)
            and "upgrade" in header_tokens(request.header("connection") or "")
            and request.method == "GET" and not request_framing(request)
            and exchange.can_switch())


class _Retry(Exception):
    """The member failed before answering and the request may go to another."""


class _Unwritable(Exception):
    """The request writer refused the method, target or a field (a 400)."""


class _Stream:
    """Sink for the backend's response: straight on to the client."""

    def __init__(self, handler, exchange):
        self.exchange = exchange
        self.loop = handler.loop
        self.conn = None
        self.head = handler.loop.create_future()    # set once the head went out
        self.done = handler.loop.create_future()    # keep-alive flag, or an exception
        self.draining = False
        self.upgrade = False     # an Upgrade request: a 101 becomes a tunnel
        self.switch = None       # the backend's 101 headers
        self.extra = ()          # fields added to the relayed head (the cache's status)

    def on_head(self, status, reason, headers, conn):
        self.conn = conn
        if status == 101:
            if not self.upgrade:
                # unasked for: nothing can be relayed after it
                conn._fail(ConnectionResetError("unexpected 101 from the backend"))
                return
            self.switch = headers
            conn.pause_reading()        # the tunnel takes the connection over
            if not self.head.done():
                self.head.set_result(None)
            return
        ex = self.exchange
        drop = HOP_BY_HOP
        for name, value in headers:
            if name.lower() == "connection":
                drop = drop | header_tokens(value)
        out = []
        length = None
        coded = False
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                # what llhttp framed the response by (it refuses duplicates);
                # the backend's Connection cannot take it away
                if value.isascii() and value.isdigit():
                    length = int(value)
                continue
            if lname == "transfer-encoding":
                coded = True            # a coding overrides a length (RFC 9112 6.3)
            if lname in drop:
                continue
            out.append((name, value))
        if coded:
            length = None
        if length is not None:
            # canonical, for the responses whose head states it without a body (HEAD, 304)
            out.append(("Content-Length", str(length)))
        out.extend(self.extra)
        if not self.head.done():
            self.head.set_result(None)
        ex.t_handled = time.monotonic()
        ex.start("%d %s" % (status, reason), out, length)

    def on_body(self, data):
        ex = self.exchange
        if ex.closed:           # the client went away: stop pulling from the backend
            self.conn._fail(ConnectionResetError("client disconnected"))
            return
        ex.write(data)
        if ex.writing_paused() and not self.draining and not ex.closed:
            # the client is slower than the backend: stop reading from it
            self.draining = True
            self.conn.pause_reading()
            self.loop.create_task(self._drain())

    async def _drain(self):
        if self.exchange.writing_paused():
            await self.exchange.drain()
        self.draining = False
        if self.conn is not None:
            self.conn.resume_reading()

    def on_end(self, keep_alive):
        if self.switch is not None:
            return          # the end of the 101 head: the tunnel follows
        if not self.head.done():
            self.head.set_result(None)
        if not self.done.done():
            self.done.set_result(keep_alive)

    def time_out(self, conn):
        """`backend_timeout` passed without a head: fail the request (504)."""
        if not self.head.done():
            conn._fail(asyncio.TimeoutError())

    def on_error(self, exc):
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()       # retrieved: the caller looks at done instead
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()


class ProxyHandler:
    # what the cache (proxy_cache.py) builds its sinks on
    Stream = _Stream
    framing = staticmethod(request_framing)

    idle_limit = 0.0        # pooled backend connections: the pool's (backend_keep_alive)
    def __init__(self, target, prefix, worker):
        name, slash, sub = target[1:].partition("/")
        self.alias = name
        self.prefix = "" if prefix == "/" else prefix
        self.sub = ("/" + sub.strip("/")) if slash and sub.strip("/") else ""
        self.worker = worker
        self.loop = worker.loop
        self.timeout = worker.config.backend_timeout

    @property
    def cluster(self):
        engine = self.worker.corequests
        cluster = engine.clusters.get(self.alias)
        if cluster is None:
            raise LookupError("the proxy target @%s is not an http(s) alias of this server"
                              % self.alias)
        return cluster

    def handle(self, exchange, resolved=None):
        cache = self.cache
        if cache is not None and serve_fresh(self, exchange, cache):
            return          # a fresh entry: answered here, no task
        self.loop.create_task(self._proxy(exchange))

    def _upstream_target(self, request):
        path = request.path[len(self.prefix):] if self.prefix else request.path
        path = self.sub + (path if path.startswith("/") else "/" + path)
        if self.sub and path.endswith("/") and not request.path.endswith("/"):
            path = path[:-1] or "/"
        return path + ("?" + request.query if request.query else "")

    def _headers(self, request, upgrade=False):
        """The client's fields as the backend gets them, plus X-Forwarded-*.
        Host and the framing are not in it: the request writer makes them, and
        refuses (a 400) a field it cannot write as it is."""
        named = set()
        for name, value in request.headers:
            if name == "connection":
                named |= header_tokens(value)
        drop = HOP_BY_HOP | OWN
        out = []
        if upgrade:
            # a WebSocket handshake: these two are for the backend this time
            out.append(("Connection", "Upgrade"))
            out.append(("Upgrade", "websocket"))
        forwarded_for = None
        cookie_at = None
        for name, value in request.headers:
            if name in named or "_" in name:
                continue
            if name in drop:
                if name == "x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + ", " + value
                continue
            if name == "cookie":
                # one field for HTTP/1.1, as HTTP/2 clients send crumbs (RFC 9113 8.2.3)
                if cookie_at is not None:
                    out[cookie_at] = ("cookie", out[cookie_at][1] + "; " + value)
                    continue
                cookie_at = len(out)
            out.append((name, value))
        client = request.client[0] if request.client else ""
        if client:
            forwarded_for = client if forwarded_for is None else forwarded_for + ", " + client
        if forwarded_for:
            out.append(("X-Forwarded-For", forwarded_for))
        out.append(("X-Forwarded-Proto", request.scheme))
        raw_host = request.header("host")
        if raw_host:
            out.append(("X-Forwarded-Host", raw_host))
        return out

    async def _proxy(self, exchange):
        try:
            cluster = self.cluster
        except LookupError as e:
            error_log.error("%s", e)
            exchange.respond(*error_response(502))
            return
        await self.forward(exchange, cluster, self._upstream_target(exchange.request),
                           wants_websocket(exchange))

    @property
    def cache(self):
        """The server's HTTP cache (cachefs), or None."""
        engine = self.worker.corequests
        return engine.cachefs if engine is not None else None

    async def forward(self, exchange, cluster, target, upgrade=False, sink=None, headers=None):
        """Send the request to a member of `cluster` and stream the answer back.
        Through the cache when the server has one; `sink` (a _Stream class) and
        `headers` are the cache's own ways of sending a request on."""
        if sink is None and not upgrade and self.cache is not None:
            await through_cache(self, exchange, cluster, target, self.cache)
            return
        request = exchange.request
        if request.gtxid is None:
            gtxid = request.header("x-gtxn-id")
            if gtxid:           # passed on as they are; kept for the request log
                adopt_txn_ids(request, gtxid, request.header("x-ltxn-id"))
        framing = request_framing(request)
        if headers is None:
            headers = self._headers(request, upgrade)
        has_body = bool(framing)
        retry_ok = request.method in IDEMPOTENT and not has_body
        tried = 0
        status = 502
        for member in cluster.order():
            if exchange.closed:
                return
            tried += 1
            member.inflight += 1
            try:
                await self._one(exchange, cluster, member, target, headers, framing, retry_ok,
                                upgrade, sink)
                return
            except ConnectFailed as e:
                cluster.failed(member, str(e))
                error_log.warning("proxy @%s: member %s: %s", cluster.name, member, e)
                continue
            except _Unwritable:
                status = 400        # the same for every member: no other is tried
                break
            except _Retry as e:
                error_log.warning("proxy @%s: member %s failed before answering: %s",
                                  cluster.name, member, e.args[0])
                continue
            except asyncio.TimeoutError:
                cluster.timed_out(member)
                status = 504
                break
            except Exception as e:
                error_log.warning("proxy @%s: member %s: %s", cluster.name, member, e)
                break
            finally:
                member.inflight -= 1
        if not exchange.head_sent and not exchange.closed:
            exchange.respond(*error_response(status))
        elif not exchange.done:
            exchange.abort()

    async def _one(self, exchange, cluster, member, target, headers, framing, retry_ok,
                   upgrade=False, sink=None):
        request = exchange.request
        pool = self.worker.corequests.pool
        conn, reused = await pool.acquire(member.key)
        stream = (sink or _Stream)(self, exchange)
        stream.upgrade = upgrade
        host = member.host if ":" not in member.host else "[%s]" % member.host
        default_port = 443 if member.key[0] == "https" else 80
        host_header = host if member.port == default_port else "%s:%d" % (host, member.port)
        sent_body = False
        timer = None
        try:
            try:
                conn.start(stream, request.method, target, headers, host_header, None,
                           length=None if framing is CHUNKED else framing,
                           chunked=framing is CHUNKED)
            except ValueError as e:     # nothing was written: the head was refused whole
                raise _Unwritable(str(e))
            cluster.succeeded(member)
            if framing:
                sent_body = True
                await self._send_body(request, conn, framing)
            # a plain timer, not wait_for: no extra task and future per request
            timer = self.loop.call_later(self.timeout, stream.time_out, conn)
            await stream.head
        except asyncio.TimeoutError:
            conn.close()
            raise
        except ConnectionError as e:
            conn.close()
            if stream.head.done() and not stream.head.exception():
                raise
            if (retry_ok or (reused and not sent_body)) and not conn.got_response_bytes:
                raise _Retry(str(e) or type(e).__name__)
            raise
        except BaseException:
            conn.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if stream.switch is not None:
            self._tunnel(exchange, conn, stream.switch, member)
            return
        # the head is out: the rest streams until the end (or a failure → abort)
        try:
            keep = await stream.done
        except Exception as e:
            error_log.warning("proxy @%s: member %s broke off the response: %s",
                              cluster.name, member, e)
            conn.close()
            exchange.abort()
            return
        exchange.finish()
        pool.release(conn, keep, self.idle_limit)

    def _tunnel(self, exchange, conn, headers, member):
        """The backend switched protocols: relay its 101, then join the two
        connections. Its Date/Server give way to ours; the rest (Upgrade,
        Connection, Sec-WebSocket-*) is for the client."""
        from ..protocols.tunnel import Tunnel
        detached = conn.detach()
        if detached is None or exchange.closed:
            conn.close()
            if detached is not None:
                detached[0].abort()
            if not exchange.closed:
                exchange.abort()
            return
        transport, tail = detached
        tunnel = Tunnel(self.worker, self.worker.config.tunnel_timeout)
        tunnel.attach_backend(transport, tail)
        # in flight while it lasts: the member choice sees long-lived WebSockets
        member.inflight += 1
        tunnel.on_close = member.release_one
        switched = False
        keep = _switch_headers(headers)
        if keep is not None:
            try:
                switched = exchange.switch_protocol(keep, tunnel.client)
            except ValueError:      # a value that is not latin-1
                switched = False
        if not switched:
            tunnel.close_now()
            if not exchange.closed and not exchange.head_sent:
                exchange.respond(*error_response(502))
            elif not exchange.done:
                exchange.abort()

    async def _send_body(self, request, conn, framing):
        """Stream the client's body on: chunked, or exactly `framing` bytes.
        BodyMismatch if more or fewer arrive (the connection is then closed,
        never reused out of step)."""
        chunked = framing is CHUNKED
        left = None if chunked else framing
        body = request.body
        wake = asyncio.Event()
        body.notify = wake.set
        try:
            while True:
                data = body.take_available()
                if data:
                    if left is not None:
                        if len(data) > left:
                            raise BodyMismatch("more body than its Content-Length")
                        left -= len(data)
                    conn.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
                    await conn.drain()
                    if conn.closed:
                        raise ConnectionResetError("backend closed the connection")
                    continue
                if body.complete:
                    break
                wake.clear()
                await wake.wait()
        finally:
            body.notify = None
        if left:
            raise BodyMismatch("body shorter than its Content-Length")
        if chunked:
            conn.write(CHUNK_END)


def _switch_headers(headers):
    """The backend's 101 fields for the client: its own hop-by-hop fields (those
    its Connection names) and its framing, Date, Server and Keep-Alive go,
    Connection is ours; Upgrade and Sec-WebSocket-* pass. None when one
    cannot be sent as it is."""
    named = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= header_tokens(value)
    named.discard("upgrade")
    keep = [("Connection", "Upgrade")]
    for name, value in headers:
        lname = name.lower()
        if lname in _NOT_ON_101 or lname in named:
            continue
        if not is_token(name) or bad_value(value):
            return None
        keep.append((name, value))
    return keep


def parse_authority(target):
    """CONNECT's "host:port" / "[v6]:port" → (host, port), or None."""
    host, colon, port = target.rpartition(":")
    if not colon or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None
    elif ":" in host:
        return None
    if not host or any(c in host for c in "/@?#[] \t\\"):
        return None
    return host, int(port)


class ForwardProxyHandler(ProxyHandler):
    """`enable_proxy`: absolute-URI requests (`GET http://host/path`) from the
    allowed client networks are fetched from that origin, and `CONNECT
    host:port` opens a tunnel to one of `proxy_connect_ports`; others get 403."""

    def __init__(self, worker):
        import ipaddress
        self.worker = worker
        self.loop = worker.loop
        self.timeout = worker.config.backend_timeout
        self.allowed = tuple(ipaddress.ip_network(n) for n in worker.config.proxy_allow)
        self.connect_ports = frozenset(worker.config.proxy_connect_ports)
        # set_proxy_keep_alive(channel=): its origin connections' idle time
        self.idle_limit = worker.config.proxy_keep_alive

    def allows(self, client):
        import ipaddress
        if not client:
            return False
        try:
            ip = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(ip in net for net in self.allowed if net.version == ip.version)

    def handle(self, exchange, resolved=None):
        from urllib.parse import urlsplit
        from ..corequest.cluster import Cluster
        request = exchange.request
        if request.method == "CONNECT":
            # a task: by then the connection knows the exchange is its last
            self.loop.create_task(self._connect(exchange))
            return
        if not self.allows(request.client):
            exchange.respond(*error_response(403))
            return
        try:
            url = urlsplit(request.target)
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            url = port = None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            exchange.respond(*error_response(400))
            return
        target = (url.path or "/") + ("?" + url.query if url.query else "")
        origin = Cluster("proxy", url.scheme, [(url.hostname, port, 1)])
        self.loop.create_task(self.forward(exchange, origin, target, wants_websocket(exchange)))

    async def _connect(self, exchange):
        """CONNECT host:port: open a TCP connection there, answer 200 and
        join the two (protocols/tunnel.py). 502 if it cannot be made, 504
        if it is not made within `backend_timeout`."""
        from ..protocols.tunnel import Tunnel
        request = exchange.request
        if not self.allows(request.client):
            exchange.respond(*error_response(403))
            return
        target = parse_authority(request.target)
        if target is None:
            exchange.respond(*error_response(400, "CONNECT needs host:port"))
            return
        host, port = target
        if port not in self.connect_ports:
            exchange.respond(*error_response(403, "CONNECT to port %d is not allowed" % port))
            return
        if not exchange.can_switch():
            exchange.respond(*error_response(405, "CONNECT tunnels need HTTP/1.1"))
            return
        tunnel = Tunnel(self.worker, self.worker.config.tunnel_timeout)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: tunnel.backend, host, port), self.timeout)
        except asyncio.TimeoutError:
            error_log.warning("CONNECT %s: timed out", request.target)
            exchange.respond(*error_response(504))
            return
        except OSError as e:
            error_log.warning("CONNECT %s: %s", request.target, e.strerror or e)
            exchange.respond(*error_response(502))
            return
        if exchange.closed or not exchange.switch_protocol(
                [], tunnel.client, "200 Connection Established"):
            tunnel.close_now()
            if not exchange.closed and not exchange.head_sent:
                exchange.respond(*error_response(502))
