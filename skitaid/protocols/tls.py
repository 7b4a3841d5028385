"""TLS connections: the protocol picked by ALPN once the handshake is done.

The SSL contexts themselves are built in layer 1 (skitaid/tlsctx.py), by the
master before it forks. asyncio does the handshake without blocking the loop
(a client that connects and sends nothing costs one idle socket until the
handshake timeout); `connection_made` only comes once it is complete, and
then ALPN tells whether the client speaks HTTP/2 or HTTP/1.1.
"""
import asyncio

# (the context builders are still importable from here)
from ..tlsctx import CIPHERS, config_context, server_context, sni_names  # noqa: F401
from .h1 import H1Connection
from .host import ConnectionHost
from .h2 import H2Connection


class TLSSelector(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the transport to the
    HTTP/2 or HTTP/1.1 connection that ALPN chose."""

    __slots__ = ("worker", "__weakref__")

    def __init__(self, worker: ConnectionHost):
        # made when the connection is accepted, before the handshake: the
        # worker's graceful stop waits for handshakes still in progress
        self.worker = worker
        worker.handshaking.add(self)

    def connection_made(self, transport):
        self.worker.handshaking.discard(self)
        sslobj = transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if alpn == "h2":
            conn = H2Connection(self.worker, "https")
        else:
            conn = H1Connection(self.worker, "https")
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def data_received(self, data):     # pragma: no cover - replaced before any data
        pass

    def connection_lost(self, exc):
        self.worker.handshaking.discard(self)
