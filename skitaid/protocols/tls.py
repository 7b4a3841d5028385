"""TLS for a server: the SSL context, and the protocol picked by ALPN.

asyncio does the handshake without blocking the loop (a client that connects
and sends nothing costs one idle socket until the handshake timeout);
`connection_made` only comes once it is complete, and then ALPN tells
whether the client speaks HTTP/2 or HTTP/1.1.
"""
import asyncio
import ssl

from .h1 import H1Connection
from .h2 import H2Connection

# Forward secrecy and AEAD only (TLS 1.2); TLS 1.3 suites are all modern.
CIPHERS = ("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
           ":!aNULL:!eNULL:!MD5:!DSS:!SHA1")


def server_context(certfile, keyfile="", passphrase="", http2=True):
    """An SSL context for a server: TLS 1.2+, modern ciphers, ALPN h2/http1.1.

    Raises OSError / ssl.SSLError with a readable message when the files
    cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        ctx.load_cert_chain(certfile, keyfile or None, passphrase or None)
    except (OSError, ssl.SSLError) as e:
        raise ValueError("cannot load the TLS certificate %s (key %s): %s"
                         % (certfile, keyfile or "in the same file", e)) from None
    ctx.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return ctx


class TLSSelector(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the transport to the
    HTTP/2 or HTTP/1.1 connection that ALPN chose."""

    __slots__ = ("worker",)

    def __init__(self, worker):
        self.worker = worker

    def connection_made(self, transport):
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
        pass
