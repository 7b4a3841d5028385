"""Cleartext HTTP/2 on an HTTP/1.1 port: prior knowledge and `Upgrade: h2c`.

The HTTP/1.1 connection calls in here at two points only: with its first
bytes (a client that starts with the HTTP/2 preface), and when a request head
asks to upgrade. Either way the transport moves to an `H2Connection`.
"""
from ..exchange import header_tokens
from .h2 import H2Connection

PREFACE = b"PRI * HTTP/2.0\r\n"


def sniff(conn, data):
    """First bytes of a connection: hand over to HTTP/2 on the preface.

    Returns the bytes HTTP/1.1 should parse, or None when they were taken
    (handed over, or too few yet to tell)."""
    data = conn._h2_sniff + data
    if data[:len(PREFACE)] == PREFACE[:len(data)]:
        if len(data) < len(PREFACE):
            conn._h2_sniff = data        # a prefix of the preface: wait for more
            return None
        conn._h2_sniff = None
        _hand_over(conn).data_received(data)
        return None
    conn._h2_sniff = None
    return data


def _hand_over(conn, preamble=True):
    h2conn = H2Connection(conn.worker, conn.scheme)
    conn._hand_off(h2conn)      # (earlier responses still queued go first)
    h2conn.connection_made(conn.transport, preamble)
    return h2conn


def wants_upgrade(conn, req):
    """True when `req`, a complete head that llhttp flagged as an upgrade,
    asks for h2c and we can take it now."""
    if conn.current is not None or conn._queue or req.chunked or req.method == "CONNECT":
        return False
    upgrade = req.header("upgrade")
    if upgrade is None or "h2c" not in header_tokens(upgrade):
        return False
    settings = [v for k, v in req.headers if k == "http2-settings"]
    if len(settings) != 1 or \
            not {"upgrade", "http2-settings"} <= header_tokens(req.header("connection", "")):
        return False
    conn._h2c_request = req
    return True


def switch(conn, rest):
    """After the upgrade request's head: `rest` is what followed it (its
    body first, then HTTP/2 frames)."""
    req = conn._h2c_request
    conn._h2c_request = None
    if req.expect_continue:
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")    # (goes out at the hand-over)
    settings = req.header("http2-settings").strip().encode("latin-1")
    settings += b"=" * (-len(settings) % 4)     # base64url without its padding
    h2conn = _hand_over(conn, preamble=False)
    try:
        h2conn.upgrade(req, settings, req.content_length or 0, rest)
    except Exception:
        # a broken HTTP2-Settings value: nothing was sent yet but the 101
        h2conn.worker.count_rejected(400, "bad HTTP2-Settings", req.client)
        h2conn.close_now()
