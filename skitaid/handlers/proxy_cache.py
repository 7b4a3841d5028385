"""The reverse (and forward) proxy through the server's HTTP cache (cachefs).

A GET or HEAD is answered from the cache while its entry is fresh (HIT);
a miss goes to the backend and streams to the client while the body is
kept, up to `max_entry` (MISS); an entry past its freshness (or marked
no-cache) is asked about with its validators, fetched whole, and a 304
refreshes it (REVALIDATED); when the backend fails or times out and
`use_stale` allows it, the stale entry is served (STALE). Requests the
cache does not take (other methods, bodies, a client's no-store under
client_no_cache = revalidate) go straight on (BYPASS).

Concurrent misses for one key make one backend request (cachefs.store:
Cache.lock); the others answer from what it stored.
"""
import asyncio
import time

from ..cachefs import rules
from ..cachefs.store import LEADER, NOT_STORED, stale_allowed
from ..corequest.client import ConnectFailed, ProtocolError, http_request
from ..http.headers import HOP_BY_HOP
from ..logs import error_log
from .errors import error_response

# a client's conditionals go to the backend only on requests the cache does not take:
# a miss must fetch the whole response to keep it, and answers the client's itself
SAFE = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
CONDITIONALS = frozenset(("if-none-match", "if-modified-since", "if-match",
                          "if-unmodified-since", "if-range"))


def cache_key(request):
    """The URL the client asked for: absolute for the forward proxy, else
    scheme://host + target (virtual hosts never share entries)."""
    target = request.target
    if target.startswith(("http://", "https://")):
        return "P " + target
    host = (request.header("host") or "").lower()
    return "P %s://%s%s" % (request.scheme, host, target)


def serve(exchange, cache, entry, word, now=None):
    """Answer from `entry`; a 304 when the client's own conditionals match."""
    request = exchange.request
    now = time.time() if now is None else now
    headers = cache.served_headers(entry, now, word)
    exchange.t_handled = time.monotonic()
    if entry.status == 200 and rules.not_modified(request.headers, entry.headers):
        keep = [(k, v) for k, v in headers if k.lower() in rules.NOT_MODIFIED_FIELDS
                or k.lower() == "age" or k == cache.options.status_header]
        exchange.respond("304 Not Modified", keep)
    else:
        exchange.respond("%d %s" % (entry.status, entry.reason), headers, entry.body)
    cache.count({"HIT": "hits", "REVALIDATED": "revalidated", "STALE": "stale"}.get(word,
                                                                                    "misses"))


def _with_status(cache, word):
    header = cache.options.status_header
    return ((header, word),) if header else ()


class _Tee:
    """Mixed into the proxy's sink (handler.Stream): relays the backend's
    response as it does and keeps a copy of a storable one for the cache (up
    to max_entry bytes)."""

    cache = base = request_headers = None   # set by the factory below

    def on_head(self, status, reason, headers, conn):
        self.extra = _with_status(self.cache, "MISS")
        self.buf = None
        if status != 101:
            o = self.cache.options
            length = rules.header(headers, "content-length")
            chunked = "chunked" in (rules.header(headers, "transfer-encoding") or "").lower()
            framed = chunked or (length is not None and length.isdigit())
            small = length is None or (length.isdigit() and int(length) <= o.max_entry)
            if framed and small and self.exchange.request.method == "GET" and rules.storable(
                    "GET", status, self.request_headers, headers, o.store_set_cookie) is None:
                self.buf = bytearray()
                self.length = int(length) if length is not None and not chunked else None
                self.status, self.reason = status, reason
                self.headers = [(k, v) for k, v in headers
                                if k.lower() not in NOT_STORED and k.lower() not in HOP_BY_HOP]
        super().on_head(status, reason, headers, conn)

    def on_body(self, data):
        buf = self.buf
        if buf is not None:
            if len(buf) + len(data) > self.cache.options.max_entry:
                self.buf = None             # too big to keep: it only passes through
            else:
                buf += data
        super().on_body(data)

    def on_end(self, keep_alive):
        buf = self.buf
        if buf is not None and self.switch is None and (self.length is None
                                                        or self.length == len(buf)):
            self.buf = None
            try:
                self.cache.store(self.base, self.exchange.request.target, self.request_headers,
                                 self.status, self.reason, self.headers, bytes(buf),
                                 self.request_time, time.time())
            except Exception:
                error_log.exception("cachefs: storing %s", self.base)
        super().on_end(keep_alive)


def _tee(handler, cache, base, request_headers):
    started = time.time()
    return type("Tee", (_Tee, handler.Stream), {"cache": cache, "base": base,
                                 "request_headers": request_headers,
                                 "request_time": started})


def _backend_headers(handler, request, entry=None):
    headers = [(k, v) for k, v in handler._headers(request) if k.lower() not in CONDITIONALS]
    if entry is not None:
        headers.extend(rules.validators(entry.headers))
    return headers


def serve_fresh(handler, exchange, cache):
    """Answer from a fresh entry at once (True), without a task; False: the
    request takes the whole way (through_cache)."""
    request = exchange.request
    if request.method not in ("GET", "HEAD") or request.header("upgrade") is not None:
        return False
    o = cache.options
    if o.client_no_cache != rules.IGNORE and (
            rules.request_bypass(request.method, request.headers, o.client_no_cache)
            or rules.client_wants_revalidation(request.headers, o.client_no_cache)):
        return False
    if handler.framing(request):
        return False
    entry = cache.lookup(cache_key(request), request.headers)
    if entry is None:
        return False
    now = time.time()
    if not entry.fresh(now):
        return False
    serve(exchange, cache, entry, "HIT", now)
    return True


async def through_cache(handler, exchange, cluster, target, cache):
    request = exchange.request
    o = cache.options
    rh = request.headers
    if rules.request_bypass(request.method, rh, o.client_no_cache) or handler.framing(request):
        cache.count("bypass")
        sink = _bypass(handler, cache)
        await handler.forward(exchange, cluster, target, sink=sink)
        if request.method not in SAFE and 200 <= sink.status < 400:
            # an unsafe method that worked changed what the URL holds (RFC 9111 4.4)
            cache.drop(cache_key(request))
        return
    base = cache_key(request)
    started = time.time()
    must_ask = rules.client_wants_revalidation(rh, o.client_no_cache)
    entry = cache.lookup(base, rh)
    if entry is not None and not must_ask and entry.fresh(started):
        serve(exchange, cache, entry, "HIT", started)
        return
    role = await cache.lock(base)
    try:
        again = cache.lookup(base, rh)
        if again is not None and again.fresh(time.time()) and (
                not must_ask or again.stored >= started):
            serve(exchange, cache, again, "HIT")
            return
        entry = again or entry
        if exchange.closed:
            return
        if entry is None:
            cache.count("misses")
            await handler.forward(exchange, cluster, target, sink=_tee(handler, cache, base, rh),
                                  headers=_backend_headers(handler, request))
        else:
            await _refresh(handler, exchange, cluster, target, cache, base, entry)
    finally:
        if role is LEADER:
            cache.release(base)


def _bypass(handler, cache):
    extra = _with_status(cache, "BYPASS")

    class Bypass(handler.Stream):
        status = 0              # the last answer's, on the class: forward() makes instances

        def on_head(self, status, reason, headers, conn):
            self.extra = extra
            type(self).status = status
            super().on_head(status, reason, headers, conn)
    return Bypass


async def _refresh(handler, exchange, cluster, target, cache, base, entry):
    """`entry` is stale (or no-cache): ask the backend, with its validators."""
    request = exchange.request
    o = cache.options
    headers = _backend_headers(handler, request, entry)
    pool = handler.worker.corequests.pool
    why = answer = None
    request_time = time.time()
    try:
        answer = await asyncio.wait_for(cluster.call(lambda m: http_request(
            pool, m.key, "GET", target, headers, b"", m.host_header, max_size=o.max_entry)),
            handler.timeout)
    except asyncio.TimeoutError:
        why = "timeout"
    except ProtocolError as e:
        if "larger than" in str(e):         # grew past max_entry: it streams, uncached
            cache.forget(entry)
            cache.count("misses")
            await handler.forward(exchange, cluster, target,
                                  sink=_tee(handler, cache, base, request.headers),
                                  headers=_backend_headers(handler, request))
            return
        why = "error"
    except (ConnectFailed, ConnectionError, OSError) as e:
        error_log.warning("cachefs: revalidating %s: %s", base, e)
        why = "error"
    now = time.time()
    if why is None:
        status, reason, rheaders, body = answer
        if status == 304:
            fresh = entry.refreshed([(k, v) for k, v in rheaders if k.lower() not in NOT_STORED],
                                    request_time, now, now)
            cache.replace(fresh)
            serve(exchange, cache, fresh, "REVALIDATED", now)
            return
        if status >= 500:
            why = "error"
    if why is not None:
        if stale_allowed(o, entry, now, why):
            serve(exchange, cache, entry, "STALE", now)
            return
        if answer is None:
            cache.count("misses")
            exchange.respond(*error_response(504 if why == "timeout" else 502))
            return
    elif rules.storable("GET", status, request.headers, rheaders, o.store_set_cookie) is None:
        stored = cache.store(base, request.target, request.headers, status, reason, rheaders,
                             body, request_time, now)
        serve(exchange, cache, stored, "MISS", now)
        return
    else:
        cache.forget(entry)         # replaced by something that may not be kept
    cache.count("misses")
    out = [(k, v) for k, v in rheaders if k.lower() not in NOT_STORED
           and k.lower() not in HOP_BY_HOP]
    out.extend(_with_status(cache, "MISS"))
    exchange.t_handled = time.monotonic()
    exchange.respond("%d %s" % (status, reason), out, body)
