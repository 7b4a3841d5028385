"""Prometheus metrics from the master's status document (prometheus_client).

A custom Collector turns the document (bulletin.py) into metric families;
the library writes the text exposition format. Counters are the master's
per-server totals, which include the workers that are gone, so they never
go backwards when a worker is replaced or a generation retires.
"""
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily,
                                    GaugeMetricFamily, HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .. import stats

_hooks = []             # fn(doc) → iterable of metric families (other modules' figures)


def add_hook(fn):
    """Let another part of skitaid report figures: `fn(doc)` yields metric families."""
    if not callable(fn):
        raise TypeError("add_hook: fn must be callable")
    _hooks.append(fn)


class DocumentCollector:
    def __init__(self, doc):
        self.doc = doc

    def collect(self):
        servers = self.doc.get("servers", [])
        up = GaugeMetricFamily("skitaid_up", "1 while the master runs")
        up.add_metric([], 1)
        yield up
        reqs = CounterMetricFamily("skitaid_requests", "Requests answered",
                                   labels=["server", "method", "code"])
        hist = HistogramMetricFamily("skitaid_request_duration_seconds",
                                     "Time from the request head to the end of the response",
                                     labels=["server"])
        sent = CounterMetricFamily("skitaid_response_bytes", "Response bytes sent",
                                   labels=["server"])
        received = CounterMetricFamily("skitaid_request_bytes", "Request body bytes received",
                                       labels=["server"])
        conns = GaugeMetricFamily("skitaid_connections", "Open client connections",
                                  labels=["server", "protocol"])
        inflight = GaugeMetricFamily("skitaid_requests_in_flight", "Requests being handled",
                                     labels=["server"])
        workers = GaugeMetricFamily("skitaid_workers", "Worker processes", labels=["server", "state"])
        cpu = CounterMetricFamily("skitaid_worker_cpu_seconds", "CPU time of the workers",
                                  labels=["server"])
        rss = GaugeMetricFamily("skitaid_worker_resident_memory_bytes", "Resident memory",
                                labels=["server", "worker", "pid"])
        restarts = CounterMetricFamily("skitaid_worker_restarts", "Workers replaced",
                                       labels=["server", "reason"])
        busy = GaugeMetricFamily("skitaid_app_threads", "App threads", labels=["server", "state"])
        b_up = GaugeMetricFamily("skitaid_backend_up", "1: the member takes requests",
                                 labels=["server", "alias", "member"])
        b_req = CounterMetricFamily("skitaid_backend_requests", "Calls to a backend member",
                                    labels=["server", "alias", "member", "outcome"])
        b_inflight = GaugeMetricFamily("skitaid_backend_in_flight", "Calls in flight",
                                       labels=["server", "alias", "member"])
        pools = GaugeMetricFamily("skitaid_db_pool_connections",
                                  "Database connections of the workers' pools",
                                  labels=["server", "alias", "state"])
        pool_max = GaugeMetricFamily("skitaid_db_pool_max_connections",
                                     "Database connections the pools may open",
                                     labels=["server", "alias"])
        hits = CounterMetricFamily("skitaid_result_cache_hits", "Result cache hits",
                                   labels=["server"])
        misses = CounterMetricFamily("skitaid_result_cache_misses", "Result cache misses",
                                     labels=["server"])
        items = GaugeMetricFamily("skitaid_result_cache_entries", "Result cache entries",
                                  labels=["server"])
        ws = GaugeMetricFamily("skitaid_websocket_connections", "Open WebSockets",
                               labels=["server"])
        tunnels = GaugeMetricFamily("skitaid_tunnel_connections", "Open tunnels",
                                    labels=["server"])
        for s in servers:
            name = s["name"]
            c = s.get("counters") or {}
            for method, classes in (c.get("by_method") or {}).items():
                for cls, n in classes.items():
                    reqs.add_metric([name, method, cls], n)
            buckets = c.get("duration_buckets") or [0] * (len(stats.BUCKETS) + 1)
            cumulative, acc = [], 0
            for bound, n in zip(list(stats.BUCKETS) + ["+Inf"], buckets):
                acc += n
                cumulative.append((str(float(bound)) if bound != "+Inf" else bound, acc))
            hist.add_metric([name], cumulative, c.get("duration_seconds_sum", 0.0))
            sent.add_metric([name], c.get("response_bytes", 0))
            received.add_metric([name], c.get("request_bytes", 0))
            t = s.get("totals") or {}
            http = t.get("connections", 0) - t.get("websockets", 0) - t.get("tunnels", 0)
            conns.add_metric([name, "http"], max(0, http))
            conns.add_metric([name, "websocket"], t.get("websockets", 0))
            conns.add_metric([name, "tunnel"], t.get("tunnels", 0))
            inflight.add_metric([name], t.get("in_flight", 0))
            ws.add_metric([name], t.get("websockets", 0))
            tunnels.add_metric([name], t.get("tunnels", 0))
            states = {}
            b = q = total = 0
            for w in s.get("workers", []):
                states[w["state"]] = states.get(w["state"], 0) + 1
                rss.add_metric([name, str(w["index"]), str(w["pid"])], w.get("rss", 0))
                b += w.get("threads_busy", 0)
                q += w.get("threads_queued", 0)
                total += w.get("threads", 0)
            for state, n in states.items():
                workers.add_metric([name, state], n)
            busy.add_metric([name, "busy"], b)
            busy.add_metric([name, "idle"], max(0, total - b))
            busy.add_metric([name, "queued"], q)
            cpu.add_metric([name], s.get("cpu_seconds", 0.0))
            for reason, n in (s.get("restarts") or {}).items():
                restarts.add_metric([name, reason], n)
            for alias, members in (s.get("backends") or {}).items():
                for member, row in members.items():
                    labels = [name, alias, member]
                    b_up.add_metric(labels, 1 if row["up"] else 0)
                    b_inflight.add_metric(labels, row["in_flight"])
                    ok = row["calls"] - row["failures"] - row["timeouts"]
                    b_req.add_metric(labels + ["ok"], max(0, ok))
                    b_req.add_metric(labels + ["failure"], row["failures"])
                    b_req.add_metric(labels + ["timeout"], row["timeouts"])
            for alias, d in (s.get("databases") or {}).items():
                pools.add_metric([name, alias, "in_use"], d["in_use"])
                pools.add_metric([name, alias, "idle"], max(0, d["open"] - d["in_use"]))
                pool_max.add_metric([name, alias], d["max"])
            cache = s.get("cache") or {}
            hits.add_metric([name], cache.get("hits", 0))
            misses.add_metric([name], cache.get("misses", 0))
            items.add_metric([name], cache.get("items", 0))
        yield from (reqs, hist, sent, received, conns, inflight, workers, cpu, rss, restarts,
                    busy, b_up, b_req, b_inflight, pools, pool_max, hits, misses, items, ws, tunnels)
        for hook in _hooks:
            yield from hook(self.doc)


def exposition(doc):
    """(body bytes, content type) of the metrics in `doc`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocumentCollector(doc))
    return generate_latest(registry), CONTENT_TYPE_LATEST
