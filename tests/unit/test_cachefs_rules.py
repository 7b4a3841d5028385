"""RFC 9111 rules of the shared cache (skitaid/cachefs/rules.py) and the entry format."""
import os

from skitaid.cachefs import rules
from skitaid.cachefs.disk import DiskTier
from skitaid.cachefs.entry import Entry, decode
from skitaid.cachefs.memory import MemoryTier

NOW = 1_700_000_000.0


def date(t):
    return rules.format_date(t)


def test_cache_control_parsing():
    cc = rules.cache_control('max-age=60, No-Cache="Set-Cookie, X", public, max-age=5')
    assert cc == {"max-age": "60", "no-cache": "Set-Cookie, X", "public": None}
    assert rules.cache_control("") == {}


def test_lifetime_order():
    assert rules.freshness_lifetime([("Cache-Control", "max-age=10, s-maxage=20")]) == 20
    assert rules.freshness_lifetime([("Cache-Control", "max-age=10")]) == 10
    h = [("Date", date(NOW)), ("Expires", date(NOW + 30))]
    assert rules.freshness_lifetime(h) == 30
    assert rules.freshness_lifetime([("Cache-Control", "max-age=5")] + h) == 5
    assert rules.freshness_lifetime([("Expires", "0")]) == 0
    assert rules.freshness_lifetime([("Cache-Control", "max-age=x")]) == 0
    assert rules.freshness_lifetime([]) is None


def test_storable():
    ok = [("Cache-Control", "max-age=60")]
    assert rules.storable("GET", 200, [], ok) is None
    assert rules.storable("POST", 200, [], ok) == "method"
    assert rules.storable("GET", 206, [], ok) == "status"
    assert rules.storable("GET", 200, [], [("Cache-Control", "no-store, max-age=5")]) == "no-store"
    assert rules.storable("GET", 200, [], [("Cache-Control", "private, max-age=5")]) == "private"
    auth = [("authorization", "Basic x")]
    assert rules.storable("GET", 200, auth, ok) == "authorization"
    assert rules.storable("GET", 200, auth, [("Cache-Control", "public, max-age=5")]) is None
    assert rules.storable("GET", 200, auth, [("Cache-Control", "s-maxage=5")]) is None
    assert rules.storable("GET", 200, [], ok + [("Vary", "Accept, *")]) == "vary *"
    assert rules.storable("GET", 200, [], ok + [("Set-Cookie", "a=1")]) == "set-cookie"
    assert rules.storable("GET", 200, [], ok + [("Set-Cookie", "a=1")], True) is None
    assert rules.storable("GET", 200, [], []) == "no lifetime"
    assert rules.storable("GET", 200, [], [("Cache-Control", "no-cache"), ("ETag", '"1"')]) is None
    assert rules.storable("GET", 200, [("cache-control", "no-store")], ok) == "no-store request"


def test_age():
    h = [("Date", date(NOW - 10)), ("Age", "5")]
    # apparent age 10 (response came at NOW), Age 5 + 1 s on the way → 10, plus 3 s resident
    assert rules.current_age(h, NOW - 1, NOW, NOW + 3) == 13
    assert rules.current_age([], NOW, NOW, NOW + 2) == 2


def test_client_rules():
    nc = [("cache-control", "no-cache")]
    assert not rules.client_wants_revalidation(nc, rules.IGNORE)
    assert rules.client_wants_revalidation(nc, rules.REVALIDATE)
    assert rules.client_wants_revalidation([("cache-control", "max-age=0")], rules.REVALIDATE)
    assert rules.client_wants_revalidation([("pragma", "no-cache")], rules.REVALIDATE)
    assert rules.request_bypass("POST", []) == "method"
    assert rules.request_bypass("GET", [("cache-control", "no-store")]) is None
    assert rules.request_bypass("GET", [("cache-control", "no-store")], rules.REVALIDATE)


def test_validators_and_conditionals():
    h = [("ETag", 'W/"a"'), ("Last-Modified", date(NOW))]
    assert rules.validators(h) == [("If-None-Match", 'W/"a"'), ("If-Modified-Since", date(NOW))]
    assert rules.not_modified([("if-none-match", '"b", "a"')], h)
    assert not rules.not_modified([("if-none-match", '"b"')], h)
    assert rules.not_modified([("if-modified-since", date(NOW + 5))], [h[1]])
    assert not rules.not_modified([("if-modified-since", date(NOW - 5))], [h[1]])


def test_refresh_and_vary_key():
    stored = [("ETag", '"1"'), ("Content-Type", "text/plain"), ("Cache-Control", "max-age=1")]
    fresh = [("Cache-Control", "max-age=9"), ("Content-Type", "x/y")]
    out = dict(rules.refreshed_headers(stored, fresh))
    assert out["Cache-Control"] == "max-age=9" and out["Content-Type"] == "text/plain"
    assert rules.vary_key(["accept"], [("accept", "a , b")]) == "accept:a,b"
    assert rules.vary_key(["accept"], []) == "accept:"
    assert rules.must_revalidate([("Cache-Control", "no-cache")])
    assert not rules.may_serve_stale([("Cache-Control", "must-revalidate")])


def _entry(key="k", body=b"hello"):
    return Entry(key, "/x", 200, "OK", [("Cache-Control", "max-age=60")], body, NOW, NOW, NOW)


def test_entry_round_trip_and_damage():
    data = _entry().encode()
    e = decode(data)
    assert e.body == b"hello" and e.headers == [("Cache-Control", "max-age=60")]
    assert decode(data[:-1]) is None                         # cut short
    assert decode(data[:-1] + b"X") is None                  # checksum
    assert decode(b"junk" + data[4:]) is None                # not ours
    assert e.fresh(NOW + 59) and not e.fresh(NOW + 61)


def test_memory_tier_lru_by_bytes():
    m = MemoryTier(3 * _entry().size)
    for k in "abcd":
        m.put(_entry(k))
    assert m.get("a") is None and m.get("d") is not None and len(m) == 3
    assert m.bytes <= m.max_bytes
    m.put(_entry("big", b"x" * 10000))              # bigger than the tier: not kept
    assert m.get("big") is None


def test_disk_tier(tmp_path):
    d = DiskTier(str(tmp_path), 10000)
    d.put(_entry("a"))
    assert d.get("a").body == b"hello"
    path = d.file_of("a")
    with open(path, "r+b") as f:
        f.truncate(10)
    assert d.get("a") is None and not os.path.exists(path)   # a partial file goes
    for i in range(100):
        d.put(_entry("k%d" % i, b"x" * 500))
    total = sum(s for _, s, _ in d.entries())
    assert total <= 10000 and d.read_state()["bytes"] == total
    assert d.get("k99") is not None
    n = len(d.entries())
    assert d.purge("/x") == n
    assert d.entries() == [] and d.read_state()["epoch"] == 1
    assert d.purges_since(0)[1] == ["/x"]


def test_cachefs_section_ini_and_yaml(tmp_path):
    from skitaid.config import ini, yamlfile
    from skitaid.config.cachefs import with_default_path
    (tmp_path / "web.conf").write_text(
        "[server]\nport = 5000\n[routes:line]\n/ = /tmp\n[cachefs]\nmemmax = 10M\n"
        "diskmax = 1G\nuse_stale = error, timeout\ncache_status_header = no\n")
    server, problems = ini.parse_server(str(tmp_path / "web.conf"), str(tmp_path), "web")
    assert problems == []
    c = server.cachefs
    assert (c.memmax, c.diskmax, c.use_stale, c.status_header) == (
        10 << 20, 1 << 30, ("error", "timeout"), "")
    assert with_default_path(server, "/var/x").cachefs.path == "/var/x/cache/web"
    (tmp_path / "api.yaml").write_text(
        "server:\n  port: 5001\nroutes:\n  /: /tmp\ncachefs:\n  diskmax: 5M\n  path: c\n"
        "  client_no_cache: sometimes\n")
    server, problems = yamlfile.parse_server(str(tmp_path / "api.yaml"), str(tmp_path), "api")
    assert [(p.section, p.key) for p in problems] == [("cachefs", "client_no_cache")]
    assert "ignore or revalidate" in str(problems[0])
