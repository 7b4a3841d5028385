"""The HTTP cache (cachefs) in front of a real backend that counts its hits."""
import concurrent.futures
import glob
import http.client
import json
import os
import time
from email.utils import formatdate

import pytest

from conftest import wait_for
from helpers.clients import fetch

# answers as its query says: cc= Cache-Control, exp= Expires (seconds from now),
# etag=, lm= (Last-Modified, seconds ago), vary=, cookie=1, size=, status=;
# /hits?p=PATH says how many requests (and which conditionals) PATH got
BACKEND = r'''
import json, os, threading, time
from email.utils import formatdate
from urllib.parse import parse_qs
import skitaid

seen = {}
lock = threading.Lock()

def app(env, start):
    path = env["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(env["QUERY_STRING"]).items()}
    if path == "/hits":
        with lock:
            got = seen.get(q["p"], [])
        start("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [json.dumps(got).encode()]
    with lock:
        seen.setdefault(path, []).append({
            "inm": env.get("HTTP_IF_NONE_MATCH"), "ims": env.get("HTTP_IF_MODIFIED_SINCE"),
            "accept": env.get("HTTP_ACCEPT")})
        n = len(seen[path])
    if "delay" in q:
        time.sleep(float(q["delay"]))
    if q.get("fail") and n > 1:
        start("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]
    headers = [("Content-Type", "text/plain")]
    if "cc" in q:
        headers.append(("Cache-Control", q["cc"]))
    if "exp" in q:
        headers.append(("Expires", formatdate(time.time() + float(q["exp"]), usegmt=True)))
    if "etag" in q:
        headers.append(("ETag", '"%s"' % q["etag"]))
        if env.get("HTTP_IF_NONE_MATCH") == '"%s"' % q["etag"]:
            start("304 Not Modified", headers)
            return [b""]
    if "lm" in q:
        modified = int(os.environ["BOOT"]) - int(q["lm"])
        headers.append(("Last-Modified", formatdate(modified, usegmt=True)))
        ims = env.get("HTTP_IF_MODIFIED_SINCE")
        if ims == formatdate(modified, usegmt=True):
            start("304 Not Modified", headers)
            return [b""]
    if "vary" in q:
        headers.append(("Vary", q["vary"]))
    if "cookie" in q:
        headers.append(("Set-Cookie", "s=1"))
    size = int(q.get("size", "0"))
    body = ("%s #%d accept=%s\n" % (path, n, env.get("HTTP_ACCEPT"))).encode()
    if size:
        body = (body * (size // len(body) + 1))[:size]
    start(q.get("status", "200 OK"), headers)
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=16, request_log=False)
'''

PROXY = r'''
import os
import skitaid
skitaid.alias("@b", "http", [os.environ["MEMBER"]])
skitaid.mount("/", "@b")
skitaid.enable_cachefs(os.environ.get("MEMMAX", "4M"), os.environ.get("DISKMAX", "16M"),
                       os.environ["CACHE"], **eval(os.environ.get("MORE", "{}")))
skitaid.run(port=int(os.environ["PORT"]), threads=2, request_log=False,
            processes=int(os.environ.get("PROCS", "1")), backend_timeout=3)
'''


@pytest.fixture
def backend(serve):
    return serve(BACKEND, env={"BOOT": str(int(time.time()))}, filename="backend.py")


@pytest.fixture
def proxy(serve, backend, tmp_path):
    def start(**env):
        env = {k.upper(): str(v) for k, v in env.items()}
        env.setdefault("CACHE", str(tmp_path / "cache"))
        env["MEMBER"] = "127.0.0.1:%d" % backend.port
        return serve(PROXY, env=env, filename="proxy.py")
    return start


def get(port, path, headers=None, method="GET"):
    # one Host for all: a restarted proxy (a new port) finds the same entries
    return fetch(port, path, method, headers=headers, host="site.test", timeout=20)


def hits(backend, path):
    return json.loads(fetch(backend.port, "/hits?p=" + path).body)


def test_max_age_hit_then_expiry(backend, proxy):
    p = proxy()
    r1 = get(p.port, "/a?cc=max-age=2")
    r2 = get(p.port, "/a?cc=max-age=2")
    assert r1.status == r2.status == 200
    assert r1.header("X-Cache") == "MISS" and r2.header("X-Cache") == "HIT"
    assert r2.body == r1.body and len(hits(backend, "/a")) == 1
    assert r2.header("Age") in ("0", "1")
    # HEAD is answered from the GET's entry, without a body
    h = get(p.port, "/a?cc=max-age=2", method="HEAD")
    assert h.header("X-Cache") == "HIT" and h.body == b""
    assert h.header("Content-Length") == str(len(r1.body))
    time.sleep(2.2)          # past max-age: fetched again (no validators)
    r3 = get(p.port, "/a?cc=max-age=2")
    assert r3.header("X-Cache") == "MISS" and b"#2" in r3.body
    assert len(hits(backend, "/a")) == 2


def test_s_maxage_wins_and_expires(backend, proxy):
    p = proxy()
    get(p.port, "/s?cc=max-age=0,s-maxage=60")
    assert get(p.port, "/s?cc=max-age=0,s-maxage=60").header("X-Cache") == "HIT"
    get(p.port, "/e?exp=60")
    assert get(p.port, "/e?exp=60").header("X-Cache") == "HIT"
    assert len(hits(backend, "/s")) == 1 and len(hits(backend, "/e")) == 1
    # Expires in the past: never fresh
    get(p.port, "/old?exp=-10")
    assert get(p.port, "/old?exp=-10").header("X-Cache") == "MISS"
    assert len(hits(backend, "/old")) == 2


@pytest.mark.parametrize("path,headers", [
    ("/ns?cc=no-store,max-age=60", None),
    ("/pv?cc=private,max-age=60", None),
    ("/au?cc=max-age=60", {"Authorization": "Bearer x"}),
    ("/ck?cc=max-age=60&cookie=1", None),
    ("/vs?cc=max-age=60&vary=*", None),
    ("/none", None),
])
def test_not_stored(backend, proxy, path, headers):
    p = proxy()
    for _ in range(2):
        r = get(p.port, path, headers)
        assert r.status == 200 and r.header("X-Cache") == "MISS"
    assert len(hits(backend, path.split("?")[0])) == 2


def test_authorization_with_public_is_stored(backend, proxy):
    p = proxy()
    auth = {"Authorization": "Bearer x"}
    get(p.port, "/aup?cc=public,max-age=60", auth)
    assert get(p.port, "/aup?cc=public,max-age=60", auth).header("X-Cache") == "HIT"
    assert len(hits(backend, "/aup")) == 1


def test_post_bypasses(backend, proxy):
    p = proxy()
    r = fetch(p.port, "/post?cc=max-age=60", "POST", body=b"x", timeout=20)
    assert r.header("X-Cache") == "BYPASS"


def test_vary_two_variants(backend, proxy):
    p = proxy()
    path = "/v?cc=max-age=60&vary=Accept"
    a = get(p.port, path, {"Accept": "text/a"})
    b = get(p.port, path, {"Accept": "text/b"})
    assert a.header("X-Cache") == b.header("X-Cache") == "MISS"
    a2 = get(p.port, path, {"Accept": "text/a"})
    b2 = get(p.port, path, {"Accept": "text/b"})
    assert a2.header("X-Cache") == b2.header("X-Cache") == "HIT"
    assert b"accept=text/a" in a2.body and b"accept=text/b" in b2.body
    assert len(hits(backend, "/v")) == 2


def test_revalidation_with_etag(backend, proxy):
    p = proxy()
    path = "/et?cc=max-age=1&etag=v1"
    first = get(p.port, path)
    time.sleep(1.2)
    r = get(p.port, path)
    assert r.status == 200 and r.header("X-Cache") == "REVALIDATED" and r.body == first.body
    seen = hits(backend, "/et")
    assert len(seen) == 2 and seen[0]["inm"] is None and seen[1]["inm"] == '"v1"'
    # the 304 refreshed it: fresh again
    assert get(p.port, path).header("X-Cache") == "HIT"
    # the client's own If-None-Match is answered by the cache
    c = get(p.port, path, {"If-None-Match": '"v1"'})
    assert c.status == 304 and c.header("X-Cache") == "HIT"
    assert len(hits(backend, "/et")) == 2


def test_revalidation_with_last_modified_and_no_cache(backend, proxy):
    p = proxy()
    path = "/lm?cc=no-cache&lm=100"
    first = get(p.port, path)
    assert first.header("X-Cache") == "MISS"
    r = get(p.port, path)          # no-cache: stored, but asked about every time
    assert r.header("X-Cache") == "REVALIDATED" and r.body == first.body
    seen = hits(backend, "/lm")
    assert len(seen) == 2 and seen[1]["ims"] == first.header("Last-Modified")


def test_age_counts_up(backend, proxy):
    p = proxy()
    get(p.port, "/age?cc=max-age=60")
    time.sleep(1.1)
    assert int(get(p.port, "/age?cc=max-age=60").header("Age")) >= 1


def test_stale_on_error(backend, proxy):
    p = proxy(more={"use_stale": "error", "stale_max": 30})
    path = "/st?cc=max-age=1&etag=s&fail=1"
    get(p.port, path)
    time.sleep(1.2)
    r = get(p.port, path)
    assert r.status == 200 and r.header("X-Cache") == "STALE"


def test_stampede_one_fetch(backend, proxy):
    p = proxy(procs=2)
    path = "/crowd?cc=max-age=60&delay=0.5"

    def one(_):
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": "site.test"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    assert all(s == 200 for s, _ in results)
    assert len({b for _, b in results}) == 1
    assert len(hits(backend, "/crowd")) == 1


def test_second_worker_and_restart_use_the_disk(backend, proxy, tmp_path):
    # memory tier off: every answer after the first comes from the disk tier
    p = proxy(memmax=0, procs=2)
    get(p.port, "/d?cc=max-age=60")
    for _ in range(10):       # new connections land on both workers
        assert get(p.port, "/d?cc=max-age=60", {"Connection": "close"}).header("X-Cache") == "HIT"
    p.stop()
    p2 = proxy()
    assert get(p2.port, "/d?cc=max-age=60").header("X-Cache") == "HIT"
    assert len(hits(backend, "/d")) == 1


def test_corrupt_entry_is_a_miss(backend, proxy, tmp_path):
    p = proxy(memmax=0)
    get(p.port, "/c?cc=max-age=60")
    assert get(p.port, "/c?cc=max-age=60").header("X-Cache") == "HIT"
    (entry,) = [f for f in glob.glob(str(tmp_path / "cache" / "??" / "*"))]
    with open(entry, "r+b") as f:
        f.seek(os.path.getsize(entry) - 3)
        f.write(b"XYZ")
    r = get(p.port, "/c?cc=max-age=60")
    assert r.status == 200 and r.header("X-Cache") == "MISS" and b"#2" in r.body
    assert get(p.port, "/c?cc=max-age=60").header("X-Cache") == "HIT"
    # a partial entry (cut short) too
    (entry,) = glob.glob(str(tmp_path / "cache" / "??" / "*"))
    with open(entry, "r+b") as f:
        f.truncate(os.path.getsize(entry) // 2)
    assert get(p.port, "/c?cc=max-age=60").header("X-Cache") == "MISS"


def test_diskmax_respected(backend, proxy, tmp_path):
    diskmax = 200 * 1024
    p = proxy(memmax=0, diskmax=diskmax)
    for i in range(100):            # 10 × diskmax of cacheable responses
        assert get(p.port, "/big%d?cc=max-age=60&size=20000" % i).status == 200
    files = glob.glob(str(tmp_path / "cache" / "??" / "*"))
    assert sum(os.path.getsize(f) for f in files) <= diskmax
    assert 5 <= len(files) < 100
    # the most recent ones are kept
    assert get(p.port, "/big99?cc=max-age=60&size=20000").header("X-Cache") == "HIT"


def test_max_entry_streams_without_storing(backend, proxy):
    p = proxy(more={"max_entry": "10K"})
    for _ in range(2):
        r = get(p.port, "/huge?cc=max-age=60&size=50000")
        assert len(r.body) == 50000 and r.header("X-Cache") == "MISS"
    assert len(hits(backend, "/huge")) == 2


def test_status_header_renamed_or_off(backend, proxy):
    p = proxy(more={"cache_status_header": "X-Edge"})
    get(p.port, "/h?cc=max-age=60")
    r = get(p.port, "/h?cc=max-age=60")
    assert r.header("X-Edge") == "HIT" and r.header("X-Cache") is None


def test_client_no_cache_rules(backend, proxy):
    p = proxy()
    get(p.port, "/nc?cc=max-age=60&etag=n")
    # the default: a client's no-cache is ignored
    assert get(p.port, "/nc?cc=max-age=60&etag=n",
               {"Cache-Control": "no-cache"}).header("X-Cache") == "HIT"
    p.stop()
    p = proxy(more={"client_no_cache": "revalidate"})
    assert get(p.port, "/nc?cc=max-age=60&etag=n",
               {"Cache-Control": "no-cache"}).header("X-Cache") == "REVALIDATED"


WAS_APP = r'''
import json, os
import skitaid
from skitaid import was
skitaid.alias("@b", "http", [os.environ["MEMBER"]])
skitaid.register_cache_keys("items")
skitaid.enable_cachefs("4M", "16M", os.environ["CACHE"])

def app(env, start):
    path = env["PATH_INFO"]
    if path == "/update":
        was.setlu("items")
        out = {}
    else:
        kw = {"use_cache": {"off": False, "lu": was.getlu("items")}.get(env["QUERY_STRING"], True)}
        r = was.get("@b/w?cc=max-age=60&etag=w", **kw).dispatch(10)
        out = {"status": r.status_code, "x": r.get_header("X-Cache"), "body": r.content.decode()}
    body = json.dumps(out).encode()
    start("200 OK", [("Content-Type", "application/json")])
    return [body]

skitaid.mount("/", app)
skitaid.run(port=int(os.environ["PORT"]), threads=4, request_log=False)
'''


def test_was_calls_use_the_cache(serve, backend, tmp_path):
    a = serve(WAS_APP, env={"MEMBER": "127.0.0.1:%d" % backend.port,
                            "CACHE": str(tmp_path / "was-cache")}, filename="wasapp.py")
    first = fetch(a.port, "/").json()
    assert first["status"] == 200 and first["x"] == "MISS"
    again = fetch(a.port, "/").json()
    assert again["x"] == "HIT" and again["body"] == first["body"]
    assert len(hits(backend, "/w")) == 1
    # use_cache=False looks in no cache
    assert fetch(a.port, "/?off").json()["x"] != "HIT"
    assert len(hits(backend, "/w")) == 2
    # a setlu key: entries stored before the update are not used (revalidated: ETag)
    assert fetch(a.port, "/?lu").json()["x"] == "HIT"
    fetch(a.port, "/update")
    assert fetch(a.port, "/?lu").json()["x"] == "REVALIDATED"
    assert hits(backend, "/w")[-1]["inm"] == '"w"'


def test_unsafe_method_invalidates(backend, proxy):
    p = proxy(memmax=0)         # one tier to look at: the disk, shared by any worker
    get(p.port, "/inv?cc=max-age=60")
    assert get(p.port, "/inv?cc=max-age=60").header("X-Cache") == "HIT"
    r = fetch(p.port, "/inv?cc=max-age=60", "POST", body=b"x", host="site.test", timeout=20)
    assert r.status == 200 and r.header("X-Cache") == "BYPASS"
    assert get(p.port, "/inv?cc=max-age=60").header("X-Cache") == "MISS"


def test_head_miss_is_passed_on(backend, proxy):
    p = proxy()
    h = get(p.port, "/hd?cc=max-age=60", method="HEAD")
    assert h.status == 200 and h.body == b"" and h.header("X-Cache") == "MISS"
    assert get(p.port, "/hd?cc=max-age=60").header("X-Cache") == "MISS"
    assert get(p.port, "/hd?cc=max-age=60").header("X-Cache") == "HIT"
