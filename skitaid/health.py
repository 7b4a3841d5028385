"""Backend health shared by every worker of a server: `[@alias]` members up or down.

The master maps this region before it forks and claims a row for each member
of each server's aliases ("server/alias/host:port"); every worker's cluster
(corequest/cluster.py) reads and writes the rows, so a member one worker
found dead is skipped by all until its retry time, and the status page shows
one truth. Writes (a state change, a call's outcome) take the process-shared
lock; the hot read (is it down?) is one unpacked double. Not skitaid/shared.py:
that table is the user's setlu/setgs state.
"""
import mmap
import multiprocessing
import struct
import threading
import time

ROWS = 2048
NAME_SIZE = 96
ERROR_SIZE = 120
# name, down_until (CLOCK_MONOTONIC), backoff, in flight, calls, failures,
# timeouts, when the last error was (time.time()), the last error
_ROW = struct.Struct("=%dsddqQQQd%ds" % (NAME_SIZE, ERROR_SIZE))
_SIZE = (_ROW.size + 63) // 64 * 64
_DOWN = struct.Struct("=d")
LOCK_WAIT = 0.05

_region = None
_local_lock = threading.Lock()


def member_name(server, alias, host, port):
    return "%s/%s/%s:%d" % (server, alias, host, port)


class Row:
    """One member's shared record (what a MemberState holds)."""

    __slots__ = ("health", "offset")

    def __init__(self, health, offset):
        self.health = health
        self.offset = offset

    @property
    def down_until(self):
        return _DOWN.unpack_from(self.health.mem, self.offset + NAME_SIZE)[0]

    def read(self):
        (name, down_until, backoff, inflight, calls, failures, timeouts, when,
         error) = _ROW.unpack_from(self.health.mem, self.offset)
        return {"down_until": down_until, "backoff": backoff, "in_flight": inflight,
                "calls": calls, "failures": failures, "timeouts": timeouts,
                "last_error_time": when,
                "last_error": error.rstrip(b"\0").decode("utf-8", "replace")}

    def _update(self, fn):
        """Read-modify-write under the shared lock. A worker killed while it
        held the lock would hold it for ever: after LOCK_WAIT the update is
        skipped (the figures are advice, serving must never wait on them)."""
        mem = self.health.mem
        with _local_lock:
            lock = self.health.lock
            if not lock.acquire(timeout=LOCK_WAIT):
                return
            try:
                values = list(_ROW.unpack_from(mem, self.offset))
                fn(values)
                _ROW.pack_into(mem, self.offset, *values)
            finally:
                lock.release()

    def add_inflight(self, delta):
        def f(v):
            v[3] = max(0, v[3] + delta)
        self._update(f)

    def ended(self, outcome, backoff_first=0.0, backoff_max=0.0, error=""):
        """One call's outcome: "ok" (up again), "failure" (no connection: down
        with a doubling back-off), "timeout" (counted; left up: it answers, slowly)."""
        def f(v):
            v[4] += 1
            if outcome == "ok":
                v[1] = v[2] = 0.0
                return
            if outcome == "timeout":
                v[6] += 1
            else:
                v[5] += 1
            if outcome == "failure":
                v[2] = min(backoff_max, v[2] * 2 if v[2] else backoff_first)
                v[1] = time.monotonic() + v[2]
            v[7] = time.time()
            v[8] = error.encode("utf-8", "replace")[:ERROR_SIZE]
        self._update(f)


class Health:
    def __init__(self, rows=ROWS):
        self.rows = rows
        self.mem = mmap.mmap(-1, rows * _SIZE)        # MAP_SHARED | MAP_ANONYMOUS
        self.lock = multiprocessing.Lock()            # a semaphore the forks share
        self._index = {}

    def _find(self, raw):
        for i in range(self.rows):
            o = i * _SIZE
            stored = self.mem[o:o + NAME_SIZE].rstrip(b"\0")
            if not stored:
                return None, o
            if stored == raw:
                return o, None
        return None, None

    def claim(self, name):
        """The row of `name`, made if new; None when the table is full."""
        off = self._index.get(name)
        if off is not None:
            return Row(self, off)
        raw = name.encode("utf-8")[:NAME_SIZE]
        with _local_lock, self.lock:
            off, free = self._find(raw)
            if off is None:
                if free is None:
                    return None
                _ROW.pack_into(self.mem, free, raw, 0.0, 0.0, 0, 0, 0, 0, 0.0, b"")
                off = free
        self._index[name] = off
        return Row(self, off)

    def find(self, name):
        off = self._index.get(name)
        if off is None:
            off, _ = self._find(name.encode("utf-8")[:NAME_SIZE])
            if off is None:
                return None
            self._index[name] = off
        return Row(self, off)

    def members(self, server):
        """{alias: {"host:port": row dict}} of one server."""
        out = {}
        prefix = (server + "/").encode("utf-8")
        for i in range(self.rows):
            o = i * _SIZE
            stored = self.mem[o:o + NAME_SIZE].rstrip(b"\0")
            if not stored:
                break
            if stored.startswith(prefix):
                alias, _, member = stored[len(prefix):].decode("utf-8", "replace").partition("/")
                out.setdefault(alias, {})[member] = Row(self, o).read()
        return out


def create(servers=()):
    """Master, before any fork: the table, with every alias member of
    `servers` (ServerConfigs) claimed. Called again on reload with the new
    configs (claim() keeps the rows it has)."""
    global _region
    if _region is None:
        _region = Health()
    claim_servers(servers)
    return _region


def claim_servers(servers):
    for server in servers:
        for alias in server.aliases:
            for m in alias.members:
                if m.host and m.port:
                    _region.claim(member_name(server.name, alias.name, m.host, m.port))


def region():
    """The table this process shares (None when no master made one)."""
    return _region
