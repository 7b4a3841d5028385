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


def sni_names(names):
    """The configured host names a certificate is chosen by: a TLS client names
    no port, and `default`/`*` get the server's own certificate anyway."""
    out = []
    for name in names:
        host, colon, port = name.rpartition(":")
        if colon and port.isdigit() and not host.endswith(("]", ":")):
            name = host
        if name not in ("default", "*"):
            out.append(name)
    return tuple(out)


def config_context(config):
    """The server's SSL context: its own certificate for unknown names and
    clients sending no SNI, and through `sni_callback` each host's own.

    Every context is loaded here, once (the daemon does it before dropping
    privileges). A file that cannot be loaded raises ValueError naming the
    file, section and key it was configured in."""
    c = config
    ctx = server_context(c.certfile, c.keyfile, c.passphrase, c.http2)
    if not c.host_certs:
        return ctx
    loaded = {}
    table = []
    for hc in c.host_certs:
        files = (hc.certfile, hc.keyfile, hc.passphrase)
        if files not in loaded:
            try:
                loaded[files] = server_context(*files, http2=c.http2)
            except ValueError as e:
                file, section = hc.where
                raise ValueError("%s [%s] certfile (for %s): %s" % (
                    file, section, " ".join(hc.names), e)) from None
        table.append((sni_names(hc.names), loaded[files]))
    # The router's own table: SNI names match exactly as Host headers do
    # (exact name, then the longest ".suffix" / "*.suffix").
    from ..routing import Router
    by_name = Router(table)

    def pick(sslobj, server_name, _ctx):
        if server_name:
            host_ctx = by_name.mounts_for(server_name.lower().rstrip("."))
            if host_ctx is not None:
                sslobj.context = host_ctx
        return None                 # go on with the handshake either way

    ctx.sni_callback = pick
    return ctx


class TLSSelector(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the transport to the
    HTTP/2 or HTTP/1.1 connection that ALPN chose."""

    __slots__ = ("worker", "__weakref__")

    def __init__(self, worker):
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
