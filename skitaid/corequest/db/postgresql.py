"""PostgreSQL on the worker's loop: psycopg2 connections in asynchronous mode.

A connection in async mode never blocks: after connect() or execute() the
loop waits for its socket to become readable or writable (add_reader /
add_writer on its fd) and calls poll() until psycopg2 says the work is
done. So any number of statements in flight cost no threads. Such
connections are always in autocommit mode; transactions send BEGIN,
COMMIT and ROLLBACK themselves.
"""
import asyncio
import ipaddress
import select
import socket

import psycopg2
from psycopg2 import extensions as _ext

from . import ConnectFailed, make_rows
from .pool import Pool

CONNECT_TIMEOUT = 10.0
IntegrityError = psycopg2.IntegrityError


class DeadConnection(Exception):
    """A pooled connection turned out to be closed by the server."""


async def _ready(loop, conn):
    """Drive conn.poll() until the pending operation is complete."""
    fd = conn.fileno()
    while True:
        state = conn.poll()
        if state == _ext.POLL_OK:
            return
        waiter = loop.create_future()

        def wake(w=waiter):
            if not w.done():
                w.set_result(None)
        if state == _ext.POLL_READ:
            loop.add_reader(fd, wake)
            try:
                await waiter
            finally:
                loop.remove_reader(fd)
        elif state == _ext.POLL_WRITE:
            loop.add_writer(fd, wake)
            try:
                await waiter
            finally:
                loop.remove_writer(fd)
        else:                       # POLL_ERROR: poll() raises before we get here
            raise psycopg2.OperationalError("connection poll failed (state %r)" % state)


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


async def connect(loop, member):
    """A new async connection to `member` (a config Member)."""
    params = {"host": member.host, "port": member.port, "dbname": member.database,
              "user": member.user or None, "password": member.password or None,
              "application_name": "skitaid"}
    if not _is_ip(member.host):
        # libpq would resolve the name itself, blocking the loop: resolve it here
        try:
            infos = await loop.getaddrinfo(member.host, member.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ConnectFailed("cannot resolve %s: %s" % (member.host, e)) from e
        params["hostaddr"] = infos[0][4][0]
    where = "%s:%d/%s" % (member.host, member.port, member.database)
    dsn = _ext.make_dsn(**{k: v for k, v in params.items() if v is not None})
    try:
        conn = psycopg2.connect(dsn, async_=True)
    except psycopg2.Error as e:
        raise ConnectFailed("cannot connect to %s: %s" % (where, str(e).strip())) from e
    try:
        await asyncio.wait_for(_ready(loop, conn), CONNECT_TIMEOUT)
    except asyncio.TimeoutError as e:
        conn.close()
        raise ConnectFailed("cannot connect to %s: no answer within %g s"
                            % (where, CONNECT_TIMEOUT)) from e
    except (psycopg2.Error, OSError) as e:
        conn.close()
        raise ConnectFailed("cannot connect to %s: %s" % (where, str(e).strip())) from e
    except BaseException:
        conn.close()
        raise
    return conn


def usable(conn):
    """An idle connection with something to read has been told goodbye by the
    server (terminated, restarted): nothing else arrives unasked in autocommit."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def close(conn):
    try:
        conn.close()
    except Exception:
        pass


def _cancel_and_close(conn):
    try:
        conn.cancel()              # stops the statement on the server (blocking: a thread's job)
    except Exception:
        pass
    close(conn)


async def run(loop, conn, sql, params):
    """(rows, rowcount) of one statement on an idle connection."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        await _ready(loop, conn)
        rows = make_rows(cur.description, cur.fetchall()) if cur.description else []
        return rows, cur.rowcount
    finally:
        if not conn.closed:
            cur.close()


def connection_broken(exc, conn):
    return conn.closed != 0 or isinstance(exc, psycopg2.InterfaceError)


class Member:
    """One PostgreSQL server of an alias and this worker's pool of connections to it."""

    def __init__(self, loop, alias, member):
        self.loop = loop
        name = "@%s %s:%d/%s" % (alias.name, member.host, member.port, member.database)
        self.pool = Pool(loop, name, lambda: connect(loop, member), close, usable,
                         alias.max_connections, alias.idle_timeout, alias.pool_timeout)

    async def execute(self, sql, params):
        """(rows, rowcount); a pooled connection found dead is replaced once, transparently."""
        for attempt in (0, 1):
            conn, reused = await self.pool.acquire()
            try:
                result = await run(self.loop, conn, sql, params)
            except asyncio.CancelledError:
                # the statement may still run on the server: cancel it there
                self.pool.forget(conn)
                self.loop.run_in_executor(None, _cancel_and_close, conn)
                raise
            except psycopg2.Error as e:
                if connection_broken(e, conn):
                    self.pool.discard(conn)
                    if reused and attempt == 0:
                        continue
                    raise
                self.pool.release(conn)
                raise
            except BaseException:
                self.pool.discard(conn)
                raise
            self.pool.release(conn)
            return result

    # -- transactions: a connection held by one app thread -------------------------
    async def take(self):
        conn, _ = await self.pool.acquire()
        return conn

    async def tx_run(self, conn, sql, params, begin):
        if begin:
            await run(self.loop, conn, "BEGIN", None)
        return await run(self.loop, conn, sql, params)

    async def give_back(self, conn, rollback):
        if conn.closed:
            self.pool.discard(conn)
            return
        if rollback:
            try:
                await run(self.loop, conn, "ROLLBACK", None)
            except Exception:
                self.pool.discard(conn)
                return
        if conn.get_transaction_status() != _ext.TRANSACTION_STATUS_IDLE:
            self.pool.discard(conn)
        else:
            self.pool.release(conn)

    def abandon(self, conn):
        """A transaction gave up on a statement still running: cancel it, drop the connection."""
        self.pool.forget(conn)
        self.loop.run_in_executor(None, _cancel_and_close, conn)

    def close(self):
        self.pool.close()
