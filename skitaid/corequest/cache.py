"""The per-worker result cache: a bounded LRU of corequest Results.

Entries carry when they were stored, so `use_cache=<timestamp>` (what
`was.getlu()` returns) can refuse anything older than the last update.
Used from app threads, hence the lock.
"""
import collections
import threading
import time


class ResultCache:
    def __init__(self, max_entries=200):
        self.max_entries = max_entries
        self._entries = collections.OrderedDict()    # key → (result, expires, stored)
        self._lock = threading.Lock()
        self.hits = 0
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

    def remove(self, key):
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self):
        return len(self._entries)


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
