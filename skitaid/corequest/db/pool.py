"""A bounded pool of connections to one database server, used on the loop.

At most `max_size` connections are open (idle + in use + being opened).
acquire() takes the most recently used idle one, else opens one while under
the bound, else waits for a release — and fails with PoolExhausted after
`timeout` seconds instead of waiting forever. Idle connections are closed
after `idle_timeout`. Which connections are alive is the backend's business:
it passes `connect`, `close` and `usable` callables.
"""
import asyncio
import collections
import time

from . import PoolExhausted


class Pool:
    def __init__(self, loop, name, connect, close, usable, max_size=10, idle_timeout=60.0,
                 timeout=5.0):
        self.loop = loop
        self.name = name                 # for messages: "@mydb 127.0.0.1:5432/test"
        self._connect = connect          # coroutine function → a new connection
        self._close = close              # connection → None (must not raise)
        self._usable = usable            # idle connection → still fit to use?
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.timeout = timeout
        self.size = 0                    # open connections, whatever their state
        self._idle = []                  # [(connection, since)], most recent last
        self._waiters = collections.deque()
        self._reaper = None
        self.closed = False

    @property
    def in_use(self):
        """Open connections not idle (in use or being opened): the status page's figure."""
        return self.size - len(self._idle)

    async def acquire(self):
        """(connection, reused): reused is True for a connection taken from the idle list."""
        deadline = None
        while True:
            if self.closed:
                raise PoolExhausted("the connection pool of %s is closed" % self.name)
            while self._idle:
                conn, _ = self._idle.pop()
                if self._usable(conn):
                    return conn, True
                self.discard(conn)
            if self.size < self.max_size:
                self.size += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self.size -= 1
                    self._wake()
                    raise
                return conn, False
            if deadline is None:
                deadline = time.monotonic() + self.timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolExhausted(
                    "no free connection to %s within %g s: all %d in use (raise max_connections "
                    "or pool_timeout of the alias, or hold connections for less time)"
                    % (self.name, self.timeout, self.max_size))
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                # a wake-up meant for us goes to the next in line
                if waiter.done() and not waiter.cancelled():
                    self._wake()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, conn):
        """Give back a connection that is fit for reuse."""
        if self.closed:
            self.size -= 1
            self._close(conn)
            return
        self._idle.append((conn, time.monotonic()))
        if self._reaper is None:
            self._reaper = self.loop.call_later(self.idle_timeout, self._reap)
        self._wake()

    def discard(self, conn):
        """Close a connection that must not be reused (broken, busy, aborted)."""
        self.size -= 1
        self._close(conn)
        self._wake()

    def forget(self, conn):
        """The caller closes `conn` itself (e.g. in a thread): just free its place."""
        self.size -= 1
        self._wake()

    def _wake(self):
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _reap(self):
        self._reaper = None
        limit = time.monotonic() - self.idle_timeout
        keep = []
        for conn, since in self._idle:
            if since <= limit:
                self.size -= 1
                self._close(conn)
            else:
                keep.append((conn, since))
        self._idle = keep
        if keep:
            delay = keep[0][1] + self.idle_timeout - time.monotonic()
            self._reaper = self.loop.call_later(max(0.05, delay), self._reap)

    def close(self):
        """Loop thread, at shutdown: close the idle ones now, the others when released."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, _ in self._idle:
            self.size -= 1
            self._close(conn)
        self._idle = []
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
