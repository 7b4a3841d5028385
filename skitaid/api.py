"""The Python API for self-contained app scripts (the original Skitai's).

    import skitaid
    skitaid.mount("/", app)
    skitaid.mount("/static", "static")          # relative to the script
    skitaid.run(address="127.0.0.1", port=5000, threads=4)

The calls only record what was asked; `run()` turns it into the same config
model the config files produce and serves it.
"""
import hashlib
import os
import sys
import types
from dataclasses import fields, replace

from . import mode, scriptargs
from .apps import find_app_file
from .preference import Preference
from .config.model import (ALIAS, ALIAS_TYPES, APP, MONGODB_REFUSED, Alias, CacheConfig, Config,
                           GatewayConfig, GlobalConfig, alias_types,
                           HostCert, HostGroup, Limits, Route, ServerConfig, STATIC)

_mounts = []          # (host group names, Route)
_aliases = {}         # name → Alias, from skitaid.alias()
_max_ages = []
_log_off = []
_host_certs = {}      # host names → HostCert, from enable_ssl(host=...)
_settings = {}
_gateway = None       # GatewayConfig from enable_gateway()
_auth_handler = None  # from set_auth_handler()
_cachefs = None       # CacheConfig from enable_cachefs()
_settings_global = {}  # [global] keys set in code (set_shared_state)

_LIMIT_KEYS = {f.name for f in fields(Limits)}
_SERVER_KEYS = {f.name for f in fields(ServerConfig)} - {"limits", "hosts", "max_ages", "log_off",
                                                          "host_certs", "gateway",
                                                          "auth_handler", "cachefs"}
_GLOBAL_KEYS = {f.name for f in fields(GlobalConfig)} - {"config_dir", "mail"}
_SPELLINGS = {"ip": "address", "workers": "processes"}
# `python app.py COMMAND`, as the original Skitai's scripts took them
COMMANDS = scriptargs.COMMAND_WORDS


def _script_dir():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else os.getcwd()


def _normalise_prefix(prefix):
    if not prefix.startswith("/"):
        raise ValueError("a mount point starts with '/': %r" % prefix)
    return prefix.rstrip("/") or "/"


def _describe(target):
    """A mount target as messages name it."""
    if isinstance(target, str):
        return repr(target)
    if hasattr(target, "__qualname__"):
        return "%s.%s" % (getattr(target, "__module__", "?"), target.__qualname__)
    return repr(target)


def _file_route(prefix, where, name, base_dir, asked):
    path = find_app_file(where, base_dir)
    if not path:
        raise ValueError("skitaid.mount(%r, %s): no app file %s (.py may be left out; a "
                         "directory needs an app.py)" % (prefix, asked,
                                                         os.path.join(base_dir, where)))
    return Route(prefix, APP, "%s:%s" % (path, name), "skitaid.mount")


def _split_name(spec, app_name):
    where, sep, name = spec.rpartition(":")
    if not sep:
        return spec, app_name
    if not name.isidentifier():
        raise ValueError("skitaid.mount: the app name after ':' must be a Python name: %r" % spec)
    return where, name


def _module_app(prefix, module, app_name):
    app = getattr(module, app_name, None)
    if not callable(app):
        raise ValueError("skitaid.mount(%r, %s): the module has no callable %r (give "
                         "(module, 'file:app') to mount an app file next to it)"
                         % (prefix, getattr(module, "__name__", module), app_name))
    return Route(prefix, APP, app, "skitaid.mount")


def _route(prefix, target, app_name):
    prefix = _normalise_prefix(prefix)
    if not isinstance(app_name, str) or not app_name.isidentifier():
        raise ValueError("skitaid.mount: app_name must be a Python name, got %r" % (app_name,))
    if isinstance(target, str) and target.startswith("@"):
        return Route(prefix, ALIAS, target, "skitaid.mount")   # reverse proxy to the cluster
    if isinstance(target, types.ModuleType):
        return _module_app(prefix, target, app_name)
    if callable(target):
        return Route(prefix, APP, target, "skitaid.mount")
    if isinstance(target, tuple):
        if len(target) != 2 or not isinstance(target[1], str):
            raise TypeError("skitaid.mount(%r, ...): a tuple is (module, 'file[:app]') or "
                            "('file.py', 'app'), got %r" % (prefix, target))
        first, spec = target
        if isinstance(first, types.ModuleType):       # a file next to that module
            folder = os.path.dirname(os.path.abspath(getattr(first, "__file__", "") or ""))
            if not getattr(first, "__file__", None):
                raise ValueError("skitaid.mount(%r, ...): module %s has no file to start "
                                 "from" % (prefix, first.__name__))
            where, name = _split_name(spec, app_name)
            return _file_route(prefix, where, name, folder, _describe(spec))
        if isinstance(first, str):                    # (app file, app name), the 0.20 form
            if not spec.isidentifier():
                raise ValueError("skitaid.mount: the app name must be a Python name: %r" % spec)
            return _file_route(prefix, first, spec, _script_dir(), repr(target))
        raise TypeError("skitaid.mount(%r, ...): a tuple starts with a module or a file "
                        "path, got %r" % (prefix, first))
    if not isinstance(target, str):
        raise TypeError("skitaid.mount(%r, ...): mount a WSGI app, a module, an app file or "
                        "directory path, or an @alias, not %r" % (prefix, target))
    path = target if os.path.isabs(target) else os.path.join(_script_dir(), target)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "__init__.py")):
        return Route(prefix, STATIC, os.path.abspath(path), "skitaid.mount")
    where, name = _split_name(target, app_name)
    if where.endswith(".py") or os.sep in where or "/" in where:
        return _file_route(prefix, where, name, _script_dir(), repr(target))
    return Route(prefix, APP, "%s:%s" % (where, name), "skitaid.mount")     # a module name


def preference():
    """A pref for mount(..., pref=pref): `with skitaid.preference() as pref:`."""
    return Preference()


def _with_pref(route, pref):
    if not isinstance(pref, Preference):
        raise TypeError("skitaid.mount(%r, ...): pref comes from skitaid.preference(), got %r"
                        % (route.prefix, pref))
    if route.kind != APP:
        raise ValueError("skitaid.mount(%r, ...): pref applies to apps, not to %s mounts"
                         % (route.prefix, route.kind))
    return replace(route, debug=pref.debug, reload=bool(pref.use_reloader),
                   app_config=dict(pref.config) or None)


class _Runner:
    """What mount() returns: call it to run, as in `skitaid.mount('/', app)(port=5000)`."""

    def __call__(self, **options):
        return run(**options)


def mount(prefix, target, app_name="app", pref=None, host="default"):
    """Mount a WSGI callable, a module/file app spec or a directory at `prefix`.

    `pref` (from skitaid.preference()): this mount's debug, use_reloader and
    config (merged into the app's config)."""
    if _reimporting():
        return _Runner()        # a worker running the script again for its new code
    names = (host,) if isinstance(host, str) else tuple(host)
    route = _route(prefix, target, app_name)
    if pref is not None:
        route = _with_pref(route, pref)
    if route.kind != STATIC:
        for other_names, other in _mounts:
            shared = set(names) & set(other_names)
            if other.kind != STATIC and other.prefix == route.prefix and shared:
                raise ValueError("skitaid.mount: %s and %s are both mounted at %s for host %s; "
                                 "one app per mount point (statics may share it)"
                                 % (_describe(other.target), _describe(route.target),
                                    route.prefix, ", ".join(sorted(shared))))
    _mounts.append((names, route))
    return _Runner()


# alias types, by the original Skitai's names
PROTO_HTTP = "http"
PROTO_HTTPS = "https"
DB_PGSQL = "postgresql"
DB_SQLITE3 = "sqlite3"
DB_REDIS = "redis"
DB_MONGODB = "mongodb"      # not built in: add_database_interface("mongodb", …) makes it one


def alias(name, type="http", members=(), role="", source="", ssl=False, max_connections=None,
          idle_timeout=None, pool_timeout=None, password=None, database=None, ca_file=None,
          decode_responses=None, rate_limit=None):
    """A backend cluster for `was` calls and proxy mounts, as an [@name] section:

        skitaid.alias("@api", "http", ["10.0.0.1:5000 2", "10.0.0.2:5000"])
        skitaid.alias("@mydb", skitaid.DB_PGSQL, "user:secret@127.0.0.1:5432/mydb",
                      max_connections=4)

    max_connections, idle_timeout and pool_timeout size the connection pool
    of each member of a database alias in each worker. Redis (and added
    database types) take password, database (number), ca_file (with ssl=True)
    and decode_responses for the members that do not say otherwise.
    rate_limit ("100/s burst 200") is one bucket for every request to the
    alias's mounts.
    """
    from .config.build import alias_value_rule, parse_member
    from .config.values import Bad, networks
    from .corequest import aliases
    name = name[1:] if name.startswith("@") else name
    type = type.lower()
    if type not in alias_types():
        if type == DB_MONGODB:
            raise ValueError("skitaid.alias('@%s'): %s" % (name, MONGODB_REFUSED))
        raise ValueError("alias type must be one of %s: %r" % (", ".join(alias_types()), type))
    ssl = bool(ssl) or type == "https"
    # the config files' member rules (weights, forms, paths relative to the script)
    base_dir = _script_dir()
    specs = [members] if isinstance(members, str) else list(members)
    parsed = []
    for spec in specs:
        for one in spec.split(","):
            one = one.strip()
            if not one:
                continue
            try:
                parsed.append(parse_member(type, one, ssl, base_dir))
            except Bad as e:
                raise ValueError("alias @%s member %r: expected %s" % (name, one, e.args[0]))
    if not parsed:
        raise ValueError("alias @%s needs at least one member" % name)
    allow = ()
    if source:
        try:
            allow = networks(source) if isinstance(source, str) else tuple(source)
        except Bad as e:
            raise ValueError("alias @%s source: expected %s" % (name, e.args[0]))
    pool = {}
    for key, value in (("max_connections", max_connections), ("idle_timeout", idle_timeout),
                       ("pool_timeout", pool_timeout)):
        if value is None:
            continue
        kind = alias_value_rule(key)       # the same rule as the [@alias] key
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("alias @%s %s: expected %s, got %r" % (name, key, kind.expected, value))
        try:
            pool[key] = kind(str(value))
        except Bad as e:
            raise ValueError("alias @%s %s: expected %s, got %r" % (name, key, e.args[0], value))
    pool.update(_redis_options(name, type, ssl, password, database, ca_file, decode_responses))
    if rate_limit is not None:
        pool["rate_limit"] = _rate_limit("skitaid.alias", "rate_limit", rate_limit)
    declared = Alias(name=name, type=type, members=tuple(parsed), ssl=ssl, role=role,
                     allow=allow, source="skitaid.alias", **pool)
    _aliases[name] = declared       # for run()'s config
    aliases.declare(declared)       # for `was` calls made without a server (corequest engine)


def _redis_options(name, type, ssl, password, database, ca_file, decode_responses):
    """alias()'s password/database/ca_file/decode_responses, by the [@alias] rules."""
    given = {k: val for k, val in (("password", password), ("database", database),
                                   ("ca_file", ca_file), ("decode_responses", decode_responses))
             if val is not None}
    if given and type in ("http", "https", "postgresql", "sqlite3"):
        raise ValueError("skitaid.alias('@%s'): %s is for redis and added database types, "
                         "not %s" % (name, ", ".join(given), type))
    if "password" in given and not isinstance(password, str):
        raise TypeError("skitaid.alias('@%s'): password must be a str" % name)
    if "database" in given:
        if isinstance(database, bool) or not isinstance(database, (int, str)) \
                or not str(database).isdigit():
            raise ValueError("skitaid.alias('@%s'): database must be a number >= 0, got %r"
                             % (name, database))
        given["database"] = str(int(database))
    if "ca_file" in given:
        if not ssl:
            raise ValueError("skitaid.alias('@%s'): ca_file needs ssl=True" % name)
        given["ca_file"] = os.path.join(_script_dir(), ca_file)
    if "decode_responses" in given:
        given["decode_responses"] = bool(decode_responses)
    return given


def add_database_interface(name, cls):
    """Make `name` an alias type served by `cls`, a skitaid.DatabaseInterface
    subclass (connect, execute, close on the worker's loop); then
    skitaid.alias("@mydbi", name, "host:port") and was.db("@mydbi").<command>(…)."""
    from .config.model import add_alias_type
    from .corequest.db import interface
    import re
    if not isinstance(name, str) or not re.fullmatch(r"\*?[A-Za-z][A-Za-z0-9_]{0,39}", name):
        raise ValueError("add_database_interface(): name must be letters, digits and '_' "
                         "(the original's leading '*' may stay), got %r" % (name,))
    name = name.lower()
    if name in ALIAS_TYPES:
        raise ValueError("add_database_interface(): %r is a built-in alias type" % name)
    if not (isinstance(cls, type) and issubclass(cls, interface.DatabaseInterface)):
        raise TypeError("add_database_interface(): cls must be a subclass of "
                        "skitaid.DatabaseInterface, got %r" % (cls,))
    interface.add(name, cls)
    add_alias_type(name)


def set_shared_state(url, prefix=None):
    """Share setlu/setgs with every host naming the same Redis ("redis://HOST:PORT/DB"),
    as `[global] shared_state`; in a script without a server it starts at once."""
    from . import sharedsync
    _settings_global["shared_state"] = sharedsync.check_url("set_shared_state", url)
    if prefix is not None:
        _settings_global["shared_state_prefix"] = sharedsync.check_prefix(
            "set_shared_state", prefix)
    sharedsync.start_standalone(_settings_global["shared_state"],
                                _settings_global.get("shared_state_prefix"))


def register_cache_keys(*keys):
    """Names for was.setlu()/getlu(), shared by every worker (before run())."""
    from . import shared
    shared.register(*keys)


# states (setgs/getgs) and cache keys (setlu/getlu) share one table of names
register_states = register_cache_keys


def enable_proxy(on=True, allow=None, connect_ports=None):
    """Serve as a forward proxy for absolute-URI requests and CONNECT tunnels
    from `allow` (networks; default loopback only); CONNECT may go to
    `connect_ports` only (default 443)."""
    from .config.values import normalise_network
    _settings["enable_proxy"] = bool(on)
    if allow is not None:
        allow = [allow] if isinstance(allow, str) else list(allow)
        _settings["proxy_allow"] = tuple(normalise_network(a) for a in allow)
    if connect_ports is not None:
        from .config.values import Bad, ports
        listed = [connect_ports] if isinstance(connect_ports, int) else list(connect_ports)
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in listed):
            raise ValueError("connect_ports: port numbers 1-65535")
        try:        # the proxy_connect_ports key's rule
            _settings["proxy_connect_ports"] = ports(", ".join(str(p) for p in listed))
        except Bad as e:
            raise ValueError("connect_ports: %s" % e.args[0])


def enable_status(path="/server-status", allow=None, auth=None, metrics_path=None):
    """Serve the status page at `path` (None: off) and Prometheus metrics at
    `metrics_path`, to clients in `allow` (networks; default loopback only),
    with HTTP Basic `auth` = "user:HASH" (the line `skitaid passwd USER` prints,
    without "status_auth = ")."""
    from .config import observe
    from .config.values import Bad, normalise_network
    for name, value in (("path", path), ("metrics_path", metrics_path)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError("skitaid.enable_status: %s must be a str or None" % name)
        try:
            _settings["status_path" if name == "path" else name] = observe.url_path(value)
        except Bad as e:
            raise ValueError("skitaid.enable_status: %s=%r: expected %s" % (name, value, e.args[0]))
    if path is None:
        _settings["status_path"] = ""
    if allow is not None:
        allow = [allow] if isinstance(allow, str) else list(allow)
        _settings["status_allow"] = tuple(normalise_network(a) for a in allow)
    if auth is not None:
        try:
            _settings["status_auth"] = observe.auth(auth)
        except (Bad, TypeError, AttributeError):
            raise ValueError("skitaid.enable_status: auth must be user:HASH from "
                             "`skitaid passwd USER`, never a plain password") from None


def enable_gateway(on=True, secret_key=None, *, secret_file=None, public_key_file=None,
                   jwks_file=None, algorithms=None, issuer=None, audience=None, leeway=None,
                   header=None, realm=None, roles_claim=None, rate_limit=None):
    """Check bearer tokens (JWT) for the `role=` of alias mounts, and give app
    requests carrying a valid one their identity (REMOTE_USER, skitaid.claims,
    skitaid.roles); the keys of a [gateway] section, by the same rules:

        skitaid.enable_gateway(True, os.environ["JWT_SECRET"])          # HS256
        skitaid.enable_gateway(True, public_key_file="idp.pem", algorithms=["RS256"],
                               issuer="https://idp.example.com", audience="api")

    Relative files are relative to the script. ValueError names what is wrong."""
    global _gateway
    from .config.build import FileContext, RawSection, build_gateway
    entries = [("enabled", "yes" if on else "no")]
    for key, value in (("secret", secret_key), ("secret_file", secret_file),
                       ("public_key_file", public_key_file), ("jwks_file", jwks_file),
                       ("algorithms", algorithms), ("issuer", issuer), ("audience", audience),
                       ("leeway", leeway), ("header", header), ("realm", realm),
                       ("roles_claim", roles_claim), ("rate_limit", rate_limit)):
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(x) for x in value)
        entries.append((key, str(value)))
    ctx = FileContext("skitaid.enable_gateway", _script_dir())
    gateway = build_gateway(ctx, RawSection("gateway", "gateway", entries))
    if ctx.problems:
        raise ValueError("\n".join("%s: %s" % (p.key, str(p).split(": ", 1)[1])
                                   for p in ctx.problems))
    if isinstance(secret_key, bytes):
        gateway = replace(gateway, secret=secret_key)
    _gateway = gateway


def enable_cachefs(memmax=0, diskmax=0, path=None, **options):
    """Cache proxied responses and `was` calls by their HTTP headers (RFC 9111):
    `memmax` bytes in each worker, `diskmax` bytes on disk shared by the
    workers (ints, or "100M"-style text), under `path` (default
    VAR_PATH/cache/SERVER). `options`: the other [cachefs] keys (max_entry,
    use_stale, stale_max, cache_status_header, client_no_cache,
    store_set_cookie, lock_timeout), by the same rules. Off while both sizes are 0."""
    global _cachefs
    from .config.build import FileContext, RawSection, _read_keys
    from .config.cachefs import KEYS, build_cachefs
    entries = []
    for key, value in (("memmax", memmax), ("diskmax", diskmax), ("path", path),
                       *sorted(options.items())):
        if value is None:
            continue
        if key not in KEYS:
            raise TypeError("skitaid.enable_cachefs(): unknown argument %r (known: %s)"
                            % (key, ", ".join(KEYS)))
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(x) for x in value)
        entries.append((key, str(value)))
    ctx = FileContext("skitaid.enable_cachefs", _script_dir())
    cache = build_cachefs(ctx, RawSection("cachefs", "cachefs", entries), _read_keys)
    if ctx.problems:
        raise ValueError("skitaid.enable_cachefs(): " + "; ".join(
            "%s: %s" % (p.key, str(p).split(": ", 1)[1]) for p in ctx.problems))
    _cachefs = cache
def _rate_limit(function, argument, spec):
    """A rate limit argument ("100/s burst 200", or None/"off") → RateLimit or None."""
    from .config.values import Bad, rate_limit
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError("%s: %s is a string such as '100/s burst 200', got %r"
                        % (function, argument, spec))
    try:
        return rate_limit(spec)
    except Bad as e:
        raise ValueError("%s: %s: found %r, expected %s" % (function, argument, spec, e.args[0]))


def set_rate_limit(spec):
    """Requests per client address, shared by all workers (the [server]
    rate_limit key): skitaid.set_rate_limit("100/s burst 200"); None or
    "off" for none. Above it a client gets 429 with Retry-After."""
    _settings["rate_limit"] = _rate_limit("skitaid.set_rate_limit", "spec", spec)


def set_auth_handler(fn):
    """Decide who may reach the role= mounts of a gateway-enabled server:

        def auth(request, claims):          # claims: the verified token's
            user = lookup(claims["sub"])
            return (user.name, user.roles) if user.active else None
        skitaid.set_auth_handler(auth)

    It is called in the thread pool once the token verified, instead of
    reading the token's roles claim: `(user, roles)` allows when one of the
    roles is the alias's, None denies (403); an exception is a 500 with its
    traceback in the error log."""
    global _auth_handler
    if fn is not None and not callable(fn):
        raise TypeError("skitaid.set_auth_handler: a function (request, claims), got %r" % (fn,))
    _auth_handler = fn


def set_max_age(prefix, seconds):
    """Cache-Control max-age for static files under `prefix`."""
    _max_ages.append((_normalise_prefix(prefix), int(seconds)))


def log_off(*paths):
    """No request-log lines for paths starting with '/x/' or ending with '*.ext'."""
    _log_off.extend(paths)


def _setting(func, key, value, types_=(int, float, str)):
    """Check `value` with the rule of the [server] key `key` (the config files'
    rule, config/build.py) and keep it for run(); ValueError naming `func`."""
    from .config.build import server_value_rule
    from .config.values import Bad
    field_name, rule = server_value_rule(key)
    if isinstance(value, bool) or not isinstance(value, types_):
        raise ValueError("skitaid.%s(): expected %s, got %r" % (func, rule.expected, value))
    try:
        converted = rule(str(value))
    except Bad as e:
        raise ValueError("skitaid.%s(): expected %s, got %r" % (func, e.args[0], value)) from None
    _settings[field_name.rpartition(".")[2]] = converted
    return converted


def set_keep_alive(seconds):
    """Idle keep-alive connections of clients are closed after this (key keep_alive)."""
    _setting("set_keep_alive", "keep_alive", seconds)


def set_request_timeout(seconds):
    """Slow request headers or a stalled body get 408 after this (key request_timeout)."""
    _setting("set_request_timeout", "request_timeout", seconds)


def set_max_upload_size(size):
    """Larger request bodies get 413: bytes, or "256M"-style (key max_upload_size)."""
    _setting("set_max_upload_size", "max_upload_size", size, (int, str))


def set_backend_keep_alive(seconds):
    """Pooled connections to backends idle this long are closed rather than
    reused; keep it below the backends' keep-alive timeout (key backend_keep_alive)."""
    _setting("set_backend_keep_alive", "backend_keep_alive", seconds)


def set_max_rcache(n):
    """Corequest results kept in each worker's cache (key num_result_cache_max)."""
    _setting("set_max_rcache", "num_result_cache_max", n, (int, str))


def use_poll(name):
    """The workers' event loop: 'epoll', 'poll' or 'select' run asyncio's loop
    with that selector instead of uvloop ('select' handles descriptors below
    1024 only); 'uvloop' is the default (key poller)."""
    _setting("use_poll", "poller", name, (str,))


def set_proxy_keep_alive(channel=None, tunnel=None):
    """The forward proxy's keep-alive: `tunnel`, the idle time of CONNECT
    tunnels and proxied WebSockets (key tunnel_timeout); `channel`, the idle
    time of the connections it keeps to the sites it fetches from (key
    proxy_keep_alive)."""
    if channel is None and tunnel is None:
        raise ValueError("skitaid.set_proxy_keep_alive(): give channel= or tunnel= (seconds)")
    if channel is not None:
        _setting("set_proxy_keep_alive", "proxy_keep_alive", channel, (int, float))
    if tunnel is not None:
        _setting("set_proxy_keep_alive", "tunnel_timeout", tunnel, (int, float))


def config_executors(workers=None, zombie_timeout=None, process_start_method=None):
    """The pools behind was.Thread and was.Process: `workers` each (None: the
    CPU count; key executor_workers), `zombie_timeout` seconds a task may run
    before its Task ends as timed out (0: no limit; key zombie_timeout), and
    the process pool's `process_start_method` ('forkserver', 'spawn' or
    'fork'; key process_start_method)."""
    if workers is not None:
        _setting("config_executors", "executor_workers", workers, (int,))
    if zombie_timeout is not None:
        _setting("config_executors", "zombie_timeout", zombie_timeout, (int, float))
    if process_start_method is not None:
        _setting("config_executors", "process_start_method", process_start_method, (str,))


_file_logging = None     # enable_file_logging(): the log directory ("" → the script's)


def enable_file_logging(path=None):
    """Request and error logs go to files in `path` (relative to the script;
    default: the script's log directory) instead of the console, in the
    foreground too; a daemon always logs to files (there, under `path`)."""
    global _file_logging
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ValueError("skitaid.enable_file_logging(): expected a directory path, got %r"
                         % (path,))
    if path:
        path = abspath(os.fspath(path))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError("skitaid.enable_file_logging(): expected a directory, %s is a file"
                             % path)
        _settings["log_path"] = path
    _file_logging = path or ""


def _to_log_files(config):
    """Foreground with enable_file_logging(): stdout/stderr (the error log) to
    error.log, each server's request log to NAME-request.log."""
    from .logs import redirect_stdio
    folder = config.globals.log_path
    os.makedirs(folder, mode=0o755, exist_ok=True)
    servers = tuple(s if s.request_log_file else replace(
        s, request_log_file=os.path.join(folder, "%s-request.log" % s.name))
        for s in config.servers)
    sys.stdout.flush()
    sys.stderr.flush()
    redirect_stdio(os.path.join(folder, "error.log"))
    return replace(config, servers=servers)


def getswd():
    """The script's directory: where relative mount and file paths start."""
    return _script_dir()


def abspath(*parts):
    """A path relative to the script's directory, made absolute."""
    if not all(isinstance(p, (str, os.PathLike)) for p in parts):
        raise ValueError("skitaid.abspath(): expected path parts (str), got %r" % (parts,))
    return os.path.normpath(os.path.join(_script_dir(), *parts))


def set_503_estimated_timeout(seconds):
    """Answer 503 + Retry-After when a new request would wait longer than this."""
    _settings["estimated_timeout"] = float(seconds)


def enable_debug(on=True):
    """Tracebacks in 500 pages (never in production)."""
    _settings["debug"] = bool(on)


def enable_ssl(certfile, keyfile=None, passphrase=None, host=None):
    """Serve over TLS (h2 and http/1.1 by ALPN). Relative paths are relative to the script.

    With `host` ("example.com", ".example.com", "*.example.com" or a list of
    them, as mount() takes), the certificate is the one presented to clients
    asking for those names (SNI); others get the certificate given without
    `host`, which is still needed."""
    def where(p):
        return p if not p or os.path.isabs(p) else os.path.join(_script_dir(), p)
    certfile = where(certfile)
    keyfile = where(keyfile or "")
    for p in (certfile, keyfile):
        if p and not os.path.isfile(p):
            raise FileNotFoundError("skitaid.enable_ssl: no such file: %s" % p)
    if host is not None:
        names = (host,) if isinstance(host, str) else tuple(host)
        names = tuple(n.lower() for n in names)
        if not names or any(n in ("default", "*") for n in names):
            raise ValueError("skitaid.enable_ssl: host names like example.com or .example.com "
                             "(the default certificate is the one given without host)")
        _host_certs[names] = HostCert(names, certfile, keyfile, passphrase or "",
                                      ("skitaid.enable_ssl", "host=%s" % " ".join(names)))
        return
    _settings.update(ssl=True, certfile=certfile, keyfile=keyfile, passphrase=passphrase or "")


def enable_forward(port=80, https_port=443, domain=None):
    """Listen on `port` too, answering every request there with a 301 to the
    same path and query on https://(domain or the request's host):https_port."""
    _settings["forward"] = (int(port), int(https_port), domain or "")


def config(**options):
    """Set server options (the keys of a [server] section) before run()."""
    _settings.update(options)


def set_worker_critical_point(cpu_percent=90.0, continuous=3, interval=20):
    """Replace a worker above cpu_percent for `continuous` checks `interval` s apart."""
    _settings["critical_point"] = (float(cpu_percent), int(continuous), float(interval))


def _script_name():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else "skitaid"


def _state_dir(name, explicit, port):
    """Where a script's pid file, control socket and logs go by default.

    Without an explicit name, a hash of the script's path and port keeps two
    projects' app.py (or two copies of one on different ports) apart."""
    if not explicit:
        main = sys.modules.get("__main__")
        path = os.path.abspath(getattr(main, "__file__", "") or os.getcwd())
        ident = ("%s:%s" % (path, port)).encode("utf-8", "replace")
        name = "%s-%s" % (name, hashlib.sha1(ident).hexdigest()[:8])
    if os.geteuid() == 0:
        return os.path.join("/var/tmp/skitaid", name)
    return os.path.join(os.path.expanduser("~"), ".skitaid", name)


def build_config(**options):
    """The Config that run(**options) would serve."""
    opts = dict(_settings)
    opts.update(options)
    opts.update(_forced)        # test_client's port wins over the script's run(port=...)
    server_kw = {}
    limit_kw = {}
    global_kw = {}
    for key, value in opts.items():
        key = _SPELLINGS.get(key, key)
        if key in _LIMIT_KEYS:
            limit_kw[key] = value
        elif key in _SERVER_KEYS:
            server_kw[key] = value
        elif key in _GLOBAL_KEYS:
            global_kw[key] = value
        else:
            raise TypeError("unknown option %r for skitaid.run()" % key)
    explicit = "name" in server_kw
    name = server_kw.setdefault("name", _script_name())
    if isinstance(server_kw.get("pythonpath"), str):
        server_kw["pythonpath"] = (server_kw["pythonpath"],)
    if "pythonpath" in server_kw:
        server_kw["pythonpath"] = tuple(os.path.abspath(p) for p in server_kw["pythonpath"])
    if server_kw.get("working_dir"):
        server_kw["working_dir"] = os.path.abspath(server_kw["working_dir"])
    else:       # the 0.36 page: workers run in the script's directory, daemon or not
        server_kw["working_dir"] = _script_dir()
    # the page's process titles: skitaid/NAME: master, skitaid/NAME: worker #0
    server_kw.setdefault("title", "skitaid/%s" % name)
    global_kw.setdefault("title", server_kw["title"])
    if isinstance(server_kw.get("rate_limit"), str):
        server_kw["rate_limit"] = _rate_limit("skitaid.run", "rate_limit", server_kw["rate_limit"])
    if "critical_point" in server_kw:
        server_kw["critical_point"] = tuple(server_kw["critical_point"])
    for key, value in _settings_global.items():     # set_shared_state()
        global_kw.setdefault(key, value)
    base = _state_dir(name, explicit, server_kw.get("port", ServerConfig.port))
    global_kw.setdefault("run_path", base)
    global_kw.setdefault("log_path", os.path.join(base, "log"))
    global_kw.setdefault("var_path", base)
    global_kw.setdefault("pidfile", os.path.join(global_kw["run_path"], "skitaid.pid"))
    gateway = _gateway
    for a in _aliases.values():
        if a.role.strip() and not (gateway and gateway.enabled):
            from .config.build import ROLE_NEEDS_GATEWAY
            raise RuntimeError("skitaid.alias('@%s', role=%r): role needs %s"
                               % (a.name, a.role, ROLE_NEEDS_GATEWAY))
    if not _mounts:
        raise RuntimeError("nothing mounted: call skitaid.mount() before skitaid.run()")
    groups = {}
    for names, route in _mounts:
        groups.setdefault(names, []).append(route)
    hosts = tuple(HostGroup(names, tuple(routes)) for names, routes in groups.items())
    if _host_certs and not (server_kw.get("ssl") and server_kw.get("certfile")):
        raise RuntimeError("skitaid.enable_ssl(..., host=...) needs the server's default "
                           "certificate too: call skitaid.enable_ssl(certfile, keyfile)")
    server = ServerConfig(hosts=hosts, max_ages=tuple(_max_ages), log_off=tuple(_log_off),
                          host_certs=tuple(_host_certs.values()),
                          aliases=tuple(_aliases.values()),
                          gateway=_gateway or GatewayConfig(), auth_handler=_auth_handler,
                          cachefs=_cachefs or CacheConfig(),
                          source=getattr(sys.modules.get("__main__"), "__file__", "") or "")
    server = replace(server, limits=replace(server.limits, **limit_kw), **server_kw)
    from .config.cachefs import with_default_path
    server = with_default_path(server, global_kw["var_path"])
    from .config.quic import quic_problems
    for key, expected in quic_problems(vars(server)):
        raise ValueError("skitaid.run(%s=%r): needs %s" % (key, getattr(server, key), expected))
    return Config(GlobalConfig(**global_kw), (server,))


def set_smtp(server, user=None, password=None, ssl=False, starttls=None):
    """The SMTP server for was.email(...).send() mail that names none itself:

        skitaid.set_smtp("smtp.example.com:587", "username", "password", ssl=True)

    ssl=True: TLS, from the start on port 465, by STARTTLS elsewhere. Without
    it the delivery agent's [smtpda] server is used (docs/smtpda.md)."""
    from .smtpda import compose
    compose.set_smtp(server, user, password, ssl, starttls)


# -- the script's command line (scriptargs.py) -------------------------------------------
_declared = []          # scriptargs.Option, from add_option()


def add_option(short=None, long=None, help=""):
    """Declare an option of the app's own command line, as the pages do:

        skitaid.add_option('-D', '--dist', 'distribute mode')
        skitaid.add_option(None, '--db=DB_NAME', 'use this database')
        active_db = skitaid.options.get('--db', 'testdb')

    Options nobody declared are usage errors when run() parses the line."""
    if _reimporting():
        return          # a worker running the script again: declared in the master already
    _declared.append(scriptargs.declare(_declared, short, long, help))


def _given():
    """(values, known names) of the command line as declared so far."""
    values = scriptargs.parse(sys.argv, _declared, strict=False).values
    known = {n for o in scriptargs.SKITAID_OPTIONS + tuple(_declared) for n in o.names}
    return values, known


options = scriptargs.Options(_given)


def get_option(*names):
    """The value of the first of `names` given (True for a flag), else None:
    skitaid.get_option('-D', '--dist')."""
    if not names:
        raise ValueError("skitaid.get_option(): name at least one option ('-D', '--dist')")
    for name in names:
        value = options.get(name)
        if value is not None:
            return value
    return None


def _is_script():
    """True when __main__ is an app script (not the `skitaid` command, not a test run)."""
    main = sys.modules.get("__main__")
    path = os.path.abspath(getattr(main, "__file__", "") or "")
    here = os.path.dirname(os.path.abspath(__file__))
    return bool(path) and not path.startswith(here + os.sep) and \
        os.path.basename(sys.argv[0] if sys.argv else "") not in ("skitaid", "pytest")


def _early_mode():
    """--devel/--silent as soon as skitaid is imported: module-level code of the
    script may ask skitaid.mode before run() parses the whole line."""
    if not _is_script():
        return
    values = scriptargs.parse(sys.argv, (), strict=False).values
    if values.get("--devel") is True:
        mode.set_mode(devel=True)
    if values.get("--silent") is True:
        mode.set_mode(silent=True)


_early_mode()


def _command_line():
    """Parse sys.argv strictly (every option declared by now), act on --help,
    --devel, --silent, and leave the app only its own options. A usage error
    exits 2."""
    prog = scriptargs.prog_name(sys.argv)
    try:
        parsed = scriptargs.parse(sys.argv, _declared, strict=True)
    except scriptargs.UsageError as e:
        scriptargs.fail(prog, str(e))
    if parsed.values.get("--help"):
        sys.stdout.write(scriptargs.help_text(prog, _declared))
        sys.stdout.flush()
        raise SystemExit(0)
    if parsed.values.get("--devel"):
        mode.set_mode(devel=True)
    if parsed.values.get("--silent"):
        mode.set_mode(silent=True)
    sys.argv[:] = parsed.app_argv
    return parsed


def _script_file():
    return os.path.abspath(getattr(sys.modules.get("__main__"), "__file__", "") or "")


def _unit_command(parsed, config):
    from .daemon import scriptunit, unit
    values = parsed.values
    name = config.servers[0].name
    dest = values.get("--unit-path") or scriptunit.default_path(name)
    force = bool(values.get("--force"))
    try:
        if parsed.command == "remove":
            print(scriptunit.remove(dest, force))
            return 0
        user = scriptunit.service_user(values.get("--user"))
        do = scriptunit.install if parsed.command == "install" else scriptunit.update
        print(do(config, _script_file(), parsed.carried, user, dest, force))
    except (unit.UnitError, ValueError) as e:
        print("%s %s: %s" % (scriptargs.prog_name(sys.argv), parsed.command, e), file=sys.stderr)
        return 1
    return 0


def run(**options):
    """Serve what was mounted: `python app.py [OPTION]... [COMMAND]` (--help lists them).

    With no command (or `run`) the master serves in the foreground until
    SIGTERM/Ctrl-C; `start` (-d) daemonizes it, the other commands control it
    or write its systemd unit."""
    if _reimporting():
        return 0
    from .daemon import commands
    from .smtpda.control import take_option, with_server
    options = _legacy_run_forms(options)
    if take_option(sys.argv):       # --smtpda: start the mail delivery agent too
        options.setdefault("smtpda", True)
    parsed = _command_line()
    if "--port" in parsed.values:
        options["port"] = int(parsed.values["--port"])
    config = build_config(**options)
    if parsed.command in ("install", "update", "remove"):
        code = _unit_command(parsed, config)
    else:
        if _file_logging is not None and parsed.command == "run":
            config = _to_log_files(config)
        with_server(config, parsed.command)
        code = commands.dispatch(parsed.command, config,
                                 as_json=bool(parsed.values.get("--json")))
    if code:
        sys.exit(code)
    return code


# -- development mode (the logic: devel.py, reimport.py, testclient.py) -------------
_forced = {}          # options that override run()'s, set by testclient's runner


def _reimporting():
    from . import reimport
    return reimport.running()


def is_devel():
    """True when serving in development mode: `--devel` on the command line,
    or, inside a worker, a server file's `devel = yes`; never with --silent."""
    from . import mode
    return mode.is_devel()


def _legacy_run_forms(options):
    """The 0.20 page's run(mount=[(prefix, target), ...], proxy=True, certfile=…,
    passphrase=…): mounts, the forward proxy and TLS in one call."""
    options = dict(options)
    mounts = options.pop("mount", None)
    if mounts is not None:
        if isinstance(mounts, tuple) and len(mounts) == 2 and isinstance(mounts[0], str):
            mounts = [mounts]
        if not isinstance(mounts, (list, tuple)):
            raise TypeError("skitaid.run(mount=...): a list of (prefix, target) pairs, got %r"
                            % (mounts,))
        for one in mounts:
            if not (isinstance(one, (list, tuple)) and len(one) in (2, 3)
                    and isinstance(one[0], str)):
                raise TypeError("skitaid.run(mount=...): each is (prefix, target) or (prefix, "
                                "target, app_name), got %r" % (one,))
            mount(*one)
    if "proxy" in options:
        enable_proxy(bool(options.pop("proxy")))
    if options.get("certfile"):
        enable_ssl(options.pop("certfile"), options.pop("keyfile", None),
                   options.pop("passphrase", None))
    return options
