"""`@skitaid.websocket`: WebSocket endpoints in Flask views and plain WSGI apps.

    @app.route("/echo")
    @skitaid.websocket(60)                  # idle timeout, seconds
    def echo():
        while True:
            message = yield                 # None once the socket closed
            if message is None:
                return
            yield "ECHO:" + message         # str, bytes, or a list/iterator of them

The original Skitai's forms work too: `@skitaid.websocket(skitaid.WS_GROUPCHAT,
60, onopen, onclose, "json")` (mode first, as Atila's `@app.websocket`), and
`environ["websocket"]` with send(msg), close(code), sendall(msg) (group chat),
receive(timeout) and getswait(timeout) (dedicated threads).

The view runs like any other (in a pool thread, with its framework's request
context); it checks the handshake, answers 101 through a small WSGI response,
and the server switches the connection on its loop. The generator's later
steps run in a copy of the view's contextvars, so Flask's `request` still
works in them.
"""
import contextvars
import functools
import inspect
import sys
import types
from urllib.parse import parse_qs

from .handlers import websocket as _ws
from .protocols import websocket as _wsp


class _Mode(int):
    """A design mode; an int (as in the original) that the decorator can tell
    from a timeout."""

    def __new__(cls, value, name):
        m = int.__new__(cls, value)
        m.name = name
        return m

    def __repr__(self):
        return "skitaid." + self.name


WS_SIMPLE = WS_CHANNEL = _Mode(1, "WS_SIMPLE")      # messages handled in the shared pool
WS_DEDICATED = _Mode(2, "WS_DEDICATED")             # one thread per connection
WS_GROUPCHAT = _Mode(5, "WS_GROUPCHAT")             # yields go to the whole room
WS_THREADSAFE = _Mode(134, "WS_THREADSAFE")         # dedicated; other threads send too

WS_MSG_TEXT = WS_MSG_DEFAULT = "text"
WS_MSG_JSON = "json"

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_PING_INTERVAL = 20.0

UPGRADE_KEY = _ws.UPGRADE_KEY


def websocket(timeout=60, mode=WS_SIMPLE, onopen=None, onclose=None, encoding="text", *,
              key="room", max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
              ping_interval=DEFAULT_PING_INTERVAL, subprotocols=(), compression=True):
    """Make a view (Flask, or a plain WSGI app) a WebSocket endpoint.

    timeout: idle seconds (no message either way) before closing; 0 = never.
    mode: WS_SIMPLE (default), WS_DEDICATED, WS_THREADSAFE, WS_GROUPCHAT.
    onopen / onclose: called (no arguments, in the view's context) when the
      connection opens / closes; what onopen returns is sent, what onclose
      returns goes to the rest of the room (group chat).
    encoding: "text" (str/bytes as they are) or "json" (messages parsed and
      dumped as JSON).
    key: group chat: the query parameter naming the room (?room=1), or a
      callable(environ) returning the room key.
    max_message_size: bigger messages close the connection with 1009.
    ping_interval: seconds of silence before the server pings (0 = never);
      an unanswered ping drops the connection.
    subprotocols: Sec-WebSocket-Protocol values offered, in preference order.
    compression: accept permessage-deflate when the client offers it.
    """
    if isinstance(timeout, _Mode):
        # the original's mode-first form: websocket(spec, timeout, onopen, onclose, encoding)
        timeout, mode = (mode if not isinstance(mode, _Mode) else 60), timeout
    elif isinstance(timeout, str):
        raise TypeError("skitaid.websocket(%r, ...): per-message view calls with a variable "
                        "name are not supported; write the view as a generator" % timeout)
    if encoding not in ("text", "json"):
        raise ValueError("encoding must be 'text' or 'json', not %r" % (encoding,))
    if mode not in (WS_SIMPLE, WS_DEDICATED, WS_GROUPCHAT, WS_THREADSAFE):
        raise ValueError("unknown websocket mode %r" % (mode,))
    options = _ws.Options(float(timeout or 0), mode, onopen, onclose,
                          encoding, key, int(max_message_size), float(ping_interval or 0),
                          tuple(subprotocols), compression)

    def decorator(f):
        is_gen = inspect.isgeneratorfunction(inspect.unwrap(f))

        @functools.wraps(f)
        def view(*args, **kwargs):
            wsgi = (len(args) == 2 and isinstance(args[0], dict) and callable(args[1])
                    and "wsgi.version" in args[0])
            env = _ws.upgrade_environ()     # set by the WSGI handler's upgrade path
            if wsgi and env is not args[0]:
                env = None       # not served by skitaid's upgrade path
            response = _open(env, options, f, args, kwargs, is_gen)
            if wsgi:
                return response(args[0], args[1])
            return response      # frameworks (Flask) take a WSGI app as a response
        return view
    return decorator


def _open(env, options, f, args, kwargs, is_gen):
    """Check the handshake and prepare the session; returns a WSGI response."""
    if env is None:
        return _Error("426 Upgrade Required", "a WebSocket endpoint: upgrade required",
                      [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")])
    try:
        client_key = _ws.check_handshake(env)
    except _ws.HandshakeError as e:
        return _Error(e.status, e.detail, e.headers)
    worker_loop = env.get("skitaid.loop")
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", _wsp.accept_key(client_key))]
    ws = _ws.WebSocket(env, options, worker_loop, env.get("skitaid.loop_thread"))
    offered = env.get("HTTP_SEC_WEBSOCKET_PROTOCOL")
    if offered and options.subprotocols:
        wanted = [p.strip() for p in offered.split(",")]
        for p in options.subprotocols:
            if p in wanted:
                ws.subprotocol = p
                headers.append(("Sec-WebSocket-Protocol", p))
                break
    deflate = None
    ext = env.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    if ext and options.compression:
        deflate, answer = _wsp.negotiate_deflate(ext)
        if deflate is not None:
            headers.append(("Sec-WebSocket-Extensions", answer))
    if options.mode == WS_GROUPCHAT:
        k = options.key
        if callable(k):
            ws.room = str(k(env))
        else:
            values = parse_qs(env.get("QUERY_STRING", "")).get(k)
            ws.room = values[0] if values else ""
    env["websocket"] = ws
    ctx = contextvars.copy_context()
    gen = func = None
    if is_gen:
        gen = f(*args, **kwargs)          # nothing of its body runs yet
    else:
        func = functools.partial(f, *args, **kwargs)
    pool = env.get("skitaid.pool")
    dedicated = options.mode in (WS_DEDICATED, WS_THREADSAFE)
    session = _ws.Session(ws, ctx, gen, func, headers, deflate, pool, dedicated)
    ws.session = session
    env[_ws.SESSION_KEY] = session
    return _Switching(headers)


class _Switching:
    """The 101 answer as a WSGI app (the server sends its own head)."""

    def __init__(self, headers):
        self.headers = headers

    def __call__(self, environ, start_response):
        start_response("101 Switching Protocols", list(self.headers))
        return []


class _Error:
    def __init__(self, status, detail, headers):
        self.status = status
        self.body = (detail + "\n").encode("utf-8")
        self.headers = [("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(self.body)))] + list(headers)

    def __call__(self, environ, start_response):
        start_response(self.status, self.headers)
        return [self.body]


class _DecoratorModule(types.ModuleType):
    """`skitaid.websocket` names both this module and its decorator: an app that
    imported the module first (`import skitaid.websocket`, `from
    skitaid.websocket import WS_GROUPCHAT`) finds the package attribute bound
    to the module, and `@skitaid.websocket(60)` must work all the same."""

    def __call__(self, *args, **kwargs):
        return websocket(*args, **kwargs)


sys.modules[__name__].__class__ = _DecoratorModule
