"""WSGI (PEP 3333) apps behind an Exchange.

With a thread pool the app runs in a pool thread and hands its output to the
loop with `call_soon_threadsafe`; a complete list body goes over in one hop,
streamed bodies chunk by chunk with backpressure (the app thread waits while
the client is not keeping up). A request body of known length is awaited on
the loop before the app gets a thread (all of it, or a buffer's worth), so a
client sending it slowly ties up a connection, not a thread. With
`threads = 0` the app runs on the loop itself, after the whole request body
has arrived.
"""
import asyncio
import os
import stat
import sys
import threading
import time
import traceback
from typing import Any, Optional, Protocol, runtime_checkable
from urllib.parse import unquote_to_bytes

from ..context import adopt_txn_ids, current as _current, end_request, push_on
from ..body import EMPTY_BODY, ClientDisconnected
from ..logs import error_log
from ..tokens import Invalid
from ..version import __version__
from . import websocket as ws_handler
from .websocket import accepted_session, call_app
from ..protocols.host import ConnectionHost, HostConfig
from .errors import error_response
from .ranges import ranged

STREAM_HIGH_WATER = 256 * 1024   # bytes handed to the loop but not yet sent
_SWITCHED = object()             # _call(): a WebSocket view took the connection over


class FileWrapper:
    """wsgi.file_wrapper: iterable fallback, sendfile when it wraps a real file."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data

    def file_span(self):
        """(fileobj, offset, size) when sendfile can be used, else None."""
        f = self.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            offset = f.tell()
        except (AttributeError, OSError):
            offset = 0
        return f, offset, max(0, st.st_size - offset)


def _content_length(headers):
    for name, value in headers:
        if len(name) == 14 and name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _Response:
    """start_response / write() state for one call of the app."""

    __slots__ = ("exchange", "loop", "status", "headers", "started", "queued",
                 "cond", "draining", "range")

    def __init__(self, exchange, loop):
        self.exchange = exchange
        self.loop = loop
        self.status = None
        self.headers = None
        self.started = False      # the head was handed to the loop
        self.queued = 0
        self.cond = None
        self.draining = False
        self.range = False        # the request asked for a Range (see _respond_list)

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if type(status) is not str or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise AssertionError("status must be a str like '200 OK', got %r" % (status,))
        if type(headers) is not list:
            raise AssertionError("headers must be a list of (name, value) tuples")
        self.status = status
        self.headers = headers
        return self.write

    # -- thread → loop ---------------------------------------------------------
    def _checked(self, data):
        """A body chunk as bytes, or the error PEP 3333 asks for."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError("response body chunks must be bytes, got %s" % type(data).__name__)
            data = bytes(data)
        if self.status is None:
            raise AssertionError("write() before start_response()")
        return data

    def write(self, data):
        """The PEP 3333 write() callable, and the streaming path."""
        data = self._checked(data)
        ex = self.exchange
        if ex.closed:
            raise ClientDisconnected("client disconnected")
        call = self.loop.call_soon_threadsafe
        if not self.started:
            self.started = True
            ex.t_handled = time.monotonic()      # the request log's handling/transfer split
            call(ex.start, self.status, self.headers, _content_length(self.headers))
        if not data:
            return
        cond = self.cond
        if cond is None:
            cond = self.cond = threading.Condition(threading.Lock())
        with cond:
            while (self.queued > STREAM_HIGH_WATER or self.draining) and not ex.closed:
                cond.wait(1.0)
            if ex.closed:
                raise ClientDisconnected("client disconnected")
            self.queued += len(data)
        call(self._deliver, data)

    def _deliver(self, data):
        """Loop side of write(): send, then let the app go on once drained."""
        ex = self.exchange
        ex.write(data)
        with self.cond:
            self.queued -= len(data)
            if ex.writing_paused() and not ex.closed:
                if not self.draining:
                    self.draining = True
                    self.loop.create_task(self._wait_drain())
            else:
                self.cond.notify_all()

    async def _wait_drain(self):
        # Look again: the client may have caught up (resume_writing ran)
        # between _deliver and this task's first step; drain() would then wait
        # for a resume_writing that only comes after another pause: a hang.
        if self.exchange.writing_paused():
            await self.exchange.drain()
        with self.cond:
            self.draining = False
            self.cond.notify_all()

    def finish(self):
        """Hand the end of the response to the loop (thread side)."""
        if self.started:
            self.loop.call_soon_threadsafe(self.exchange.finish)
        else:
            self.started = True
            self.loop.call_soon_threadsafe(self.exchange.respond, self.status, self.headers, b"")


class AppPool(Protocol):
    """The app threads."""

    size: int

    def submit(self, fn, *args) -> None: ...

    def estimated_wait(self) -> float:
        """Seconds a task submitted now would wait for a thread."""


class AppSettings(HostConfig, Protocol):
    debug: bool                 # tracebacks in 500 pages
    estimated_timeout: float    # 503 when the pool's wait would be longer (0: off)
    processes: int              # wsgi.multiprocess


@runtime_checkable
class WSGIHost(ConnectionHost, Protocol):
    """What the WSGI handler uses of its worker: the loop it answers on
    (`loop`), the app threads (`pool`; None: `threads = 0`, apps run on the
    loop), the corequest engine's loop thread (handed to WebSocket views) and
    its settings; being a ConnectionHost, it also hosts the WebSocket
    connection a view switches to."""

    config: AppSettings
    pool: Optional[AppPool]
    loop_thread: Any


class WSGIHandler:
    """Runs one WSGI app mounted at `prefix`."""

    # the gateway's token verifier (tokens.Verifier) on a gateway-enabled server:
    # a request with a valid token gets REMOTE_USER, skitaid.claims, skitaid.roles
    verifier = None

    def __init__(self, app, prefix, host: WSGIHost):
        self.app = app
        self.script_name = "" if prefix == "/" else prefix
        self.host = host
        self.loop = host.loop
        self.loop_thread = host.loop_thread
        self.pool = host.pool
        self.debug = host.config.debug
        self.estimated_timeout = host.config.estimated_timeout
        self.base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": self.pool is not None and self.pool.size > 1,
            "wsgi.multiprocess": host.config.processes > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": "skitaid/" + __version__,
            "SCRIPT_NAME": self.script_name,
        }

    # -- loop side ---------------------------------------------------------------
    def handle(self, exchange, resolved=None):
        pool = self.pool
        if pool is None:
            body = exchange.request.body
            if not body.complete:
                body.buffer_all()
            body.on_complete(lambda: self.loop.call_soon(self._run, exchange, True))
            return
        req = exchange.request
        body = req.body
        if body.complete or req.chunked or req.expect_continue:
            # At once: a body of unknown length may be read as it streams (the
            # app answering as it goes), and with Expect: 100-continue the app
            # decides whether the body is wanted at all. The protocol's body
            # rate rule bounds how long a slow body holds the thread then.
            self._submit(exchange)
        else:
            # No app thread while a body of known length is on its way: a
            # client that trickles it holds a connection, not a thread, until
            # the body is here or a buffer's worth is (the rest streams).
            body.on_ready(lambda: self._submit(exchange))

    def _submit(self, exchange):
        if exchange.closed:
            return
        pool = self.pool
        limit = self.estimated_timeout
        if limit and pool.estimated_wait() > limit:
            exchange.respond(503, [("Retry-After", str(max(1, int(limit)))),
                                   ("Content-Type", "text/plain")],
                             b"server busy, retry later\n")
            return
        pool.submit(self._run, exchange, False)

    def environ(self, exchange):
        req = exchange.request
        env = self.base_environ.copy()
        path = req.path
        if "%" in path:
            # the raw path is latin-1 (one char per byte): back to those bytes
            # first, or unquote_to_bytes would UTF-8-encode non-ASCII ones twice
            path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
        script = self.script_name
        env["PATH_INFO"] = path[len(script):] if script else path
        env["REQUEST_METHOD"] = req.method
        env["QUERY_STRING"] = req.query
        env["REQUEST_URI"] = req.target
        env["SERVER_PROTOCOL"] = "HTTP/" + req.version
        env["wsgi.url_scheme"] = req.scheme
        env["wsgi.input"] = req.body
        # a list that fills in place when the trailer section arrives (read
        # the body to its end first); () when the body cannot have trailers
        env["skitaid.request_trailers"] = req.trailers
        if req.scheme == "https":
            env["HTTPS"] = "on"
        if exchange.supports_push:
            env["skitaid.push"] = lambda uri: push_on(exchange, uri)
        if exchange.supports_trailers:
            loop = self.loop

            def set_trailers(headers):      # (called on the app's thread)
                loop.call_soon_threadsafe(exchange.set_trailers, list(headers))
            env["skitaid.set_trailers"] = set_trailers
        if req.client:
            env["REMOTE_ADDR"] = req.client[0]
            env["REMOTE_PORT"] = str(req.client[1])
        else:
            env["REMOTE_ADDR"] = ""
        server = req.server
        env["SERVER_NAME"] = req.host or (server[0] if server else "localhost")
        env["SERVER_PORT"] = str(server[1]) if server else "0"
        if req.content_length is not None:
            env["CONTENT_LENGTH"] = str(req.content_length)
        for name, value in req.headers:
            if name == "content-type":
                env["CONTENT_TYPE"] = value
                continue
            if name == "content-length" or "_" in name:
                continue   # underscores would let a client spoof a dash-named header
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in env:
                env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
            else:
                env[key] = value
        if self.verifier is not None:
            _identity(self.verifier, req, env)
        gtxid = env.get("HTTP_X_GTXN_ID")
        if gtxid:                       # a call chain: keep its IDs for the log and our calls
            adopt_txn_ids(req, gtxid, env.get("HTTP_X_LTXN_ID"))
        return env

    def _call(self, exchange, resp):
        """Call the app: its response iterable, or _SWITCHED when a WebSocket
        view accepted an Upgrade (it answered 101 and left a session; the
        switch happens on the loop)."""
        env = self.environ(exchange)
        if "HTTP_RANGE" in env:
            resp.range = True
        if "HTTP_UPGRADE" not in env:
            return self.app(env, resp.start_response)
        result = call_app(self.app, env, resp.start_response,
                          self.loop, self.loop_thread, self.pool)
        session = accepted_session(env, resp.status)
        if session is None:
            return result
        _close(result)
        resp.started = True
        exchange.t_handled = time.monotonic()
        self._on_loop(ws_handler.switch, self.host, exchange, session)
        return _SWITCHED

    def _run(self, exchange, inline):
        """Call the app (on the loop when `inline`, threads = 0, the body
        complete; else on this app thread) and send what it returns: a list
        at once, a file by sendfile, any other iterable chunk by chunk (a task
        on the loop, or here)."""
        if exchange.closed:
            return
        resp = (_InlineResponse if inline else _Response)(exchange, self.loop)
        result = None
        # push() and the transaction IDs of the app's corequests find the request here
        _current.exchange = exchange
        try:
            result = self._call(exchange, resp)
            if result is _SWITCHED:
                result = None
            elif type(result) is list and not resp.started:
                self._respond_list(exchange, resp, result, inline)
            elif isinstance(result, FileWrapper) and not resp.started and result.file_span():
                owned, result = result, None      # sendfile: the file never passes through Python
                self._send_file(exchange, resp, owned)
            elif inline:
                it = iter(result)
                owned, result = result, None
                self.loop.create_task(self._pump(exchange, resp, it, owned))
            else:
                for chunk in result:
                    if chunk:
                        resp.write(chunk)
                    elif exchange.closed:
                        break
                resp.finish()
        except ClientDisconnected:
            pass
        except Exception:
            self._app_error(exchange, resp)
        finally:
            _current.exchange = None
            if result is not None:
                _close(result)
            if getattr(_current, "ends", None):
                end_request()    # e.g. was.cursor() connections go back to their pool

    async def _pump(self, exchange, resp, it, result):
        try:
            unflushed = 0
            for chunk in it:
                if chunk:
                    resp.write(chunk)
                    # Output is batched until the loop's next flush, so the
                    # transport cannot report "paused" while this loop runs
                    # without yielding: every STREAM_HIGH_WATER bytes, let the
                    # flush happen, or a client that does not read gets the
                    # whole body buffered in memory.
                    unflushed += len(chunk)
                    if unflushed >= STREAM_HIGH_WATER:
                        unflushed = 0
                        await asyncio.sleep(0)
                    if exchange.writing_paused():
                        await exchange.drain()
                if exchange.closed:
                    break
            resp.finish()
        except Exception:
            self._app_error(exchange, resp)
        finally:
            _close(result)

    # -- thread side ------------------------------------------------------------------
    def _respond_list(self, exchange, resp, result, inline):
        if resp.status is None:
            raise AssertionError("the app returned without calling start_response()")
        if len(result) == 1:
            body = result[0]
        else:
            body = b"".join(result)
        if type(body) is not bytes:
            raise TypeError("response body items must be bytes, got %s" % type(body).__name__)
        resp.started = True
        # a complete body: a single Range the app did not answer becomes a 206
        if resp.range:
            status, headers, body = ranged(exchange.request, resp.status, resp.headers, body)
        else:
            status, headers = resp.status, resp.headers
        if inline:
            exchange.respond(status, headers, body)
        else:
            self.loop.call_soon_threadsafe(exchange.respond, status, headers, body)

    def _send_file(self, exchange, resp, wrapper):
        """A wsgi.file_wrapper around a real file: zero-copy from the loop."""
        f, offset, size = wrapper.file_span()
        length = _content_length(resp.headers)
        count = size if length is None else min(size, length)
        resp.started = True
        exchange.t_handled = time.monotonic()

        def on_loop():
            if exchange.closed:
                _close(wrapper)
                return
            exchange.start(resp.status, resp.headers, count)
            if exchange.is_head or count == 0:
                _close(wrapper)
                exchange.finish()
            else:
                exchange.sendfile(f, offset, count, lambda ok: _close(wrapper))

        self.loop.call_soon_threadsafe(on_loop)

    def _app_error(self, exchange, resp):
        req = exchange.request
        error_log.error("error in app %s %s\n%s", req.method, req.target, traceback.format_exc())
        if resp.started:
            # the head is out: the only honest end is to drop the connection
            self._on_loop(exchange.abort)
            return
        resp.started = True
        status, headers, body = error_response(500, traceback.format_exc() if self.debug else None)
        self._on_loop(exchange.respond, status, headers, body)

    def _on_loop(self, fn, *args):
        if self.pool is None:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)


class _InlineResponse(_Response):
    """start_response / write() when the app runs on the loop itself."""

    __slots__ = ()

    def write(self, data):
        data = self._checked(data)
        ex = self.exchange
        if not self.started:
            self.started = True
            ex.t_handled = time.monotonic()
            ex.start(self.status, self.headers, _content_length(self.headers))
        ex.write(data)

    def finish(self):
        if self.started:
            self.exchange.finish()
        else:
            self.started = True
            self.exchange.respond(self.status, self.headers, b"")


def _identity(verifier, req, env):
    """The verified identity of a request carrying a valid token (on the app's
    thread, off the loop); nothing for one without, or with a bad one: the
    app decides what an anonymous request may do."""
    try:
        claims = verifier.claims(req)
    except Invalid:
        return
    sub = claims.get("sub")
    if isinstance(sub, str) and sub:
        env["REMOTE_USER"] = sub
        req.user = sub                  # the request log's user field
    env["skitaid.claims"] = claims
    env["skitaid.roles"] = verifier.roles(claims)


def _close(result):
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            error_log.exception("error in close() of the app's response")
