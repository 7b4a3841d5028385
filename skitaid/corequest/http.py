"""HTTP corequests: from a `was.get(...)`-style call to a Task.

`build()` runs in the app thread: it resolves the URL or `@alias`, encodes
the body, adds the transaction-ID headers and looks in the result cache;
only then is the coroutine scheduled on the loop. A call on an alias goes
to one member (fewest in flight per weight) and fails over to the next one
when a connection cannot be made; `.map` sends to every member.
"""
import base64
import hashlib
import json
import mimetypes
import os
import uuid
from urllib.parse import urlencode, urlsplit

from ..version import __version__
from .cache import LazyKey, cache_threshold, cached_task, max_age, spread
from .client import http_request
from .httpcache import cached_request
from .cluster import host_header
from .task import DEFAULT_TIMEOUT, STA_NORMAL, Result, bounded, failed_task, get_header

USER_AGENT = "skitaid/" + __version__
DEFAULT_READ_TIMEOUT = 60.0


def header_list(headers):
    if not headers:
        return []
    if isinstance(headers, dict):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _multipart(fields):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        filename = ctype = None
        if isinstance(value, tuple):              # (filename, content or file, [type])
            spec = value
            filename, value = spec[0], spec[1]
            if len(spec) > 2:
                ctype = spec[2]
        if hasattr(value, "read"):
            filename = filename or os.path.basename(getattr(value, "name", "") or name)
            value = value.read()
        if filename is not None:
            ctype = ctype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
            head = ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                    "Content-Type: %s\r\n\r\n" % (boundary, name, filename, ctype))
        else:
            head = '--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif not isinstance(value, (bytes, bytearray)):
            value = str(value).encode("utf-8")
        parts.append(head.encode("utf-8") + bytes(value) + b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode("ascii"))
    return b"".join(parts), "multipart/form-data; boundary=" + boundary


def encode_body(data, headers, upload=False):
    """(body bytes, headers with Content-Type) — JSON for dicts and lists by default."""
    if data is None:
        return b"", headers
    ctype = get_header(headers, "content-type")
    if upload:
        body, ctype = _multipart(data)
        return body, [h for h in headers if h[0].lower() != "content-type"] + [("Content-Type", ctype)]
    if isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
        default = "application/octet-stream"
    elif isinstance(data, str):
        body = data.encode("utf-8")
        default = "text/plain; charset=utf-8"
    elif ctype and ctype.lower().startswith("application/x-www-form-urlencoded"):
        body = urlencode(data, doseq=True).encode("ascii")
        default = ctype
    elif ctype and ctype.lower().startswith("multipart/form-data"):
        return encode_body(data, headers, True)
    else:
        body = json.dumps(data).encode("utf-8")
        default = "application/json"
    if ctype is None:
        headers = headers + [("Content-Type", default)]
    return body, headers


class Target:
    """Where a call goes: an alias cluster or one origin (key, Host header),
    and the request target."""

    __slots__ = ("cluster", "key", "host_header", "path")

    def __init__(self, cluster, key, path):
        self.cluster = cluster
        self.key = key
        self.host_header = host_header(*key) if key is not None else None
        self.path = path


def resolve(engine, url):
    """'@alias/path?q' or 'http(s)://host[:port]/path?q' → Target; ValueError/LookupError."""
    if url.startswith("@"):
        name, slash, rest = url[1:].partition("/")
        name, _, query = name.partition("?")
        path = "/" + rest if slash else "/"
        if query:
            path += "?" + query
        cluster = engine.clusters.get(name)
        if cluster is None:
            if name in engine.aliases:
                raise LookupError("alias @%s is not an HTTP cluster" % name)
            raise LookupError("unknown alias @%s" % name)
        if not cluster.members:
            raise LookupError("alias @%s has no members" % name)
        return Target(cluster, None, path)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL or @alias: %r" % url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(None, (parts.scheme, parts.hostname, port), path)


def with_query(path, query):
    if not query:
        return path
    return path + ("&" if "?" in path else "?") + urlencode(query, doseq=True)


async def _call(engine, method, target, member, headers, body, timeout, cache_key,
                auto_cache, meta, parse, url="", newer_than=None):
    pool = engine.pool

    def send(headers):
        if target.cluster is None:
            return http_request(pool, target.key, method, target.path, headers, body,
                                target.host_header)
        return target.cluster.call(lambda m: http_request(
            pool, m.key, method, target.path, headers, body, m.host_header), member)
    cachefs = engine.cachefs
    if cachefs is not None and method == "GET" and not body:
        # the HTTP cache: by the response's own headers, in memory and on disk
        status, reason, rheaders, content = await bounded(cached_request(
            cachefs, send, url, member, headers, newer_than), timeout)
        auto_cache = False
    else:
        # one bound for the whole call: every member tried, every attempt on each
        status, reason, rheaders, content = await bounded(send(headers), timeout)
    result = Result(STA_NORMAL, status, reason, rheaders, content, meta=meta)
    if parse is not None:
        parse(result)
    if auto_cache and status == 200 and method == "GET":
        seconds = max_age(rheaders)
        if seconds:
            engine.cache.put(cache_key(), result, seconds)
    return result


def build(engine, method, url, data=None, headers=None, auth=None, use_cache=True,
          timeout=None, mode="lb", txn_headers=(), meta=None, parse=None, upload=False,
          accept="application/json"):
    """A Task (or, for mode 'map', Tasks with one Task per member)."""
    meta = {} if meta is None else meta
    try:
        target = resolve(engine, url)
        hdrs = header_list(headers)
        if accept and get_header(hdrs, "accept") is None:
            hdrs.append(("Accept", accept))
        if get_header(hdrs, "user-agent") is None:
            hdrs.append(("User-Agent", USER_AGENT))
        if auth:
            if isinstance(auth, (tuple, list)):
                token = base64.b64encode(("%s:%s" % tuple(auth[:2])).encode("utf-8")).decode("ascii")
                hdrs.append(("Authorization", "Basic " + token))
            else:
                hdrs.append(("Authorization", str(auth)))
        # (the request writers add Content-Length from the body they send)
        body, hdrs = encode_body(data, hdrs, upload)
        hdrs.extend(txn_headers)
    except (ValueError, LookupError, TypeError) as e:
        return failed_task(e, meta)
    read_timeout = DEFAULT_READ_TIMEOUT if timeout is None else timeout
    newer_than = cache_threshold(use_cache, engine.server_name)

    # made, and the body hashed, only when a cache is looked in or filled
    cache_key = LazyKey(lambda: (method, url, hashlib.sha1(body).hexdigest() if body else ""))

    def one(member, key):
        return cached_task(engine, key, newer_than, lambda: _call(
            engine, method, target, member, hdrs, body, read_timeout, key,
            newer_than is not None, meta, parse, url, newer_than), meta, timeout)

    return spread(mode, target.cluster, cache_key, one,
                  DEFAULT_TIMEOUT if timeout is None else timeout)
