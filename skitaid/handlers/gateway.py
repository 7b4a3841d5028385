"""Access rules of an alias mount, checked before the proxy touches the backend.

`source =` (client networks) applies to every mount of the alias; `role =`
needs a verified bearer token (the gateway, skitaid/tokens.py) whose roles
include one of the alias's. A refusal is answered here, on the loop, and
the wrapped handler never sees the request: no backend connection is made.
"""
import ipaddress

from .errors import error_response


def parse_networks(networks):
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def client_in(client, networks):
    """Is the client's address inside one of `networks`? No address (a UNIX
    socket peer) is inside none."""
    if not client or not client[0]:
        return False
    try:
        ip = ipaddress.ip_address(client[0].split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped         # a dual-stack listener's IPv4 clients
    return any(ip in net for net in networks if net.version == ip.version)


class Guard:
    """Wraps the handler of an alias mount with that alias's rules."""

    def __init__(self, inner, alias):
        self.inner = inner
        self.alias = alias.name
        self.networks = parse_networks(alias.allow)

    def handle(self, exchange, resolved=None):
        if self.networks and not client_in(exchange.request.client, self.networks):
            exchange.respond(*error_response(403))
            return
        self.inner.handle(exchange, resolved)
