"""Clusters: the members of an `[@alias]` and which one gets the next request.

The pick is the up member with the fewest requests in flight per unit of
weight (ties go round-robin); a member that refuses a connection is marked
down and left alone for a while (doubling up to a minute), then tried again.
"""
import itertools
import time

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
    __slots__ = ("host", "port", "weight", "key", "host_header", "inflight", "down_until",
                 "backoff", "backend")

    def __init__(self, scheme, host, port, weight):
        self.host = host
        self.port = port
        self.weight = max(1, weight)
        self.key = (scheme, host, port)
        self.host_header = host_header(scheme, host, port)
        self.inflight = 0
        self.down_until = 0.0
        self.backoff = 0.0           # 0: up; else the current time-out of a down member
        self.backend = None          # what a user of the cluster keeps per member (a db pool)

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
                self.failed(m)
                last = e
                continue
            finally:
                m.inflight -= 1
            self.succeeded(m)
            return result
        raise last or ConnectFailed("@%s has no member" % self.name)

    def failed(self, member):
        member.backoff = min(RECHECK_MAX, member.backoff * 2 if member.backoff else RECHECK_FIRST)
        member.down_until = time.monotonic() + member.backoff

    def succeeded(self, member):
        if member.backoff:
            member.backoff = 0.0
            member.down_until = 0.0
