"""Range on a WSGI app's complete answer (0.35: "enable Range header to WSGI
content"): an app that returned its whole 200 body with a known length,
without handling Range itself, still gets a 206 (or 416) for a GET asking
for one byte range. Several ranges, a non-200 status, an app's own
Content-Range or a stale If-Range get the app's answer unchanged.
"""
from .static import _UNSATISFIABLE, _parse_range


def _header(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _if_range_holds(value, headers):
    """If-Range still names this answer: the same strong ETag or, with no
    ETag in the answer, the same Last-Modified date (RFC 9110 §13.1.5)."""
    value = value.strip()
    etag = _header(headers, "etag")
    if value[:1] == '"' or value[:2] == "W/":
        return etag is not None and not etag.startswith("W/") and value == etag.strip()
    last_modified = _header(headers, "last-modified")
    return last_modified is not None and value == last_modified.strip()


def ranged(request, status, headers, body):
    """(status, headers, body) to send: the app's, or its 206/416 form."""
    if request.method != "GET" or not status.startswith("200"):
        return status, headers, body
    rng = request.header("range")
    if rng is None or _header(headers, "content-range") is not None:
        return status, headers, body
    if (_header(headers, "accept-ranges") or "").strip().lower() == "none":
        return status, headers, body            # the app said it serves no ranges
    if_range = request.header("if-range")
    if if_range is not None and not _if_range_holds(if_range, headers):
        return status, headers, body
    size = len(body)
    length = _header(headers, "content-length")
    if length is not None and length.strip() != str(size):
        return status, headers, body            # not what it says: the framing checks that
    r = _parse_range(rng, size)
    if r is None:
        return status, headers, body
    kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
    if r == _UNSATISFIABLE:
        return ("416 Range Not Satisfiable", [(k, v) for k, v in kept if k.lower() not in (
            "content-type", "etag", "last-modified")] + [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Range", "bytes */%d" % size)], b"")
    a, b = r
    return ("206 Partial Content", kept + [("Content-Range", "bytes %d-%d/%d" % (a, b, size))],
            body[a:b + 1])
