"""Config files → model: good files, every kind of mistake, `skitaid check`."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from skitaid.config import (ALIAS, APP, STATIC, ConfigError, DEFAULT_DIR, ServerConfig,
                            find_config_dir, load_config)
from skitaid.config.model import Limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(tmp_path, servers, global_conf=None, dirs=("www/static", "www/other")):
    """A config dir in tmp_path: skitaid.conf, servers-enabled/<name> files, some dirs."""
    root = tmp_path / "etc"
    (root / "servers-enabled").mkdir(parents=True)
    if global_conf is not None:
        (root / "skitaid.conf").write_text(textwrap.dedent(global_conf))
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "www" / "app.py").write_text("def app(env, start):\n    return []\n")
    for name, text in servers.items():
        (root / "servers-enabled" / name).write_text(textwrap.dedent(text))
    return root


GOOD = """\
    [server]
    ip = 0.0.0.0            ; all interfaces
    port = 8080
    workers = 3             # old spelling of processes
    threads = 8
    ssl = off
    max_upload_size = 100M
    max_header_size = 512K
    keep_alive = 2.5
    estimated_timeout = 3
    request_log = no
    log_off = /static/, *.css  /favicon.ico
    critical_point = 90, 3, 20
    max_rss = 1G
    user = www-data

    [routes:line]
    default
    / = www/static
    / = www/app.py:app
    /api/ = @backend
    /mod = mypkg.web:application

    [routes:line]
    example.com .example.com
    / = www/other

    [@backend]
    members = 10.0.0.1:5000 2, 10.0.0.2:5000

    [@mydb]
    type = postgresql
    members = db1:5432/mydb/user/secret, admin:p%40ss@db2/other 3

    [@cache]
    type = sqlite3
    members = data/cache.db
"""


def test_good_ini(tmp_path):
    root = make_config(tmp_path, {"web.conf": GOOD})
    config = load_config(str(root))
    assert config.globals.config_dir == str(root)
    (s,) = config.servers
    assert (s.name, s.address, s.port, s.processes, s.threads) == ("web", "0.0.0.0", 8080, 3, 8)
    assert s.source == str(root / "servers-enabled" / "web.conf")
    assert s.ssl is False and s.request_log is False
    assert s.limits.max_upload_size == 100 * 1024 * 1024
    assert s.limits.max_header_size == 512 * 1024
    assert s.limits.keep_alive == 2.5
    assert s.limits.max_url_size == Limits().max_url_size     # untouched default
    assert s.estimated_timeout == 3.0
    assert s.log_off == ("/static/", "*.css", "/favicon.ico")
    assert s.critical_point == (90.0, 3, 20.0)
    assert s.max_rss == 1 << 30
    assert s.user == "www-data"

    default, example = s.hosts
    assert default.names == ("default",)
    assert [(r.prefix, r.kind) for r in default.routes] == [
        ("/", STATIC), ("/", APP), ("/api", ALIAS), ("/mod", APP)]
    # relative paths resolved against the config dir, stored absolute
    assert default.routes[0].target == str(root / "www" / "static")
    assert default.routes[1].target == str(root / "www" / "app.py") + ":app"
    assert default.routes[2].target == "@backend"
    assert default.routes[3].target == "mypkg.web:application"
    assert default.routes[0].source == "servers-enabled/web.conf [routes:line] /"
    assert example.names == ("example.com", ".example.com")
    assert example.routes[0].target == str(root / "www" / "other")

    backend, mydb, cache = s.aliases
    assert (backend.name, backend.type, backend.ssl) == ("backend", "http", False)
    assert [(m.host, m.port, m.weight) for m in backend.members] == [
        ("10.0.0.1", 5000, 2), ("10.0.0.2", 5000, 1)]
    m1, m2 = mydb.members
    assert (m1.host, m1.port, m1.database, m1.user, m1.password, m1.weight) == (
        "db1", 5432, "mydb", "user", "secret", 1)
    assert (m2.host, m2.port, m2.database, m2.user, m2.password, m2.weight) == (
        "db2", 5432, "other", "admin", "p@ss", 3)
    assert cache.members[0].database == str(root / "data" / "cache.db")


def test_defaults_and_global(tmp_path):
    root = make_config(tmp_path, {"a.conf": "[server]\n[routes:line]\n/ = www/static\n"},
                       global_conf="""\
                           [global]
                           user = nobody
                           log_path = logs
                           pidfile = /run/x.pid
                       """)
    config = load_config(str(root))
    assert config.globals.user == "nobody"
    assert config.globals.log_path == str(root / "logs")
    assert config.globals.pidfile == "/run/x.pid"
    s = config.servers[0]
    # everything not written keeps the model's defaults
    defaults = ServerConfig()
    assert (s.address, s.port, s.processes, s.threads) == (
        defaults.address, defaults.port, defaults.processes, defaults.threads)
    assert s.limits == Limits()
    assert s.hosts[0].names == ("default",)


def test_missing_global_file_gives_defaults(tmp_path):
    root = make_config(tmp_path, {"a.conf": "[server]\n[routes:line]\n/ = www/static\n"})
    assert load_config(str(root)).globals.log_path == ""


def test_symlinked_server_and_sorted_order(tmp_path):
    root = make_config(tmp_path, {
        "b.conf": "[server]\nport = 6001\n[routes:line]\n/ = www/static\n"})
    avail = root / "servers-available"
    avail.mkdir()
    (avail / "a.conf").write_text("[server]\nport = 6000\n[routes:line]\n/ = www/static\n")
    os.symlink("../servers-available/a.conf", root / "servers-enabled" / "a.conf")
    (root / "servers-enabled" / "notes.txt").write_text("ignored")
    config = load_config(str(root))
    assert [(s.name, s.port) for s in config.servers] == [("a", 6000), ("b", 6001)]


def problems_of(root):
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    return info.value


ROUTE = "\n[routes:line]\n/ = www/static\n"


def test_database_pool_keys(tmp_path):
    root = make_config(tmp_path, {"web.conf": "[server]" + ROUTE + "[@db]\ntype = postgresql\n"
                                  "members = u:p@h:5433/db 2\nmax_connections = 4\n"
                                  "idle_timeout = 30\npool_timeout = 1.5\n"})
    (alias,) = load_config(str(root)).servers[0].aliases
    assert (alias.max_connections, alias.idle_timeout, alias.pool_timeout) == (4, 30.0, 1.5)
    m = alias.members[0]
    assert (m.host, m.port, m.database, m.user, m.password, m.weight) == ("h", 5433, "db", "u", "p", 2)


def test_backend_keep_alive_key(tmp_path):
    root = make_config(tmp_path, {"web.conf": "[server]\nbackend_keep_alive = 1.5" + ROUTE})
    assert load_config(str(root)).servers[0].backend_keep_alive == 1.5
    root = make_config(tmp_path / "default", {"web.conf": "[server]" + ROUTE})
    assert load_config(str(root)).servers[0].backend_keep_alive == 4.0
    assert load_config(str(root)).servers[0].poller == "uvloop"


@pytest.mark.parametrize("text, expected_line", [
    ("[server]\nprot = 80" + ROUTE,
     "servers-enabled/web.conf [server] prot: found '80', expected a known key of [server] "
     "(did you mean 'port'?)"),
    ("[server]\nport = abc" + ROUTE,
     "servers-enabled/web.conf [server] port: found 'abc', expected an integer 1-65535"),
    ("[server]\nport = 70000" + ROUTE,
     "servers-enabled/web.conf [server] port: found '70000', expected an integer 1-65535"),
    ("[server]\nthreads = many" + ROUTE,
     "servers-enabled/web.conf [server] threads: found 'many', expected an integer >= 0"),
    ("[server]\nssl = maybe" + ROUTE,
     "servers-enabled/web.conf [server] ssl: found 'maybe'"),
    ("[server]\nmax_upload_size = 10Q" + ROUTE,
     "servers-enabled/web.conf [server] max_upload_size: found '10Q', expected a size"),
    ("[server]\nkeep_alive = -1" + ROUTE,
     "servers-enabled/web.conf [server] keep_alive: found '-1', expected a number of seconds"),
    ("[server]\npoller = kqueue" + ROUTE,
     "servers-enabled/web.conf [server] poller: found 'kqueue', expected uvloop, or epoll, "
     "poll or select"),
    ("[server]\nbackend_keep_alive = soon" + ROUTE,
     "servers-enabled/web.conf [server] backend_keep_alive: found 'soon', expected a number "
     "of seconds"),
    ("[server]\ncritical_point = 90, 3" + ROUTE,
     "servers-enabled/web.conf [server] critical_point: found '90, 3'"),
    ("[server]\nip = not an ip" + ROUTE,
     "servers-enabled/web.conf [server] ip: found 'not an ip', expected an IP address"),
    ("[server]\n[routes:line]\n/ = www/missing\n",
     "servers-enabled/web.conf [routes:line] /: found 'www/missing', expected an existing directory"),
    ("[server]\n[routes:line]\n/ = www/nope.py:app\n",
     "servers-enabled/web.conf [routes:line] /: found 'www/nope.py:app', expected an existing Python file"),
    ("[server]\n[routes:line]\n/api = @nowhere\n",
     "servers-enabled/web.conf [routes:line] /api: found '@nowhere', expected an alias defined as [@nowhere]"),
    ("[server]\n[routes:line]\n/db = @db\n[@db]\ntype = sqlite3\nmembers = x.db\n",
     "servers-enabled/web.conf [routes:line] /db: found '@db', expected an http or https alias"),
    ("[server]\n[routes:line]\napi = www/static\n",
     "servers-enabled/web.conf [routes:line] api: found 'api', expected a path prefix"),
    ("[server]\n[routes:line]\ndefault\n/ = www/static\nstray line\n",
     "servers-enabled/web.conf [routes:line] stray line: found 'stray line', expected a route"),
    ("[server]" + ROUTE + "[cluster]\nx = 1\n",
     "servers-enabled/web.conf [cluster]: expected a section [server], [routes:line], [gateway], [cachefs] or [@alias]"),
    ("[server]" + ROUTE + "[@b]\nmembers = h:1 heavy\n",
     "servers-enabled/web.conf [@b] members: found 'h:1 heavy', expected a positive integer weight"),
    ("[server]" + ROUTE + "[@b]\ntype = mysql\nmembers = h:1\n",
     "servers-enabled/web.conf [@b] type: found 'mysql', expected one of http, https"),
    ("[server]" + ROUTE + "[@b]\nssl = yes\n",
     "servers-enabled/web.conf [@b] members: expected one or more members"),
    ("[server]" + ROUTE + "[@b]\ntype = postgresql\nmembers = h:5432\n",
     "servers-enabled/web.conf [@b] members: found 'h:5432', expected host:port/db/user/password"),
    ("[server]" + ROUTE + "[@db]\ntype = postgresql\nmembers = h/db\nmax_connections = 0\n",
     "servers-enabled/web.conf [@db] max_connections: found '0', expected an integer 1-1000"),
    ("[server]" + ROUTE + "[@db]\ntype = postgresql\nmembers = h/db\npool_timeout = soon\n",
     "servers-enabled/web.conf [@db] pool_timeout: found 'soon', expected a number of seconds"),
    ("[server]\nssl = yes\ncertfile = nope.pem" + ROUTE,
     "servers-enabled/web.conf [server] certfile: found 'nope.pem', expected an existing file"),
    ("[server]\nport = 1\n",
     "servers-enabled/web.conf [routes:line]: expected a [routes:line] section with at least one route"),
    ("port = 1\n[server]" + ROUTE,
     "servers-enabled/web.conf: found 'port = 1', expected a [section] header first"),
])
def test_mistakes_name_file_section_key(tmp_path, text, expected_line):
    root = make_config(tmp_path, {"web.conf": text})
    error = problems_of(root)
    lines = str(error).splitlines()
    assert any(line.startswith(expected_line) for line in lines), lines


def test_all_problems_in_a_file_are_collected(tmp_path):
    root = make_config(tmp_path, {"web.conf": """\
        [server]
        port = abc
        threads = -2
        colour = blue
        [routes:line]
        / = www/missing
        /x = @ghost
    """})
    error = problems_of(root)
    keys = [(p.section, p.key) for p in error.problems]
    assert keys == [("server", "port"), ("server", "threads"), ("server", "colour"),
                    ("routes:line", "/"), ("routes:line", "/x")]
    assert len(str(error).splitlines()) == 5


def test_problems_across_files(tmp_path):
    root = make_config(tmp_path, {
        "a.conf": "[server]\nport = x" + ROUTE,
        "b.conf": "[server]\nthreads = y" + ROUTE,
    })
    files = [p.file for p in problems_of(root).problems]
    assert files == ["servers-enabled/a.conf", "servers-enabled/b.conf"]


@pytest.mark.parametrize("a_ip, b_ip, clash", [
    ("127.0.0.1", "127.0.0.1", True),
    ("0.0.0.0", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
])
def test_two_servers_on_one_port(tmp_path, a_ip, b_ip, clash):
    root = make_config(tmp_path, {
        "a.conf": "[server]\nip = %s\nport = 7000%s" % (a_ip, ROUTE),
        "b.conf": "[server]\nip = %s\nport = 7000%s" % (b_ip, ROUTE),
    })
    if not clash:
        assert len(load_config(str(root)).servers) == 2
        return
    (p,) = problems_of(root).problems
    assert str(p).startswith("servers-enabled/b.conf [server] port: found '7000', "
                             "expected a port not used by servers-enabled/a.conf")


def test_forward_ports_clash_with_other_servers(tmp_path):
    # every listener counts: a server's own port against another's forward port, and
    # two forward ports, are one socket each would bind
    root = make_config(tmp_path, {
        "a.conf": "[server]\nport = 7001\nforward = 7080 -> 443" + ROUTE,
        "b.conf": "[server]\nport = 7002\nforward = 7080 -> 443" + ROUTE,
        "c.conf": "[server]\nport = 7080" + ROUTE,
    })
    lines = [str(p) for p in problems_of(root).problems]
    assert lines[0].startswith("servers-enabled/b.conf [server] forward: found '7080', "
                               "expected a forward port not used by servers-enabled/a.conf")
    assert lines[1].startswith("servers-enabled/c.conf [server] port: found '7080', "
                               "expected a port not used by servers-enabled/a.conf (127.0.0.1:7080)")
    assert len(lines) == 2


def test_python_api_alias_uses_the_config_member_rules(tmp_path, monkeypatch):
    import skitaid.api as api
    monkeypatch.setattr(api, "_aliases", {})
    monkeypatch.setattr(api, "_script_dir", lambda: str(tmp_path))
    api.alias("@db", "sqlite3", "data.db 2, :memory:")
    first, memory = api._aliases["db"].members
    assert (first.database, first.weight) == (str(tmp_path / "data.db"), 2)
    assert memory.database == ":memory:"
    with pytest.raises(ValueError, match="max_connections: expected an integer 1-1000, got 0"):
        api.alias("@pg", "postgresql", "u:p@127.0.0.1:5432/db", max_connections=0)


def test_no_servers(tmp_path):
    root = make_config(tmp_path, {})
    (p,) = problems_of(root).problems
    assert "at least one server file" in str(p)


def test_global_mistakes(tmp_path):
    root = make_config(tmp_path, {"a.conf": "[server]" + ROUTE},
                       global_conf="[global]\nlogpath = /x\n[other]\n")
    lines = str(problems_of(root)).splitlines()
    assert lines[0].startswith("skitaid.conf [global] logpath: found '/x', expected a known key")
    assert lines[1].startswith("skitaid.conf [other]: expected a [global] section")


def test_ini_syntax_details(tmp_path):
    root = make_config(tmp_path, {"web.conf": """\
        [server]
        port: 6100
        [@b]
        members = 10.0.0.1:80,
            10.0.0.2:80 5
        [routes:line]
        ; a comment first, then no host line: the default group
        / = www/static   ; inline comment
        [server]
        threads = 2
    """})
    (s,) = load_config(str(root)).servers
    assert (s.port, s.threads) == (6100, 2)          # repeated [server] sections merge
    assert [(m.host, m.weight) for m in s.aliases[0].members] == [("10.0.0.1", 1), ("10.0.0.2", 5)]
    assert s.hosts[0].names == ("default",)
    assert s.hosts[0].routes[0].target == str(root / "www" / "static")


def test_find_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SKITAID_CONFIG_DIR", str(tmp_path / "env"))
    assert find_config_dir(str(tmp_path)) == str(tmp_path)
    assert find_config_dir() == str(tmp_path / "env")
    monkeypatch.delenv("SKITAID_CONFIG_DIR")
    expected = "/etc/skitaid" if os.path.isdir("/etc/skitaid") else DEFAULT_DIR
    assert find_config_dir() == expected


def test_builtin_default_config_loads():
    config = load_config(DEFAULT_DIR)
    (s,) = config.servers
    assert (s.name, s.address, s.port) == ("default", "127.0.0.1", 5000)
    assert [r.kind for r in s.hosts[0].routes] == [STATIC, APP]
    assert config.globals.pidfile == "/var/run/skitaid/skitaid.pid"
    # the repo-level sample is the same directory
    assert os.path.samefile(os.path.join(ROOT, "etc", "skitaid"), DEFAULT_DIR)


def test_builtin_demo_app():
    import importlib.util
    import io
    spec = importlib.util.spec_from_file_location(
        "demo_app", os.path.join(DEFAULT_DIR, "sites", "default", "app.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def call(path, method="GET", body=b"", query=""):
        seen = {}
        env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        out = b"".join(module.app(env, lambda status, headers: seen.update(status=status)))
        return seen["status"], out

    assert call("/hello") == ("200 OK", b"Hello from skitaid\n")
    status, out = call("/echo", "POST", b"ping", "a=1")
    assert status == "200 OK" and b"a=1" in out and out.endswith(b"ping")
    assert call("/nope")[0].startswith("404")


# ---------------------------------------------------------------- YAML

YAML_GOOD = """\
    server:
      ip: 0.0.0.0
      port: 8080
      workers: 3
      threads: 8
      ssl: off
      max_upload_size: 100M
      max_header_size: 512K
      keep_alive: 2.5
      estimated_timeout: 3
      request_log: no
      log_off: [/static/, "*.css", /favicon.ico]
      critical_point: [90, 3, 20]
      max_rss: 1G
      user: www-data
    routes:
      /: [www/static, www/app.py:app]
      /api/: "@backend"
      /mod: mypkg.web:application
    hosts:
      example.com .example.com:
        /: www/other
    "@backend":
      members: [10.0.0.1:5000 2, 10.0.0.2:5000]
    "@mydb":
      type: postgresql
      members: [db1:5432/mydb/user/secret, admin:p%40ss@db2/other 3]
    "@cache":
      type: sqlite3
      members: data/cache.db
"""


def _without_sources(obj):
    """Drop where-defined metadata (it names the format's sections) for comparison."""
    if dataclasses.is_dataclass(obj):
        changes = {f.name: _without_sources(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if "source" in changes:
            changes["source"] = ""
        if isinstance(obj, ServerConfig):
            changes["name"] = ""
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple):
        return tuple(_without_sources(x) for x in obj)
    return obj


def test_yaml_equals_ini(tmp_path):
    root = make_config(tmp_path, {"web.conf": GOOD.replace("8080", "8081"),
                                  "web2.yaml": YAML_GOOD})
    ini_server, yaml_server = load_config(str(root)).servers
    assert yaml_server.name == "web2"
    assert _without_sources(dataclasses.replace(ini_server, port=8080)) == \
        _without_sources(yaml_server)


def test_yaml_mistakes(tmp_path):
    root = make_config(tmp_path, {"web.yaml": """\
        server:
          port: abc
          nested: {a: 1}
        routes:
          /: www/missing
        extra: 1
    """})
    lines = str(problems_of(root)).splitlines()
    assert "servers-enabled/web.yaml [server] nested: found \"{'a': 1}\", expected a single value or a list" in lines
    assert any(l.startswith("servers-enabled/web.yaml [extra]: expected a top-level key") for l in lines)
    assert "servers-enabled/web.yaml [server] port: found 'abc', expected an integer 1-65535" in lines
    assert any(l.startswith("servers-enabled/web.yaml [routes] /: found 'www/missing'") for l in lines)


def test_yaml_syntax_error(tmp_path):
    root = make_config(tmp_path, {"web.yml": "server: [unclosed\n"})
    (p,) = problems_of(root).problems
    assert p.file == "servers-enabled/web.yml" and p.expected.startswith("valid YAML")


def test_same_name_in_two_formats(tmp_path):
    root = make_config(tmp_path, {"web.conf": "[server]" + ROUTE,
                                  "web.yaml": "server: {port: 5001}\nroutes: {/: www/static}\n"})
    (p,) = problems_of(root).problems
    assert p.file == "servers-enabled/web.yaml" and "one file per server name" in p.expected


# ---------------------------------------------------------------- skitaid check

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SKITAID_CONFIG_DIR", None)
    return subprocess.run([sys.executable, "-m", "skitaid"] + list(args),
                          capture_output=True, text=True, env=env, timeout=60)


# test_check_ok and test_check_problems: in test_check.py, next to the deep checks.


def test_check_builtin_default_and_status_when_stopped():
    result = run_cli("check", "-c", DEFAULT_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK: 1 server(s)\n  default  http://127.0.0.1:5000")
    result = run_cli("status", "-c", DEFAULT_DIR)
    # LSB: 3 = not running
    assert result.returncode == 3 and "not running" in result.stdout
