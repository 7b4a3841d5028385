"""Server push from app code: `skitaid.push('/static/app.css')`.

The WSGI handler sets `current.exchange` to the exchange an app thread is
serving (None after); push() asks that exchange's connection (on the loop)
to promise the resource, and `was` reads the request from it for the
transaction IDs of the app's corequests. Over HTTP/1.1, or when the client
disabled push, push() does nothing and says so.
"""
import asyncio
import threading


# .exchange: the exchange this thread is serving (None or unset: none). A plain
# local, not a subclass with a default: setting it twice per request is cheaper.
current = threading.local()


def push_on(exchange, uri):
    """Push `uri` ("/path?query", same origin) on `exchange`; False if it cannot be."""
    if exchange is None or not exchange.can_push():
        return False
    loop = exchange.conn.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return exchange.push(uri)
    loop.call_soon_threadsafe(exchange.push, uri)
    return True


def push(uri):
    """Push `uri` for the request this thread is answering."""
    return push_on(getattr(current, "exchange", None), uri)
