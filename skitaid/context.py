"""The request a thread is serving, for code that has no exchange in hand.

The WSGI handler sets `current.exchange` to the exchange an app thread is
serving (None after). App code reaches it through push() below and through
`was`, whose corequests carry the request's transaction IDs. The handlers
adopt a caller's IDs with adopt_txn_ids(); `was` derives the IDs of the
calls it makes from them.

This sits below the protocols and handlers and above nothing but the
Exchange contract, so `was` (the app's face) and the handlers share it
without importing each other.
"""
import asyncio
import threading

# .exchange: the exchange this thread is serving (None or unset: none). A plain
# local, not a subclass with a default: setting it twice per request is cheaper.
current = threading.local()

ROOT_LTXID = "1000"     # the local ID of a request that starts a call chain


def at_request_end(fn):
    """Call fn() when the request this thread serves is answered (the WSGI
    handler calls end_request()); False when this thread serves none."""
    if getattr(current, "exchange", None) is None:
        return False
    ends = getattr(current, "ends", None)
    if ends is None:
        ends = current.ends = []
    ends.append(fn)
    return True


def end_request():
    """Run what at_request_end() queued for this thread's request (errors are
    the callbacks' own business: each runs, whatever the others do)."""
    ends = getattr(current, "ends", None)
    if ends:
        current.ends = None
        for fn in ends:
            try:
                fn()
            except Exception:
                pass


def adopt_txn_ids(request, gtxid, ltxid):
    """Keep a caller's X-Gtxn-Id / X-Ltxn-Id values (ltxid may be None) on
    `request`, for the request log and its corequests' IDs."""
    request.gtxid = gtxid[:64].replace(" ", "")      # each is one field of the log line
    request.ltxid = (ltxid or ROOT_LTXID)[:16].replace(" ", "")


def push_on(exchange, uri):
    """Push `uri` ("/path?query", same origin) on `exchange`; False if it cannot be.

    Over HTTP/1.1, or when the client disabled push, nothing is pushed."""
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
    """`skitaid.push('/static/app.css')`: push `uri` for the request this
    thread is answering (HTTP/2); False when it cannot be pushed."""
    return push_on(getattr(current, "exchange", None), uri)
