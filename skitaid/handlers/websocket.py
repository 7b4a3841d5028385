"""The app side of WebSocket: handshake checks, sessions, group rooms.

A decorated view (skitaid/websocket.py) checks the handshake in its app
thread and, when it is good, leaves a `Session` in the environ and answers
101. The WSGI handler then calls `switch()` on the loop, which sends the
101 and hands the transport to a `WSConnection`. From there the connection
feeds the session messages on the loop, and the session runs the app's
code where its mode says:

- shared pool (default): each message is one pool job that steps the app's
  generator; a connection's messages are handled one at a time, in order.
- dedicated (WS_DEDICATED, WS_THREADSAFE, and any plain function that pulls
  with ws.receive()): one thread per connection.
- group chat (WS_GROUPCHAT): pool jobs like the default, and what the app
  yields goes to every connection of the same room.
- threads = 0: the generator is stepped on the loop itself.
"""
import collections
import json
import threading

from ..exchange import header_tokens
from ..logs import error_log
from ..protocols import websocket as wsp
from ..protocols.wsconn import OPEN, WSConnection

INBOX_MESSAGES = 64           # messages waiting for the app before reading pauses
INBOX_BYTES = 1024 * 1024     # or bytes
BATCH = 32                    # messages one pool job handles before yielding its thread

START = object()              # inbox item: run onopen and prime the generator

SESSION_KEY = "skitaid.websocket.session"
UPGRADE_KEY = "skitaid.websocket.upgrade"   # the Upgrade header, out of HTTP_UPGRADE (routing)


class HandshakeError(Exception):
    def __init__(self, status, detail, headers=()):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = list(headers)


def check_handshake(env):
    """Validate an RFC 6455 opening handshake from a WSGI environ; returns
    the client's key or raises HandshakeError."""
    version_hdr = [("Sec-WebSocket-Version", "13")]
    upgrade = env.get(UPGRADE_KEY) or env.get("HTTP_UPGRADE")
    if not upgrade:
        raise HandshakeError("426 Upgrade Required", "a WebSocket endpoint: upgrade required",
                             [("Upgrade", "websocket"), ("Connection", "Upgrade")] + version_hdr)
    if env.get("REQUEST_METHOD") != "GET":
        raise HandshakeError("400 Bad Request", "WebSocket handshake must be a GET", version_hdr)
    if "websocket" not in header_tokens(upgrade):
        raise HandshakeError("400 Bad Request", "Upgrade is not websocket", version_hdr)
    if "upgrade" not in header_tokens(env.get("HTTP_CONNECTION", "")):
        raise HandshakeError("400 Bad Request", "Connection header lacks 'upgrade'", version_hdr)
    if env.get("SERVER_PROTOCOL") != "HTTP/1.1":
        raise HandshakeError("400 Bad Request", "WebSocket handshake needs HTTP/1.1", version_hdr)
    if env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise HandshakeError("400 Bad Request", "unsupported Sec-WebSocket-Version", version_hdr)
    key = env.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if not wsp.valid_key(key):
        raise HandshakeError("400 Bad Request", "bad Sec-WebSocket-Key", version_hdr)
    return key


# -- the upgrade request through the app ------------------------------------------
_upgrading = threading.local()   # .environ: the upgrade request this thread is serving


def call_app(app, env, start_response, loop, loop_thread, pool):
    """Call a WSGI app for a request with an Upgrade header (used by the WSGI
    handler): decorated views find their environ through this thread."""
    upgrade = env["HTTP_UPGRADE"]
    if upgrade.strip().lower() == "websocket":
        # Hidden from the app, so that frameworks route the request like any
        # GET (Werkzeug would otherwise only match rules marked websocket=True);
        # decorated views read it from here.
        env[UPGRADE_KEY] = env.pop("HTTP_UPGRADE")
    env["skitaid.loop"] = loop
    env["skitaid.loop_thread"] = loop_thread
    env["skitaid.pool"] = pool
    _upgrading.environ = env
    try:
        return app(env, start_response)
    finally:
        _upgrading.environ = None


def upgrade_environ():
    """The environ of the upgrade request this thread is calling the app for, else None."""
    return getattr(_upgrading, "environ", None)


def accepted_session(env, status):
    """The Session a decorated view left for a 101 answer, else None."""
    session = env.get(SESSION_KEY)
    if session is not None and status is not None and status[:3] == "101":
        return session
    return None


class Options:
    """What the decorator was given (one per decorated view)."""

    def __init__(self, timeout, mode, onopen, onclose, encoding, key, max_message_size,
                 ping_interval, subprotocols, compression):
        self.timeout = timeout
        self.mode = mode
        self.onopen = onopen
        self.onclose = onclose
        self.encoding = encoding
        self.key = key
        self.max_message_size = max_message_size
        self.ping_interval = ping_interval
        self.subprotocols = subprotocols
        self.compression = compression
        self.rooms = {}           # group chat: room key → Room (loop thread only)


class Room:
    """Connections of one group-chat room (touched on the loop thread only)."""

    def __init__(self, options, key):
        self.options = options
        self.key = key
        self.members = []

    def broadcast(self, msg):
        plain = None
        for conn in list(self.members):
            if conn.deflate is not None:
                conn.send_message(msg)
            else:
                if plain is None:
                    plain = conn.message_frame(msg)
                conn.send_frame(plain)

    def leave(self, conn):
        try:
            self.members.remove(conn)
        except ValueError:
            return
        if not self.members:
            self.options.rooms.pop(self.key, None)


class WebSocket:
    """environ["websocket"]: what app code uses to talk to its client."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, env, options, loop, loop_thread):
        self.environ = env
        self.options = options
        self.loop = loop
        self._loop_thread = loop_thread
        self.client_id = next(WebSocket._ids)
        self.encoding = options.encoding
        self.room = None          # group chat: this connection's room key
        self.subprotocol = None
        self.conn = None
        self._early = []          # sent before the switch: go out right after the 101
        self.session = None

    @property
    def closed(self):
        c = self.conn
        return c is not None and c.state != OPEN

    def _encode(self, msg):
        if self.encoding == "json" and not isinstance(msg, (str, bytes, bytearray, memoryview)):
            msg = json.dumps(msg)
        return msg

    def send(self, msg):
        """Send one message (str: text, bytes: binary; json encoding: any
        JSON-able value). Any thread; waits while the client is not keeping
        up. False when the connection is closed."""
        msg = self._encode(msg)
        conn = self.conn
        if conn is None:
            self._early.append(msg)
            return True
        if threading.get_ident() == self._loop_thread:
            return conn.send_message(msg)
        return conn.send_threadsafe(msg)

    def sendall(self, msg):
        """Group chat: send to every connection of this room (this one too).
        Elsewhere the same as send(). Never waits: a member that does not
        read is dropped instead."""
        msg = self._encode(msg)
        room = self.room
        if room is None or self.conn is None:
            return self.send(msg)
        rooms = self.options.rooms
        if threading.get_ident() == self._loop_thread:
            r = rooms.get(room)
            if r is not None:
                r.broadcast(msg)
        else:
            self.loop.call_soon_threadsafe(_broadcast, rooms, room, msg)
        return True

    def close(self, code=wsp.NORMAL, reason=""):
        conn = self.conn
        if conn is None:
            return
        if threading.get_ident() == self._loop_thread:
            conn.close(code, reason)
        else:
            self.loop.call_soon_threadsafe(conn.close, code, reason)

    # -- pulling messages (dedicated threads, plain functions) ------------------------
    def receive(self, timeout=None):
        """The next message; None once the connection is closed;
        TimeoutError when none came within `timeout` seconds."""
        s = self.session
        while True:
            item = s.pull(timeout)
            if item is s.TIMEOUT:
                raise TimeoutError("no message within %s s" % timeout)
            if item is None:
                return None
            item = s._decode(item)
            if item is not _SKIP:
                return item

    def getswait(self, timeout=10):
        """The original's call: the messages waiting (a list, [] after
        `timeout` seconds without any), or None once closed."""
        s = self.session
        item = s.pull(timeout)
        if item is s.TIMEOUT:
            return []
        if item is None:
            return None
        out = [item]
        while True:
            more = s.pull(0)
            if more is s.TIMEOUT:
                break
            if more is None:
                s.push_back_close()
                break
            out.append(more)
        out = [s._decode(m) for m in out]
        return [m for m in out if m is not _SKIP]


def _broadcast(rooms, key, msg):
    r = rooms.get(key)
    if r is not None:
        r.broadcast(msg)


class Session:
    """Runs one connection's app code: a generator stepped per message, or a
    plain function that pulls messages with ws.receive()."""

    TIMEOUT = object()

    def __init__(self, ws, ctx, gen, func, headers, deflate, pool, dedicated):
        self.ws = ws
        self.options = ws.options
        self.ctx = ctx              # the view's contextvars (Flask's request etc.)
        self.gen = gen              # the app's generator, or None
        self.func = func            # a callable for the pull style, or None
        self.headers = headers      # of the 101 answer
        self.deflate = deflate
        self.pool = pool
        # a plain function holds its thread for the whole connection: never a pool thread
        self.dedicated = dedicated or func is not None
        self.conn = None
        self.loop = ws.loop
        self._cond = threading.Condition(threading.Lock())
        self._inbox = collections.deque()
        self._bytes = 0
        self._running = False
        self._input_paused = False
        self._ended = False

    # -- loop side -------------------------------------------------------------------
    def make_connection(self, host):
        o = self.options
        return WSConnection(host, self, o.max_message_size, o.timeout, o.ping_interval,
                            self.deflate)

    def opened(self, conn):
        self.conn = conn
        ws = self.ws
        ws.conn = conn
        if ws.room is not None:
            room = self.options.rooms.get(ws.room)
            if room is None:
                room = self.options.rooms[ws.room] = Room(self.options, ws.room)
            room.members.append(conn)
        early, ws._early = ws._early, []
        for msg in early:
            conn.send_message(msg)
        if self.dedicated:
            if self.func is None:
                self._inbox.append(START)
            threading.Thread(target=self._thread_main, daemon=True,
                             name="skitaid-ws-%d" % ws.client_id).start()
        else:
            self._put(START)

    def received(self, msg):
        """A message from the client (loop). True asks the connection to
        stop reading until the app catches up."""
        return self._put(msg)

    def closed(self, code):
        ws = self.ws
        if ws.room is not None and self.conn is not None:
            room = self.options.rooms.get(ws.room)
            if room is not None:
                room.leave(self.conn)
        self._put(None)

    def fail_after(self, code, reason):
        """The client broke the protocol after the messages handed over so
        far: fail the connection once they are handled (loop)."""
        self._put(_Fail(code, reason))

    def _put(self, item):
        if self.pool is None and not self.dedicated:
            self._handle(item)       # threads = 0: on the loop
            return False
        n = len(item) if isinstance(item, (str, bytes)) else 0
        with self._cond:
            self._inbox.append(item)
            self._bytes += n
            over = len(self._inbox) > INBOX_MESSAGES or self._bytes > INBOX_BYTES
            if over:
                self._input_paused = True
            if self.dedicated:
                self._cond.notify()
            elif not self._running:
                self._running = True
                self.pool.submit(self._drain)
        return over

    # -- thread side ----------------------------------------------------------------------
    def _take(self):
        """Pop one inbox item (the lock is held)."""
        item = self._inbox.popleft()
        if isinstance(item, (str, bytes)):
            self._bytes -= len(item)
        if self._input_paused and len(self._inbox) <= INBOX_MESSAGES // 2 \
                and self._bytes <= INBOX_BYTES // 2:
            self._input_paused = False
            conn = self.conn
            if conn is not None:
                self.loop.call_soon_threadsafe(conn.resume_input)
        return item

    def _drain(self):
        """A pool job: handle what is in the inbox (a batch, then requeue)."""
        for _ in range(BATCH):
            with self._cond:
                if not self._inbox:
                    self._running = False
                    return
                item = self._take()
            self._handle(item)
        self.pool.submit(self._drain)   # others get the thread too

    def _thread_main(self):
        if self.func is not None:
            self._run_function()
            return
        while True:
            with self._cond:
                while not self._inbox:
                    self._cond.wait()
                item = self._take()
            self._handle(item)
            if item is None:
                return

    def pull(self, timeout):
        while True:
            with self._cond:
                if not self._inbox:
                    if self._ended:
                        return None
                    if timeout is not None and timeout <= 0:
                        return self.TIMEOUT
                    self._cond.wait_for(lambda: self._inbox, timeout)
                    if not self._inbox:
                        return self.TIMEOUT
                item = self._take()
                if item is None:
                    self._ended = True
            if type(item) is not _Fail:
                return item
            self.loop.call_soon_threadsafe(self.conn.fail, item.code, item.reason)

    def push_back_close(self):
        with self._cond:
            self._ended = True

    # -- running app code -------------------------------------------------------------------
    def _decode(self, msg):
        if self.options.encoding == "json":
            try:
                return json.loads(msg)
            except ValueError:
                self.ws.close(wsp.INVALID_DATA, "message is not JSON")
                return _SKIP
        return msg

    def _handle(self, item):
        if self._ended:
            return
        try:
            if item is START:
                self._callback(self.options.onopen)
                if self.gen is not None and not self._ended:
                    self._emit_from(self.ctx.run(next, self.gen))
            elif type(item) is _Fail:
                conn = self.conn
                if threading.get_ident() == self.ws._loop_thread:
                    conn.fail(item.code, item.reason)
                else:
                    self.loop.call_soon_threadsafe(conn.fail, item.code, item.reason)
            elif item is None:
                self._ended = True
                gen, self.gen = self.gen, None
                if gen is not None:
                    try:
                        self.ctx.run(gen.send, None)
                    except StopIteration:
                        pass
                    finally:
                        self.ctx.run(gen.close)
                self._callback(self.options.onclose, closing=True)
            elif self.gen is not None:
                msg = self._decode(item)
                if msg is not _SKIP:
                    self._emit_from(self.ctx.run(self.gen.send, msg))
        except StopIteration:
            self.gen = None
            self.ws.close(wsp.NORMAL, "")     # the app is done with this connection
        except Exception:
            self._app_error()

    def _emit_from(self, out):
        """Send what the generator yielded, advancing it until it waits for a
        message (a bare `yield`, which yields None)."""
        gen = self.gen
        while out is not None:
            self._emit(out)
            out = self.ctx.run(next, gen)

    def _emit(self, out):
        ws = self.ws
        send = ws.sendall if ws.room is not None else ws.send
        if isinstance(out, (str, bytes, bytearray, memoryview)):
            send(out)
        elif ws.encoding == "json" and isinstance(out, (dict, list, int, float, bool)):
            send(out)
        else:
            for item in out:      # a list or an iterator of messages
                if item is not None:
                    send(item)

    def _callback(self, fn, closing=False):
        if fn is None:
            return
        try:
            out = self.ctx.run(fn)
            if out is not None:
                if closing:
                    room = self.ws.room
                    if room is not None:
                        self.loop.call_soon_threadsafe(_broadcast, self.options.rooms, room,
                                                       self.ws._encode(out))
                else:
                    self._emit(out)
        except Exception:
            self._app_error()

    def _run_function(self):
        try:
            self._callback(self.options.onopen)
            out = self.ctx.run(self.func)
            if out is not None:
                self._emit(out)
            self.ws.close(wsp.NORMAL, "")
        except Exception:
            self._app_error()
        finally:
            self._ended = True
            self._callback(self.options.onclose, closing=True)

    def _app_error(self):
        error_log.exception("error in websocket app %s", self.ws.environ.get("PATH_INFO", ""))
        self.gen = None
        self._ended = True
        self.ws.close(wsp.INTERNAL_ERROR, "")


_SKIP = object()


class _Fail:
    """Inbox item: fail the connection (a protocol error after the messages before it)."""
    __slots__ = ("code", "reason")

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason


def switch(host, exchange, session):
    """On the loop: send the 101 and hand the connection to WebSocket."""
    conn = session.make_connection(host)
    if not exchange.switch_protocol(session.headers, conn):
        if not exchange.closed and not exchange.head_sent:
            exchange.respond(400, [("Content-Type", "text/plain"),
                                   ("Sec-WebSocket-Version", "13")],
                             b"400 this connection cannot switch to WebSocket\n")
        return False
    return True
