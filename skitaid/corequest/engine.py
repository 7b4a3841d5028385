"""The corequest engine of one worker: its loop, client pool, clusters and cache.

The worker creates it when it starts (`start_worker_engine`) and closes it
at shutdown. Outside a server (a script, a test) the first `was` call starts
a private engine with its own loop in a daemon thread, so the same code runs
anywhere; it serves the aliases declared with `skitaid.alias()` (aliases.py).
"""
import asyncio
import threading

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
        self.loop_thread = None      # set once the loop runs (see bind_loop_thread)
        self._executors = {}
        self.databases = {}          # alias name (or (type, spec)) → db.client.Database
        self._db_lock = threading.Lock()
        self.cursor_pools = {}       # (alias name, member index) → db.cursor.SyncPool

    def add_alias(self, alias):
        self.aliases[alias.name] = alias
        if alias.type in ("http", "https"):
            self.clusters[alias.name] = Cluster.from_alias(alias)

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
            if kind == "process":
                import multiprocessing
                ex = concurrent.futures.ProcessPoolExecutor(
                    os.cpu_count() or 1, mp_context=multiprocessing.get_context("forkserver"))
            else:
                ex = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1,
                                                           thread_name_prefix="skitaid-task")
            self._executors[kind] = ex
        return ex

    def close(self):
        """Loop thread, at worker shutdown."""
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
