"""The database interface: what a backend gives skitaid so `was.db` can call it.

A backend is a class with three coroutines run on the worker's event loop —
connect, execute one request, close — and skitaid does the rest: a pool of
its connections per alias member per worker (max_connections, idle_timeout,
pool_timeout of the alias), `lb`/`map` over the members, Tasks, the result
cache, STA_NETERR and a fresh connection when one breaks.

    class MyDB(skitaid.DatabaseInterface):
        connection_errors = (ConnectionError, OSError)   # the connection is gone

        async def connect(self):                  # self.alias, self.member: the config
            return await mydriver.connect(self.member.host, self.member.port)

        async def execute(self, conn, command, args, kwargs):
            return await conn.call(command, *args, **kwargs)   # → Result.data

        async def close(self, conn):
            await conn.close()

    skitaid.add_database_interface("mydb", MyDB)
    skitaid.alias("@mydbi", "mydb", "10.0.0.7:7000")
    was.db("@mydbi").lookup("k").fetch()      # execute(conn, "lookup", ("k",), {})

The Redis backend (redisdb.py) is written on this interface.
"""
import asyncio
import logging
import re

from ..cache import LazyKey, cache_threshold, cached_task, mark_updated, spread
from ..task import DEFAULT_TIMEOUT, STA_NETERR, STA_NORMAL, Result, bounded, failed_task
from . import ConnectFailed, PoolExhausted
from .pool import Pool

error_log = logging.getLogger("skitaid")
_COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class DatabaseInterface:
    """One member (server) of a database alias, in one worker. Subclass it and
    override connect/execute/close (and usable, execute_many when it helps)."""

    #: exceptions that mean the connection is lost: the request fails with
    #: STA_NETERR (502) and the connection is dropped, not reused
    connection_errors = (ConnectionError, OSError)

    def __init__(self, alias, member):
        self.alias = alias          # config.model.Alias: name, type, pool sizes, password, …
        self.member = member        # config.model.Member: host, port, database, user, password

    async def connect(self):
        """A new connection (any object). An exception means: cannot connect."""
        raise NotImplementedError

    async def execute(self, conn, command, args, kwargs):
        """Run one request on `conn` (yours alone until this returns): its data."""
        raise NotImplementedError

    async def execute_many(self, conn, commands, transaction):
        """A pipeline: [(command, args, kwargs)] → a list of data, in order.
        The default runs them one after another on the same connection."""
        return [await self.execute(conn, c, a, k) for c, a, k in commands]

    async def close(self, conn):
        """Close a connection (errors are ignored)."""

    def usable(self, conn):
        """An idle connection about to be reused: still fit? (cheap, no I/O)"""
        return True

    def is_command(self, name):
        """Is `was.db(...).<name>(...)` a request of this backend?"""
        return True


# -- the registry: type name → DatabaseInterface subclass ------------------------------
_interfaces = {}


def add(name, cls):
    _interfaces[name] = cls


def get(name):
    return _interfaces.get(name)


def names():
    return tuple(_interfaces)


class LostConnection(ConnectionError):
    """The connection broke while a request was on it (nothing says whether it ran)."""


class Member:
    """The pool of one alias member's connections in this worker, around the interface."""

    def __init__(self, loop, alias, member, cls):
        self.loop = loop
        self.iface = cls(alias, member)
        where = "@%s %s:%d" % (alias.name, member.host, member.port)
        if member.database:
            where += "/" + member.database
        self.where = where
        self.pool = Pool(loop, where, self._connect, self._close, self.iface.usable,
                         alias.max_connections, alias.idle_timeout, alias.pool_timeout)

    async def _connect(self):
        try:
            return await self.iface.connect()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise ConnectFailed("cannot connect to %s: %s" % (self.where, e)) from e

    def _close(self, conn):
        async def close():
            try:
                await self.iface.close(conn)
            except Exception:
                pass
        if not self.loop.is_closed():
            self.loop.create_task(close())

    async def run(self, commands, many=False, transaction=True):
        """One request (commands: (name, args, kwargs)) or a pipeline (many):
        its data. A reused connection found broken is replaced once."""
        for attempt in (0, 1):
            conn, reused = await self.pool.acquire()
            try:
                if many:
                    data = await self.iface.execute_many(conn, commands, transaction)
                else:
                    data = await self.iface.execute(conn, *commands)
            except self.iface.connection_errors as e:
                self.pool.discard(conn)
                if reused and attempt == 0:
                    continue
                raise LostConnection("connection to %s lost: %s" % (self.where, e)) from e
            except Exception:
                # an error the backend answered: the connection is fine
                self.pool.release(conn)
                raise
            except BaseException:
                # cancelled (a timeout): a reply may be half read on it
                self.pool.discard(conn)
                raise
            self.pool.release(conn)
            return data

    def close(self):
        self.pool.close()


class Backend:
    """What db.client.Database needs of a backend module, for an interface type."""

    IntegrityError = ()

    def __init__(self, cls):
        self.cls = cls

    def Member(self, loop, alias, member):
        return Member(loop, alias, member, self.cls)


async def _call(db, engine, member, commands, many, transaction, timeout, meta, rm_cache):
    where = "pipeline" if many else commands[0]
    run = db.cluster.call(lambda s: s.backend.run(commands, many, transaction), member)
    try:
        data = await (bounded(run, timeout) if timeout else run)
    except PoolExhausted as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 503, "Service Unavailable", data=None, error=e, meta=meta)
    except (ConnectFailed, LostConnection) as e:
        error_log.error("@%s: %s", db.name, e)
        result = Result(STA_NETERR, 502, "Bad Gateway", data=None, error=e, meta=meta)
    except asyncio.TimeoutError:
        raise
    except Exception as e:
        # the database's own message, in the error log and on result.error
        error_log.error("@%s: %s: %s [%s]", db.name, type(e).__name__, str(e).strip(), where)
        result = Result(STA_NORMAL, 500, "Database Error", data=None, error=e, meta=meta)
    else:
        result = Result(STA_NORMAL, 200, "OK", data=data, meta=meta)
    if rm_cache and result.status_code in (200, 500):
        mark_updated(rm_cache, engine.server_name)
    return result


def _check_name(stub, name):
    iface = stub.db.cluster.members[0].backend.iface
    if not _COMMAND.match(name) or not iface.is_command(name):
        raise AttributeError("@%s (%s) has no command %r" % (stub.db.name, stub.db.kind, name))


def command_task(stub, name, args, kwargs, meta=None):
    """`was.db("@r").get("k")` → a Task (for .map: Tasks, one per member)."""
    meta = {} if meta is None else meta
    if stub.db is None:
        return failed_task(stub.error, meta)
    return _task(stub, [(name, tuple(args), dict(kwargs))], False, True, meta)


def _task(stub, commands, many, transaction, meta):
    engine, db, timeout, rm_cache = stub.engine, stub.db, stub.timeout, stub.rm_cache
    newer_than = None if rm_cache else cache_threshold(stub.use_cache, engine.server_name)
    cache_key = LazyKey(lambda: ("dbi", db.name, many, repr(commands)))

    def one(member, key):
        return cached_task(engine, key, newer_than, lambda: _call(
            db, engine, member, commands if many else commands[0], many, transaction,
            timeout, meta, rm_cache), meta, timeout)

    return spread(stub.mode, db.cluster, cache_key, one, timeout or DEFAULT_TIMEOUT)


class Pipeline:
    """Commands sent together on one connection:

        with was.db("@r").pipeline() as p:
            p.set("a", "1")
            p.incr("n")
        a_ok, n = p.task.fetch()          # (or p.execute() inside the block)

    transaction=True (the default) wraps them in MULTI/EXEC on Redis."""

    def __init__(self, stub, transaction=True, meta=None):
        self._stub = stub
        self._transaction = transaction
        self._meta = {} if meta is None else meta
        self._commands = []
        self.task = None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._stub.db is not None:
            _check_name(self._stub, name)

        def queue(*args, **kwargs):
            if self.task is not None:
                raise RuntimeError("this pipeline was executed already")
            self._commands.append((name, args, kwargs))
            return self
        return queue

    def __len__(self):
        return len(self._commands)

    def execute(self):
        """Send the queued commands: a Task whose data is the list of replies."""
        if self.task is None:
            if self._stub.db is None:
                self.task = failed_task(self._stub.error, self._meta)
            elif not self._commands:
                self.task = failed_task(ValueError("pipeline.execute(): no commands queued"),
                                        self._meta)
            else:
                self.task = _task(self._stub, list(self._commands), True, self._transaction,
                                  self._meta)
        return self.task

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self._commands:
            self.execute()
        return False


def verb(stub, name):
    """`stub.<name>` of was.db("@r"): a function making a command Task."""
    if stub.db is not None:
        _check_name(stub, name)
    return lambda *args, **kwargs: command_task(stub, name, args, kwargs)


def is_interface(db):
    return isinstance(db.backend, Backend)
