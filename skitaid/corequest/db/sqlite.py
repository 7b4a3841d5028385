"""SQLite: one thread per database file, so the loop never waits on the disk.

Statements of `was.db` run one after another on that thread's connection
(autocommit). A transaction opens its own connection in the app thread
that asks for it (SQLite locks the file for writers, not connections).
"""
import concurrent.futures
import sqlite3

from . import make_rows

IntegrityError = sqlite3.IntegrityError
BUSY_TIMEOUT = 5.0


def open_connection(path, timeout=BUSY_TIMEOUT):
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    return conn


def run(conn, sql, params):
    """(rows, rowcount) of one statement — or of a script when there are no params."""
    try:
        cur = conn.execute(sql, params if params is not None else ())
    except sqlite3.ProgrammingError as e:
        # several statements separated by ';' (the original Skitai allowed it)
        if params is None and "one statement at a time" in str(e):
            conn.executescript(sql)
            return [], -1
        raise
    try:
        rows = make_rows(cur.description, cur.fetchall()) if cur.description else []
        return rows, cur.rowcount
    finally:
        cur.close()


class Member:
    """One database file of an alias and the thread that owns its connection."""

    def __init__(self, loop, alias, member):
        self.loop = loop
        self.path = member.database
        self._conn = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="skitaid-sqlite")
        self.timeout = max(alias.pool_timeout, 0.1)

    def _run(self, sql, params):
        if self._conn is None:
            self._conn = open_connection(self.path, self.timeout)
        return run(self._conn, sql, params)

    async def execute(self, sql, params):
        # a cancelled call that has not started yet is dropped; one running finishes
        return await self.loop.run_in_executor(self._executor, self._run, sql, params)

    def close(self):
        def shut():
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        try:
            self._executor.submit(shut)
        except RuntimeError:
            pass
        self._executor.shutdown(wait=False)


class Transaction:
    """The blocking side: a connection of the app thread, BEGIN on the first statement."""

    def __init__(self, path, timeout):
        self.conn = open_connection(path, timeout)

    def run(self, sql, params, begin):
        if begin:
            self.conn.execute("BEGIN")
        return run(self.conn, sql, params)

    def end(self, rollback):
        try:
            if rollback and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()
