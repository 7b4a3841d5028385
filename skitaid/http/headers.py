"""Header-field rules that the protocols, the proxy and the clients share.

Kept in one place so that a fix to what counts as hop-by-hop, or to which
bytes a field value may hold, reaches every path at once.
"""
import re

# Meaningful for one connection only (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
))

# Methods that define a meaning for content: a request of these without a body
# still says so with Content-Length: 0 (RFC 9110 8.6).
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))

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


# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
# "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# a request target as it may stand in a request line: visible ASCII, no space
_TARGET = re.compile(r"[!-~]+\Z")


def is_token(name):
    """True for a valid field name or method (RFC 9110 5.1, 9.1)."""
    return _TOKEN.match(name) is not None


# Response field names already found valid: apps send the same few names on
# every response, so the check is a set lookup after the first time. Bounded,
# so that names made up per request cannot grow it without end.
KNOWN_NAMES = set()
_KNOWN_MAX = 4096


def response_field_error(name, value):
    """Why a response field can never be sent ("" when it can): its name must
    be a token (RFC 9110 5.1) and its value hold no CR, LF or NUL (5.5). Both
    protocols apply this one rule; HTTP/1.1 checks the values of a whole head
    at once (see protocols/h1.py) and comes here to name the culprit."""
    if name not in KNOWN_NAMES:
        if not is_token(name):
            return "response header name %r is not a token" % name
        if len(KNOWN_NAMES) < _KNOWN_MAX:
            KNOWN_NAMES.add(name)
    if bad_value(value):
        return "CR, LF or NUL in response header %r" % name
    return ""


def is_request_target(target):
    """True when `target` can be written in an HTTP/1.1 request line as it is:
    non-empty visible ASCII, no whitespace (RFC 9112 3.2)."""
    return _TARGET.match(target) is not None


def trailer_fields(fields):
    """The fields of a received trailer section that may stand as trailers;
    names lower-case. Forbidden ones are dropped, never merged into the head."""
    return [(name, value) for name, value in fields if name not in FORBIDDEN_IN_TRAILERS]
