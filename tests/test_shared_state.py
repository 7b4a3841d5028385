"""setlu/setgs across hosts through Redis: two masters from two config
directories (two "hosts", 2 workers each) share a private redis-server that
the test starts, kills and restarts.

Host A names the Redis by URL, host B by a redis alias of its server file.
"""
import os
import statistics
import time
import uuid

import pytest

from conftest import free_port, wait_for
from helpers.clients import get_json as get
from redis_helpers import RedisServer

APP = r'''
import json, os, time
from skitaid import was

def answer(start, obj):
    body = json.dumps(obj).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

def app(env, start):
    path = env["PATH_INFO"]
    q = dict(p.split("=", 1) for p in env["QUERY_STRING"].split("&") if "=" in p)
    if path == "/setlu":
        was.setlu(q["k"])
        return answer(start, {"lu": was.getlu(q["k"])})
    if path == "/getlu":
        return answer(start, {"lu": was.getlu(q["k"]), "pid": os.getpid()})
    if path == "/setgs":
        was.setgs(q["k"], int(q["v"]))
        return answer(start, {})
    if path == "/getgs":
        return answer(start, {"v": was.getgs(q["k"]), "pid": os.getpid()})
    if path == "/cached":
        t = was.db("@r", use_cache=was.getlu("rows")).get("value").dispatch(5, cache=60)
        return answer(start, {"v": t.data, "status": t.status, "pid": os.getpid()})
    return answer(start, {"path": path})
'''

SERVER = """[server]
ip = 127.0.0.1
port = %(port)d
processes = 2
threads = 4

[routes:line]
/ = %(root)s/app.py:app

[@r]
type = redis
members = 127.0.0.1:%(redis)d/1
"""


def make_host(root, port, redis_port, shared_state, prefix):
    os.makedirs(os.path.join(root, "servers-enabled"))
    os.makedirs(os.path.join(root, "run"))
    with open(os.path.join(root, "skitaid.conf"), "w") as f:
        f.write("[global]\nuser =\nrun_path = %s/run\npidfile = %s/run/skitaid.pid\n"
                "shared_state = %s\nshared_state_prefix = %s\n"
                % (root, root, shared_state, prefix))
    with open(os.path.join(root, "app.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(root, "servers-enabled", "web.conf"), "w") as f:
        f.write(SERVER % {"port": port, "root": root, "redis": redis_port})
    return root


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(workdir=str(tmp_path))
    yield server
    server.stop()


@pytest.fixture
def hosts(serve_cli, tmp_path, redis_server):
    prefix = "t" + uuid.uuid4().hex[:8]

    def start(name, by_alias=False):
        port = free_port()
        url = "@r" if by_alias else "redis://127.0.0.1:%d/1" % redis_server.port
        root = make_host(str(tmp_path / name), port, redis_server.port, url, prefix)
        s = serve_cli("run", "-c", root, port=port)
        assert s.wait_log("shared through", 10), s.log
        return s
    return start


def both_workers(port, path, check, timeout=10.0):
    """Poll `path` until `check(body)` held for answers from 2 different workers."""
    pids = set()

    def probe():
        body = get(port, path, close=True)[1]
        if check(body):
            pids.add(body["pid"])
        return len(pids) >= 2
    return wait_for(probe, timeout, interval=0.005)


def test_setlu_and_setgs_reach_the_other_host(hosts, redis_server):
    a = hosts("a")
    get(a.port, "/setgs?k=mode&v=7")
    b = hosts("b", by_alias=True)                       # starts later: loads current values
    assert both_workers(b.port, "/getgs?k=mode", lambda r: r["v"] == 7)

    # a result cached in both workers of B…
    redis_server.cmd("SET", "value", "old", db=1)
    assert both_workers(b.port, "/cached", lambda r: r["v"] == "old")
    redis_server.cmd("SET", "value", "new", db=1)          # behind skitaid's back
    assert get(b.port, "/cached")[1]["v"] == "old"
    get(a.port, "/setlu?k=rows")                           # …expires on A's setlu
    assert both_workers(b.port, "/cached", lambda r: r["v"] == "new", timeout=5)

    # how long a setlu takes to reach the other host
    delays = []
    for i in range(20):
        before = get(b.port, "/getlu?k=p")[1]["lu"]
        t0 = time.monotonic()
        get(a.port, "/setlu?k=p")
        assert wait_for(lambda: get(b.port, "/getlu?k=p")[1]["lu"] > before, 5, interval=0.001)
        delays.append(time.monotonic() - t0)
    median = statistics.median(delays)
    print("setlu propagation: median %.1f ms, max %.1f ms over %d"
          % (median * 1000, max(delays) * 1000, len(delays)))
    assert median < 0.1, delays

    get(b.port, "/setgs?k=mode&v=9")
    assert both_workers(a.port, "/getgs?k=mode", lambda r: r["v"] == 9)


def test_losing_redis_never_stops_the_hosts(hosts, redis_server):
    a, b = hosts("a"), hosts("b")
    redis_server.stop()
    assert a.wait_log("unreachable", 10) and b.wait_log("unreachable", 10)
    t0 = time.monotonic()
    for _ in range(10):                                  # both keep serving, at once
        assert get(a.port, "/setlu?k=x")[0] == 200 and get(b.port, "/getlu?k=x")[0] == 200
    assert time.monotonic() - t0 < 5
    get(a.port, "/setgs?k=during&v=5")                   # made while Redis is away
    assert get(b.port, "/getgs?k=during")[1]["v"] == 0
    time.sleep(0.5)         # (several reconnect attempts fail meanwhile: one warning each)
    assert a.log.count("unreachable") == 1

    redis_server.start()
    assert a.wait_log("is back", 15) and b.wait_log("is back", 15)
    assert both_workers(b.port, "/getgs?k=during", lambda r: r["v"] == 5)   # resynchronised
    before = get(b.port, "/getlu?k=y")[1]["lu"]
    get(a.port, "/setlu?k=y")
    assert wait_for(lambda: get(b.port, "/getlu?k=y")[1]["lu"] > before, 5)
