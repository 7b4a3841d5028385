"""Cleartext HTTP/2 on an HTTP/1.1 port: prior knowledge and `Upgrade: h2c`.

The decisions are plain functions of bytes and heads (`preface`,
`wants_upgrade`); the HTTP/1.1 connection keeps its own state and, when one
says yes, signals the switch through `switch_to_h2()`, which swaps the
transport over to an `H2Connection` using only H1Connection's public
hand_off(), send() and attributes.
"""
from ..exchange import header_tokens
from .h2 import H2Connection

PREFACE = b"PRI * HTTP/2.0\r\n"


def preface(data):
    """The first bytes of a connection: True when they start with the HTTP/2
    preface, None while they are a prefix of it (wait for more), else False."""
    if data[:len(PREFACE)] != PREFACE[:len(data)]:
        return False
    return None if len(data) < len(PREFACE) else True


def wants_upgrade(req, idle):
    """True when `req`, a complete head that llhttp flagged as an upgrade,
    asks for h2c and the connection can take it now (`idle`: no earlier
    request is being answered or queued)."""
    if not idle or req.chunked or req.method == "CONNECT":
        return False
    upgrade = req.header("upgrade")
    if upgrade is None or "h2c" not in header_tokens(upgrade):
        return False
    settings = [v for k, v in req.headers if k == "http2-settings"]
    return len(settings) == 1 and \
        {"upgrade", "http2-settings"} <= header_tokens(req.header("connection", ""))


def switch_to_h2(conn, preface_bytes=None, upgraded=None, rest=b""):
    """Move `conn` (an H1Connection) to HTTP/2: with the bytes that began
    with the preface, or after `upgraded`, the Upgrade: h2c request whose head
    was read (`rest` is what followed it: its body first, then frames)."""
    if upgraded is not None and upgraded.expect_continue:
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")    # (goes out at the hand-over)
    h2conn = H2Connection(conn.worker, conn.scheme)
    conn.hand_off(h2conn)      # (earlier responses still queued go first)
    h2conn.connection_made(conn.transport, upgraded is None)
    if upgraded is None:
        h2conn.data_received(preface_bytes)
        return h2conn
    settings = upgraded.header("http2-settings").strip().encode("latin-1")
    settings += b"=" * (-len(settings) % 4)     # base64url without its padding
    try:
        h2conn.upgrade(upgraded, settings, upgraded.content_length or 0, rest)
    except Exception:
        # a broken HTTP2-Settings value: nothing was sent yet but the 101
        h2conn.worker.count_rejected(400, "bad HTTP2-Settings", upgraded.client)
        h2conn.close_now()
    return h2conn
