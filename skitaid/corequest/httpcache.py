"""`was` GET calls through the server's HTTP cache (cachefs), by the same
RFC 9111 rules as the proxy: a fresh entry is the result (its headers carry
Age and X-Cache: HIT); a stale one is revalidated with its validators, and a
304 refreshes it; concurrent calls for one URL make one request.

`use_cache` keeps its meaning: False (or None) looks in no cache (the answer
is still stored), a timestamp or `setlu` key names refuse entries stored
before that time (cache.cache_threshold).
"""
import time

from ..cachefs import rules
from ..cachefs.store import LEADER, NOT_STORED


def base_key(url, member):
    """`was` entries are apart from the proxy's ("P …"); a `.map` call keeps one per member."""
    return "W %s%s" % (url, "" if member is None else " @" + member.host_header)


def _usable(entry, newer_than, now):
    return (entry is not None and newer_than is not None and entry.stored > newer_than
            and entry.fresh(now))


def _hit(cache, entry, word, now):
    return entry.status, entry.reason, cache.served_headers(entry, now, word), entry.body


async def cached_request(cache, send, url, member, headers, newer_than):
    """(status, reason, headers, body) from the cache or from `send(headers)`,
    a coroutine making the request with those headers."""
    base = base_key(url, member)
    started = time.time()
    entry = cache.lookup(base, headers) if newer_than is not None else None
    if _usable(entry, newer_than, started):
        cache.count("hits")
        return _hit(cache, entry, "HIT", started)
    role = await cache.lock(base)
    try:
        if newer_than is not None:
            again = cache.lookup(base, headers)
            if _usable(again, newer_than, time.time()):
                cache.count("hits")
                return _hit(cache, again, "HIT", time.time())
            entry = again or entry
        ask = list(headers)
        if entry is not None:
            ask += rules.validators(entry.headers)
        request_time = time.time()
        status, reason, rheaders, body = await send(ask)
        now = time.time()
        if status == 304 and entry is not None:
            fresh = entry.refreshed([(k, v) for k, v in rheaders if k.lower() not in NOT_STORED],
                                    request_time, now, now)
            cache.replace(fresh)
            cache.count("revalidated")
            return _hit(cache, fresh, "REVALIDATED", now)
        cache.count("misses")
        if (len(body) <= cache.options.max_entry and rules.storable(
                "GET", status, headers, rheaders, cache.options.store_set_cookie) is None):
            cache.store(base, url, headers, status, reason, rheaders, body, request_time, now)
        elif entry is not None and status < 500:
            cache.forget(entry)
        status_header = cache.options.status_header
        if status_header:
            rheaders = list(rheaders) + [(status_header, "MISS")]
        return status, reason, rheaders, body
    finally:
        if role is LEADER:
            cache.release(base)
