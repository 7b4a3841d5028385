"""Redis on the worker's loop, written on the database interface (interface.py).

Each pooled connection is a `redis.asyncio.Redis` client over a pool of one
connection of its own, so skitaid's pool (max_connections of the alias)
bounds the sockets, and a pipeline goes over the connection its Task holds.
redis-py's own retries are off: a lost connection fails the request with
STA_NETERR at once and the next request opens a new one.
"""
import inspect

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from .interface import DatabaseInterface

CONNECT_TIMEOUT = 10.0
# client methods that are not one command with one reply
_NOT_COMMANDS = frozenset((
    "pipeline", "transaction", "pubsub", "monitor", "lock", "client", "close", "aclose",
    "initialize", "register_script", "set_response_callback", "load_external_module",
    "get_encoder", "get_connection_kwargs", "get_retry", "set_retry", "auth",
))


def _command_names():
    names = {"execute_command"}
    for name, fn in inspect.getmembers(aioredis.Redis, inspect.isfunction):
        module = getattr(fn, "__module__", "") or ""
        if not name.startswith("_") and module.startswith("redis.commands") \
                and name not in _NOT_COMMANDS:
            names.add(name)
    return frozenset(names)


COMMANDS = _command_names()


class RedisInterface(DatabaseInterface):
    connection_errors = (rex.ConnectionError, rex.TimeoutError, ConnectionError, OSError)

    def __init__(self, alias, member):
        super().__init__(alias, member)
        db = member.database or alias.database or "0"
        self.options = dict(
            host=member.host, port=member.port, db=int(db),
            password=member.password or alias.password or None,
            username=member.user or None,
            socket_connect_timeout=CONNECT_TIMEOUT, decode_responses=alias.decode_responses,
            retry=Retry(NoBackoff(), 0), max_connections=1, client_name="skitaid")
        if alias.ssl:
            self.options.update(ssl=True, ssl_ca_certs=alias.ca_file or None,
                                ssl_cert_reqs="required")

    async def connect(self):
        client = aioredis.Redis(**self.options)
        try:
            await client.ping()          # connects, authenticates, selects the db
        except BaseException:
            await client.aclose()
            raise
        return client

    def is_command(self, name):
        return name in COMMANDS

    async def execute(self, conn, command, args, kwargs):
        return await getattr(conn, command)(*args, **kwargs)

    async def execute_many(self, conn, commands, transaction):
        pipe = conn.pipeline(transaction=transaction)
        for command, args, kwargs in commands:
            getattr(pipe, command)(*args, **kwargs)
        try:
            # a failed command gives its exception in the list, the others their replies
            return await pipe.execute(raise_on_error=False)
        finally:
            await pipe.reset()

    async def close(self, conn):
        await conn.aclose()
