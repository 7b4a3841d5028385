"""The per-worker result cache: a bounded LRU of corequest Results.

Entries carry when they were stored, so `use_cache=<timestamp>` (what
`was.getlu()` returns) can refuse anything older than the last update.
Used from app threads, hence the lock.
"""
import collections
import threading
import time

from .. import shared
from .task import Task, Tasks


class ResultCache:
    def __init__(self, max_entries=200):
        self.max_entries = max_entries
        self._entries = collections.OrderedDict()    # key → (result, expires, stored)
        self._lock = threading.Lock()
        self.hits = 0               # for the status page and metrics
        self.misses = 0

    def get(self, key, newer_than=0.0):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                result, expires, stored = entry
                if expires > time.time() and stored > newer_than:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return result
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key, result, timeout):
        if self.max_entries <= 0:
            return
        now = time.time()
        with self._lock:
            self._entries[key] = (result, now + timeout, now)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self):
        return len(self._entries)


class LazyKey:
    """A result-cache key made the first time it is asked for (`key()`): only
    when a cache is looked in or filled, as a key may hash a whole body."""

    __slots__ = ("_make", "_key")

    def __init__(self, make):
        self._make = make
        self._key = None

    def __call__(self):
        make = self._make
        if make is not None:
            self._key = make()
            self._make = None        # lets go of the body
        return self._key


def _names(server, keys):
    return [shared.server_key(server, k) for k in ((keys,) if isinstance(keys, str) else keys)]


def cache_threshold(use_cache, server):
    """use_cache → the time a cached entry must be newer than (None: don't look).
    Cache-key names give their latest setlu() time in any worker of `server`."""
    if use_cache is False or use_cache is None:
        return None
    if use_cache is True:
        return 0.0
    if isinstance(use_cache, (int, float)):
        return float(use_cache)
    region = shared.region()
    return max((region.get_lu(n) for n in _names(server, use_cache)), default=0.0)


def mark_updated(keys, server):
    """setlu() the cache-key name(s): every worker stops using older entries."""
    region = shared.region()
    for name in _names(server, keys):
        region.set_lu(name)


def cached_task(engine, key, newer_than, make_coro, meta, timeout):
    """A finished Task when the cache holds a live Result for key() newer
    than `newer_than` (None: don't look), else a Task running make_coro()."""
    if newer_than is not None and len(engine.cache):     # an empty cache needs no key
        hit = engine.cache.get(key(), newer_than)
        if hit is not None:
            return Task(result=hit, meta=meta)
    return Task(engine, make_coro(), cache_key=key, cache_store=engine.cache, meta=meta,
                timeout=timeout)


def spread(mode, cluster, key, one, timeout):
    """`.map` on a cluster: Tasks with one(member, its key) per member; else
    one(None, key) — a single call whose member the cluster picks."""
    if mode == "map" and cluster is not None:
        return Tasks([one(m, LazyKey(lambda i=i: key() + (i,)))
                      for i, m in enumerate(cluster.members)], timeout=timeout)
    return one(None, key)


def max_age(headers):
    """Seconds a response may be kept by its Cache-Control/Expires (0: not at all)."""
    cc = expires = None
    for name, value in headers:
        lname = name.lower()
        if lname == "cache-control":
            cc = (cc + "," + value) if cc else value
        elif lname == "expires":
            expires = value
    if cc is not None:
        seconds = None
        for part in cc.lower().split(","):
            key, _, value = part.strip().partition("=")
            if key in ("no-store", "no-cache", "private"):
                return 0
            if key in ("max-age", "s-maxage"):
                try:
                    seconds = max(seconds or 0, int(value.strip('"')))
                except ValueError:
                    return 0
        if seconds is not None:
            return seconds
    if expires:
        from email.utils import parsedate_to_datetime
        try:
            when = parsedate_to_datetime(expires).timestamp()
        except (TypeError, ValueError, IndexError):
            return 0
        return max(0, int(when - time.time()))
    return 0
