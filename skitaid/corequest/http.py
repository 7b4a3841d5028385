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
from .cache import max_age
from .client import ConnectFailed, http_request
from .task import STA_NORMAL, STA_REQFAIL, Result, Task, Tasks

USER_AGENT = "skitaid/" + __version__
DEFAULT_READ_TIMEOUT = 60.0
BODY_METHODS = ("POST", "PUT", "PATCH")


def header_list(headers):
    if not headers:
        return []
    if isinstance(headers, dict):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _get(headers, name):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


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


def encode_body(method, data, headers, upload=False):
    """(body bytes, headers with Content-Type) — JSON for dicts and lists by default."""
    if data is None:
        return b"", headers
    ctype = _get(headers, "content-type")
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
        return encode_body(method, data, headers, True)
    else:
        body = json.dumps(data).encode("utf-8")
        default = "application/json"
    if ctype is None:
        headers = headers + [("Content-Type", default)]
    return body, headers


class Target:
    """Where a call goes: an alias cluster or one origin, and the request target."""

    __slots__ = ("cluster", "key", "path", "url")

    def __init__(self, cluster, key, path, url):
        self.cluster = cluster
        self.key = key
        self.path = path
        self.url = url


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
        return Target(cluster, None, path, url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL or @alias: %r" % url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(None, (parts.scheme, parts.hostname, port), path, url)


def with_query(path, query):
    if not query:
        return path
    return path + ("&" if "?" in path else "?") + urlencode(query, doseq=True)


async def _send(engine, method, target, member_key, headers, body, read_timeout):
    pool = engine.pool
    if target.cluster is None:
        return await http_request(pool, target.key, method, target.path, headers, body,
                                  read_timeout=read_timeout)
    cluster = target.cluster
    if member_key is not None:
        members = [m for m in cluster.members if m.key == member_key]
    else:
        members = cluster.order()
    last = None
    for member in members:
        member.inflight += 1
        try:
            response = await http_request(pool, member.key, method, target.path, headers, body,
                                          read_timeout=read_timeout)
        except ConnectFailed as e:
            # nothing was sent: any method may go to the next member
            cluster.failed(member)
            last = e
            continue
        finally:
            member.inflight -= 1
        cluster.succeeded(member)
        return response
    raise last or ConnectFailed("no member of @%s answered" % cluster.name)


async def _call(engine, method, target, member_key, headers, body, read_timeout, cache_key,
                auto_cache, meta, parse):
    status, reason, rheaders, content = await _send(engine, method, target, member_key,
                                                     headers, body, read_timeout)
    result = Result(STA_NORMAL, status, reason, rheaders, content, meta=meta)
    if parse is not None:
        parse(result)
    if cache_key is not None:
        result.key = cache_key
        result.cache_store = engine.cache
        if auto_cache and status == 200 and method == "GET":
            seconds = max_age(rheaders)
            if seconds:
                engine.cache.put(cache_key, result, seconds)
    return result


def cache_threshold(use_cache):
    """use_cache → the time a cached entry must be newer than (None: don't look)."""
    if use_cache is False or use_cache is None:
        return None
    if use_cache is True:
        return 0.0
    if isinstance(use_cache, (int, float)):
        return float(use_cache)
    from .. import was
    keys = (use_cache,) if isinstance(use_cache, str) else tuple(use_cache)
    return was.getlu(*keys)


def build(engine, method, url, data=None, headers=None, auth=None, use_cache=True,
          timeout=None, mode="lb", txn_headers=(), meta=None, parse=None, upload=False,
          accept="application/json"):
    """A Task (or, for mode 'map', Tasks with one Task per member)."""
    meta = {} if meta is None else meta
    try:
        target = resolve(engine, url)
        hdrs = header_list(headers)
        if _get(hdrs, "accept") is None and accept:
            hdrs.append(("Accept", accept))
        if _get(hdrs, "user-agent") is None:
            hdrs.append(("User-Agent", USER_AGENT))
        if auth:
            if isinstance(auth, (tuple, list)):
                token = base64.b64encode(("%s:%s" % tuple(auth[:2])).encode("utf-8")).decode("ascii")
                hdrs.append(("Authorization", "Basic " + token))
            else:
                hdrs.append(("Authorization", str(auth)))
        body, hdrs = encode_body(method, data, hdrs, upload)
        if body or method in BODY_METHODS:
            hdrs.append(("Content-Length", str(len(body))))
        hdrs.extend(txn_headers)
    except (ValueError, LookupError, TypeError) as e:
        return Task(result=Result(STA_REQFAIL, error=e, meta=meta), meta=meta)
    read_timeout = DEFAULT_READ_TIMEOUT if timeout is None else timeout
    newer_than = cache_threshold(use_cache)
    cache_key = (method, url, hashlib.sha1(body).hexdigest() if body else "")

    def one(member_key):
        key = cache_key if member_key is None else cache_key + (member_key,)
        if newer_than is not None:
            hit = engine.cache.get(key, newer_than)
            if hit is not None:
                return Task(result=hit, meta=meta)
        return Task(engine, _call(engine, method, target, member_key, hdrs, body, read_timeout,
                                  key, newer_than is not None, meta, parse),
                    cache_key=key, cache_store=engine.cache, meta=meta)

    if mode == "map" and target.cluster is not None:
        return Tasks([one(m.key) for m in target.cluster.members],
                     timeout=read_timeout)
    return one(None)
