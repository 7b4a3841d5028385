"""Which handler answers a request (skitaid/routing.py): virtual hosts, then the
longest mount prefix, and at one prefix an existing static file before the app."""
import pytest

from skitaid.exchange import Request
from skitaid.http.headers import host_without_port
from skitaid.routing import Mount, Router, _RefuseConnect, max_age_lookup


class Static:
    """A static handler whose find() says which paths it has."""

    def __init__(self, name, paths=()):
        self.name = name
        self.paths = set(paths)

    def find(self, request):
        return ("found", self.name) if request.path in self.paths else None

    def __repr__(self):
        return self.name


def mounts(**table):
    """prefix → app name, or (app name or None, [Static]) → [Mount], longest first."""
    out = []
    for prefix, target in table.items():
        prefix = "/" if prefix == "root" else "/" + prefix.replace("_", "/")
        m = Mount(prefix)
        if isinstance(target, tuple):
            m.app, m.statics = target
        else:
            m.app = target
        out.append(m)
    return sorted(out, key=lambda m: -len(m.prefix))


def request(host, path, method="GET", target=None):
    req = Request(method, target or path, path, "", "1.1", [("host", host)], "http",
                  ("127.0.0.1", 1), ("127.0.0.1", 80))
    req.host = host_without_port(host)
    return req


ROUTER = Router([
    (("www.example.com",), mounts(root="www")),
    (("example.com:8080",), mounts(root="port 8080")),
    ((".example.com",), mounts(root="domain", api="domain api")),
    (("*.wild.test",), mounts(root="wild")),
    (("default",), mounts(root="default", api="api", api_v1="api v1",
                          static=(None, [Static("files", ["/static/a.css"])]),
                          docs=("docs app", [Static("docs files", ["/docs/index.html"])]))),
])


@pytest.mark.parametrize("host, path, handler", [
    ("www.example.com", "/", "www"),
    ("WWW.example.com", "/", "www"),          # (the protocols lower-case req.host)
    ("example.com", "/", "domain"),
    ("a.b.example.com", "/api/x", "domain api"),
    ("example.com:8080", "/", "port 8080"),   # a name:port entry: that port only
    ("example.com:9090", "/", "domain"),
    ("x.wild.test", "/", "wild"),
    ("wild.test", "/", "default"),            # *.name: subdomains only
    ("other.org", "/", "default"),
    ("other.org", "/api", "api"),
    ("other.org", "/api/", "api"),
    ("other.org", "/api/v1/users", "api v1"),  # the longest prefix wins
    ("other.org", "/api/v10", "api"),          # a prefix ends at a slash
    ("other.org", "/apix", "default"),
    ("other.org", "/docs/index.html", ("found", "docs files")),   # a file before the app
    ("other.org", "/docs/missing", "docs app"),
])
def test_resolve(host, path, handler):
    found, resolved = ROUTER.resolve(request(host, path))
    assert (resolved if resolved is not None else found) == handler


def test_a_static_mount_without_app_answers_its_own_404s():
    handler, resolved = ROUTER.resolve(request("x", "/static/missing.css"))
    assert repr(handler) == "files" and resolved is None
    handler, resolved = ROUTER.resolve(request("x", "/static/a.css"))
    assert (repr(handler), resolved) == ("files", ("found", "files"))


def test_nothing_mounted_and_no_fallback_is_none():
    router = Router([(("a.test",), mounts(api="api"))])
    assert router.resolve(request("b.test", "/api")) == (None, None)
    assert router.resolve(request("a.test", "/other")) == (None, None)


def test_connect_to_a_server_that_is_no_proxy_is_refused():
    req = request("x", "", method="CONNECT", target="example.com:443")
    assert ROUTER.resolve(req) == (_RefuseConnect, None)


def test_an_absolute_target_goes_to_the_forward_proxy_when_there_is_one():
    router = Router([(("default",), mounts(root="app"))])
    req = request("x", "/p", target="http://elsewhere/p")
    assert router.resolve(req) == ("app", None)
    router.forward = "forward proxy"
    assert router.resolve(req) == ("forward proxy", None)
    assert router.resolve(request("x", "/p")) == ("app", None)


class _Config:
    def __init__(self, max_ages, default):
        self.max_ages = max_ages
        self.static_max_age = default


def test_max_age_lookup_takes_the_longest_prefix():
    lookup = max_age_lookup(_Config([("/static", 60), ("/static/img/", 3600)], 5))
    assert [lookup(p) for p in ("/static/a.css", "/static/img/a.png", "/staticx", "/")] \
        == [60, 3600, 5, 5]
    assert max_age_lookup(_Config([], 7))("/anything") == 7
