"""Redis alias keys, the shared_state key and the refusals (config/build.py, api.alias)."""
import pytest

import skitaid
from skitaid.config.build import (ALIAS_SECTION, GLOBAL, SERVER, ROUTES, FileContext,
                                  RawSection, build_global, build_server, parse_redis_url)


def build(tmp_path, entries):
    (tmp_path / "www").mkdir(exist_ok=True)
    ctx = FileContext("web.conf", str(tmp_path))
    sections = [RawSection("server", SERVER, []), RawSection("routes:line", ROUTES, [("/", "www")]),
                RawSection("@r", ALIAS_SECTION, list(entries))]
    config = build_server(ctx, sections, "web", "web.conf")
    return config, [str(p) for p in ctx.problems]


def test_redis_alias_keys(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    config, problems = build(tmp_path, [
        ("type", "redis"), ("members", "127.0.0.1:6380, s3cret@10.0.0.2/4"),
        ("password", "pw"), ("database", "2"), ("ssl", "yes"), ("ca_file", "ca.pem"),
        ("decode_responses", "no"), ("max_connections", "4")])
    assert problems == []
    [a] = config.aliases
    assert (a.password, a.database, a.ssl, a.decode_responses, a.max_connections) == \
        ("pw", "2", True, False, 4)
    assert a.ca_file == str(tmp_path / "ca.pem")
    assert [(m.host, m.port, m.database, m.password) for m in a.members] == \
        [("127.0.0.1", 6380, "", ""), ("10.0.0.2", 6379, "4", "s3cret")]
    assert "pw" not in repr(a)


@pytest.mark.parametrize("entries, expected", [
    ([("type", "mongodb"), ("members", "127.0.0.1:27017")], "MongoDB is not built in"),
    ([("type", "http"), ("members", "127.0.0.1:80"), ("password", "x")],
     "no password key for a http alias"),
    ([("type", "redis"), ("members", "127.0.0.1"), ("ca_file", "ca.pem")], "ssl = yes as well"),
    ([("type", "redis"), ("members", "127.0.0.1"), ("database", "-1")], "a database number"),
])
def test_bad_redis_aliases(tmp_path, entries, expected):
    _, problems = build(tmp_path, entries)
    assert any(expected in p and "[@r]" in p for p in problems), problems
    assert all("(hidden)" in p or " x " not in p for p in problems)


def test_shared_state_key(tmp_path):
    ctx = FileContext("skitaid.conf", str(tmp_path))
    g = build_global(ctx, [RawSection("global", GLOBAL, [
        ("shared_state", "redis://:pw@127.0.0.1:6380/3"), ("shared_state_prefix", "site1")])])
    assert ctx.problems == [] and (g.shared_state, g.shared_state_prefix) == \
        ("redis://:pw@127.0.0.1:6380/3", "site1")
    ctx = FileContext("skitaid.conf", str(tmp_path))
    build_global(ctx, [RawSection("global", GLOBAL, [("shared_state", "http://x/"),
                                                     ("shared_state_prefix", "a b")])])
    text = " ".join(str(p) for p in ctx.problems)
    assert "shared_state" in text and "redis://" in text and "shared_state_prefix" in text
    assert parse_redis_url("rediss://u:p%40@h:1/2") == {
        "host": "h", "port": 1, "db": 2, "username": "u", "password": "p@", "ssl": True}
    assert parse_redis_url("redis://h/x") is None


def test_api_refusals():
    with pytest.raises(ValueError, match="MongoDB is not built in"):
        skitaid.alias("@m", skitaid.DB_MONGODB, "127.0.0.1:27017")
    with pytest.raises(ValueError, match="password"):
        skitaid.alias("@h", "http", "127.0.0.1:80", password="x")
    with pytest.raises(TypeError, match="DatabaseInterface"):
        skitaid.add_database_interface("thing", object)
    with pytest.raises(ValueError, match="built-in"):
        skitaid.add_database_interface("redis", skitaid.DatabaseInterface)


def test_an_added_type_is_an_alias_type(tmp_path):
    class Thing(skitaid.DatabaseInterface):
        pass
    skitaid.add_database_interface("thingdb", Thing)
    skitaid.alias("@t", "thingdb", "127.0.0.1:7000")
    _, problems = build(tmp_path, [("type", "thingdb"), ("members", "127.0.0.1")])
    assert any("has no default one" in p for p in problems), problems
    _, problems = build(tmp_path, [("type", "thingdb"), ("members", "127.0.0.1:7000")])
    assert problems == []
