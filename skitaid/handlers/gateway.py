"""Access rules of an alias mount, checked before the proxy touches the backend.

`source =` (client networks) applies to every mount of the alias; `role =`
needs a verified bearer token (the gateway, skitaid/tokens.py) whose roles
include one of the alias's. Refusals are answered here, on the loop — a
token is checked in microseconds (HS256) to some tens of them (RS256), less
than a thread hop would cost — and the wrapped handler never sees the
request: no backend connection is made, no body is read on.

No token, or one that does not verify: 401 with `WWW-Authenticate: Bearer`
(RFC 6750 3: a request without a token gets the realm only, a bad token
error="invalid_token" and a short description); a valid token without a
matching role, or a client outside `source`: 403.
"""
import ipaddress

from ..config.values import split_words
from ..tokens import Invalid
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


def challenge(realm, description):
    """The WWW-Authenticate value of a 401."""
    value = 'Bearer realm="%s"' % realm
    if description is not None:
        value += ', error="invalid_token", error_description="%s"' % description
    return value


def unauthorized(exchange, realm, description):
    status, headers, body = error_response(401)
    headers.append(("WWW-Authenticate", challenge(realm, description)))
    exchange.respond(status, headers, body)


class Guard:
    """Wraps the handler of an alias mount with that alias's rules."""

    def __init__(self, inner, alias, verifier=None, realm="skitaid"):
        self.inner = inner
        self.alias = alias.name
        self.networks = parse_networks(alias.allow)
        self.roles = frozenset(split_words(alias.role))
        if self.roles and verifier is None:
            # the config refuses this; never let it through as an open mount
            raise RuntimeError("@%s has role= but the gateway is not enabled" % alias.name)
        self.verifier = verifier
        self.realm = realm

    def handle(self, exchange, resolved=None):
        request = exchange.request
        if self.networks and not client_in(request.client, self.networks):
            exchange.respond(*error_response(403))
            return
        if self.roles:
            try:
                claims = self.verifier.claims(request)
            except Invalid as e:
                unauthorized(exchange, self.realm, e.description)
                return
            if self.roles.isdisjoint(self.verifier.roles(claims)):
                exchange.respond(*error_response(403))
                return
        self.inner.handle(exchange, resolved)
