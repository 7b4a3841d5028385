"""The two tiers together: lookups through Vary records, storing, purges,
counters, and the stampede locks.

One Cache per worker (made on its loop). Lookups and stores may come from
the loop (proxy) or app threads (`was`); the locks (`lock()`/`release()`)
are the loop's. In a worker, one future per key makes concurrent misses wait
for the first fetch. Across the workers of a server, the first to miss
creates KEY.lock beside the entry with O_CREAT|O_EXCL; the others poll for
the entry (every 20 ms) while that file exists. A lock file older than
`lock_timeout` is taken as left by a dead worker and removed. (An fcntl lock
would vanish with a dead worker by itself, but a waiter cannot sleep on it
without blocking its loop: it would have to poll as well, and a lock file is
a plain thing an operator can see.)
"""
import asyncio
import errno
import os
import time

from . import rules
from .disk import COUNTERS, DiskTier
from .entry import Entry
from .memory import MemoryTier

LEADER, WAITED = "leader", "waited"
POLL = 0.02

# hop-by-hop and framing fields are never stored; Date/Server are the serving side's
NOT_STORED = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length",
                        "proxy-authenticate", "proxy-authorization", "age"))
NOT_SERVED = frozenset(("date", "server"))


class Options:
    """The [cachefs] settings a worker's Cache needs (from config.model.CacheConfig)."""

    def __init__(self, memmax=0, diskmax=0, path="", max_entry=1 << 20, use_stale=(),
                 stale_max=60.0, status_header="X-Cache", client_no_cache=rules.IGNORE,
                 store_set_cookie=False, lock_timeout=5.0):
        self.memmax = memmax
        self.diskmax = diskmax
        self.path = path
        self.max_entry = max_entry
        self.use_stale = frozenset(use_stale)
        self.stale_max = stale_max
        self.status_header = status_header
        self.client_no_cache = client_no_cache
        self.store_set_cookie = store_set_cookie
        self.lock_timeout = lock_timeout

    @classmethod
    def from_config(cls, c):
        return cls(c.memmax, c.diskmax, c.path, c.max_entry, c.use_stale, c.stale_max,
                   c.status_header, c.client_no_cache, c.store_set_cookie, c.lock_timeout)


class Cache:
    def __init__(self, options, loop=None):
        self.options = options
        self.loop = loop
        self.memory = MemoryTier(options.memmax) if options.memmax > 0 else None
        self.disk = DiskTier(options.path, options.diskmax) if options.path else None
        self.counts = dict.fromkeys(COUNTERS, 0)
        self._inflight = {}          # key → future of the fetch running in this worker
        self._lockfiles = {}         # key → lock file path this worker holds
        self._purge_offset = 0
        self._epoch = 0
        if self.disk is not None:
            self._epoch = self.disk.read_state()["epoch"]
            self._purge_offset, _ = self.disk.purges_since(0)

    # -- lookups and stores ----------------------------------------------------
    def _get(self, key):
        if self.memory is not None:
            entry = self.memory.get(key)
            if entry is not None:
                return entry
        if self.disk is not None and self.options.diskmax > 0:
            entry = self.disk.get(key)
            if entry is not None and self.memory is not None:
                self.memory.put(entry)
            return entry
        return None

    def lookup(self, base, req_headers):
        """The stored variant of `base` this request selects, or None."""
        entry = self._get(base)
        if entry is not None and entry.vary is not None:
            entry = self._get(base + "\n" + rules.vary_key(entry.vary, req_headers))
        return entry

    def store(self, base, url, req_headers, status, reason, headers, body, request_time,
              response_time):
        """Keep a response (already judged storable); the Entry."""
        kept = [(k, v) for k, v in headers if k.lower() not in NOT_STORED]
        vary = rules.field_names(rules.header(headers, "vary"))
        now = time.time()
        key = base
        if vary:
            self._put(Entry.vary_record(base, url, vary, now))
            key = base + "\n" + rules.vary_key(vary, req_headers)
        entry = Entry(key, url, status, reason, kept, body, request_time, response_time, now)
        self._put(entry)
        return entry

    def replace(self, entry):
        self._put(entry)

    def _put(self, entry):
        if self.memory is not None:
            self.memory.put(entry)
        if self.disk is not None and self.options.diskmax > 0:
            self.disk.put(entry)

    def forget(self, entry):
        self.drop(entry.key)

    def drop(self, key):
        """Remove `key` (a URL's base key: its Vary record takes its variants
        out of reach) from this worker's memory and from the disk."""
        if self.memory is not None:
            self.memory.remove(key)
        if self.disk is not None:
            self.disk.remove(key)

    def purge(self, prefix=""):
        if self.memory is not None:
            self.memory.purge(prefix)
        if self.disk is not None:
            return self.disk.purge(prefix)
        return 0

    def served_headers(self, entry, now, status):
        """The stored fields as a response from the cache sends them: with Age
        and the status header (X-Cache)."""
        kept = entry.served
        if kept is None:
            kept = entry.served = [(k, v) for k, v in entry.headers
                                   if k.lower() not in NOT_SERVED]
        out = kept + [("Age", str(int(entry.age(now))))]
        if self.options.status_header:
            out.append((self.options.status_header, status))
        return out

    def count(self, what):
        self.counts[what] += 1

    # -- once a second, from the worker's loop ------------------------------------
    def tick(self):
        """Counters to the shared state; purges made by `skitaid cache purge`
        reach this worker's memory tier."""
        disk = self.disk
        if disk is None:
            return
        deltas = {k: v for k, v in self.counts.items() if v}
        if deltas:
            for k in deltas:
                self.counts[k] = 0
            disk.add(**deltas)
        if self.memory is not None:
            epoch = disk.read_state()["epoch"]
            if epoch != self._epoch:
                self._epoch = epoch
                self._purge_offset, prefixes = disk.purges_since(self._purge_offset)
                for prefix in prefixes:
                    self.memory.purge(prefix)

    def close(self):
        self.tick()
        for key in list(self._lockfiles):
            self._drop_lockfile(key)
        if self.disk is not None:
            self.disk.close()

    # -- stampede locks (loop thread) ---------------------------------------------
    async def lock(self, key):
        """LEADER: fetch, then release(key). WAITED: another fetch of `key` ended
        (or the wait timed out): look again, and fetch unlocked on a miss."""
        fut = self._inflight.get(key)
        if fut is not None:
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.options.lock_timeout)
            except asyncio.TimeoutError:
                pass
            return WAITED
        self._inflight[key] = self.loop.create_future()
        if self.disk is not None and self.options.diskmax > 0:
            await self._lockfile(key)
        return LEADER

    async def _lockfile(self, key):
        path = self.disk.file_of(key) + ".lock"
        deadline = time.monotonic() + self.options.lock_timeout
        while True:
            try:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    return          # no lock to be had: fetch all the same
            else:
                os.write(fd, b"%d\n" % os.getpid())
                os.close(fd)
                self._lockfiles[key] = path
                return
            try:
                if time.time() - os.stat(path).st_mtime > self.options.lock_timeout:
                    os.unlink(path)         # left by a worker that died
                    continue
            except OSError:
                continue
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(POLL)
            if self._get(key) is not None:
                return              # the other worker stored it: look again

    def release(self, key):
        self._drop_lockfile(key)
        fut = self._inflight.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _drop_lockfile(self, key):
        path = self._lockfiles.pop(key, None)
        if path is not None:
            try:
                os.unlink(path)
            except OSError:
                pass


def stale_allowed(options, entry, now, why):
    """Serve `entry` stale because the origin failed (`why`: "error" or "timeout")?"""
    return (why in options.use_stale and rules.may_serve_stale(entry.headers)
            and entry.staleness(now) <= options.stale_max)
