"""Header-field rules that the protocols, the proxy and the clients share.

Kept in one place so that a fix to what counts as hop-by-hop, or to which
bytes a field value may hold, reaches every path at once.
"""

# Meaningful for one connection only (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
))

# Fields a sender may not put in a trailer section (RFC 9110 6.5.1): message
# framing, routing, request modifiers, authentication, and the fields that
# describe the content or how to process it.
FORBIDDEN_IN_TRAILERS = frozenset((
    "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te",
    "trailer", "upgrade", "expect", "max-forwards", "range", "if-match", "if-none-match",
    "if-modified-since", "if-unmodified-since", "if-range", "cache-control", "pragma",
    "authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate",
    "set-cookie", "cookie", "content-type", "content-encoding", "content-range",
    "content-location", "age", "expires", "date", "location", "retry-after", "vary",
    "warning",
))


def header_tokens(value):
    """A comma-separated header value (Connection, Upgrade) as a set of lower-case tokens."""
    return {t.strip().lower() for t in value.split(",")}


def host_without_port(host):
    """"example.com:8080" → "example.com"; "[::1]:80" → "[::1]"; lower-case."""
    if ":" in host and not host.endswith("]"):
        host = host.rpartition(":")[0]
    return host.lower()


def bad_value(value):
    """True when a field name or value holds a byte that may never be sent
    (CR, LF or NUL: RFC 9110 5.5)."""
    return "\n" in value or "\r" in value or "\x00" in value


def trailer_fields(fields):
    """The fields of a received trailer section that may stand as trailers;
    names lower-case. Forbidden ones are dropped, never merged into the head."""
    return [(name, value) for name, value in fields if name not in FORBIDDEN_IN_TRAILERS]
