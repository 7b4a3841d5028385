"""The status page, its JSON, /metrics and their access rules, on a real
two-worker server started with `skitaid run`."""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for
from test_daemon import Site, master, site  # noqa: F401  (fixtures)

from skitaid.passwords import make_hash


def request(port, path, headers=None, source=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def metrics(port):
    status, _, body = request(port, "/metrics")
    assert status == 200, body
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total_requests(port, server="web"):
    return sum(s.value for s in metrics(port).get("skitaid_requests_total", [])
               if s.labels["server"] == server)


@pytest.fixture
def observed(site, master):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2, status_path="/server-status", metrics_path="/metrics")
    m = master(port)
    assert wait_for(lambda: request(port, "/server-status?json")[0] == 200, 15)
    return site, port, m


def test_json_is_the_status_document_and_the_page_shows_every_worker(observed):
    site, port, _ = observed
    status, headers, body = request(port, "/server-status?json")
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    cli = site.status()
    assert doc["pid"] == cli["pid"]
    assert sorted(w["pid"] for w in doc["servers"][0]["workers"]) == \
        sorted(w["pid"] for w in cli["servers"][0]["workers"])
    assert set(cli) == set(doc)
    status, headers, body = request(port, "/server-status")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<title>skitaid status</title>" in page
    for w in cli["servers"][0]["workers"]:
        assert 'data-pid="%d"' % w["pid"] in page


def test_metrics_totals_count_every_request_and_survive_a_killed_worker(site, master):
    # the app's traffic goes to server "app"; the scrapes to "mon" (so they are not counted)
    site.app()
    port, mon = free_port(), free_port()
    site.ini("app", port, processes=2)
    site.ini("mon", mon, processes=1, metrics_path="/metrics")
    master(port)
    assert wait_for(lambda: request(mon, "/metrics")[0] == 200, 15)
    n = 40
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")     # a new connection each: both workers take some
        assert conn.getresponse().read()
        conn.close()
    # the counts reach the master within a couple of seconds
    assert wait_for(lambda: total_requests(mon, "app") == n, 10, 0.2), total_requests(mon, "app")
    assert wait_for(lambda: all(w["requests"] for w in site.server("app")["workers"]), 10, 0.2)
    victim = site.server("app")["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in site.pids("app") and len(site.pids("app")) == 2, 15)
    assert wait_for(lambda: victim not in [w["pid"] for w in site.server("app")["workers"]], 10)
    assert wait_for(lambda: victim not in [s.labels["pid"] for s in metrics(mon)[
        "skitaid_worker_resident_memory_bytes"]], 10, 0.2)
    assert total_requests(mon, "app") == n          # the dead worker's count is kept
    fams = {f.name for f in text_string_to_metric_families(request(mon, "/metrics")[2].decode())}
    for name in ("skitaid_requests", "skitaid_request_duration_seconds", "skitaid_response_bytes",
                 "skitaid_connections", "skitaid_worker_cpu_seconds",
                 "skitaid_worker_resident_memory_bytes", "skitaid_worker_restarts"):
        assert name in fams
    assert wait_for(lambda: "skitaid_worker_restarts_total" in metrics(mon), 10, 0.2), site.server("app")
    restarts = metrics(mon)["skitaid_worker_restarts_total"]
    assert any(s.labels["server"] == "app" and s.labels["reason"] == "died" and s.value >= 1
               for s in restarts)
    hist = [s for s in metrics(mon)["skitaid_request_duration_seconds_count"]
            if s.labels["server"] == "app"]
    assert hist[0].value == n


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) not installed")
def test_promtool_accepts_the_metrics(observed):
    _, port, _ = observed
    request(port, "/")
    body = request(port, "/metrics")[2]
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_access_other_addresses_403_and_credentials_401(site, master):
    site.app()
    port = free_port()
    line = "admin:" + make_hash("s3cret")
    site.ini("web", port, ip="0.0.0.0", processes=1, status_path="/server-status",
             metrics_path="/metrics", status_allow="127.0.0.1/32", status_auth=line)
    master(port)
    good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}
    assert wait_for(lambda: request(port, "/server-status?json", good)[0] == 200, 15)
    for path in ("/server-status", "/server-status?json", "/metrics"):
        status, headers, body = request(port, path, good, source="127.0.0.2")
        assert status == 403
        assert b"pid" not in body and b"web" not in body
        status, headers, body = request(port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert b"pid" not in body
        assert request(port, path, bad)[0] == 401
        assert request(port, path, good)[0] == 200


def test_shown_values_are_escaped(observed):
    _, port, _ = observed
    evil = "<script>alert(1)</script>"
    status, _, body = request(port, "/server-status", {"Host": evil})
    assert status == 200
    assert b"<script>" not in body
    assert b"&lt;script&gt;" in body
