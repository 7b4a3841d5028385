"""The corequest engine of one worker: its loop, client pool, clusters and cache.

The worker creates it when it starts (`start_worker_engine`) and closes it
at shutdown. Outside a server (a script, a test) the first `was` call starts
a private engine with its own loop in a daemon thread, so the same code runs
anywhere; it serves the aliases declared with `skitaid.alias()` (aliases.py).
"""
import asyncio
import threading

from ..logs import error_log
from .cache import ResultCache
from .client import ClientPool
from .cluster import Cluster

_engine = None
_lock = threading.Lock()


class Engine:
    def __init__(self, loop, aliases=(), server_name="default", result_cache_max=200):
        self.loop = loop
        self.server_name = server_name
        self.pool = ClientPool(loop)
        self.clusters = {}
        self.aliases = {}
        for alias in aliases:
            self.add_alias(alias)
        self.cache = ResultCache(result_cache_max)
        self.cachefs = None          # the server's HTTP cache (cachefs.store.Cache), if on
        self._cache_tick = None
        self.loop_thread = None      # set once the loop runs (see bind_loop_thread)
        self._executors = {}
        # was.Thread/was.Process pools (config_executors): size (0: CPU count),
        # give-up time of a task (0: none), the process pool's start method
        self.executor_workers = 0
        self.zombie_timeout = 0.0
        self.process_start_method = "forkserver"
        self.databases = {}          # alias name (or (type, spec)) → db.client.Database
        self._db_lock = threading.Lock()
        self.cursor_pools = {}       # (alias name, member index) → db.cursor.SyncPool

    def add_alias(self, alias):
        self.aliases[alias.name] = alias
        if alias.type in ("http", "https"):
            cluster = self.clusters[alias.name] = Cluster.from_alias(alias)
            cluster.share(self.server_name)     # health shared by the server's workers

    def database(self, name, dbtype=None):
        """The Database of '@alias' (or of a member spec with a type), made on first use."""
        key = name[1:] if name.startswith("@") else (dbtype, name)
        db = self.databases.get(key)
        if db is not None:
            return db
        from .db.client import DB_TYPES, Database, ad_hoc_alias, db_types, is_database
        if isinstance(key, str):
            alias = self.aliases.get(key)
            if alias is None:
                raise LookupError("unknown alias @%s" % key)
            if not is_database(alias.type):
                raise LookupError("alias @%s is %s, not a database (%s)"
                                  % (key, alias.type, ", ".join(db_types())))
            if not alias.members:
                raise LookupError("alias @%s has no members" % key)
        else:
            if dbtype not in DB_TYPES:
                raise ValueError("a database type (%s) is needed with %r"
                                 % (", ".join(DB_TYPES), name))
            alias = ad_hoc_alias(name, dbtype)
        with self._db_lock:
            db = self.databases.get(key)
            if db is None:
                db = self.databases[key] = Database(self.loop, alias)
        return db

    def bind_loop_thread(self):
        self.loop_thread = threading.get_ident()

    def submit(self, coro):
        """Schedule `coro` on the loop (from any thread); a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def check_can_wait(self):
        if threading.get_ident() == self.loop_thread:
            raise RuntimeError(
                "waiting for a corequest on the event-loop thread would block the loop "
                "forever: with threads = 0 apps run on the loop; set threads >= 1 to "
                "dispatch()/fetch() corequests, or return task.returning(response)")

    def executor(self, kind):
        ex = self._executors.get(kind)
        if ex is None:
            import concurrent.futures
            import os
            workers = self.executor_workers or os.cpu_count() or 1
            if kind == "process":
                import multiprocessing
                ex = concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context(self.process_start_method))
            else:
                ex = concurrent.futures.ThreadPoolExecutor(workers,
                                                           thread_name_prefix="skitaid-task")
            self._executors[kind] = ex
        return ex

    def start_cachefs(self, config):
        """The HTTP cache of proxied responses and `was` calls ([cachefs])."""
        from ..cachefs.store import Cache, Options
        try:
            self.cachefs = Cache(Options.from_config(config), self.loop)
        except OSError as e:
            raise RuntimeError("cachefs: cannot use %s: %s (the [cachefs] path must be a "
                               "directory the workers' user can write)"
                               % (config.path, e.strerror or e)) from None
        self._tick_cachefs()

    def _tick_cachefs(self):
        try:
            self.cachefs.tick()
        except OSError as e:
            error_log.warning("cachefs: %s", e)
        self._cache_tick = self.loop.call_later(1.0, self._tick_cachefs)

    def close(self):
        """Loop thread, at worker shutdown."""
        if self.cachefs is not None:
            self._cache_tick.cancel()
            self.cachefs.close()
        self.pool.close()
        for db in self.databases.values():
            db.close()
        for pool in self.cursor_pools.values():
            pool.close()
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)


def start_worker_engine(worker):
    """Called by the worker on its loop before it serves."""
    global _engine
    config = worker.config
    engine = Engine(worker.loop, config.aliases, config.name, config.num_result_cache_max)
    engine.pool.idle_timeout = config.backend_keep_alive
    if config.cachefs.enabled:
        engine.start_cachefs(config.cachefs)
    engine.executor_workers = config.executor_workers
    engine.zombie_timeout = config.zombie_timeout
    engine.process_start_method = config.process_start_method
    engine.bind_loop_thread()
    _engine = engine
    return engine


def stop_worker_engine():
    global _engine
    if _engine is not None:
        _engine.close()
        _engine = None


def current():
    """The engine of this process, starting a private one when there is none."""
    global _engine
    engine = _engine
    if engine is None:
        with _lock:
            if _engine is None:
                _engine = _standalone()
            engine = _engine
    return engine


def _standalone():
    from .aliases import declared
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)
        holder["engine"] = Engine(loop, declared())
        holder["engine"].bind_loop_thread()
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, name="skitaid-corequest", daemon=True).start()
    ready.wait()
    return holder["engine"]
