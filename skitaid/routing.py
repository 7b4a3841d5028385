"""Virtual hosts and mount points: which handler answers a request.

Host groups are picked by the Host header with the rules of hosts.py
(exact name, then ".suffix" names, then `*`/`default`; a `name:port` entry
first, against the raw header); inside a group the longest mount prefix wins,
and at the same prefix an existing static file wins over the app.
"""
from . import devel, reimport
from .apps import load_app
from .preference import apply_app_config
from .config.model import ALIAS, APP, STATIC
from .handlers.errors import error_response
from .handlers.wsgi import WSGIHandler
from .hosts import HostTable


class _RefuseConnect:
    """CONNECT host:port to a server that is not a forward proxy."""

    @staticmethod
    def handle(exchange, resolved=None):
        # (the connection closes after it: the protocol made the exchange its last)
        status, headers, body = error_response(405, "this server is not a proxy")
        headers.append(("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"))
        exchange.respond(status, headers, body)


class Mount:
    __slots__ = ("prefix", "slashed", "statics", "app")

    def __init__(self, prefix):
        self.prefix = prefix
        self.slashed = "/" if prefix == "/" else prefix + "/"
        self.statics = []
        self.app = None


class Router:
    limiter = None      # handlers/limits.Limiter: [server] rate_limit, checked before routing

    def __init__(self, groups):
        # groups: list of (names, [Mount]) with mounts sorted longest first
        self.with_port = {}     # "example.com:8080": only when the Host header has that port
        self.table = HostTable()     # the rules SNI uses too (hosts.py)
        for names, mounts in groups:
            for name in names:
                name = name.lower()
                host, colon, port = name.rpartition(":")
                if colon and port.isdigit() and not host.endswith(("]", ":")):
                    self.with_port.setdefault(host.rstrip(".") + ":" + port, mounts)
                else:
                    self.table.add(name, mounts)

    def mounts_for(self, host, request=None):
        if self.with_port and request is not None:
            raw = request.header("host")
            if raw:
                mounts = self.with_port.get(raw.lower())
                if mounts is not None:
                    return mounts
        table = self.table
        mounts = table.exact.get(host)      # (host is lower-case already: exchange.py)
        if mounts is not None:
            return mounts
        if table.suffixes or host.endswith("."):
            return table.lookup(host)
        return table.fallback

    forward = None          # the forward proxy, when enable_proxy is on
    wants_reload = False    # an app asked for the reloader the master does not run yet
    status = None           # the status page / metrics handler (status_path, metrics_path)
    status_paths = ()

    def resolve(self, request):
        """(handler, resolved) or (None, None) when nothing is mounted there."""
        if self.forward is not None and request.target[:1] != "/" and request.target != "*":
            return self.forward, None       # absolute-URI: a forward-proxy request
        path = request.path
        if not path:        # CONNECT's authority-form (protocols/h1.py)
            return _RefuseConnect, None
        if self.status_paths and path in self.status_paths:
            return self.status, None        # on every virtual host, before the mounts
        mounts = self.mounts_for(request.host, request)
        if not mounts:
            return None, None
        for m in mounts:
            if path == m.prefix or path.startswith(m.slashed):
                statics = m.statics
                if statics:
                    for st in statics:
                        found = st.find(request)
                        if found is not None:
                            return st, found
                    if m.app is None:
                        return statics[-1], None   # it answers 404 itself
                return m.app, None
        return None, None


def max_age_lookup(config):
    """path → Cache-Control max-age from set_max_age() prefixes (longest wins)."""
    table = sorted(config.max_ages, key=lambda p: -len(p[0]))
    default = config.static_max_age
    if not table:
        return lambda path: default

    def lookup(path):
        for prefix, seconds in table:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return seconds
        return default
    return lookup


def preload_handlers(config):
    """Import the handler modules build_router() imports lazily that `config`'s
    routes will use. A worker calls this before it drops privileges: the
    workers' user may not be able to read skitaid's installation."""
    kinds = {route.kind for group in config.hosts for route in group.routes}
    if STATIC in kinds:
        from .handlers import static  # noqa: F401
    if config.status_path or config.metrics_path:
        from .handlers import metrics, status  # noqa: F401
        import jinja2  # noqa: F401
    if config.rate_limit or config.gateway.rate_limit or any(a.rate_limit for a in config.aliases):
        from .handlers import gateway, limits  # noqa: F401
    if ALIAS in kinds or config.enable_proxy:
        from .handlers import gateway, proxy  # noqa: F401
        from .protocols import tunnel  # noqa: F401  (the proxy's upgrades and CONNECT)


def load_auth_handler(target):
    """The auth handler: a function, or "package.module:function" from [gateway]
    (load_app refuses what is not callable)."""
    try:
        return load_app(target)
    except Exception as e:
        # the worker's boot failure then says which key to look at
        raise RuntimeError("[gateway] auth_handler %r: %s" % (target, e)) from e


def build_router(config, worker):
    """Instantiate handlers for every route of `config` (imports the apps)."""
    # development mode: nothing cached by browsers, sources watched
    max_age_for = (lambda path: 0) if devel.server_devel(config) else max_age_lookup(config)
    watched = devel.watched(config)
    wants_reload = False        # an app file's app.use_reloader: the master is told
    aliases = {a.name: a for a in config.aliases}
    verifier = None
    if config.gateway.enabled:
        from .tokens import Verifier
        verifier = Verifier(config.gateway)
    limiter = auth_handler = None
    if config.rate_limit or config.gateway.rate_limit or any(a.rate_limit for a in aliases.values()):
        from .handlers.limits import limiter_for
        limiter = limiter_for(config)
    by_subject = limiter is not None and limiter.subject is not None
    if config.auth_handler is not None or config.gateway.auth_handler:
        auth_handler = load_auth_handler(config.auth_handler or config.gateway.auth_handler)
    apps = {}
    groups = []
    for group in config.hosts:
        by_prefix = {}
        for route in group.routes:
            m = by_prefix.get(route.prefix)
            if m is None:
                m = by_prefix[route.prefix] = Mount(route.prefix)
            if route.kind == STATIC:
                from .handlers.static import StaticHandler
                m.statics.append(StaticHandler(route.target, route.prefix, max_age_for))
            elif route.kind == APP:
                key = (id(route.target) if callable(route.target) else route.target, route.prefix)
                if key not in apps:
                    app = apply_app_config(load_app(route.target), route.app_config)
                    if callable(route.target) and watched:
                        # the script's app, edited
                        app = apply_app_config(reimport.fresh(route.target), route.app_config)
                    apps[key] = WSGIHandler(app, route.prefix, worker)
                    apps[key].verifier = verifier     # the identity of requests with a token
                    apps[key].debug = devel.apply_debug(route, config, app)
                    wants_reload = wants_reload or devel.app_reloads(app)
                m.app = apps[key]
                if by_subject:
                    from .handlers.gateway import Guard
                    m.app = Guard(m.app, None, verifier, config.gateway.realm, None, worker,
                                  limiter)
            elif route.kind == ALIAS:
                from .handlers.proxy import ProxyHandler
                m.app = ProxyHandler(route.target, route.prefix, worker)
                alias = aliases.get(route.target[1:].split("/", 1)[0])
                if alias is not None and (alias.allow or alias.role or alias.rate_limit
                                          or by_subject):
                    from .handlers.gateway import Guard
                    m.app = Guard(m.app, alias, verifier, config.gateway.realm,
                                  auth_handler, worker, limiter)
        mounts = sorted(by_prefix.values(), key=lambda m: -len(m.prefix))
        groups.append((group.names, mounts))
    router = Router(groups)
    router.wants_reload = wants_reload and not watched
    router.limiter = limiter if config.rate_limit else None    # [server]: per client, first
    if config.enable_proxy:
        from .handlers.proxy import ForwardProxyHandler
        router.forward = ForwardProxyHandler(worker)
    if config.status_path or config.metrics_path:
        from .handlers.status import StatusHandler
        router.status = StatusHandler(config)
        router.status_paths = router.status.paths()
    return router
