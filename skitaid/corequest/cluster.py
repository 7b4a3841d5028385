"""Clusters: the members of an `[@alias]` and which one gets the next request.

The pick is the up member with the fewest requests in flight per unit of
weight (ties go round-robin); a member that refuses a connection is marked
down and left alone for a while (doubling up to a minute), then tried again.

A worker's clusters keep that state in the server's shared health table
(health.py) when the master made one: a member one worker found down is
skipped by every worker until it is retried.
"""
import itertools
import time

from .. import health

RECHECK_FIRST = 2.0
RECHECK_MAX = 60.0


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, TLS or connect
    timeout): nothing was sent, so any request may go to another member."""


def host_header(scheme, host, port):
    """The Host header for an origin: IPv6 in brackets, the port unless the default."""
    h = "[%s]" % host if ":" in host else host
    return h if port == (443 if scheme == "https" else 80) else "%s:%d" % (h, port)


class MemberState:
    __slots__ = ("host", "port", "weight", "key", "host_header", "_inflight", "_down_until",
                 "backoff", "backend", "shared")

    def __init__(self, scheme, host, port, weight):
        self.host = host
        self.port = port
        self.weight = max(1, weight)
        self.key = (scheme, host, port)
        self.host_header = host_header(scheme, host, port)
        self._inflight = 0           # this worker's requests in flight (its load balance)
        self._down_until = 0.0
        self.backoff = 0.0           # 0: up; else the current time-out of a down member
        self.backend = None          # what a user of the cluster keeps per member (a db pool)
        self.shared = None           # its row of the shared health table (health.Row)

    @property
    def down_until(self):
        shared = self.shared
        return self._down_until if shared is None else shared.down_until

    @down_until.setter
    def down_until(self, value):
        self._down_until = value

    @property
    def inflight(self):
        return self._inflight

    @inflight.setter
    def inflight(self, value):
        shared = self.shared
        if shared is not None and value != self._inflight:
            shared.add_inflight(value - self._inflight)
        self._inflight = value

    def release_one(self):
        """A long-lived request (a proxied WebSocket) is over."""
        if self.inflight > 0:
            self.inflight -= 1

    def __repr__(self):
        return "%s:%d" % (self.host, self.port)


class Cluster:
    def __init__(self, name, scheme, members):
        self.name = name
        self.scheme = scheme
        self.members = [MemberState(scheme, h, p, w) for h, p, w in members]
        self._turn = itertools.count()

    def share(self, server):
        """Keep the members' health in the shared table under `server`'s name
        (the rows the master claimed; a member it did not know stays local)."""
        table = health.region()
        if table is None:
            return
        for m in self.members:
            m.shared = table.find(health.member_name(server, self.name, m.host, m.port))

    @classmethod
    def from_alias(cls, alias):
        scheme = "https" if alias.ssl or alias.type == "https" else "http"
        return cls(alias.name, scheme, [(m.host, m.port, m.weight) for m in alias.members])

    def order(self):
        """Members to try, best first: up ones by load, then those down (soonest back first)."""
        now = time.monotonic()
        up = [m for m in self.members if m.down_until <= now]
        down = sorted((m for m in self.members if m.down_until > now), key=lambda m: m.down_until)
        if len(up) > 1:
            turn = next(self._turn)
            n = len(up)
            # rotating the start makes equal loads take turns
            up = sorted((up[(i + turn) % n] for i in range(n)),
                        key=lambda m: m.inflight / m.weight)
        return up + down

    async def call(self, fn, member=None):
        """`await fn(member)` on `member`, or on the best member and, while a
        connection cannot be made (ConnectFailed), on the next ones."""
        last = None
        for m in (member,) if member is not None else self.order():
            m.inflight += 1
            try:
                result = await fn(m)
            except ConnectFailed as e:
                self.failed(m, str(e))
                last = e
                continue
            finally:
                m.inflight -= 1
            self.succeeded(m)
            return result
        raise last or ConnectFailed("@%s has no member" % self.name)

    def failed(self, member, error=""):
        """No connection could be made: the member is down for a while."""
        if member.shared is not None:
            member.shared.ended("failure", RECHECK_FIRST, RECHECK_MAX, error)
            return
        member.backoff = min(RECHECK_MAX, member.backoff * 2 if member.backoff else RECHECK_FIRST)
        member.down_until = time.monotonic() + member.backoff

    def timed_out(self, member, error="no answer in time"):
        """It took the request but did not answer in time (counted; it stays up)."""
        if member.shared is not None:
            member.shared.ended("timeout", error=error)

    def succeeded(self, member):
        if member.shared is not None:
            member.shared.ended("ok")
            return
        if member.backoff:
            member.backoff = 0.0
            member.down_until = 0.0
