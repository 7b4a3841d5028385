"""The typed, immutable config model.

Config files (INI today, YAML later) and the Python API (`skitaid.mount`,
`skitaid.run`) both produce these objects; nothing below the config package
reads files or keyword arguments directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

# Route target kinds
STATIC = "static"   # a directory served as files
APP = "app"         # a WSGI callable, or a "path/to/file.py:name" / "module:name" spec
ALIAS = "alias"     # "@backend[/subpath]": reverse proxy (later issue)


@dataclass(frozen=True)
class Route:
    prefix: str                 # "/", "/static" — normalised, no trailing slash except "/"
    kind: str                   # STATIC | APP | ALIAS
    target: Any                 # directory path, WSGI callable, app spec string, or alias string
    source: str = ""            # where it was defined, for error messages ("file [section] key")
    debug: Optional[bool] = None   # this mount's own debug pages (pref.debug, app.debug); None: the server's
    reload: bool = False        # watched by the development reloader (pref.use_reloader)
    app_config: Any = None      # pref.config: merged into the app's config (Flask style)


@dataclass(frozen=True)
class HostGroup:
    # Host names this group answers for: "default", "*", "example.com", ".example.com"
    names: Tuple[str, ...]
    routes: Tuple[Route, ...]


@dataclass(frozen=True)
class HostCert:
    """A certificate presented (by SNI) to clients asking for these host names;
    other names, and clients sending no SNI, get the server's own certificate."""
    names: Tuple[str, ...]      # as in HostGroup: "example.com", ".example.com", "*.example.com"
    certfile: str
    keyfile: str = ""           # "" → the key is in certfile
    passphrase: str = ""
    where: Tuple[str, str] = ("", "")   # (file, section) it was configured in, for messages


@dataclass(frozen=True)
class Limits:
    max_url_size: int = 8190              # request line / URL bytes → 414
    max_header_size: int = 65536          # all header bytes → 431
    max_headers: int = 100                # header count → 431
    max_upload_size: int = 256 * 1024 * 1024   # request body bytes → 413
    max_connections: int = 10000          # per worker; above it new connections get 503
    keep_alive: float = 10.0              # idle keep-alive timeout, seconds
    request_timeout: float = 30.0         # slow headers / stalled body → 408
    # a request body must come at this many bytes/s at least once a grace of
    # request_timeout is used up (the time allowed grows 1 s per this many
    # bytes), else 408; 0: off
    min_body_rate: int = 1024
    response_timeout: float = 10.0        # a client that stops reading the response is dropped


@dataclass(frozen=True)
class RateLimit:
    """`rate_limit = 100/s burst 200`: a bucket of `burst` requests refilled
    at `rate` per second, shared by all workers of the server (ratelimit.py)."""
    rate: float                 # requests per second
    burst: int                  # requests at once
    text: str = ""              # as written, for messages and the status page


# Alias (backend cluster) types
ALIAS_TYPES = ("http", "https", "postgresql", "sqlite3", "redis")
# database types added in code (skitaid.add_database_interface), before the config is built
_added_types = []
MONGODB_REFUSED = ("MongoDB is not built in (it cannot be tested here); add it with "
                   "skitaid.add_database_interface('mongodb', YourInterface)")


def add_alias_type(name: str) -> None:
    if name not in ALIAS_TYPES and name not in _added_types:
        _added_types.append(name)


def alias_types() -> Tuple[str, ...]:
    """The built-in alias types and those added in code."""
    return ALIAS_TYPES + tuple(_added_types)


@dataclass(frozen=True)
class Member:
    """One backend of an alias: `host:port [weight]`, a database URL-ish spec, or a path."""
    spec: str                   # as written, without the weight
    host: str = ""
    port: int = 0
    weight: int = 1
    database: str = ""          # db name (postgresql, redis) or file path (sqlite3)
    user: str = ""
    password: str = ""


@dataclass(frozen=True)
class Alias:
    """A named backend cluster, `[@name]`: proxy target and `was` corequest target."""
    name: str                   # without the "@"
    type: str = "http"          # one of ALIAS_TYPES
    members: Tuple[Member, ...] = ()
    ssl: bool = False           # always True for "https"
    role: str = ""              # access role for http(s) aliases
    allow: Tuple[str, ...] = () # the `source` key: client networks allowed ("10.0.0.0/8")
    source: str = ""            # where it was defined ("file [section]")
    # database aliases: the connection pool of each member in each worker
    max_connections: int = 10   # open connections at most (in use + idle)
    idle_timeout: float = 60.0  # an idle connection is closed after this long
    pool_timeout: float = 5.0   # wait this long for a free connection, then fail clearly
    # redis (and interface databases): for every member that does not say otherwise
    password: str = field(default="", repr=False)
    database: str = ""          # redis: the database number
    ca_file: str = ""           # TLS (ssl = yes): CA bundle to verify the server with
    decode_responses: bool = True   # redis: replies as str (False: bytes)
    rate_limit: Optional[RateLimit] = None   # one bucket for all requests to its mounts


@dataclass(frozen=True)
class GatewayConfig:
    """`[gateway]`: bearer tokens (JWT) checked for the role= of alias mounts,
    and the identity of app requests carrying one. Key material is read from
    its files when the config is read (as root, before workers drop privileges)
    and never shown in a repr."""
    enabled: bool = False
    secret: bytes = field(default=b"", repr=False)      # HMAC (HS256/384/512)
    public_key: bytes = field(default=b"", repr=False)  # PEM (RS/PS/ES/EdDSA)
    jwks: str = field(default="", repr=False)           # a JWKS document (JSON)
    algorithms: Tuple[str, ...] = ()
    issuer: str = ""                        # "" → iss not checked
    audience: Tuple[str, ...] = ()          # () → a token with aud is refused
    leeway: float = 0.0                     # seconds of clock skew allowed for exp/nbf/iat
    header: str = "Authorization"           # where the token is ("Bearer …" there)
    realm: str = "skitaid"                  # WWW-Authenticate: Bearer realm="…"
    roles_claim: str = "roles"              # a list, or a space-separated string
    rate_limit: Optional[RateLimit] = None  # one bucket per token subject (`sub`)
    auth_handler: str = ""                  # "package.module:function", loaded by the workers


@dataclass(frozen=True)
class CacheConfig:
    """`[cachefs]` / skitaid.enable_cachefs(): the HTTP cache of proxied responses
    and `was` calls (skitaid/cachefs/). Off while memmax and diskmax are both 0."""
    memmax: int = 0                 # bytes in each worker's memory tier
    diskmax: int = 0                # bytes in the disk tier shared by the workers
    path: str = ""                  # "" → VAR_PATH/cache/SERVER
    max_entry: int = 1 << 20        # larger bodies are passed on, not stored
    use_stale: Tuple[str, ...] = () # "error", "timeout": serve stale when the origin fails
    stale_max: float = 60.0         # ... for at most this long past its freshness
    status_header: str = "X-Cache"  # "" → not sent
    client_no_cache: str = "ignore" # or "revalidate": honour a client's no-cache
    store_set_cookie: bool = False  # store responses that set cookies (shared by all!)
    lock_timeout: float = 5.0       # a miss waits this long for another's fetch of the key

    @property
    def enabled(self) -> bool:
        return self.memmax > 0 or self.diskmax > 0


@dataclass(frozen=True)
class ServerConfig:
    name: str = "default"
    address: str = "127.0.0.1"             # IP, host name, or "unix:/abs/path" (port unused)
    port: int = 5000
    processes: int = 1
    threads: int = 4
    backlog: int = 2048
    ssl: bool = False
    certfile: str = ""
    keyfile: str = ""
    passphrase: str = ""
    host_certs: Tuple[HostCert, ...] = ()  # per-host certificates (SNI); the above is the default
    static_max_age: int = 300
    # (prefix, seconds) pairs from skitaid.set_max_age(); longest prefix wins
    max_ages: Tuple[Tuple[str, int], ...] = ()
    limits: Limits = field(default_factory=Limits)
    # 503 + Retry-After when requests wait in the thread queue longer than this (0: off)
    estimated_timeout: float = 0.0
    graceful_timeout: float = 30.0
    num_result_cache_max: int = 200
    # pooled connections to backends (was calls) idle this long are closed, not reused:
    # keep it below the backends' own keep-alive timeout
    backend_keep_alive: float = 4.0
    # the workers' event loop: uvloop, or asyncio's own with the epoll/poll/select selector
    poller: str = "uvloop"
    # the pools behind was.Thread/was.Process (skitaid.config_executors): size
    # (0: the CPU count), how long a task may run before it is given up (0: no
    # limit), and how the process pool starts its processes
    executor_workers: int = 0
    zombie_timeout: float = 300.0
    process_start_method: str = "forkserver"
    backend_timeout: float = 60.0          # proxy: wait this long for a backend's response (504)
    enable_proxy: bool = False             # forward proxy for absolute-URI requests
    proxy_allow: Tuple[str, ...] = ("127.0.0.0/8", "::1/128")   # who may use it (never an open relay)
    proxy_connect_ports: Tuple[int, ...] = (443,)   # ports a CONNECT tunnel may go to
    # forward proxy: its connections to the sites it fetches from stay idle this
    # long at most (set_proxy_keep_alive(channel=)); 0: backend_keep_alive
    proxy_keep_alive: float = 0.0
    tunnel_timeout: float = 300.0          # a tunnel (proxied WebSocket, CONNECT) idle this long closes
    debug: bool = False
    devel: bool = False                    # development mode: debug pages, source watcher, no max-age
    request_log: bool = True               # False → no request log at all
    request_log_file: str = ""             # "" → console (stderr), else this file (reopened on USR1)
    log_off: Tuple[str, ...] = ()          # "/static/" prefixes, "*.css" suffixes
    request_log_format: str = "text"       # text (the original's 21 fields) or json
    # the status page and Prometheus metrics, served by the workers ("" → off)
    status_path: str = ""
    metrics_path: str = ""
    status_allow: Tuple[str, ...] = ("127.0.0.0/8", "::1/128")   # who may see them
    status_auth: Tuple[str, ...] = field(default=(), repr=False)  # (user, scrypt hash)
    hosts: Tuple[HostGroup, ...] = ()
    source: str = ""                       # the file this server came from
    # where app imports look first (gunicorn's --pythonpath): absolute directories
    pythonpath: Tuple[str, ...] = ()
    working_dir: str = ""                  # workers chdir here before importing apps (--chdir)
    title: str = ""                        # workers' title prefix ("skitaid/NAME" for scripts)
    aliases: Tuple[Alias, ...] = ()        # [@name] sections of this server file
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    # skitaid.set_auth_handler(fn): fn(request, claims) → (user, roles) or None
    auth_handler: Any = None
    cachefs: CacheConfig = field(default_factory=CacheConfig)
    rate_limit: Optional[RateLimit] = None  # one bucket per client address (IPv6: per /64)
    # --- used by the daemon (master) ---
    user: str = ""                         # drop to this user/group in workers; "" → global
    group: str = ""
    worker_timeout: float = 30.0           # a worker silent this long is killed (0: off)
    # a worker must be ready (apps imported, listening) this long after fork, else
    # it is killed; a reload's new generation that is not ready by then is abandoned
    boot_timeout: float = 60.0
    # (cpu_percent, consecutive checks, interval seconds); () or interval 0 → off
    critical_point: Tuple[float, ...] = ()
    max_requests: int = 0                  # recycle a worker after this many requests (0: off)
    max_requests_jitter: int = 0           # random 0..N added per worker so they don't recycle together
    max_rss: int = 0                       # recycle a worker above this resident size, bytes (0: off)
    # --- TLS and HTTP/2 ---
    http2: bool = True                     # h2 by ALPN over TLS, h2c (preface or Upgrade) in clear
    # (http port, https port, domain): a listener answering 301 to https://; () → none
    forward: Tuple[Any, ...] = ()
    # --- HTTP/3 (protocols/h3.py) ---
    quic: int = 0                          # UDP port for HTTP/3 over QUIC (0: off); needs ssl
    alt_svc_port: int = 0                  # the port Alt-Svc advertises (0: the quic port)
    quic_retry: bool = False               # always validate client addresses with a Retry

    @property
    def alt_svc(self) -> str:
        """The Alt-Svc value HTTP/1.1 and HTTP/2 responses carry ("" without quic)."""
        if not self.quic:
            return ""
        return 'h3=":%d"; ma=86400' % (self.alt_svc_port or self.quic)

    @property
    def unix_path(self) -> str:
        """The socket file of `address = unix:/path`; "" when listening on TCP."""
        return self.address[5:] if self.address.startswith("unix:") else ""

    @property
    def listen_addresses(self) -> Tuple[Tuple[str, int], ...]:
        """Every (address, port) this server listens on: its own, then the
        HTTP→HTTPS forward port if any."""
        if self.forward:
            return ((self.address, self.port), (self.address, self.forward[0]))
        return ((self.address, self.port),)


@dataclass(frozen=True)
class SmtpdaConfig:
    """`[smtpda]` of skitaid.conf: the mail delivery agent (skitaid/smtpda/).
    The password is read from password_file when the config is read and never
    shown in a repr."""
    server: str = ""                       # "host[:port]"; "" → each mail must name its own
    user: str = ""
    password: str = field(default="", repr=False)
    ssl: bool = False                      # implicit TLS (port 465 by default)
    starttls: bool = False                 # STARTTLS required (port 587 by default)
    verify: bool = True                    # check the server's certificate and name
    cafile: str = ""                       # CAs to verify with; "" → the system's
    retry_delays: Tuple[float, ...] = (10.0, 30.0, 120.0, 600.0, 3600.0)   # the last repeats
    max_age: float = 2 * 86400.0           # mail still undelivered after this goes to failed/
    concurrency: int = 4                   # deliveries at a time
    poll_interval: float = 1.0             # how often the spool is looked at
    timeout: float = 60.0                  # SMTP socket timeout
    spool: str = ""                        # "" → <var_path>/smtpda
    fsync: bool = True                     # send() waits until the mail is on disk
    pidfile: str = ""                      # "" → <run_path>/smtpda.pid
    log_file: str = ""                     # "" → <log_path>/smtpda.log


@dataclass(frozen=True)
class GlobalConfig:
    config_dir: Optional[str] = None       # None for the Python API
    user: str = ""
    group: str = ""
    log_path: str = ""                     # "" → console
    var_path: str = ""
    run_path: str = ""
    pidfile: str = ""
    smtpda: bool = False                   # start the mail delivery agent with the server
    mail: SmtpdaConfig = field(default_factory=SmtpdaConfig)   # [smtpda]
    title: str = ""                        # the master's title prefix ("skitaid/NAME" for scripts)
    # setlu/setgs shared with other hosts through Redis: "redis://HOST:PORT/DB",
    # or "@alias" (a redis alias of a server file) resolved when the config is built
    shared_state: str = ""
    shared_state_prefix: str = "skitaid"   # keeps the sites sharing one Redis apart


@dataclass(frozen=True)
class Config:
    globals: GlobalConfig
    servers: Tuple[ServerConfig, ...]
