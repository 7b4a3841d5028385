"""setlu/setgs shared across hosts through Redis (`[global] shared_state`).

One thread in the master (or in a script without a server) carries this
host's shared region (shared.py) to and from Redis; workers never talk to
Redis for it and their reads stay plain memory reads:

- every few milliseconds it compares the region with what it last saw; a
  setlu/setgs made by any worker is written to the hashes `PREFIX:lu` /
  `PREFIX:gs` and published on the channel `PREFIX:updates`;
- what other hosts publish is written into the region. A remote setlu is
  applied with this host's clock (the later of the two), so entries cached
  here before it arrived are older than it whatever the clocks' skew;
- on (re)connecting it subscribes first, then loads the hashes: updates made
  elsewhere meanwhile are applied, and its own made while Redis was away are
  pushed. Losing Redis never blocks a request: a warning is logged once,
  the state stays local and the thread retries with a growing pause.

The PREFIX (`shared_state_prefix`, default "skitaid") keeps the sites that
share a Redis apart; the names in it are the region's ("server/key").
"""
import json
import logging
import os
import struct
import threading
import time
import uuid

from . import shared

error_log = logging.getLogger("skitaid")
INTERVAL = 0.01            # seconds between looks at the region (the publish delay at most)
RETRY_FIRST = 0.2
RETRY_MAX = 5.0
_ENTRY = struct.Struct("=48sdq")

_syncer = None
_lock = threading.Lock()


def check_url(where, url):
    """A shared_state value from code: "redis://…" → itself; ValueError otherwise."""
    from .config.build import parse_redis_url
    if not isinstance(url, str) or parse_redis_url(url) is None:
        raise ValueError("%s(): url must be redis://[:PASSWORD@]HOST[:PORT][/DB] "
                         "(rediss:// for TLS), got %r" % (where, url))
    return url


def check_prefix(where, prefix):
    import re
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", prefix):
        raise ValueError("%s(): prefix must be 1-64 letters, digits, '_', '-', '.', ':', "
                         "got %r" % (where, prefix))
    return prefix


def options_for(globals_, servers=()):
    """The redis client's keywords for `[global] shared_state` (a URL or @alias), or None."""
    from .config.build import parse_redis_url
    ref = globals_.shared_state
    if not ref:
        return None
    if not ref.startswith("@"):
        return parse_redis_url(ref)
    for server in servers:
        for alias in server.aliases:
            if alias.name == ref[1:] and alias.type == "redis" and alias.members:
                m = alias.members[0]
                opts = {"host": m.host, "port": m.port,
                        "db": int(m.database or alias.database or 0),
                        "username": m.user or None,
                        "password": m.password or alias.password or None, "ssl": alias.ssl}
                if alias.ssl and alias.ca_file:
                    opts["ssl_ca_certs"] = alias.ca_file
                return opts
    return None


def _entries(raw):
    """{name: (lu, gs)} of a region's bytes."""
    out = {}
    for name, lu, gs in _ENTRY.iter_unpack(raw):
        name = name.rstrip(b"\0")
        if not name:
            break
        out[name.decode("utf-8", "replace")] = (lu, gs)
    return out


class Syncer(threading.Thread):
    def __init__(self, options, prefix="skitaid", master_pid=None):
        super().__init__(name="skitaid-shared-state", daemon=True)
        self.options = dict(options)
        self.prefix = prefix or "skitaid"
        self.channel = self.prefix + ":updates"
        self.where = "redis %s:%s/%s" % (options["host"], options["port"], options.get("db", 0))
        self.origin = uuid.uuid4().hex[:16]
        self.pid = os.getpid()
        self.master_pid = master_pid     # a helper process stops when its master is gone
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self._region = None
        self._raw = b""
        self._seen = {}            # name → (lu, gs): the region as last seen or written here
        self._remote_lu = {}       # name → the latest remote lu accounted for
        self._client = None
        self._pubsub = None
        self.warned = False

    # -- the region ---------------------------------------------------------------------
    def _look(self):
        """[(name, lu or None, gs or None)]: what changed in the region since last time."""
        region = shared.region()
        if region is not self._region:       # the master made its region: start from it
            self._region = region
            self._raw = region.mem[:]
            self._seen = _entries(self._raw)
            return []
        raw = region.mem[:]
        if raw == self._raw:
            return []
        self._raw = raw
        changes = []
        for name, (lu, gs) in _entries(raw).items():
            old = self._seen.get(name, (0.0, 0))
            if (lu, gs) != old:
                changes.append((name, lu if lu != old[0] else None, gs if gs != old[1] else None))
                self._seen[name] = (lu, gs)
        return changes

    def _apply(self, name, lu, gs):
        region = self._region
        try:
            if lu is not None and lu > self._remote_lu.get(name, 0.0):
                self._remote_lu[name] = lu
                region.set_lu(name, max(lu, time.time()))
            if gs is not None:
                region.set_gs(name, gs)
        except ValueError as e:             # a name too long, or the region is full
            error_log.warning("shared state: %s from %s not applied: %s", name, self.where, e)
            return
        self._seen[name] = (region.get_lu(name), region.get_gs(name))
        self._raw = region.mem[:]

    # -- Redis ---------------------------------------------------------------------------
    def _publish(self, changes):
        pipe = self._client.pipeline(transaction=False)
        for name, lu, gs in changes:
            if lu is not None:
                pipe.hset(self.prefix + ":lu", name, repr(lu))
                self._remote_lu[name] = lu
            if gs is not None:
                pipe.hset(self.prefix + ":gs", name, str(gs))
            pipe.publish(self.channel, json.dumps({"o": self.origin, "n": name, "lu": lu,
                                                   "gs": gs}))
        pipe.execute()

    def _resync(self):
        """Just subscribed: take what changed elsewhere, push what changed here."""
        local = self._look()                 # changed here while Redis was away
        mine = {name for name, _, _ in local}
        remote_lu = self._client.hgetall(self.prefix + ":lu")
        remote_gs = self._client.hgetall(self.prefix + ":gs")
        for name, value in remote_lu.items():
            name = name.decode("utf-8", "replace")
            self._apply(name, float(value), None)
        for name, value in remote_gs.items():
            name = name.decode("utf-8", "replace")
            if name not in mine:
                self._apply(name, None, int(value))
        if local:
            self._publish(local)

    def _connect(self):
        import redis
        client = redis.Redis(socket_connect_timeout=2, socket_timeout=5,
                             health_check_interval=2, client_name="skitaid-shared-state",
                             **{k: v for k, v in self.options.items() if v is not None})
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        self._client, self._pubsub = client, pubsub

    def _disconnect(self):
        for thing in (self._pubsub, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass
        self._client = self._pubsub = None
        self.connected.clear()

    def _serve(self):
        self._connect()
        self._resync()
        self.connected.set()
        if self.warned:
            error_log.warning("shared state: %s is back; setlu/setgs resynchronised", self.where)
            self.warned = False
        else:
            error_log.info("shared state: setlu/setgs shared through %s (prefix %s)",
                           self.where, self.prefix)
        pubsub = self._pubsub
        while not self.stopping.is_set():
            msg = pubsub.get_message(timeout=INTERVAL)
            while msg is not None:
                self._receive(msg)
                msg = pubsub.get_message(timeout=0)
            changes = self._look()
            if changes:
                self._publish(changes)
            if self.master_pid is not None and os.getppid() != self.master_pid:
                self.stop()

    def _receive(self, msg):
        if msg.get("type") != "message":
            return
        try:
            update = json.loads(msg["data"])
            if update.get("o") == self.origin:
                return
            lu, gs = update.get("lu"), update.get("gs")
            self._apply(str(update["n"]), float(lu) if lu is not None else None,
                        int(gs) if gs is not None else None)
        except (ValueError, KeyError, TypeError):
            error_log.warning("shared state: a malformed update on %s ignored", self.channel)

    def run(self):
        import redis
        pause = RETRY_FIRST
        self._look()                         # what is here now is not news
        while not self.stopping.is_set():
            try:
                self._serve()
            except (redis.RedisError, OSError) as e:
                self._disconnect()
                if not self.warned:
                    # once per outage; the message never holds the password
                    error_log.warning("shared state: %s unreachable (%s); setlu/setgs stay "
                                      "on this host until it is back", self.where,
                                      type(e).__name__)
                    self.warned = True
                    pause = RETRY_FIRST
                self.stopping.wait(pause)
                pause = min(RETRY_MAX, pause * 2)
            except Exception:
                error_log.exception("shared state: unexpected error; retrying")
                self._disconnect()
                self.stopping.wait(RETRY_MAX)
        self._disconnect()

    def stop(self):
        self.stopping.set()

    def drop_in_child(self):
        """After fork: the child's copies of the sockets are closed (the master's stay)."""
        for conn in (getattr(self._pubsub, "connection", None),):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        pool = getattr(self._client, "connection_pool", None)
        for conn in list(getattr(pool, "_available_connections", ())) + \
                list(getattr(pool, "_in_use_connections", ())):
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def start(options, prefix=None):
    """Start (or keep) this process's syncer for `options` (redis client keywords)."""
    global _syncer
    with _lock:
        s = _syncer
        if s is not None and s.pid == os.getpid() and s.is_alive():
            if s.options == dict(options) and s.prefix == (prefix or "skitaid"):
                return s
            s.stop()
        _syncer = Syncer(options, prefix)
        _syncer.start()
        return _syncer


def start_standalone(url, prefix=None):
    """skitaid.set_shared_state() in a script: sync this process's region."""
    from .config.build import parse_redis_url
    return start(parse_redis_url(url), prefix)


def stop():
    global _syncer
    with _lock:
        if _syncer is not None and _syncer.pid == os.getpid():
            _syncer.stop()
            _syncer.join(2)
        _syncer = None


def current():
    return _syncer


def _after_fork_in_child():
    global _syncer
    s = _syncer
    _syncer = None
    if s is not None:
        s.drop_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
