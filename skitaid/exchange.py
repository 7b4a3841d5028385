"""What a handler sees: one request and the way to answer it.

Protocols (h1 today, h2 later) build a `Request` and implement `Exchange`;
handlers (static, wsgi, …) only use these two, so a handler written once works
over every protocol. Every `Exchange` method is called on the event-loop
thread; code running in the thread pool hops over with
`loop.call_soon_threadsafe`.
"""
from __future__ import annotations

from .http.headers import header_tokens, host_without_port  # noqa: F401 (re-exported)


class Request:
    """A parsed request head. Header names are lower-case latin-1 str."""

    __slots__ = (
        "method", "target", "path", "query", "version", "headers",
        "host", "scheme", "client", "server", "body", "expect_continue",
        "content_length", "chunked", "trailers", "started", "gtxid", "ltxid", "calls",
        "user",
    )

    def __init__(self, method, target, path, query, version, headers, scheme,
                 client, server):
        self.method = method          # "GET"
        self.target = target          # raw request target, "/a%20b?x=1"
        self.path = path              # raw (still percent-encoded) path, "/a%20b"
        self.query = query            # raw query string without "?", "x=1"
        self.version = version        # "1.1", "1.0", "2"
        self.headers = headers        # list of (name, value), names lower-case
        self.scheme = scheme          # "http" | "https"
        self.client = client          # (ip, port)
        self.server = server          # (ip, port)
        self.host = ""                # Host header without port, lower-case
        self.body = None              # RequestBody, set by the protocol
        self.expect_continue = False
        self.content_length = None    # int or None
        # the body's length is not known in advance: HTTP/1.1 chunked, or an
        # HTTP/2 stream without content-length whose HEADERS did not end it
        self.chunked = False
        self.trailers = ()            # request trailers (list once received), never headers
        self.started = 0.0            # time.monotonic() when the head was complete
        self.gtxid = None
        self.ltxid = None
        self.calls = 0                # corequests made for this request (transaction-ID depth)
        self.user = None              # who the gateway let in (token sub, auth handler), for the log

    def header(self, name, default=None):
        """First value of a header (name lower-case)."""
        for k, v in self.headers:
            if k == name:
                return v
        return default


class Exchange:
    """One response being produced for `request` (loop thread only).

    Either `respond()` once, or `start()` then any number of `write()` /
    `sendfile()` then `finish()`. `closed` turns true when the client went
    away; writes after that are dropped. Producers that generate lots of data
    wait on `drain()` between chunks so memory stays bounded.
    """

    # no per-instance dict: the protocols' exchanges declare their own __slots__
    __slots__ = ()

    request: Request
    closed: bool = False         # the client went away: output is dropped
    is_head: bool = False        # no body goes out (HEAD, 1xx, 204, 304)
    head_sent: bool = False      # the status line / HEADERS are out: no status fits now
    # what the protocol can do at all (HTTP/2 both); can_push() says whether
    # a push would go out now (the client may have disabled it)
    supports_push: bool = False
    supports_trailers: bool = False

    def respond(self, status, headers, body=b""):
        """A complete response; adds Content-Length, Date, Server, Connection."""
        raise NotImplementedError

    def start(self, status, headers, content_length=None):
        """Send the head. content_length None → chunked (or close-delimited)."""
        raise NotImplementedError

    def write(self, data):
        raise NotImplementedError

    def sendfile(self, file, offset, count, done):
        """Send `count` bytes of the open regular `file` from `offset` (zero-copy
        where the transport allows), then call `done(ok: bool)`."""
        raise NotImplementedError

    def finish(self):
        raise NotImplementedError

    def abort(self):
        """The response cannot be completed: drop it the protocol's way (an
        HTTP/1.1 connection closes, an HTTP/2 stream is reset)."""
        raise NotImplementedError

    def writing_paused(self):
        """True while the client is not keeping up (transport above high water)."""
        raise NotImplementedError

    async def drain(self):
        """Return when the transport wants more data (or the client is gone)."""
        raise NotImplementedError

    def can_switch(self):
        """True when this kind of exchange can hand its connection to another
        protocol (HTTP/1.1 Upgrade, CONNECT); switch_protocol() may still
        refuse one request. False for HTTP/2 (RFC 9113 8.6)."""
        return False

    def switch_protocol(self, headers, protocol, status=101):
        """Answer `status` (101, or a CONNECT's 2xx) with `headers` and give the
        connection to `protocol` (an asyncio.Protocol with
        `takeover(transport, leftover_bytes)`). False where it cannot: nothing
        was sent and the handler still answers in HTTP."""
        return False

    def push(self, path):
        """Server push (HTTP/2 only); ignored elsewhere."""
        return False

    def can_push(self):
        """True when push(path) would send a PUSH_PROMISE."""
        return False

    def set_trailers(self, headers):
        """Headers sent after the body where `supports_trailers`; ignored elsewhere."""
