"""The rate limits of one server, answered on the loop: 429 with Retry-After.

- `[server] rate_limit`: one bucket per client address (an IPv6 client per
  /64, the block one host usually holds), checked before routing;
- `[gateway] rate_limit`: one bucket per token subject (`sub`), for requests
  whose token verified;
- `[@alias] rate_limit`: one bucket for all requests to the alias's mounts.

The buckets are in the table the master shares with every worker
(skitaid/ratelimit.py). The client's address is the connection's peer:
X-Forwarded-For is the client's to write, so it is never trusted for this.
"""
import ipaddress

from ..logs import error_log
from ..ratelimit import retry_after, table
from .errors import error_response

_reported = False


def too_many(exchange, wait):
    status, headers, body = error_response(429)
    headers.append(("Retry-After", str(retry_after(wait))))
    exchange.respond(status, headers, body)


def client_key(client):
    """The bucket name of a client address: IPv4 as is, IPv6 by its /64."""
    if not client or not client[0]:
        return "-"
    addr = client[0].split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return addr


class Limiter:
    """A server's rate limits; `admit(exchange, scope, key, limit)` answers 429
    itself and returns False when the bucket is empty."""

    def __init__(self, config):
        self.server = config.name
        self.client = config.rate_limit
        gateway = config.gateway
        self.subject = gateway.rate_limit if gateway.enabled else None
        self.table = table()

    def admit(self, exchange, scope, key, limit):
        try:
            wait = self.table.take("%s\0%s\0%s" % (self.server, scope, key),
                                   limit.rate, limit.burst)
        except OSError as e:
            # the lock failing (ENOLCK) must not fail requests: no limit then
            global _reported
            if not _reported:
                _reported = True
                error_log.error("rate limits are off: the shared table's lock failed (%s)", e)
            return True
        if wait:
            too_many(exchange, wait)
            return False
        return True

    def admit_client(self, exchange):
        """[server] rate_limit, before routing. An HTTP/2 push is not the
        client's request: the one it came with was counted."""
        if getattr(exchange, "pushed", False):
            return True
        return self.admit(exchange, "client", client_key(exchange.request.client), self.client)

    def admit_subject(self, exchange, claims, token):
        """[gateway] rate_limit: the token's `sub` (a token without one counts
        on its own)."""
        sub = claims.get("sub")
        key = "sub:" + sub if isinstance(sub, str) and sub else "token:" + token
        return self.admit(exchange, "subject", key, self.subject)

    def admit_alias(self, exchange, alias, limit):
        return self.admit(exchange, "alias", alias, limit)


def limiter_for(config):
    """The server's Limiter, or None when it has no rate limit at all."""
    if config.rate_limit or (config.gateway.enabled and config.gateway.rate_limit) or \
            any(a.rate_limit for a in config.aliases):
        return Limiter(config)
    return None
