"""Counters, windows, percentiles, the bulletin, shared health rows, the
metrics exposition and the status keys' rules: pure functions and memory."""
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skitaid import bulletin, health, stats
from skitaid.config import observe
from skitaid.config.values import Bad
from skitaid.daemon import report
from skitaid.handlers.metrics import exposition
from skitaid.passwords import make_hash, verify


def test_counts_land_in_the_row_and_fold_into_the_total():
    region = stats.StatsRegion(4)
    c = region.worker(2)
    c.count("GET", 200, 10, 0, 0.003)
    c.count("POST", 503, 5, 7, 0.2)
    c.count("BREW", 418, 1, 0, 20.0)
    c.flush()
    traffic = report.Traffic(region)
    s = report.summarize(traffic.totals("web", [2]))
    assert s["requests"] == 3
    assert s["by_method"] == {"GET": {"2xx": 1}, "POST": {"5xx": 1}, "other": {"4xx": 1}}
    assert s["response_bytes"] == 16 and s["request_bytes"] == 7
    assert s["duration_buckets"][0] == 1 and s["duration_buckets"][-1] == 1
    c.gauges[stats.GAUGES.index("cache_hits")] = 5
    c.flush()
    traffic.fold("web", 2)
    assert region.read(2)[0] == [0] * stats.COUNTERS
    assert traffic.retired_cache["web"] == [5, 0]
    assert report.summarize(traffic.totals("web", []))["requests"] == 3   # never backwards


def test_finished_counts_as_count_does():
    class Body:
        received = 9

    class Request:
        method = "PUT"
        body = Body()

    class Exchange:
        request = Request()
        status = 201
        sent = 3
        t_start = 0.0

    c = stats.Counts()
    c.finished(Exchange())
    d = stats.Counts()
    d.count("PUT", 201, 3, 9, 0.0)
    assert c.counts == d.counts
    Exchange.status = 999
    c.finished(Exchange())
    assert c.counts[stats.row_index("PUT", 500)] == 1


def test_percentile_interpolates_inside_the_bucket():
    buckets = [0] * (len(stats.BUCKETS) + 1)
    buckets[1] = 100                  # all between 5 and 10 ms
    assert report.percentile(buckets, 0.5) == pytest.approx(0.0075)
    assert report.percentile([0] * len(buckets), 0.5) is None


def test_windows_use_the_sample_a_window_ago():
    region = stats.StatsRegion(2)
    traffic = report.Traffic(region)
    c = region.worker(0)
    traffic.tick(1000.0, {"web": [0]})
    for _ in range(60):
        c.count("GET", 200, 1, 0, 0.001)
    c.flush()
    w = traffic.windows("web", traffic.totals("web", [0]), now=1060.0)
    assert w["1m"]["requests"] == 60 and w["1m"]["rate"] == pytest.approx(1.0)
    assert w["1m"]["p99"] is not None


def test_bulletin_gives_the_latest_whole_document():
    b = bulletin.Bulletin(1 << 16)
    assert b.read() == (None, 0.0)
    b.publish(b'{"a": 1}')
    b.publish(b'{"b": 2}')
    assert b.read()[0] == b'{"b": 2}'
    with pytest.raises(ValueError):
        b.publish(b"x" * (1 << 16))


def test_extra_document_of_a_row():
    region = stats.StatsRegion(2)
    c = region.worker(1)
    c.set_extra(b'{"db_pools": {}}')
    assert region.read_extra(1) == b'{"db_pools": {}}'
    c.set_extra(b"x" * (stats.EXTRA + 1))       # too long: dropped, never cut
    assert region.read_extra(1) == b""
    region.clear(1)
    assert region.read_extra(1) == b""


def test_health_row_is_shared_and_backs_off():
    table = health.Health(8)
    row = table.claim("web/pool/127.0.0.1:9")
    row.ended("failure", 2.0, 60.0, "refused")
    again = table.find("web/pool/127.0.0.1:9")
    assert again.down_until > 0 and again.read()["failures"] == 1
    row.ended("failure", 2.0, 60.0, "refused")
    assert row.read()["backoff"] == 4.0
    row.ended("ok")
    assert row.read()["down_until"] == 0.0 and row.read()["calls"] == 3
    assert table.members("web")["pool"]["127.0.0.1:9"]["last_error"] == "refused"


def test_metrics_of_a_document_parse():
    doc = {"servers": [{"name": "web", "workers": [
        {"index": 0, "pid": 5, "state": "ready", "rss": 100, "threads": 4, "threads_busy": 1,
         "threads_queued": 0}],
        "counters": report.summarize([1] * stats.COUNTERS), "totals": {"connections": 2},
        "restarts": {"died": 1}, "cpu_seconds": 1.5,
        "backends": {"pool": {"127.0.0.1:9": {"up": False, "in_flight": 0, "calls": 3,
                                              "failures": 2, "timeouts": 1}}},
        "databases": {"mydb": {"open": 3, "in_use": 1, "max": 20}},
        "cache": {"hits": 1, "misses": 2, "items": 1}}]}
    body, ctype = exposition(doc)
    assert ctype.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"skitaid_requests", "skitaid_request_duration_seconds", "skitaid_backend_up",
            "skitaid_worker_restarts", "skitaid_db_pool_connections"} <= names


def test_status_keys_refuse_a_plain_password_and_bad_paths():
    with pytest.raises(Bad):
        observe.auth("admin:secret")
    user, hashed = observe.auth("admin:" + make_hash("pw"))
    assert user == "admin" and verify("pw", hashed)
    with pytest.raises(Bad):
        observe.url_path("server-status")
    assert observe.url_path("/metrics/") == "/metrics"
    with pytest.raises(Bad):
        observe.log_format("xml")


def test_a_bad_status_key_names_file_section_and_key(tmp_path):
    from skitaid.config import ConfigError, load_config
    (tmp_path / "skitaid.conf").write_text("[global]\n")
    os.makedirs(tmp_path / "servers-enabled")
    (tmp_path / "servers-enabled" / "web.conf").write_text(
        "[server]\nport = 5000\nstatus_auth = admin:plain\n[routes:line]\n/ = /tmp\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    text = str(e.value.problems[0])
    assert "web.conf" in text and "status_auth" in text and "[server]" in text
