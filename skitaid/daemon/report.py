"""The master's view of traffic: per-server totals that never go backwards,
and rates and latency percentiles over the last 1, 5 and 15 minutes.

Totals = what the live workers' rows hold (stats.py) + what workers that are
gone had counted (folded in here when the master releases their slot).
Windows come from samples of those totals every SAMPLE_EVERY seconds: the
difference between now and the sample a window ago; nothing is timed or
stored per request.
"""
import collections
import time

from .. import stats

SAMPLE_EVERY = 5.0
WINDOWS = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
_KEEP = int(900 / SAMPLE_EVERY) + 2


def percentile(buckets, q):
    """The q-quantile (0..1) of a histogram: counts per bucket of stats.BUCKETS
    (+Inf last), by linear interpolation inside the bucket, as Prometheus'
    histogram_quantile does. None without observations."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, n in enumerate(buckets):
        upper = stats.BUCKETS[i] if i < len(stats.BUCKETS) else None
        if n and seen + n >= rank:
            if upper is None:       # in the +Inf bucket: the highest finite bound
                return stats.BUCKETS[-1]
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        if upper is not None:
            lower = upper
    return stats.BUCKETS[-1]


def summarize(counters):
    """The counters of one server as the status document shows them."""
    by_method = {}
    by_class = dict.fromkeys(stats.CLASSES, 0)
    for mi, method in enumerate(stats.METHODS):
        for ci, cls in enumerate(stats.CLASSES):
            n = counters[stats.REQUESTS + mi * 5 + ci]
            if n:
                by_method.setdefault(method, {})[cls] = n
                by_class[cls] += n
    hist = counters[stats.HISTOGRAM:stats.HISTOGRAM + len(stats.BUCKETS) + 1]
    return {"requests": sum(by_class.values()), "by_status": by_class, "by_method": by_method,
            "duration_buckets": hist, "duration_seconds_sum":
            counters[stats.DURATION_US] / 1e6, "response_bytes": counters[stats.SENT],
            "request_bytes": counters[stats.RECEIVED]}


def window(now_counters, then_counters, seconds):
    diff = [a - b for a, b in zip(now_counters, then_counters)]
    s = summarize(diff)
    hist = s["duration_buckets"]
    return {"seconds": round(seconds, 1),
            "rate": round(s["requests"] / seconds, 3) if seconds > 0 else 0.0,
            "requests": s["requests"], "by_status": s["by_status"],
            "p50": _ms(percentile(hist, 0.50)), "p95": _ms(percentile(hist, 0.95)),
            "p99": _ms(percentile(hist, 0.99))}


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 2)


class Traffic:
    def __init__(self, region):
        self.region = region
        self.retired = {}           # server → counters of its workers that are gone
        self.retired_cpu = {}       # server → CPU seconds of its workers that are gone
        self.retired_cache = {}     # server → [cache hits, misses] of its workers that are gone
        self.history = {}           # server → deque of (monotonic, counters)
        self._next_sample = 0.0

    def fold(self, server, slot, cpu_seconds=0.0):
        """A worker is gone: its row joins the server's total, and is cleared."""
        counters, gauges = self.region.read(slot)
        total = self.retired.setdefault(server, [0] * stats.COUNTERS)
        for i, n in enumerate(counters):
            total[i] += n
        self.retired_cpu[server] = self.retired_cpu.get(server, 0.0) + cpu_seconds
        # the result cache's hits and misses are counters too
        cache = self.retired_cache.setdefault(server, [0, 0])
        cache[0] += gauges[stats.GAUGES.index("cache_hits")]
        cache[1] += gauges[stats.GAUGES.index("cache_misses")]
        self.region.clear(slot)

    def totals(self, server, slots):
        total = list(self.retired.get(server) or [0] * stats.COUNTERS)
        for slot in slots:
            counters, _ = self.region.read(slot)
            for i, n in enumerate(counters):
                total[i] += n
        return total

    def tick(self, now, servers):
        """`servers`: {name: [slot, …]}; samples every SAMPLE_EVERY seconds."""
        if now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_EVERY
        for name, slots in servers.items():
            h = self.history.get(name)
            if h is None:
                h = self.history[name] = collections.deque(maxlen=_KEEP)
            h.append((now, self.totals(name, slots)))

    def windows(self, server, totals, now=None):
        now = time.monotonic() if now is None else now
        h = self.history.get(server) or ()
        out = {}
        for label, seconds in WINDOWS:
            then = None
            for t, counters in h:       # the oldest sample inside the window
                if now - t <= seconds + SAMPLE_EVERY / 2:
                    then = (t, counters)
                    break
            if then is None:
                then = (now, totals)
            out[label] = window(totals, then[1], now - then[0])
        return out


def observed(config):
    """Does this server serve a status page or metrics (so the master publishes)?"""
    return bool(getattr(config, "status_path", "") or getattr(config, "metrics_path", ""))


def encode(doc):
    import json
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def describe_worker(out, w, region, pool):
    """What the worker's stats row and the master know beyond `skitaid status`'s
    first fields: connections, requests in flight, app threads, its CPU time
    and why the worker in its place was last replaced."""
    _, gauges = region.read(w.slot)
    for name, value in zip(stats.GAUGES, gauges):
        out[name] = value
    extra = region.read_extra(w.slot)
    pools = {}
    if extra:
        import json
        try:
            pools = json.loads(extra).get("db_pools") or {}
        except ValueError:          # caught mid-write: next second's figures
            pools = {}
    out["db_pools"] = pools
    proc = w.status_proc
    if proc is not None:
        try:
            t = proc.cpu_times()
            w.cpu_seconds = t.user + t.system
        except Exception:           # gone meanwhile: the last figure stays
            pass
    out["cpu_seconds"] = round(w.cpu_seconds, 3)
    out["last_restart"] = pool.last_restart.get(w.index, "")


def describe_server(out, pool, traffic, table):
    """Counters (totals since the master started), windows, backends, and sums
    of the workers' gauges, for one server."""
    slots = [w.slot for w in pool.workers()]
    totals = traffic.totals(pool.name, slots)
    out["counters"] = summarize(totals)
    out["traffic"] = traffic.windows(pool.name, totals)
    out["restarts"] = dict(pool.restarts)
    out["cpu_seconds"] = round(traffic.retired_cpu.get(pool.name, 0.0) +
                               sum(w.get("cpu_seconds", 0.0) for w in out["workers"]), 3)
    sums = {}
    for name in ("connections", "in_flight", "websockets", "tunnels", "cache_items",
                 "cache_hits", "cache_misses"):
        sums[name] = sum(w.get(name, 0) for w in out["workers"])
    gone = traffic.retired_cache.get(pool.name, (0, 0))
    sums["cache_hits"] += gone[0]
    sums["cache_misses"] += gone[1]
    looked = sums["cache_hits"] + sums["cache_misses"]
    out["totals"] = sums
    out["cache"] = {"items": sums["cache_items"], "hits": sums["cache_hits"],
                    "misses": sums["cache_misses"],
                    "hit_ratio": round(sums["cache_hits"] / looked, 3) if looked else None}
    backends = {}
    if table is not None:
        now = time.monotonic()
        for alias, members in table.members(pool.name).items():
            for member, row in members.items():
                until = row.pop("down_until")
                row.pop("backoff")
                row["up"] = until <= now
                row["retry_in"] = round(max(0.0, until - now), 1)
                backends.setdefault(alias, {})[member] = row
    out["backends"] = backends
    databases = {}
    for w in out["workers"]:
        for alias, (opened, in_use, most) in (w.get("db_pools") or {}).items():
            d = databases.setdefault(alias, {"open": 0, "in_use": 0, "max": 0})
            d["open"] += opened
            d["in_use"] += in_use
            d["max"] += most
    out["databases"] = databases
