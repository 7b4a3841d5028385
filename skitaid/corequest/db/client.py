"""From `was.db(...)` / `was.transaction(...)` to statements on a database.

`Database` is one database alias in this worker: its members (each with a
pool or a thread) and the choice between them. `Stub` makes Tasks of
autocommit statements; `Transaction` holds one connection for an app thread.
"""
import asyncio
import concurrent.futures
import logging
import os

from ..cache import LazyKey, cache_threshold, cached_task, mark_updated, spread
from ..cluster import Cluster
from ..task import (DEFAULT_TIMEOUT, STA_NETERR, STA_NORMAL, Result, bounded, failed_task,
                    wait_future)
from . import ConnectFailed, PoolExhausted

error_log = logging.getLogger("skitaid")
DB_TYPES = ("postgresql", "sqlite3")
TX_TIMEOUT = 60.0


def is_database(kind):
    """A type `was.db` can call: built in, or added with add_database_interface."""
    from . import interface
    return kind in DB_TYPES or kind == "redis" or interface.get(kind) is not None


def db_types():
    from . import interface
    return DB_TYPES + ("redis",) + interface.names()


def _backend(kind):
    if kind == "postgresql":
        from . import postgresql
        return postgresql
    if kind == "sqlite3":
        from . import sqlite
        return sqlite
    from . import interface
    if kind == "redis":
        from .redisdb import RedisInterface
        return interface.Backend(RedisInterface)
    return interface.Backend(interface.get(kind))


class Database:
    """The cluster of an alias; each member state's `backend` is the backend's
    Member (a pool, or a thread) for that server or file."""

    def __init__(self, loop, alias):
        self.name = alias.name
        self.kind = alias.type
        self.alias = alias
        self.backend = _backend(alias.type)
        self.cluster = Cluster(alias.name, alias.type,
                               [(m.host, m.port, m.weight) for m in alias.members])
        for state, member in zip(self.cluster.members, alias.members):
            state.backend = self.backend.Member(loop, alias, member)

    def execute(self, member, sql, params):
        """(rows, rowcount) from `member`, or from the one the cluster picks."""
        return self.cluster.call(lambda s: s.backend.execute(sql, params), member)

    async def take(self):
        """(member state, connection) for a transaction, from the least loaded
        member that can be connected to; in flight there until give_back()."""
        async def hold(state):
            conn = await state.backend.take()
            state.inflight += 1
            return state, conn
        return await self.cluster.call(hold)

    async def give_back(self, state, conn, rollback):
        state.release_one()
        await state.backend.give_back(conn, rollback)

    def abandon(self, state, conn):
        state.release_one()
        state.backend.abandon(conn)

    def close(self):
        for state in self.cluster.members:
            state.backend.close()


async def _call(db, engine, member, sql, params, timeout, meta, rm_cache):
    try:
        if timeout:
            rows, rowcount = await bounded(db.execute(member, sql, params), timeout)
        else:
            rows, rowcount = await db.execute(member, sql, params)
    except db.backend.IntegrityError as e:
        result = Result(STA_NORMAL, 409, "Conflict", data=[], error=e, meta=meta)
        result.conflict = True
    except PoolExhausted as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 503, "Service Unavailable", data=[], error=e, meta=meta)
    except ConnectFailed as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 502, "Bad Gateway", data=[], error=e, meta=meta)
    except asyncio.TimeoutError:
        raise
    except Exception as e:
        # the database's own words go to the error log, not to the client
        error_log.error("@%s: %s: %s [statement: %.300s]", db.name, type(e).__name__,
                        str(e).strip(), sql)
        result = Result(STA_NORMAL, 500, "Database Error", data=[], error=e, meta=meta)
    else:
        result = Result(STA_NORMAL, 200, "OK", data=rows, meta=meta)
        result.rowcount = rowcount
    if rm_cache and result.status_code in (200, 409, 500):
        mark_updated(rm_cache, engine.server_name)
    return result


class Stub:
    """`with was.db("@mydb") as db: task = db.execute(sql, params)`"""

    def __init__(self, engine, name, dbtype=None, mode="lb", use_cache=True, rm_cache=None,
                 timeout=None):
        self.engine = engine
        self.mode = mode
        self.use_cache = use_cache
        self.rm_cache = rm_cache
        self.timeout = timeout
        self.error = None
        try:
            self.db = engine.database(name, dbtype)
        except (LookupError, ValueError) as e:
            self.db = None
            self.error = e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        """Commands of Redis and added databases: was.db("@r").get("k") → a Task."""
        if name.startswith("_") or "db" not in self.__dict__:
            raise AttributeError(name)
        from . import interface
        if self.db is not None and not interface.is_interface(self.db):
            raise AttributeError("@%s is %s: it runs SQL with execute(sql, params)"
                                 % (self.db.name, self.db.kind))
        return interface.verb(self, name)

    def pipeline(self, transaction=True, meta=None):
        """Commands sent together (Redis: MULTI/EXEC when transaction): see interface.Pipeline."""
        from . import interface
        if self.db is not None and not interface.is_interface(self.db):
            raise TypeError("pipeline(): @%s is %s; pipelines are for Redis and added "
                            "database types" % (self.db.name, self.db.kind))
        return interface.Pipeline(self, transaction, meta)

    def execute(self, sql, params=None, meta=None):
        """A Task (for .map: Tasks, one Result per member). `params` go to the driver,
        never into the SQL text. (Redis: execute_command; added types: their "execute".)"""
        meta = {} if meta is None else meta
        if self.db is None:
            return failed_task(self.error, meta)
        from . import interface
        if interface.is_interface(self.db):
            args = (sql,) if params is None else (sql, params)
            name = "execute_command" if self.db.kind == "redis" else "execute"
            return interface.command_task(self, name, args, {}, meta)
        if params is not None and not isinstance(params, (tuple, list, dict)):
            return failed_task(TypeError("params must be a tuple, list or dict, not %s"
                                         % type(params).__name__), meta)
        engine = self.engine
        db = self.db
        timeout = self.timeout
        rm_cache = self.rm_cache
        newer_than = None if rm_cache else cache_threshold(self.use_cache, engine.server_name)

        cache_key = LazyKey(lambda: ("db", db.name, sql, repr(params)))

        def one(member, key):
            return cached_task(engine, key, newer_than, lambda: _call(
                db, engine, member, sql, params, timeout, meta, rm_cache), meta, timeout)

        return spread(self.mode, db.cluster, cache_key, one, timeout or DEFAULT_TIMEOUT)


class Transaction:
    """A connection held by this app thread: DB-API style, blocking.

        with was.transaction("@mydb") as tx:
            tx.execute("UPDATE …", (1,))
            tx.execute("SELECT …")
            rows = tx.fetchall()
            tx.commit()

    The first statement after commit()/rollback() starts a new transaction.
    Leaving the block returns the connection to the pool, rolled back when
    the block raised or did not commit. Errors are the driver's exceptions.
    """

    def __init__(self, engine, name, auto_putback=True, rm_cache=None, timeout=None):
        db = engine.database(name)
        if db.kind not in DB_TYPES:
            raise TypeError("was.transaction(): @%s is %s; transactions are for PostgreSQL "
                            "and SQLite (Redis: was.db(...).pipeline())" % (db.name, db.kind))
        self.engine = engine
        self.db = db
        self.auto_putback = auto_putback
        self.rm_cache = rm_cache
        self.timeout = TX_TIMEOUT if timeout is None else timeout
        self.rowcount = -1
        self._rows = []
        self._pos = 0
        self._open = False         # a BEGIN was sent and no COMMIT/ROLLBACK yet
        self._conn = None
        self._lite = None
        self._state = None         # the member state (PostgreSQL): counted in flight
        if db.kind == "sqlite3":
            # a file of its own in this thread: no pool, nothing to fail over
            member = db.cluster.order()[0].backend
            self._lite = db.backend.Transaction(member.path, member.timeout)
        else:
            engine.check_can_wait()
            # the pool itself gives up after pool_timeout (+ connect time)
            wait = max(s.backend.pool.timeout for s in db.cluster.members) + 15
            self._state, self._conn = self._wait(db.take(), wait, abandon=False)

    def _wait(self, coro, timeout, abandon=True):
        try:
            return wait_future(self.engine.submit(coro), timeout)
        except concurrent.futures.TimeoutError:
            if abandon and self._conn is not None:
                conn, self._conn = self._conn, None
                self.engine.loop.call_soon_threadsafe(self.db.abandon, self._state, conn)
            raise TimeoutError("statement on @%s took longer than %g s"
                               % (self.db.name, timeout)) from None

    def _run(self, sql, params):
        if self._lite is None and self._conn is None:
            raise RuntimeError("this transaction's connection was put back")
        begin = not self._open
        self._open = True
        if self._lite is not None:
            rows, rowcount = self._lite.run(sql, params, begin)
        else:
            rows, rowcount = self._wait(
                self._state.backend.tx_run(self._conn, sql, params, begin), self.timeout)
        return rows, rowcount

    def execute(self, sql, params=None):
        self._rows, self.rowcount = self._run(sql, params)
        self._pos = 0
        return self

    def fetchall(self):
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rows

    fetch = fetchall

    def fetchone(self):
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size=1):
        rows = self._rows[self._pos:self._pos + size]
        self._pos += len(rows)
        return rows

    def _end(self, verb):
        if self._open:
            self._open = False
            if self._lite is not None:
                self._lite.conn.execute(verb)
            else:
                self._wait(self._state.backend.tx_run(self._conn, verb, None, False),
                           self.timeout)

    def commit(self):
        self._end("COMMIT")
        if self.rm_cache:
            mark_updated(self.rm_cache, self.engine.server_name)

    def rollback(self):
        self._end("ROLLBACK")

    def putback(self):
        """Return the connection (rolling back what was not committed)."""
        if self._lite is not None:
            lite, self._lite = self._lite, None
            self._open = False
            lite.end(rollback=True)
        elif self._conn is not None:
            conn, self._conn = self._conn, None
            rollback, self._open = self._open, False
            self._wait(self.db.give_back(self._state, conn, rollback), self.timeout,
                       abandon=False)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.auto_putback or exc_type is not None:
            self.putback()
        return False

    def __del__(self):
        # dropped without putback(): give the connection back (rolled back), without
        # waiting, as this may run anywhere (even on the loop thread)
        try:
            if self._conn is not None:
                self.engine.submit(self.db.give_back(self._state, self._conn, True))
                self._conn = None
            elif self._lite is not None:
                self._lite.end(rollback=True)
                self._lite = None
        except Exception:
            pass


def ad_hoc_alias(spec, dbtype):
    """`was.db("user:pw@host:5432/db", DB_PGSQL)` or `was.db("/path/x.db", DB_SQLITE3)`."""
    from ...config.model import Alias, Member
    if dbtype == "sqlite3":
        path = spec if spec == ":memory:" else os.path.abspath(spec)
        members = (Member(spec=spec, database=path),)
    else:
        from ...config.build import parse_member
        from ...config.values import Bad
        try:
            members = (parse_member(dbtype, spec),)
        except Bad as e:
            raise ValueError("%s: expected %s" % (spec, e.args[0]))
    return Alias(name=spec, type=dbtype, members=members, source="was.db")
