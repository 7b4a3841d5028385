"""`was.cursor("@mydb")`: a plain, blocking DB-API cursor in the app thread.

For PostgreSQL (psycopg2, the driver the corequests use, in its ordinary
synchronous mode) and SQLite. Connections are in autocommit mode, as
`was.db` statements are (transactions: `was.transaction`), and pooled per
alias member per worker, apart from the loop's own connections: at most
max_connections, waiting up to pool_timeout for one. close() — or the end
of the request, or leaving a `with` block — returns the connection.
"""
import select
import threading
import time

from . import PoolExhausted

CONNECT_TIMEOUT = 10


def _pg_connect(member):
    import psycopg2
    conn = psycopg2.connect(host=member.host, port=member.port, dbname=member.database,
                            user=member.user or None, password=member.password or None,
                            connect_timeout=CONNECT_TIMEOUT, application_name="skitaid")
    conn.autocommit = True
    return conn


def _pg_usable(conn):
    if conn.closed:
        return False
    try:     # something to read on an idle autocommit connection: the server said goodbye
        return not select.select([conn.fileno()], [], [], 0)[0]
    except (OSError, ValueError):
        return False


def _lite_connect(member, timeout):
    import sqlite3
    return sqlite3.connect(member.database, timeout=timeout, isolation_level=None,
                           check_same_thread=False)


class SyncPool:
    """Blocking connections of one member, shared by the app threads of a worker."""

    def __init__(self, name, connect, usable, max_size, timeout, idle_timeout):
        self.name = name
        self._connect = connect
        self._usable = usable
        self.max_size = max_size
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.size = 0
        self._idle = []               # [(conn, since)]
        self._cond = threading.Condition()

    def acquire(self):
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                now = time.monotonic()
                while self._idle:
                    conn, since = self._idle.pop()
                    if since + self.idle_timeout > now and self._usable(conn):
                        return conn
                    self.size -= 1
                    _close(conn)
                if self.size < self.max_size:
                    self.size += 1
                    break
                remaining = deadline - now
                if remaining <= 0:
                    raise PoolExhausted(
                        "no free cursor connection to %s within %g s: all %d in use (close "
                        "cursors sooner, or raise max_connections or pool_timeout)"
                        % (self.name, self.timeout, self.max_size))
                self._cond.wait(remaining)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self.size -= 1
                self._cond.notify()
            raise

    def release(self, conn, broken=False):
        with self._cond:
            if broken or not self._usable(conn):
                self.size -= 1
                _close(conn)
            else:
                self._idle.append((conn, time.monotonic()))
            self._cond.notify()

    def close(self):
        with self._cond:
            for conn, _ in self._idle:
                _close(conn)
            self.size -= len(self._idle)
            self._idle = []


def _close(conn):
    try:
        conn.close()
    except Exception:
        pass


def pool_for(engine, db, state):
    """The SyncPool of `state` (a member of Database `db`) in this engine."""
    pools = engine.cursor_pools
    index = db.cluster.members.index(state)
    key = (db.name, index)
    pool = pools.get(key)
    if pool is None:
        with engine._db_lock:
            pool = pools.get(key)
            if pool is None:
                alias = db.alias
                member = alias.members[index]
                if db.kind == "postgresql":
                    connect, usable = (lambda: _pg_connect(member)), _pg_usable
                    name = "@%s %s:%d/%s" % (db.name, member.host, member.port, member.database)
                else:
                    timeout = max(alias.pool_timeout, 0.1)
                    connect, usable = (lambda: _lite_connect(member, timeout)), (lambda c: True)
                    name = "@%s %s" % (db.name, member.database)
                pool = pools[key] = SyncPool(name, connect, usable, alias.max_connections,
                                             alias.pool_timeout, alias.idle_timeout)
    return pool


class Cursor:
    """The driver's cursor (execute, executemany, fetchone, fetchall, fetchmany,
    description, rowcount, …) on a pooled connection; close() gives it back."""

    def __init__(self, engine, db):
        if db.kind not in ("postgresql", "sqlite3"):
            raise TypeError("was.cursor(): @%s is %s; cursors are for PostgreSQL and SQLite"
                            % (db.name, db.kind))
        engine.check_can_wait()          # a blocking driver call would stall the loop
        self._db = db
        self._pool = None
        self._conn = None
        self._cursor = None
        last = None
        for state in db.cluster.order():
            pool = pool_for(engine, db, state)
            try:
                conn = pool.acquire()
            except PoolExhausted:
                raise
            except Exception as e:           # cannot connect: the next member, if any
                db.cluster.failed(state)
                last = e
                continue
            db.cluster.succeeded(state)
            self._pool, self._conn = pool, conn
            self._cursor = conn.cursor()
            break
        else:
            raise last
        from ...context import at_request_end
        at_request_end(self.close)

    def __getattr__(self, name):
        cursor = self.__dict__.get("_cursor")
        if cursor is None:
            raise AttributeError("%s (this cursor is closed)" % name)
        return getattr(cursor, name)

    def __iter__(self):
        return iter(self._cursor)

    @property
    def closed(self):
        return self._conn is None

    def close(self):
        """Close the cursor and return its connection to the pool (again: nothing)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        cursor, self._cursor = self._cursor, None
        broken = False
        try:
            cursor.close()
        except Exception:
            broken = True
        if not broken and self._db.kind == "postgresql":
            from psycopg2 import extensions as ext
            broken = conn.closed != 0 or \
                conn.get_transaction_status() != ext.TRANSACTION_STATUS_IDLE
        self._pool.release(conn, broken)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
