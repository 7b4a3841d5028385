"""Sections read from a file (INI or YAML) → the typed model, with every mistake noted.

The readers (ini.py, yamlfile.py) only split their syntax into `RawSection`s;
all rules live here, so both formats accept the same keys and report the
same messages.
"""
from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from typing import List, Optional, Tuple
from urllib.parse import unquote

from . import values as v
from . import observe
from .errors import Problem
from .quic import quic_problems
from .model import (ALIAS, ALIAS_TYPES, APP, MONGODB_REFUSED, STATIC, Alias, GatewayConfig,
                    GlobalConfig, alias_types,
                    HostCert, HostGroup, Limits, Member, Route, ServerConfig)

# Section kinds
SERVER, ROUTES, ALIAS_SECTION, GLOBAL, GATEWAY = "server", "routes", "alias", "global", "gateway"
CACHEFS = "cachefs"
SMTPDA = "smtpda"           # skitaid.conf [smtpda]: the mail delivery agent (config/smtpda.py)


@dataclass
class RawSection:
    name: str                   # as shown in messages: "server", "routes:line", "@db"
    kind: str                   # SERVER | ROUTES | ALIAS_SECTION | GLOBAL | "" (unknown)
    # (key, value) in file order; value None for a bare line (the host names of a routes section)
    entries: List[Tuple[str, Optional[str]]] = field(default_factory=list)


class FileContext:
    """The file being built: where it is, and the problems found in it so far."""

    def __init__(self, file: str, config_dir: str, routes_label: str = "[routes:line]"):
        self.file = file                    # for messages
        self.config_dir = config_dir
        self.routes_label = routes_label    # how the format spells a routes section
        self.problems: List[Problem] = []

    def problem(self, section, key, found, expected):
        self.problems.append(Problem(self.file, section, key, found, expected))

    def path(self, p: str, base: Optional[str] = None) -> str:
        """Relative paths are relative to the config dir (or `base` below it)."""
        p = os.path.expanduser(p)
        if not os.path.isabs(p):
            p = os.path.join(base or self.config_dir, p)
        return os.path.normpath(p)


def _unknown_key(ctx, section, key, value, known):
    close = difflib.get_close_matches(key, known, n=1)
    hint = " (did you mean %r?)" % close[0] if close else ""
    ctx.problem(section, key, value, "a known key of [%s]%s" % (section, hint))


def _read_keys(ctx, sec, table, out):
    """Convert sec's `key = value` entries with `table` (key → (field, kind)) into `out`."""
    for key, value in sec.entries:
        norm = key.strip().lower().replace("-", "_")
        if value is None:
            ctx.problem(sec.name, key, None, "KEY = VALUE")
            continue
        if norm not in table:
            _unknown_key(ctx, sec.name, key, value, list(table))
            continue
        name, kind = table[norm]
        try:
            out[name] = kind(value)
        except v.Bad as e:
            ctx.problem(sec.name, key, value, e.args[0])
        else:
            out.setdefault("_where", {})[name] = (sec.name, key, value)


# ---------------------------------------------------------------- [server]

_SERVER_KEYS = {
    "ip": ("address", v.address),
    "address": ("address", v.address),
    "port": ("port", v.integer(1, 65535)),
    "processes": ("processes", v.integer(1)),
    "workers": ("processes", v.integer(1)),
    "threads": ("threads", v.integer(0)),
    "backlog": ("backlog", v.integer(1)),
    "ssl": ("ssl", v.boolean),
    "certfile": ("certfile", v.text()),
    "keyfile": ("keyfile", v.text()),
    "passphrase": ("passphrase", v.text()),
    "static_max_age": ("static_max_age", v.integer(0)),
    "estimated_timeout": ("estimated_timeout", v.seconds()),
    "graceful_timeout": ("graceful_timeout", v.seconds()),
    "num_result_cache_max": ("num_result_cache_max", v.integer(0)),
    "backend_timeout": ("backend_timeout", v.seconds()),
    "backend_keep_alive": ("backend_keep_alive", v.seconds()),
    "poller": ("poller", v.poller),
    "executor_workers": ("executor_workers", v.integer(0)),
    "zombie_timeout": ("zombie_timeout", v.seconds()),
    "process_start_method": ("process_start_method", v.start_method),
    "enable_proxy": ("enable_proxy", v.boolean),
    "proxy_allow": ("proxy_allow", v.networks),
    "proxy_connect_ports": ("proxy_connect_ports", v.ports),
    "tunnel_timeout": ("tunnel_timeout", v.seconds(1)),
    "proxy_keep_alive": ("proxy_keep_alive", v.seconds()),
    "debug": ("debug", v.boolean),
    "devel": ("devel", v.boolean),          # development mode (devel.py, daemon/watch.py)
    "request_log": ("request_log", v.boolean),
    "request_log_file": ("request_log_file", v.text()),
    "log_off": ("log_off", v.words),
    "user": ("user", v.text()),
    "group": ("group", v.text()),
    "worker_timeout": ("worker_timeout", v.seconds()),
    "boot_timeout": ("boot_timeout", v.seconds(1)),
    "critical_point": ("critical_point", v.critical_point),
    "max_requests": ("max_requests", v.integer(0)),
    "max_requests_jitter": ("max_requests_jitter", v.integer(0)),
    "max_rss": ("max_rss", v.size),
    "http2": ("http2", v.boolean),
    "forward": ("forward", v.forward),
    "quic": ("quic", v.integer(1, 65535)),
    "alt_svc_port": ("alt_svc_port", v.integer(1, 65535)),
    "quic_retry": ("quic_retry", v.boolean),
    "pythonpath": ("pythonpath", v.paths),
    "working_dir": ("working_dir", v.text("a directory")),
    # limits
    "keep_alive": ("limits.keep_alive", v.seconds()),
    "response_timeout": ("limits.response_timeout", v.seconds()),
    "request_timeout": ("limits.request_timeout", v.seconds()),
    "min_body_rate": ("limits.min_body_rate", v.size),
    "max_upload_size": ("limits.max_upload_size", v.size),
    "max_url_size": ("limits.max_url_size", v.size),
    "max_header_size": ("limits.max_header_size", v.size),
    "max_headers": ("limits.max_headers", v.integer(1)),
    "max_connections": ("limits.max_connections", v.integer(1)),
    # status page, metrics, request-log format (config/observe.py)
    "status_path": ("status_path", observe.url_path),
    "metrics_path": ("metrics_path", observe.url_path),
    "status_allow": ("status_allow", v.networks),
    "status_auth": ("status_auth", observe.auth),
    "request_log_format": ("request_log_format", observe.log_format),
    "rate_limit": ("rate_limit", v.rate_limit),     # per client address (ratelimit.py)
}


def server_value_rule(key: str) -> Tuple[str, v.Kind]:
    """(field, rule) of a [server] key, e.g. "keep_alive" → ("limits.keep_alive",
    seconds): call the rule with the value as text (values.Bad when it does not
    fit); `.expected` says what it takes. KeyError for an unknown key."""
    return _SERVER_KEYS[key]


def _server_keys(ctx, sections):
    found = {}
    for sec in sections:
        _read_keys(ctx, sec, _SERVER_KEYS, found)
    where = found.pop("_where", {})
    kw = {k: val for k, val in found.items() if not k.startswith("limits.")}
    limits = {k[7:]: val for k, val in found.items() if k.startswith("limits.")}

    # Certificates: relative names live in <config dir>/cert/, as the old daemon had it.
    cert_dir = os.path.join(ctx.config_dir, "cert")
    for name in ("certfile", "keyfile"):
        if kw.get(name):
            kw[name] = ctx.path(kw[name], cert_dir)
    if kw.get("ssl"):
        if not kw.get("certfile"):
            ctx.problem("server", "certfile", None, "a certificate file when ssl = yes")
        for name in ("certfile", "keyfile"):
            if kw.get(name) and not os.path.isfile(kw[name]):
                sec, key, value = where[name]
                ctx.problem(sec, key, value, "an existing file (%s)" % kw[name])
    _import_dirs(ctx, kw, where)
    if kw.get("address", "").startswith("unix:"):
        _unix_address(ctx, where["address"], kw["address"][5:])
        if kw.get("rate_limit"):
            sec, key, value = where["rate_limit"]
            ctx.problem(sec, key, value, "a TCP address in [server] (on a UNIX socket every "
                        "client has the same address, the front proxy's)")
    if kw.get("forward") and kw["forward"][0] == kw.get("port", ServerConfig.port):
        sec, key, value = where["forward"]
        ctx.problem(sec, key, value, "a forward port other than the server's port")
    for key, expected in quic_problems(kw):
        sec, name, value = where[key]
        ctx.problem(sec, name, value, expected)
    return kw, Limits(**limits)


def _import_dirs(ctx, kw, where):
    """pythonpath and working_dir: directories, relative to the config dir."""
    if kw.get("working_dir"):
        kw["working_dir"] = ctx.path(kw["working_dir"])
        if not os.path.isdir(kw["working_dir"]):
            sec, key, value = where["working_dir"]
            ctx.problem(sec, key, value, "an existing directory (%s)" % kw["working_dir"])
    if kw.get("pythonpath"):
        dirs = tuple(ctx.path(p) for p in kw["pythonpath"])
        for d in dirs:
            if not os.path.isdir(d):
                sec, key, value = where["pythonpath"]
                ctx.problem(sec, key, value, "existing directories separated by commas "
                            "(%s is not a directory)" % d)
        kw["pythonpath"] = dirs


def _unix_address(ctx, where, path):
    """The socket's directory must exist or be creatable; the path, if taken, a socket."""
    sec, key, value = where
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            ctx.problem(sec, key, value, "a UNIX socket path (%s exists and is not a socket)" % path)
        return
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        ctx.problem(sec, key, value, "a UNIX socket path whose directory exists or can be "
                    "created (%s is not a directory)" % parent)


# ---------------------------------------------------------------- [@alias]

_ALIAS_KEYS = {
    "type": ("type", None),             # _AliasType() below: types may be added in code
    "members": ("members", v.text()),
    "ssl": ("ssl", v.boolean),
    "role": ("role", v.text()),
    "source": ("allow", v.networks),
    "max_connections": ("max_connections", v.integer(1, 1000)),
    "idle_timeout": ("idle_timeout", v.seconds(0.1)),
    "pool_timeout": ("pool_timeout", v.seconds(0.0)),
    "rate_limit": ("rate_limit", v.rate_limit),     # one bucket for the alias's mounts
}
_POOL_KEYS = ("max_connections", "idle_timeout", "pool_timeout", "password", "database",
              "ca_file", "decode_responses")
_ALIAS_KEYS.update({
    "password": ("password", v.text("a password")),
    "database": ("database", v.Kind("a database number 0-15 or more", lambda s: str(int(s, 10))
                                    if int(s, 10) >= 0 else int("x"))),
    "db": ("database", v.Kind("a database number 0-15 or more", lambda s: str(int(s, 10))
                              if int(s, 10) >= 0 else int("x"))),
    "ca_file": ("ca_file", v.text("a CA bundle file (PEM)")),
    "decode_responses": ("decode_responses", v.boolean),
})


class _AliasType(v.Kind):
    """The `type` rule: the built-in types and those added with add_database_interface."""

    def __init__(self):
        pass

    @property
    def expected(self):
        return "one of " + ", ".join(alias_types())

    def __call__(self, text):
        kind = text.strip().lower()
        if kind in alias_types():
            return kind
        raise v.Bad(MONGODB_REFUSED if kind == "mongodb" else self.expected)


_ALIAS_KEYS["type"] = ("type", _AliasType())

_DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "redis": 6379}
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)(?::(\d+))?")


def _member(ctx, alias_type, ssl, spec):
    """One member spec → Member; raises v.Bad with what was expected."""
    weight = 1
    parts = spec.split()
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise v.Bad("a positive integer weight after the member")
        spec, weight = parts[0], int(parts[1])
    elif len(parts) != 1:
        raise v.Bad("one member as SPEC [WEIGHT] between commas")

    if alias_type == "sqlite3":
        db = spec if spec == ":memory:" else ctx.path(spec)
        return Member(spec=spec, weight=weight, database=db)

    if alias_type in ("http", "https"):
        expected = "host:port [weight]"
    elif alias_type == "postgresql":
        expected = "host:port/db/user/password or user:password@host:port/db [weight]"
    else:
        expected = "host:port[/db] or password@host:port[/db] [weight]"

    user = password = ""
    rest = spec
    if "@" in rest:
        if alias_type in ("http", "https"):
            raise v.Bad(expected)
        userinfo, rest = rest.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if not password and alias_type == "redis":     # redis: "password@host"
            user, password = "", user
    hostport, slash, path = rest.partition("/")
    m = _HOSTPORT.fullmatch(hostport)
    if not m:
        raise v.Bad(expected)
    host = m.group(1).strip("[]")
    default_port = 443 if (ssl and alias_type == "http") else _DEFAULT_PORTS.get(alias_type)
    if default_port is None and not m.group(2):
        raise v.Bad(expected + " (with a port: %s has no default one)" % alias_type)
    port = int(m.group(2)) if m.group(2) else default_port
    if not 1 <= port <= 65535:
        raise v.Bad(expected + " with a port 1-65535")

    database = ""
    if alias_type in ("http", "https"):
        if slash:
            raise v.Bad(expected)
    elif alias_type == "postgresql":
        bits = path.split("/", 2) if slash else []
        if not bits or not bits[0]:
            raise v.Bad(expected)
        database = bits[0]
        if len(bits) > 1:
            user = bits[1]
        if len(bits) > 2:
            password = bits[2]
    elif slash:                                         # redis: db number
        if not path.isdigit():
            raise v.Bad(expected)
        database = path
    return Member(spec=spec, host=host, port=port, weight=weight, database=database,
                  user=unquote(user), password=unquote(password))


# The [@alias] rules, for aliases made in code (skitaid.alias(), an ad hoc was.db()).

def parse_member(alias_type: str, spec: str, ssl: bool = False,
                 base_dir: Optional[str] = None) -> Member:
    """One alias member ("host:port [weight]", "user:pw@host:5432/db", a SQLite
    path, …) → Member, by the rules of an [@alias] section's `members`.

    A relative SQLite path is relative to `base_dir` (default: the current
    directory). Raises values.Bad, whose args[0] says what was expected."""
    return _member(FileContext("", base_dir or os.getcwd()), alias_type, ssl, spec)


def alias_value_rule(key: str) -> v.Kind:
    """The rule of an [@alias] key's value, e.g. "max_connections": call it
    with the value as text (values.Bad when it does not fit); `.expected`
    says what it takes. KeyError for a key an alias does not have."""
    return _ALIAS_KEYS[key][1]


def _alias(ctx, sec) -> Optional[Alias]:
    name = sec.name[1:]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        ctx.problem(sec.name, "", sec.name, "an alias name of letters, digits, '_', '-', '.'")
        return None
    found = {}
    _read_keys(ctx, sec, _ALIAS_KEYS, found)
    kind = found.get("type", "http")
    ssl = found.get("ssl", False) or kind == "https"
    raw = found.get("members", "")
    members = []
    for spec in (s.strip() for s in re.split(r"[,\n]", raw)):
        if not spec:
            continue
        try:
            members.append(_member(ctx, kind, ssl, spec))
        except v.Bad as e:
            ctx.problem(sec.name, "members", spec, e.args[0])
    if not raw.strip():
        ctx.problem(sec.name, "members", raw if "members" in found else None,
                    "one or more members separated by commas")
    pool = {k: found[k] for k in _POOL_KEYS if k in found}
    _redis_keys(ctx, sec.name, kind, ssl, pool, found.get("_where", {}))
    return Alias(name=name, type=kind, members=tuple(members), ssl=ssl,
                 role=found.get("role", ""), allow=found.get("allow", ()),
                 rate_limit=found.get("rate_limit"),
                 source="%s [%s]" % (ctx.file, sec.name), **pool)


_REDIS_ONLY = ("password", "database", "ca_file", "decode_responses")


def _redis_keys(ctx, section, kind, ssl, pool, where):
    """password/database/ca_file/decode_responses: redis and added types only."""
    for key in _REDIS_ONLY:
        if key not in pool:
            continue
        s, k, value = where.get(key, (section, key, pool[key]))
        if kind in ("http", "https", "postgresql", "sqlite3"):
            ctx.problem(s, k, value if key != "password" else "(hidden)",
                        "no %s key for a %s alias (redis and added database types have it)"
                        % (k, kind))
            del pool[key]
        elif key == "ca_file":
            if not ssl:
                ctx.problem(s, k, value, "ssl = yes as well (ca_file verifies the TLS server)")
            pool[key] = ctx.path(pool[key])


# ---------------------------------------------------------------- [gateway]

_REALM = re.compile(r'[^"\\\x00-\x1f\x7f]{1,200}')
_GATEWAY_KEYS = {
    "enabled": ("enabled", v.boolean),
    "secret": ("secret", v.text("a secret of 32 bytes or more")),
    "secret_file": ("secret_file", v.text("a file holding the secret")),
    "public_key_file": ("public_key_file", v.text("a PEM public key file")),
    "jwks_file": ("jwks_file", v.text("a JWKS file")),
    "algorithms": ("algorithms", v.words),
    "issuer": ("issuer", v.text()),
    "audience": ("audience", v.words),
    "leeway": ("leeway", v.seconds()),
    "header": ("header", v.Kind("a header field name (e.g. Authorization)",
                                lambda s: s if re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", s)
                                else int("x"))),
    "realm": ("realm", v.Kind("a realm without quotes, backslashes or control characters",
                              lambda s: s if _REALM.fullmatch(s) else int("x"))),
    "roles_claim": ("roles_claim", v.Kind("a claim name", lambda s: s if s else int("x"))),
    "rate_limit": ("rate_limit", v.rate_limit),     # one bucket per token subject
    "auth_handler": ("auth_handler", v.Kind(
        "a function as package.module:function or file.py:function",
        lambda s: s if _HANDLER.fullmatch(s) else int("x"))),
}
_HANDLER = re.compile(r"(?:[^\s:]+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*")
# keys that only mean something with the gateway on
_NEEDS_GATEWAY = ("rate_limit", "auth_handler")
_KEY_SOURCES = ("secret", "secret_file", "public_key_file", "jwks_file")


def gateway_value_rule(key: str) -> v.Kind:
    """The rule of a [gateway] key's value (as alias_value_rule)."""
    return _GATEWAY_KEYS[key][1]


def build_gateway(ctx, sec) -> GatewayConfig:
    """One [gateway] section (or skitaid.enable_gateway()'s keys) → GatewayConfig;
    mistakes go to ctx.problems under `sec.name`."""
    from .. import tokens
    found = {}
    _read_keys(ctx, sec, _GATEWAY_KEYS, found)
    where = found.pop("_where", {})
    name = sec.name
    given = [k for k in _KEY_SOURCES if found.get(k)]
    if len(given) > 1:
        s, key, value = where[given[1]]
        ctx.problem(s, key, value, "one of secret, secret_file, public_key_file or jwks_file "
                    "(%s is given too)" % given[0])
        return GatewayConfig()
    enabled = found.get("enabled", False)
    if not enabled:
        for k in _NEEDS_GATEWAY:
            if found.get(k):
                w = where[k]
                ctx.problem(w[0], w[1], w[2], "enabled = yes in [%s] (without the gateway "
                            "it would never be applied)" % name)
    if not given:
        if enabled:
            s, key, value = where["enabled"]
            ctx.problem(s, key, value, "a key to check tokens with: secret, secret_file, "
                        "public_key_file or jwks_file")
        return GatewayConfig()
    source = given[0]
    s, key, value = where[source]
    material = found[source]
    if source != "secret":
        path = ctx.path(material)
        try:
            with open(path, "rb") as f:
                material = f.read(1 << 20)
        except OSError as e:
            ctx.problem(s, key, value, "a readable file (%s: %s)" % (path, e.strerror))
            return GatewayConfig()
    if isinstance(material, str):
        material = material.encode("utf-8")
    kw = {}
    if source in ("secret", "secret_file"):
        kw["secret"] = material.strip() if source == "secret_file" else material
        default_algs = ("HS256",)
    elif source == "public_key_file":
        kw["public_key"] = material
        default_algs = ("RS256",)
    else:
        kw["jwks"] = material.decode("utf-8", "replace")
        default_algs = ("RS256",)
    algorithms = found.get("algorithms") or default_algs
    problem = tokens.check_algorithms(algorithms, bool(kw.get("secret")), not kw.get("secret"))
    if problem:
        w = where.get("algorithms", (name, "algorithms", None))
        ctx.problem(w[0], w[1], w[2], problem)
        return GatewayConfig()
    if kw.get("secret"):
        need = max(tokens.MIN_SECRET[a] for a in algorithms)
        if len(kw["secret"]) < need:
            # (the secret itself is never shown)
            ctx.problem(s, key, value if source == "secret_file" else "(hidden)",
                        "a secret of %d bytes or more for %s (it has %d)"
                        % (need, ", ".join(algorithms), len(kw["secret"])))
            return GatewayConfig()
    for k in ("issuer", "audience", "leeway", "header", "realm", "roles_claim", "rate_limit"):
        if k in found:
            kw[k] = found[k]
    if found.get("auth_handler"):
        where_, attr = found["auth_handler"].rsplit(":", 1)
        if where_.endswith(".py"):          # relative to the config dir, as app files are
            path = ctx.path(where_)
            if not os.path.isfile(path):
                w = where["auth_handler"]
                ctx.problem(w[0], w[1], w[2], "an existing Python file (%s)" % path)
            where_ = path
        kw["auth_handler"] = "%s:%s" % (where_, attr)
    gateway = GatewayConfig(enabled=enabled, algorithms=tuple(algorithms), **kw)
    try:
        tokens.Verifier(gateway)        # the keys load (PEM, JWKS) as the workers will load them
    except ValueError as e:
        ctx.problem(s, key, value, e.args[0])
        return GatewayConfig()
    return gateway


ROLE_NEEDS_GATEWAY = ("the gateway enabled to enforce it (a [gateway] section with "
                      "enabled = yes, or skitaid.enable_gateway()); without it the mount "
                      "would be open to everyone")


def _roles_need_gateway(ctx, sections, aliases, gateway_on):
    """`role =` is never stored and ignored: without the gateway it is an error."""
    if gateway_on:
        return
    for sec in sections:
        if sec.kind != ALIAS_SECTION or sec.name[1:] not in aliases:
            continue
        for key, value in sec.entries:
            if key.strip().lower() == "role" and value and value.strip():
                ctx.problem(sec.name, key.strip(), value, ROLE_NEEDS_GATEWAY)


# ---------------------------------------------------------------- [routes:line]

_HOST_NAME = re.compile(r"\*|default|\.?[a-z0-9_*]([a-z0-9_-]*)(\.[a-z0-9_-]+)*\.?(:\d+)?")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_APP_ATTR = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\(\))?")


def _route(ctx, sec, prefix, target, alias_refs) -> Optional[Route]:
    where = "%s [%s] %s" % (ctx.file, sec.name, prefix)
    if not prefix.startswith("/") or re.search(r"\s", prefix):
        ctx.problem(sec.name, prefix, prefix, "a path prefix starting with '/'")
        return None
    norm = prefix.rstrip("/") or "/"
    if not target:
        ctx.problem(sec.name, prefix, target, "a directory, an app (file.py:app or "
                    "module:app) or an @alias")
        return None
    if target.startswith("@"):
        alias_refs.append((sec.name, prefix, target))
        return Route(norm, ALIAS, target, where)
    module, colon, attr = target.rpartition(":")
    if colon and (module.endswith(".py") or _DOTTED.fullmatch(module)):
        if not _APP_ATTR.fullmatch(attr):
            ctx.problem(sec.name, prefix, target, "an app as file.py:NAME or module:NAME")
            return None
        if module.endswith(".py"):
            path = ctx.path(module)
            if not os.path.isfile(path):
                ctx.problem(sec.name, prefix, target, "an existing Python file (%s)" % path)
                return None
            target = "%s:%s" % (path, attr)
        return Route(norm, APP, target, where)
    path = ctx.path(target)
    if not os.path.isdir(path):
        ctx.problem(sec.name, prefix, target, "an existing directory (%s)" % path)
        return None
    return Route(norm, STATIC, path, where)


# A routes section may carry its hosts' own certificate (SNI): keys, not '/'-routes.
_CERT_KEYS = ("certfile", "keyfile", "passphrase")


def _host_group(ctx, sec, alias_refs, seen_names, certs, ssl_on) -> Optional[HostGroup]:
    names = None
    routes = []
    cert = {}                   # certfile/keyfile/passphrase → (key as written, value)
    has_route = False
    for key, value in sec.entries:
        if value is None:
            line = key.strip()
            if names is None and not line.startswith("/"):
                names = tuple(n.lower() for n in v.split_words(line))
                for n in names:
                    if not _HOST_NAME.fullmatch(n):
                        ctx.problem(sec.name, "", line,
                                    "host names: default, * or names like example.com, .example.com")
                    elif n in seen_names:
                        ctx.problem(sec.name, "", line,
                                    "host name %r in only one routes section" % n)
                    seen_names.add(n)
            else:
                ctx.problem(sec.name, line, line, "a route as PREFIX = TARGET")
            continue
        norm = key.strip().lower().replace("-", "_")
        if norm in _CERT_KEYS:
            if norm in cert:
                ctx.problem(sec.name, key, value, "%s only once in a routes section" % norm)
            cert[norm] = (key.strip(), value.strip())
            continue
        has_route = True
        route = _route(ctx, sec, key.strip(), value.strip(), alias_refs)
        if route is not None:
            routes.append(route)
    if names is None:
        names = ("default",)
        if "default" in seen_names:
            ctx.problem(sec.name, "", None, "host names on the first line: 'default' is "
                        "already used by an earlier routes section")
        seen_names.add("default")
    if not has_route:
        ctx.problem(sec.name, "", None, "at least one route as PREFIX = TARGET")
    if cert:
        _host_cert(ctx, sec, names, cert, certs, ssl_on)
    return HostGroup(names=names, routes=tuple(routes))


def _host_cert(ctx, sec, names, cert, certs, ssl_on):
    """The section's certfile/keyfile/passphrase → a HostCert in `certs`, checked."""
    if "certfile" not in cert:
        key, value = next(iter(cert.values()))
        ctx.problem(sec.name, key, value, "a certfile in the same section (keyfile and "
                    "passphrase go with it)")
        return
    key, value = cert["certfile"]
    if not value:
        ctx.problem(sec.name, key, value, "a certificate file name")
        return
    if not any(n not in ("default", "*") for n in names):
        ctx.problem(sec.name, key, value, "a routes section for named hosts (the default "
                    "host group uses the server's certfile)")
        return
    if not ssl_on:
        ctx.problem(sec.name, key, value, "ssl = yes in the server section (a host "
                    "certificate is used for TLS only)")
        return
    cert_dir = os.path.join(ctx.config_dir, "cert")
    paths = {}
    for name in ("certfile", "keyfile"):
        if cert.get(name, ("", ""))[1]:
            key, value = cert[name]
            paths[name] = ctx.path(value, cert_dir)
            if not os.path.isfile(paths[name]):
                ctx.problem(sec.name, key, value, "an existing file (%s)" % paths[name])
    certs.append(HostCert(names=names, certfile=paths["certfile"], keyfile=paths.get("keyfile", ""),
                          passphrase=cert.get("passphrase", ("", ""))[1],
                          where=(ctx.file, sec.name)))


# ---------------------------------------------------------------- the file

def build_server(ctx: FileContext, sections: List[RawSection], name: str,
                 source: str) -> ServerConfig:
    """Build one server; problems go to ctx.problems (the result is then incomplete)."""
    servers = [s for s in sections if s.kind == SERVER]
    if not servers:
        ctx.problem("server", "", None, "a [server] section")
    for sec in sections:
        if not sec.kind or sec.kind in (GLOBAL, SMTPDA):
            ctx.problem(sec.name, "", None,
                        "a section [server], %s, [gateway], [cachefs] or [@alias]"
                        % ctx.routes_label)
    kw, limits = _server_keys(ctx, servers)

    aliases = {}
    for sec in sections:
        if sec.kind == ALIAS_SECTION:
            alias = _alias(ctx, sec)
            if alias is not None:
                aliases[alias.name] = alias

    gateway = GatewayConfig()
    for sec in sections:
        if sec.kind == GATEWAY:
            gateway = build_gateway(ctx, sec)
    _roles_need_gateway(ctx, sections, aliases, gateway.enabled)

    from .cachefs import build_cachefs
    for sec in sections:
        if sec.kind == CACHEFS:
            kw["cachefs"] = build_cachefs(ctx, sec, _read_keys)

    groups = []
    certs = []
    alias_refs = []
    seen_names = set()
    for sec in sections:
        if sec.kind == ROUTES:
            groups.append(_host_group(ctx, sec, alias_refs, seen_names, certs, kw.get("ssl")))
    if not any(s.kind == ROUTES for s in sections):
        ctx.problem(ctx.routes_label.strip("[]"), "", None,
                    "a %s section with at least one route" % ctx.routes_label)
    # Aliases may be defined below the routes that use them, so check references last.
    for sec_name, prefix, target in alias_refs:
        alias = aliases.get(target[1:].split("/", 1)[0])
        if alias is None:
            known = ", ".join("@" + a for a in aliases) or "none defined"
            ctx.problem(sec_name, prefix, target,
                        "an alias defined as [%s] in this file (%s)"
                        % (target.split("/", 1)[0], known))
        elif alias.type not in ("http", "https"):
            ctx.problem(sec_name, prefix, target,
                        "an http or https alias to proxy to (@%s is %s)" % (alias.name, alias.type))

    return ServerConfig(name=name, source=source, limits=limits, hosts=tuple(groups),
                        aliases=tuple(aliases.values()), host_certs=tuple(certs),
                        gateway=gateway, **kw)


_GLOBAL_KEYS = {
    "user": ("user", v.text()),
    "group": ("group", v.text()),
    "log_path": ("log_path", v.text()),
    "var_path": ("var_path", v.text()),
    "run_path": ("run_path", v.text()),
    "pidfile": ("pidfile", v.text()),
    "smtpda": ("smtpda", v.boolean),        # start the mail delivery agent too
    "shared_state": ("shared_state", v.Kind(
        "redis://[:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS) or @ALIAS (a redis alias)",
        lambda s: s if s.startswith("@") and re.fullmatch(r"@[A-Za-z0-9_.-]+", s)
        else (s if parse_redis_url(s) else int("x")))),
    "shared_state_prefix": ("shared_state_prefix", v.Kind(
        "a prefix of letters, digits, '_', '-', '.', ':' (1-64)",
        lambda s: s if re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", s) else int("x"))),
}


def parse_redis_url(url: str) -> Optional[dict]:
    """redis://[[user]:password@]host[:port][/db] (rediss: TLS) → the client's keywords;
    None when it is not such a URL."""
    from urllib.parse import urlsplit
    try:
        u = urlsplit(url)
        port = u.port or 6379
    except ValueError:
        return None
    if u.scheme not in ("redis", "rediss") or not u.hostname or u.query or u.fragment:
        return None
    path = u.path.strip("/")
    if path and not path.isdigit():
        return None
    return {"host": u.hostname, "port": port, "db": int(path or 0),
            "username": unquote(u.username) if u.username else None,
            "password": unquote(u.password) if u.password else None,
            "ssl": u.scheme == "rediss"}


def build_global(ctx: FileContext, sections: List[RawSection]) -> GlobalConfig:
    from . import smtpda
    found = {}
    for sec in sections:
        if sec.kind == GLOBAL:
            _read_keys(ctx, sec, _GLOBAL_KEYS, found)
        elif sec.kind != SMTPDA:
            ctx.problem(sec.name, "", None, "a [global] section (or [smtpda])")
    found["mail"] = smtpda.build(ctx, [s for s in sections if s.kind == SMTPDA], _read_keys)
    found.pop("_where", None)
    for key in ("log_path", "var_path", "run_path", "pidfile"):
        if found.get(key):
            found[key] = ctx.path(found[key])
    return GlobalConfig(config_dir=ctx.config_dir, **found)
