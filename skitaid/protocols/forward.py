"""The HTTP → HTTPS forward listener: every request gets a 301 to the same
path and query on https://, nothing else is served on that port."""
import asyncio
import re
import time

import httptools

from ..exchange import host_without_port
from ..http_status import status_line
from . import dates
from .base import Tracked, addresses, input_waiting
from .host import ConnectionHost
from .h1 import IDLE_GRACE, LINGER_BYTES, LINGER_SECONDS

_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
LIMIT = 64 * 1024     # bytes of head we read before giving up on a client


class ForwardConnection(Tracked, asyncio.Protocol):
    def __init__(self, worker: ConnectionHost, https_port=443, domain=""):
        self.worker = worker
        self.limits = worker.limits
        self.https_port = https_port
        self.domain = domain
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.closing = False
        self.retiring = False     # the worker stops: the next answer is the last
        self.busy = False
        self.last_active = 0.0
        self._url = b""
        self._host = None
        self._bytes = 0

    def connection_made(self, transport):
        self.transport = transport
        self.last_active = time.monotonic()
        self.worker.connections.add(self)

    def connection_lost(self, exc):
        self.worker.connections.discard(self)
        self.closing = True

    def data_received(self, data):
        self.last_active = time.monotonic()
        self._bytes += len(data)
        if self.closing:
            if self._bytes > LINGER_BYTES:
                self.transport.close()
            return      # lingering: dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass      # the 301 went out with the head; the connection closes
        except httptools.HttpParserError:
            self._answer(400, None)
        if self._bytes > LIMIT and not self.closing:
            self._answer(431, None)

    # -- parser callbacks ---------------------------------------------------------
    def on_message_begin(self):
        self.busy = True
        self._url = b""
        self._host = None

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        if name.lower() == b"host" and self._host is None:
            self._host = value.decode("latin-1")

    def on_headers_complete(self):
        self._bytes = 0
        self._answer(301, self._location())

    def on_message_complete(self):
        self.busy = False

    def _location(self):
        url = self._url.decode("latin-1")
        if url[:1] != "/":
            try:
                parsed = httptools.parse_url(self._url)
                url = (parsed.path or b"/").decode("latin-1")
                if parsed.query:
                    url += "?" + parsed.query.decode("latin-1")
            except httptools.HttpParserInvalidURLError:
                return None
        host = self.domain
        if not host:
            host = host_without_port((self._host or "").strip())
            if not host:
                host = addresses(self.transport)[1][0]
                if ":" in host:
                    host = "[%s]" % host
        if not _HOST.fullmatch(host) or any(c in url for c in "\r\n "):
            return None
        port = "" if self.https_port == 443 else ":%d" % self.https_port
        return "https://%s%s%s" % (host, port, url)

    def _answer(self, status, location):
        if self.closing:
            return
        if location is None and status == 301:
            status = 400
        if location is not None:
            body = ('<a href="%s">moved here</a>\n' % location).encode("latin-1")
            extra = "Location: %s\r\nContent-Type: text/html\r\n" % location
        else:
            body = b""
            extra = ""
        keep = status == 301 and self.parser.should_keep_alive() and not self.retiring
        self.transport.write(status_line(status) + dates.header() + b"Server: skitaid\r\n"
                             + extra.encode("latin-1")
                             + b"Content-Length: %d\r\n" % len(body)
                             + (b"" if keep else b"Connection: close\r\n") + b"\r\n" + body)
        if not keep:
            self._linger()

    def _linger(self):
        """Half-close after the last answer and drop what still comes until
        the client closes: close() with input unread would send a reset
        that can destroy that answer in flight."""
        self.closing = True
        self.last_active = time.monotonic()
        self._bytes = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    # -- what the worker calls --------------------------------------------------------
    def close_now(self):
        self.closing = True
        self.transport.abort()

    def close_idle(self):
        """Graceful stop: as H1Connection.close_idle, the next request gets
        the last answer; a connection quiet for IDLE_GRACE is half-closed."""
        self.retiring = True
        if not self.busy and not self.closing \
                and time.monotonic() - self.last_active >= IDLE_GRACE \
                and not input_waiting(self.transport):
            self._linger()
        return self.closing

    def sweep(self, now):
        if self.closing:
            if now - self.last_active > LINGER_SECONDS:
                self.transport.close()
        else:
            limits = self.limits
            if now - self.last_active > (limits.request_timeout if self.busy else limits.keep_alive):
                self.close_now()
