"""RFC 9111 rules of a shared cache, as pure functions of headers and times.

Headers are lists of (name, value) pairs as the client and the protocols
hand them over; times are POSIX seconds. Nothing here does I/O.
"""
from email.utils import formatdate, parsedate_to_datetime

# statuses stored when the response gives an explicit lifetime (RFC 9110 15.1
# lists the heuristically cacheable ones; 206 needs range handling and is not kept)
STORABLE_STATUS = frozenset((200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501))

# fields of a 304 that never replace the stored ones (RFC 9111 3.2)
_NOT_UPDATED = frozenset(("content-length", "content-encoding", "transfer-encoding",
                          "content-range", "content-type"))

# client no-cache rules ([cachefs] client_no_cache)
IGNORE, REVALIDATE = "ignore", "revalidate"


def header(headers, name):
    """All values of `name` joined by ", " (None when absent)."""
    name = name.lower()
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def cache_control(value):
    """'max-age=60, no-cache="set-cookie", public' → {"max-age": "60",
    "no-cache": "set-cookie", "public": None}. Names are lowercased; the first
    of a repeated directive wins."""
    out = {}
    if not value:
        return out
    for part in _split_commas(value):
        name, eq, arg = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg = arg.strip()
        if eq and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        out.setdefault(name, arg if eq else None)
    return out


def _split_commas(value):
    """Split on commas outside quoted strings."""
    parts, start, quoted = [], 0, False
    for i, c in enumerate(value):
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def seconds(arg):
    """A delta-seconds argument → int, None when malformed (RFC 9111 1.2.2)."""
    if arg is None or not arg.isdigit():
        return None
    return min(int(arg), 2 ** 31)


def http_date(value):
    """An HTTP date → POSIX seconds, None when it is not one."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def format_date(when):
    return formatdate(when, usegmt=True)


def field_names(value):
    """A list of field names (Vary, no-cache="…") lowercased, in order, once each."""
    out = []
    for name in (value or "").split(","):
        name = name.strip().lower()
        if name and name not in out:
            out.append(name)
    return out


def request_bypass(method, req_headers, client_rule=IGNORE):
    """Why this request cannot use the cache at all (a string), or None.
    Only GET and HEAD are cached. With client_rule REVALIDATE a client's
    `no-store` also goes around it."""
    if method not in ("GET", "HEAD"):
        return "method"
    if client_rule == REVALIDATE:
        cc = cache_control(header(req_headers, "cache-control"))
        if "no-store" in cc:
            return "no-store request"
    return None


def client_wants_revalidation(req_headers, client_rule=IGNORE):
    """A client's no-cache (or max-age=0, or Pragma: no-cache) asks for the
    origin's word; honoured only with client_rule REVALIDATE."""
    if client_rule != REVALIDATE:
        return False
    cc = cache_control(header(req_headers, "cache-control"))
    if "no-cache" in cc or seconds(cc.get("max-age", "x")) == 0:
        return True
    if not cc and "no-cache" in (header(req_headers, "pragma") or "").lower():
        return True
    return False


def storable(method, status, req_headers, resp_headers, store_set_cookie=False):
    """None when a shared cache may store this response, else why not (RFC 9111 3)."""
    if method != "GET":
        return "method"
    if status not in STORABLE_STATUS:
        return "status"
    rcc = cache_control(header(req_headers, "cache-control"))
    if "no-store" in rcc:
        return "no-store request"
    cc = cache_control(header(resp_headers, "cache-control"))
    if "no-store" in cc:
        return "no-store"
    if "private" in cc and cc["private"] is None:
        return "private"
    if header(req_headers, "authorization") is not None and not (
            "public" in cc or "s-maxage" in cc or "must-revalidate" in cc):
        return "authorization"
    if "*" in field_names(header(resp_headers, "vary")):
        return "vary *"
    if not store_set_cookie and header(resp_headers, "set-cookie") is not None:
        return "set-cookie"
    # only explicit lifetimes are stored (no heuristic freshness); a no-cache
    # response is kept when it can be revalidated
    if freshness_lifetime(resp_headers) is None:
        if "no-cache" in cc and (header(resp_headers, "etag") or
                                 header(resp_headers, "last-modified")):
            return None
        return "no lifetime"
    return None


def freshness_lifetime(headers, response_time=None):
    """Seconds the response is fresh for: s-maxage, then max-age, then
    Expires − Date (RFC 9111 4.2.1); None when it gives none. A malformed
    Expires (or "0") means already expired."""
    cc = cache_control(header(headers, "cache-control"))
    if "s-maxage" in cc:
        value = seconds(cc["s-maxage"])
        return 0 if value is None else value
    if "max-age" in cc:
        value = seconds(cc["max-age"])
        return 0 if value is None else value
    expires = header(headers, "expires")
    if expires is not None:
        when = http_date(expires)
        if when is None:
            return 0
        date = http_date(header(headers, "date"))
        if date is None:
            date = response_time
        if date is None:
            return 0
        return max(0, int(when - date))
    return None


def current_age(headers, request_time, response_time, now):
    """The entry's age in seconds (RFC 9111 4.2.3)."""
    date = http_date(header(headers, "date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    age_value = seconds((header(headers, "age") or "").split(",")[0].strip()) or 0
    corrected = age_value + max(0.0, response_time - request_time)
    return max(apparent, corrected) + max(0.0, now - response_time)


def must_revalidate(headers):
    """no-cache on the response: every use asks the origin first."""
    cc = cache_control(header(headers, "cache-control"))
    return "no-cache" in cc and cc["no-cache"] is None


def may_serve_stale(headers):
    """must-revalidate / proxy-revalidate / s-maxage forbid serving stale (4.2.4)."""
    cc = cache_control(header(headers, "cache-control"))
    return not ("must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc
                or "no-cache" in cc)


def validators(headers):
    """The conditional fields that revalidate a stored response (4.3.1)."""
    out = []
    etag = header(headers, "etag")
    if etag:
        out.append(("If-None-Match", etag))
    modified = header(headers, "last-modified")
    if modified:
        out.append(("If-Modified-Since", modified))
    return out


def refreshed_headers(stored, fresh):
    """A 304's fields replace the stored ones of the same name (RFC 9111 4.3.4),
    except those describing the stored body."""
    names = {k.lower() for k, _ in fresh if k.lower() not in _NOT_UPDATED}
    kept = [(k, v) for k, v in stored if k.lower() not in names]
    return kept + [(k, v) for k, v in fresh if k.lower() in names]


def vary_key(vary_names, req_headers):
    """The request's values of the fields the response varies on, normalised:
    one string per name, whitespace around commas removed."""
    parts = []
    for name in vary_names:
        value = header(req_headers, name)
        if value is not None:
            value = ",".join(p.strip() for p in value.split(","))
        parts.append("%s:%s" % (name, "" if value is None else value))
    return "\n".join(parts)


def not_modified(req_headers, resp_headers):
    """True when the client's own conditionals match the stored response
    (the cache may answer 304 itself; RFC 9110 13.2.2)."""
    inm = header(req_headers, "if-none-match")
    etag = header(resp_headers, "etag")
    if inm is not None:
        if etag is None:
            return False
        if inm.strip() == "*":
            return True
        want = etag.strip()
        weak = want[2:] if want.startswith("W/") else want
        for tag in inm.split(","):
            tag = tag.strip()
            if (tag[2:] if tag.startswith("W/") else tag) == weak:
                return True
        return False
    ims = http_date(header(req_headers, "if-modified-since"))
    modified = http_date(header(resp_headers, "last-modified"))
    return ims is not None and modified is not None and modified <= ims


# fields of a stored response that a 304 from the cache carries (RFC 9110 15.4.5)
NOT_MODIFIED_FIELDS = frozenset(("cache-control", "content-location", "date", "etag",
                                 "expires", "vary", "last-modified"))
