"""Request counters of every worker, in memory shared with the master.

Below both the daemon and the worker, like scoreboard.py: the master maps
the region before it forks; each worker owns the row of its scoreboard
slot. A worker counts in a plain Python list (a few list increments per
request: cheap) and copies the list into its row once a second and when it
stops; the master reads the rows. When a worker is gone the master folds
its row into the server's total (daemon/report.py), so a counter never goes
backwards when a worker is replaced or a generation retires. What a worker
counted after its last copy is lost if it is killed (at most a second).
"""
import bisect
import mmap
import struct
import time

from .scoreboard import SLOTS

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
_METHOD_INDEX = {m: i for i, m in enumerate(METHODS)}
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# request duration histogram bounds, seconds (Prometheus' default buckets)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# counters (one row of unsigned 64-bit integers)
REQUESTS = 0                                  # METHODS × CLASSES
HISTOGRAM = REQUESTS + len(METHODS) * len(CLASSES)   # len(BUCKETS) + 1 (+Inf)
DURATION_US = HISTOGRAM + len(BUCKETS) + 1    # sum of durations, microseconds
SENT = DURATION_US + 1                        # response bytes
RECEIVED = SENT + 1                           # request body bytes
COUNTERS = RECEIVED + 1

# gauges (signed), written by the worker with its counters
GAUGES = ("connections", "in_flight", "threads", "threads_busy", "threads_queued",
          "websockets", "tunnels", "cache_items", "cache_hits", "cache_misses")

_ROW = struct.Struct("=%dQ%dq" % (COUNTERS, len(GAUGES)))
# then a small JSON document of figures whose shape varies (database pools)
EXTRA = 1024
_EXTRA_AT = (_ROW.size + 7) // 8 * 8
_EXTRA_LEN = struct.Struct("=I")
_SIZE = (_EXTRA_AT + _EXTRA_LEN.size + EXTRA + 63) // 64 * 64


_METHOD_ROW = {m: i * len(CLASSES) for i, m in enumerate(METHODS)}
_OTHER_ROW = _METHOD_ROW["other"]
# status → its class's column (1xx → 0 … 5xx → 4; anything else counts as 5xx)
_CLASS_OF = [4] * 100 + [c for c in range(5) for _ in range(100)]
_bisect = bisect.bisect_left
_clock = time.monotonic


def row_index(method, status):
    """The REQUESTS counter of (method, status)."""
    c = status // 100 - 1
    if not 0 <= c < 5:
        c = 4
    return _METHOD_INDEX.get(method, 7) * 5 + c


class Counts:
    """What one worker counts (its own memory); `flush()` copies it to its row."""

    __slots__ = ("counts", "gauges", "mem", "offset", "seconds")

    def __init__(self, mem=None, index=0):
        self.counts = [0] * COUNTERS
        self.gauges = [0] * len(GAUGES)
        self.mem = mem
        self.offset = index * _SIZE
        self.seconds = 0.0          # the duration sum, as microseconds at flush()

    def count(self, method, status, sent, received, seconds):
        c = self.counts
        c[row_index(method, status)] += 1
        c[HISTOGRAM + _bisect(BUCKETS, seconds)] += 1
        self.seconds += seconds
        c[SENT] += sent
        c[RECEIVED] += received

    def finished(self, exchange):
        """count() of a finished exchange, written for speed (once per request:
        no int(), no helper calls; about 0.4 µs)."""
        request = exchange.request
        start = exchange.t_start
        seconds = _clock() - start if start else 0.0
        status = exchange.status
        c = self.counts
        c[_METHOD_ROW.get(request.method, _OTHER_ROW) + (
            _CLASS_OF[status] if 0 <= status < 600 else 4)] += 1
        c[HISTOGRAM + _bisect(BUCKETS, seconds)] += 1
        self.seconds += seconds
        c[SENT] += exchange.sent
        body = request.body
        if body is not None and body.received:
            c[RECEIVED] += body.received

    def flush(self):
        if self.mem is not None:
            self.counts[DURATION_US] = int(self.seconds * 1000000.0)
            _ROW.pack_into(self.mem, self.offset, *self.counts, *self.gauges)

    def set_extra(self, data):
        """Replace the row's extra document (bytes, at most EXTRA; longer is dropped)."""
        if self.mem is None:
            return
        if len(data) > EXTRA:
            data = b""
        at = self.offset + _EXTRA_AT
        _EXTRA_LEN.pack_into(self.mem, at, 0)          # readers see nothing meanwhile
        self.mem[at + _EXTRA_LEN.size:at + _EXTRA_LEN.size + len(data)] = data
        _EXTRA_LEN.pack_into(self.mem, at, len(data))


class StatsRegion:
    def __init__(self, slots=SLOTS):
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * _SIZE)      # MAP_SHARED | MAP_ANONYMOUS

    def worker(self, index):
        """A worker's Counts, writing to row `index` (its scoreboard slot)."""
        return Counts(self.mem, index)

    def read(self, index):
        """(counters, gauges) of row `index`, as lists."""
        values = _ROW.unpack_from(self.mem, index * _SIZE)
        return list(values[:COUNTERS]), list(values[COUNTERS:])

    def read_extra(self, index):
        """The row's extra document (bytes; b"" when none)."""
        at = index * _SIZE + _EXTRA_AT
        n = min(_EXTRA_LEN.unpack_from(self.mem, at)[0], EXTRA)
        return self.mem[at + _EXTRA_LEN.size:at + _EXTRA_LEN.size + n]

    def clear(self, index):
        self.mem[index * _SIZE:(index + 1) * _SIZE] = bytes(_SIZE)


_region = None


def create(slots=SLOTS):
    """Master, before any fork."""
    global _region
    _region = StatsRegion(slots)
    return _region


def region():
    """The region this process inherited (None outside a master's workers)."""
    return _region
