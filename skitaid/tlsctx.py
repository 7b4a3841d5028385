"""A server's SSL contexts: certificates, passphrases, ALPN, SNI (layer 1).

The master builds them before it forks, so that every worker of a server
inherits the same context. OpenSSL gives each context its own random
session-ticket key when it is made, so one context shared by all workers
means one ticket key: a ticket issued by any worker resumes on every other
(TLS 1.3 and TLS 1.2 tickets alike).

Reloads. Python's ssl module can neither set nor read a context's ticket
keys (no SSL_CTX_set_tlsext_ticket_keys, no ticket-key callback), so a key
cannot be rotated while the previous one still decrypts: a new key means a
new context, and tickets under the old key then get a full handshake (never
an error). `ContextCache` therefore keeps a server's context across reloads
while what it was built from is unchanged (the settings, and the bytes of
every certificate and key file), so tickets issued before a reload keep
resuming after it; it builds a new one, and with it a new key, when a file
or setting changes, or at the first reload after the key is
TICKET_KEY_MAX_AGE old. A restart always makes new keys.

Session IDs (TLS 1.2 clients that do not take tickets) resume only on the
worker that made them: OpenSSL keeps that cache in each process's memory and
Python exposes no external cache callbacks to share it. Tickets are what
resumes across workers.
"""
import hashlib
import ssl
import time

from .hosts import HostTable

# Forward secrecy and AEAD only (TLS 1.2); TLS 1.3 suites are all modern.
CIPHERS = ("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
           ":!aNULL:!eNULL:!MD5:!DSS:!SHA1")

# A reload after this long rotates the ticket key even if no file changed.
TICKET_KEY_MAX_AGE = 24 * 3600.0


def server_context(certfile, keyfile="", passphrase="", http2=True):
    """An SSL context for a server: TLS 1.2+, modern ciphers, ALPN h2/http1.1.

    Raises ValueError naming the files when they cannot be loaded."""
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

    Every certificate is loaded here, once. A file that cannot be loaded
    raises ValueError naming the file, section and key it was configured in."""
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
    # SNI names match as Host headers do (exact name, then the longest suffix)
    by_name = HostTable(table)

    def pick(sslobj, server_name, _ctx):
        if server_name:
            host_ctx = by_name.lookup(server_name)
            if host_ctx is not None:
                sslobj.context = host_ctx
        return None                 # go on with the handshake either way

    # (the host contexts are made here too: whichever context seals a ticket,
    # every worker holds that same context)
    ctx.sni_callback = pick
    return ctx


def _spec(config):
    """The settings a server's contexts are built from."""
    hosts = tuple((hc.names, hc.certfile, hc.keyfile, hc.passphrase) for hc in config.host_certs)
    return (config.certfile, config.keyfile, config.passphrase, config.http2, hosts)


def _files_digest(spec):
    """A digest of every certificate and key file's bytes (None if one cannot
    be read: then the context is built again and says why it cannot)."""
    certfile, keyfile, _, _, hosts = spec
    paths = [certfile, keyfile] + [p for h in hosts for p in (h[1], h[2])]
    h = hashlib.sha256()
    for path in paths:
        if not path:
            h.update(b"-\0")
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        h.update(b"%d\0" % len(data))
        h.update(data)
    return h.digest()


class ContextCache:
    """Each server's SSL context, kept across reloads while it is unchanged
    (see the module's docstring). Lives in the master."""

    def __init__(self, clock=time.monotonic, max_age=TICKET_KEY_MAX_AGE):
        self.clock = clock
        self.max_age = max_age
        self._by_server = {}        # name → (spec, digest, context, built at)

    def build(self, config):
        """The context for `config` (a ServerConfig with ssl on): the one built
        before if nothing changed, else a new one. Raises ValueError naming the
        file when a certificate or passphrase does not load."""
        spec = _spec(config)
        digest = _files_digest(spec)
        known = self._by_server.get(config.name)
        now = self.clock()
        if (known is not None and digest is not None and known[:2] == (spec, digest)
                and now - known[3] < self.max_age):
            return known[2]
        ctx = config_context(config)
        self._by_server[config.name] = (spec, digest, ctx, now)
        return ctx

    def get(self, name):
        """The context last built for server `name`, or None."""
        known = self._by_server.get(name)
        return known[2] if known is not None else None

    def retain(self, names):
        """Forget the servers not in `names` (removed by a reload)."""
        for name in list(self._by_server):
            if name not in names:
                del self._by_server[name]
