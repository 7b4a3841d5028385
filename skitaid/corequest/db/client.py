"""From `was.db(...)` / `was.transaction(...)` to statements on a database.

`Database` is one database alias in this worker: its members (each with a
pool or a thread) and the choice between them. `Stub` makes Tasks of
autocommit statements; `Transaction` holds one connection for an app thread.
"""
import asyncio
import logging
import os

from ..cluster import Cluster
from ..http import cache_threshold
from ..task import DEFAULT_TIMEOUT, STA_NETERR, STA_NORMAL, STA_REQFAIL, Result, Task, Tasks
from . import ConnectFailed, PoolExhausted

error_log = logging.getLogger("skitaid")
DB_TYPES = ("postgresql", "sqlite3")
TX_TIMEOUT = 60.0


def _backend(kind):
    if kind == "postgresql":
        from . import postgresql
        return postgresql
    from . import sqlite
    return sqlite


class Database:
    def __init__(self, loop, alias):
        self.name = alias.name
        self.alias = alias
        self.kind = alias.type
        self.backend = _backend(alias.type)
        self.cluster = Cluster(alias.name, alias.type,
                               [(m.host, m.port, m.weight) for m in alias.members])
        self.members = {}
        for state, member in zip(self.cluster.members, alias.members):
            # one server may hold several databases of a cluster
            state.key = (alias.type, member.host, member.port, member.database, member.user)
            self.members[state.key] = self.backend.Member(loop, alias, member)

    async def execute(self, member_key, sql, params):
        if member_key is not None:
            order = [m for m in self.cluster.members if m.key == member_key]
        else:
            order = self.cluster.order()
        last = None
        for state in order:
            state.inflight += 1
            try:
                result = await self.members[state.key].execute(sql, params)
            except ConnectFailed as e:
                # nothing was sent: the next member may take the statement
                self.cluster.failed(state)
                last = e
                continue
            finally:
                state.inflight -= 1
            self.cluster.succeeded(state)
            return result
        raise last or ConnectFailed("@%s has no member" % self.name)

    def pick(self):
        return self.members[self.cluster.order()[0].key]

    def close(self):
        for m in self.members.values():
            m.close()


def _mark_updated(keys):
    from ... import was
    for key in ((keys,) if isinstance(keys, str) else keys):
        was.setlu(key)


async def _call(db, member_key, sql, params, timeout, meta, rm_cache):
    try:
        if timeout:
            rows, rowcount = await asyncio.wait_for(db.execute(member_key, sql, params), timeout)
        else:
            rows, rowcount = await db.execute(member_key, sql, params)
    except db.backend.IntegrityError as e:
        result = Result(STA_NORMAL, 409, "Conflict", data=[], error=e, meta=meta)
        result.conflict = True
    except PoolExhausted as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 503, "Service Unavailable", data=[], error=e, meta=meta)
    except ConnectFailed as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 502, "Bad Gateway", data=[], error=e, meta=meta)
    except (asyncio.TimeoutError, asyncio.CancelledError):
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
        _mark_updated(rm_cache)
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

    def execute(self, sql, params=None, meta=None):
        """A Task (for .map: Tasks, one Result per member). `params` go to the driver,
        never into the SQL text."""
        meta = {} if meta is None else meta
        if self.db is None:
            return Task(result=Result(STA_REQFAIL, error=self.error, meta=meta), meta=meta)
        if params is not None and not isinstance(params, (tuple, list, dict)):
            err = TypeError("params must be a tuple, list or dict, not %s"
                            % type(params).__name__)
            return Task(result=Result(STA_REQFAIL, error=err, meta=meta), meta=meta)
        engine = self.engine
        newer_than = None if self.rm_cache else cache_threshold(self.use_cache)
        base_key = ("db", self.db.name, sql, repr(params))

        def one(member_key):
            key = base_key if member_key is None else base_key + (member_key,)
            if newer_than is not None:
                hit = engine.cache.get(key, newer_than)
                if hit is not None:
                    return Task(result=hit, meta=meta)
            return Task(engine, _call(self.db, member_key, sql, params, self.timeout, meta,
                                      self.rm_cache),
                        cache_key=key, cache_store=engine.cache, meta=meta)

        if self.mode == "map":
            return Tasks([one(m.key) for m in self.db.cluster.members],
                         timeout=self.timeout or DEFAULT_TIMEOUT)
        return one(None)


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
        self._member = db.pick()
        if db.kind == "sqlite3":
            self._lite = self.db.backend.Transaction(self._member.path, self._member.timeout)
        else:
            engine.check_can_wait()
            pool = self._member.pool
            # the pool itself gives up after pool_timeout (+ connect time)
            self._conn = self._wait(self._member.take(), pool.timeout + 15, abandon=False)

    def _wait(self, coro, timeout, abandon=True):
        import concurrent.futures
        future = self.engine.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            if abandon and self._conn is not None:
                conn, self._conn = self._conn, None
                self.engine.loop.call_soon_threadsafe(self._member.abandon, conn)
            raise TimeoutError("statement on @%s took longer than %g s" % (self.db.name, timeout))

    def _run(self, sql, params):
        if self._lite is None and self._conn is None:
            raise RuntimeError("this transaction's connection was put back")
        begin = not self._open
        self._open = True
        if self._lite is not None:
            rows, rowcount = self._lite.run(sql, params, begin)
        else:
            rows, rowcount = self._wait(self._member.tx_run(self._conn, sql, params, begin),
                                        self.timeout)
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
                self._wait(self._member.tx_run(self._conn, verb, None, False), self.timeout)

    def commit(self):
        self._end("COMMIT")
        if self.rm_cache:
            _mark_updated(self.rm_cache)

    def rollback(self):
        self._end("ROLLBACK")

    def putback(self):
        """Return the connection (rolling back what was not committed)."""
        if self._lite is not None:
            lite, self._lite = self._lite, None
            self._open = False
            lite.end(rollback=True)
            self._lite = None
        elif self._conn is not None:
            conn, self._conn = self._conn, None
            rollback, self._open = self._open, False
            self._wait(self._member.give_back(conn, rollback), self.timeout, abandon=False)

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
                self.engine.submit(self._member.give_back(self._conn, True))
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
        from ...config import build
        from ...config.values import Bad
        try:
            members = (build._member(None, dbtype, False, spec),)
        except Bad as e:
            raise ValueError("%s: expected %s" % (spec, e.args[0]))
    return Alias(name=spec, type=dbtype, members=members, source="was.db")
