"""Server push from app code: `skitaid.push('/static/app.css')`.

The WSGI handler binds the exchange being served to the app thread; push()
then asks that exchange's connection (on the loop) to promise the resource.
Over HTTP/1.1, or when the client disabled push, it does nothing and says so.
"""
import asyncio
import threading

_local = threading.local()


def bind(exchange):
    _local.exchange = exchange


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
    return push_on(getattr(_local, "exchange", None), uri)
