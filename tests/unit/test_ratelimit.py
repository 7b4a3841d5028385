"""rate_limit values, their config errors, and the shared bucket table (one process)."""
import textwrap

import pytest

from skitaid import ratelimit
from skitaid.config import ConfigError, load_config
from skitaid.config.model import RateLimit
from skitaid.config.values import Bad, rate_limit


@pytest.mark.parametrize("text, rate, burst", [
    ("100/s burst 200", 100.0, 200),
    ("100/s", 100.0, 100),
    ("6000/min burst 10", 100.0, 10),
    ("60/m", 1.0, 1),
    ("1/h", 1 / 3600.0, 1),
    ("  5 / second   burst  7 ", 5.0, 7),
])
def test_rate_limit_values(text, rate, burst):
    got = rate_limit(text)
    assert isinstance(got, RateLimit)
    assert got.rate == pytest.approx(rate) and got.burst == burst


@pytest.mark.parametrize("text", ["100/x", "100/s burst -1", "100/s burst 0", "0/s", "-5/s",
                                  "100", "100/s burst", "fast", "100/s burst 2 extra",
                                  "2000000/s"])
def test_bad_rate_limit_values(text):
    with pytest.raises(Bad):
        rate_limit(text)


def test_off_is_no_limit():
    assert rate_limit("off") is None


def server_dir(tmp_path, text, name="web.conf"):
    root = tmp_path / "etc"
    (root / "servers-enabled").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "servers-enabled" / name).write_text(textwrap.dedent(text))
    return root


SECRET = "x" * 40


def test_bad_values_name_file_section_and_key(tmp_path):
    root = server_dir(tmp_path, """\
        [server]
        port = 8080
        rate_limit = 100/x
        [gateway]
        enabled = yes
        secret = %s
        rate_limit = 10/s burst -1
        [routes:line]
        / = www
        /api = @api
        [@api]
        members = 127.0.0.1:5001
        rate_limit = lots
        """ % SECRET)
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    lines = str(info.value).splitlines()
    want = [("[server] rate_limit", "'100/x'"), ("[gateway] rate_limit", "'10/s burst -1'"),
            ("[@api] rate_limit", "'lots'")]
    for where, found in want:
        line = [ln for ln in lines if where in ln]
        assert line and "servers-enabled/web.conf" in line[0] and found in line[0], lines
        assert "COUNT/s" in line[0]
    assert SECRET not in str(info.value)


def test_good_values_reach_the_model_in_ini_and_yaml(tmp_path):
    root = server_dir(tmp_path, """\
        [server]
        port = 8080
        rate_limit = 100/s burst 200
        [gateway]
        enabled = yes
        secret = %s
        rate_limit = 10/m
        auth_handler = mypkg.auth:decide
        [routes:line]
        /api = @api
        [@api]
        members = 127.0.0.1:5001
        rate_limit = 50/s burst 5
        """ % SECRET)
    (root / "servers-enabled" / "b.yaml").write_text(textwrap.dedent("""\
        server: {port: 8081, rate_limit: 100/s burst 200}
        routes: {/api: "@api"}
        "@api": {members: 127.0.0.1:5001, rate_limit: 50/s burst 5}
        """))
    config = load_config(str(root))
    for server in config.servers:
        assert (server.rate_limit.rate, server.rate_limit.burst) == (100.0, 200)
        assert (server.aliases[0].rate_limit.rate, server.aliases[0].rate_limit.burst) == (50, 5)
    web = [s for s in config.servers if s.name == "web"][0]
    assert web.gateway.rate_limit.rate == pytest.approx(10 / 60.0)
    assert web.gateway.auth_handler == "mypkg.auth:decide"


def test_gateway_keys_without_the_gateway_are_errors(tmp_path):
    root = server_dir(tmp_path, """\
        [server]
        port = 8080
        [gateway]
        rate_limit = 10/s
        auth_handler = mypkg.auth:decide
        [routes:line]
        / = www
        """)
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    text = str(info.value)
    assert "[gateway] rate_limit: found '10/s', expected enabled = yes" in text
    assert "[gateway] auth_handler: found 'mypkg.auth:decide', expected enabled = yes" in text


def test_auth_handler_file_is_relative_to_the_config_dir(tmp_path):
    root = server_dir(tmp_path, """\
        [server]
        port = 8080
        [gateway]
        enabled = yes
        secret = %s
        auth_handler = hooks/auth.py:decide
        [routes:line]
        / = www
        """ % SECRET)
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    assert "[gateway] auth_handler: found 'hooks/auth.py:decide', expected an existing " \
           "Python file (%s)" % (root / "hooks" / "auth.py") in str(info.value)
    (root / "hooks").mkdir()
    (root / "hooks" / "auth.py").write_text("def decide(r, c): return None\n")
    config = load_config(str(root))
    assert config.servers[0].gateway.auth_handler == "%s:decide" % (root / "hooks" / "auth.py")


def test_client_rate_limit_on_a_unix_socket_is_an_error(tmp_path):
    root = server_dir(tmp_path, """\
        [server]
        address = unix:%s
        rate_limit = 10/s
        [routes:line]
        / = www
        """ % (tmp_path / "s.sock"))
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    assert "[server] rate_limit: found '10/s', expected a TCP address" in str(info.value)


def test_script_api_refuses_bad_values_naming_function_and_argument():
    import skitaid
    with pytest.raises(ValueError, match=r"skitaid.set_rate_limit: spec: found '100/x'"):
        skitaid.set_rate_limit("100/x")
    with pytest.raises(TypeError, match=r"skitaid.set_rate_limit: spec is a string"):
        skitaid.set_rate_limit(100)
    with pytest.raises(ValueError, match=r"skitaid.alias: rate_limit: found '5/s burst -1'"):
        skitaid.alias("@x", "http", ["127.0.0.1:5001"], rate_limit="5/s burst -1")
    with pytest.raises(ValueError, match=r"rate_limit.*'9/q'"):
        skitaid.enable_gateway(True, SECRET, rate_limit="9/q")
    skitaid.set_rate_limit(None)


# ---------------------------------------------------------------- the table

def test_burst_then_refusal_with_the_wait():
    t = ratelimit.Table(slots=64)
    assert [t.take("k", 10, 5) for _ in range(5)] == [0.0] * 5
    wait = t.take("k", 10, 5)
    assert 0.05 < wait <= 0.1          # the next token in 1/10 s
    assert ratelimit.retry_after(wait) == 1
    assert ratelimit.retry_after(2.01) == 3
    assert t.take("other", 10, 5) == 0.0       # its own bucket


def test_a_full_group_gives_way_and_never_fails():
    t = ratelimit.Table(slots=ratelimit.GROUP)       # one group: every key shares it
    for i in range(ratelimit.GROUP):
        assert t.take("k%d" % i, 1, 1) == 0.0
        assert t.take("k%d" % i, 1, 1) > 0          # each holds its entry, empty
    assert t.take("newcomer", 1, 1) == 0.0          # one of them gave way
    assert t.take("newcomer", 1, 1) > 0


def test_slots_must_fill_whole_groups():
    with pytest.raises(ValueError):
        ratelimit.Table(slots=ratelimit.GROUP + 1)


def test_client_keys():
    from skitaid.handlers.limits import client_key
    assert client_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert client_key(("2001:db8:1:2:3:4:5:6", 5000)) == "2001:db8:1:2::/64"
    assert client_key(("2001:db8:1:2:ffff::1", 5000)) == "2001:db8:1:2::/64"
    assert client_key(("::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert client_key(None) == "-"
