"""Config sections → the typed model (skitaid/config/build.py): the rule table,
each kind of bad value and the message that says where it is."""
import os

import pytest

from skitaid.config.build import (ALIAS_SECTION, GLOBAL, ROUTES, SERVER, FileContext,
                                  RawSection, build_global, build_server)
from skitaid.config.model import ALIAS, APP, STATIC


@pytest.fixture
def root(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "app.py").write_text("def app(e, s): pass\n")
    return tmp_path


def build(root, server=(), routes=None, extra=()):
    """(ServerConfig, [problem strings]) for a [server] with `server` entries,
    one routes section (default: / = www) and `extra` sections."""
    ctx = FileContext("web.conf", str(root))
    sections = [RawSection("server", SERVER, list(server))]
    sections.append(RawSection("routes:line", ROUTES,
                               list(routes) if routes is not None else [("/", "www")]))
    sections += list(extra)
    config = build_server(ctx, sections, "web", "web.conf")
    return config, [str(p) for p in ctx.problems]


# -- good values ----------------------------------------------------------------------------------

def test_good_server_values_are_converted(root):
    config, problems = build(root, [
        ("port", "8080"), ("threads", "0"), ("workers", "3"), ("ssl", "no"),
        ("debug", "On"), ("keep-alive", "2.5"), ("max_upload_size", "100M"),
        ("max_header_size", "8K"), ("min_body_rate", "0"), ("proxy_allow", "10.0.0.0/8, 192.168.1/24"),
        ("proxy_connect_ports", "443 8443"), ("forward", "80 -> example.com"),
        ("critical_point", "90, 3, 20"), ("log_off", "/health, /ping"), ("address", "*"),
    ])
    assert problems == []
    assert (config.port, config.threads, config.processes, config.ssl, config.debug) == \
        (8080, 0, 3, False, True)
    limits = config.limits
    assert (limits.keep_alive, limits.max_upload_size, limits.max_header_size,
            limits.min_body_rate) == (2.5, 100 * 1024 * 1024, 8192, 0)
    assert config.proxy_allow == ("10.0.0.0/8", "192.168.1.0/24")
    assert config.proxy_connect_ports == (443, 8443)
    assert config.forward == (80, 443, "example.com")
    assert config.critical_point == (90.0, 3, 20.0)
    assert config.log_off == ("/health", "/ping") and config.address == "0.0.0.0"


def test_routes_of_every_kind(root):
    config, problems = build(root, routes=[
        ("example.com .example.org", None), ("/", "www"), ("/static/", "www"),
        ("/api", "app.py:app"), ("/mod", "some.module:make()"), ("/p", "@back/v1"),
    ], extra=[RawSection("@back", ALIAS_SECTION, [("members", "127.0.0.1:9000 2, b:80")])])
    assert problems == []
    [group] = config.hosts
    assert group.names == ("example.com", ".example.org")
    kinds = [(r.prefix, r.kind) for r in group.routes]
    assert kinds == [("/", STATIC), ("/static", STATIC), ("/api", APP), ("/mod", APP),
                     ("/p", ALIAS)]
    assert group.routes[0].target == os.path.join(str(root), "www")
    assert group.routes[2].target == os.path.join(str(root), "app.py") + ":app"
    [alias] = config.aliases
    assert [(m.host, m.port, m.weight) for m in alias.members] == [("127.0.0.1", 9000, 2),
                                                                   ("b", 80, 1)]


@pytest.mark.parametrize("kind, spec, fields", [
    ("postgresql", "db.local:5433/app/alice/s%40cret", ("db.local", 5433, "app", "alice", "s@cret")),
    ("postgresql", "bob:pw@db.local/app", ("db.local", 5432, "app", "bob", "pw")),
    ("redis", "secret@cache:6380/2", ("cache", 6380, "2", "", "secret")),
    ("redis", "cache", ("cache", 6379, "", "", "")),
    ("https", "[::1]", ("::1", 443, "", "", "")),
])
def test_alias_member_specs(root, kind, spec, fields):
    config, problems = build(root, extra=[RawSection("@db", ALIAS_SECTION, [
        ("type", kind), ("members", spec)])])
    assert problems == []
    m = config.aliases[0].members[0]
    assert (m.host, m.port, m.database, m.user, m.password) == fields


# -- bad values: each kind, and where it is ------------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("port", "0", "an integer 1-65535"),
    ("port", "80x", "an integer 1-65535"),
    ("threads", "-1", "an integer >= 0"),
    ("ssl", "maybe", "yes or no (or true/false, on/off, 1/0)"),
    ("keep_alive", "soon", "a number of seconds >= 0"),
    ("keep_alive", "nan", "a number of seconds >= 0"),
    ("tunnel_timeout", "0.5", "a number of seconds >= 1"),
    ("max_upload_size", "12Q", "a size in bytes, or with a K, M or G suffix (e.g. 100M)"),
    ("address", "not/a/host", "an IP address or host name"),
    ("address", "unix:relative.sock", "unix:/absolute/path"),
    ("proxy_allow", "300.0.0.1", "IP networks separated by commas"),
    ("proxy_connect_ports", "0", "port numbers separated by commas"),
    ("forward", "80", "HTTP_PORT -> HTTPS_PORT"),
    ("critical_point", "90, 3", "CPU percent, consecutive checks and interval seconds"),
])
def test_a_bad_value_says_file_section_key_found_and_expected(root, key, value, expected):
    _, problems = build(root, [(key, value)])
    [problem] = problems
    assert problem.startswith("web.conf [server] %s: found %r, expected " % (key, value)), problem
    assert expected in problem


def test_an_unknown_key_suggests_the_near_one(root):
    _, problems = build(root, [("prot", "80")])
    assert problems == ["web.conf [server] prot: found '80', expected a known key of [server] "
                        "(did you mean 'port'?)"]


def test_a_bare_line_in_server_wants_key_equals_value(root):
    _, problems = build(root, [("port 80", None)])
    assert problems == ["web.conf [server] port 80: expected KEY = VALUE"]


def test_every_problem_is_reported_at_once(root):
    _, problems = build(root, [("port", "0"), ("threads", "x")], routes=[("/", "nowhere")])
    assert len(problems) == 3


def test_ssl_without_a_certificate(root):
    _, problems = build(root, [("ssl", "yes")])
    assert problems == ["web.conf [server] certfile: expected a certificate file when ssl = yes"]


def test_forward_to_the_servers_own_port(root):
    _, problems = build(root, [("port", "8080"), ("forward", "8080 -> 443")])
    assert problems == ["web.conf [server] forward: found '8080 -> 443', expected a forward "
                        "port other than the server's port"]


@pytest.mark.parametrize("routes, expected", [
    ([("static", "www")], "web.conf [routes:line] static: found 'static', expected a path "
                          "prefix starting with '/'"),
    ([("/", "missing")], "expected an existing directory ("),
    ([("/", "gone.py:app")], "expected an existing Python file ("),
    ([("/", "app.py:not-a-name")], "expected an app as file.py:NAME or module:NAME"),
    ([("/", "@nowhere")], "expected an alias defined as [@nowhere] in this file (none defined)"),
    ([("/", "")], "expected a directory, an app (file.py:app or module:app) or an @alias"),
    ([("exa mple!", None), ("/", "www")], "expected host names: default, * or names like"),
    ([("example.com", None)], "expected at least one route as PREFIX = TARGET"),
    ([("/", "www"), ("/x y", None)], "expected a route as PREFIX = TARGET"),
    ([("/", "www"), ("certfile", "a.pem")], "expected a routes section for named hosts"),
    ([("a.test", None), ("/", "www"), ("certfile", "a.pem")],
     "expected ssl = yes in the server section"),
    ([("a.test", None), ("/", "www"), ("keyfile", "a.key")], "expected a certfile in the same "
                                                              "section"),
])
def test_bad_routes(root, routes, expected):
    _, problems = build(root, routes=routes)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_host_name_in_two_routes_sections(root):
    _, problems = build(root, routes=[("a.test", None), ("/", "www")], extra=[
        RawSection("routes:other", ROUTES, [("a.test", None), ("/", "www")])])
    assert problems == ["web.conf [routes:other]: found 'a.test', expected host name 'a.test' "
                        "in only one routes section"]


def test_a_proxy_route_to_a_database_alias(root):
    _, problems = build(root, routes=[("/", "@db")], extra=[
        RawSection("@db", ALIAS_SECTION, [("type", "postgresql"), ("members", "h/db")])])
    assert problems == ["web.conf [routes:line] /: found '@db', expected an http or https "
                        "alias to proxy to (@db is postgresql)"]


@pytest.mark.parametrize("entries, expected", [
    ([("type", "ftp"), ("members", "a:1")], "[@b] type: found 'ftp', expected one of http, "),
    ([], "[@b] members: expected one or more members separated by commas"),
    ([("members", "a:99999")], "[@b] members: found 'a:99999', expected host:port [weight] "
                               "with a port 1-65535"),
    ([("members", "a:80 0")], "expected a positive integer weight after the member"),
    ([("members", "user@a:80")], "found 'user@a:80', expected host:port [weight]"),
    ([("members", "a:80/path")], "found 'a:80/path', expected host:port [weight]"),
    ([("type", "redis"), ("members", "a/zero")], "expected host:port[/db] or password@"),
    ([("members", "a:1"), ("max_connections", "5000")], "[@b] max_connections: found '5000', "
                                                        "expected an integer 1-1000"),
])
def test_bad_alias_sections(root, entries, expected):
    _, problems = build(root, extra=[RawSection("@b", ALIAS_SECTION, entries)])
    assert len(problems) == 1 and expected in problems[0], problems


def test_sections_that_do_not_belong(root):
    ctx = FileContext("web.conf", str(root))
    build_server(ctx, [RawSection("routes:line", ROUTES, [("/", "www")]),
                       RawSection("misc", "", [])], "web", "web.conf")
    assert [str(p) for p in ctx.problems] == [
        "web.conf [server]: expected a [server] section",
        "web.conf [misc]: expected a section [server], [routes:line], [gateway], [cachefs] or [@alias]"]


def test_the_global_section(root):
    ctx = FileContext("skitaid.conf", str(root))
    config = build_global(ctx, [RawSection("global", GLOBAL, [("log_path", "logs"),
                                                             ("user", "www-data")])])
    assert ctx.problems == []
    assert config.log_path == os.path.join(str(root), "logs") and config.user == "www-data"
    build_global(ctx, [RawSection("server", SERVER, [])])
    assert [str(p) for p in ctx.problems] == [
        "skitaid.conf [server]: expected a [global] section (or [smtpda])"]


def test_a_key_set_twice_is_an_error_naming_both_lines():
    from skitaid.config.ini import read_sections
    text = ("[server]\nport = 5000\nthreads = 4\n\n[server]\nPort = 5001\n"
            "[routes:line]\ndefault\n/ = static\n/ = app.py:app\n")
    sections, problems = read_sections(text, "web.conf")
    assert [p.located() for p in problems] == [
        "web.conf:6 [server] Port: found '5001', expected the key once "
        "(it is set on line 2 already)"]
    # repeated route prefixes stay several targets at one path
    routes = [s for s in sections if s.kind == ROUTES][0]
    assert [e for e in routes.entries if e[0] == "/"] == [("/", "static"), ("/", "app.py:app")]
