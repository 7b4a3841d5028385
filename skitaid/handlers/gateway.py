"""Access rules of an alias mount, checked before the proxy touches the backend.

`source =` (client networks) applies to every mount of the alias; `role =`
needs a verified bearer token (the gateway, skitaid/tokens.py) whose roles
include one of the alias's. Refusals are answered here, on the loop — a
token is checked in about 25 µs (HS256) to 65 µs (RS256), about what a
thread hop would cost — and the wrapped handler never sees the
request: no backend connection is made, no body is read on.

No token, or one that does not verify: 401 with `WWW-Authenticate: Bearer`
(RFC 6750 3: a request without a token gets the realm only, a bad token
error="invalid_token" and a short description); a valid token without a
matching role, or a client outside `source`: 403.

An auth handler (skitaid.set_auth_handler) decides instead of the token's
roles claim, once the token verified: it runs in the thread pool, since it
may look things up; `(user, roles)` allows when a role matches, None is a
403, and an exception a 500 with its traceback in the error log.
"""
import ipaddress
import traceback

from ..config.values import split_words
from ..logs import error_log
from ..tokens import Invalid, copy_claims
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
    """Wraps the handler of a mount with its alias's rules (source, role,
    rate_limit) and the gateway's per-subject rate limit; `alias` None: an
    app mount, where only the subject's limit applies."""

    def __init__(self, inner, alias=None, verifier=None, realm="skitaid", hook=None, worker=None,
                 limiter=None):
        self.inner = inner
        self.hook = hook
        self.pool = worker.pool if worker is not None else None
        self.loop = worker.loop if worker is not None else None
        self.alias = alias.name if alias is not None else None
        self.networks = parse_networks(alias.allow) if alias is not None else ()
        self.roles = frozenset(split_words(alias.role)) if alias is not None else frozenset()
        if self.roles and verifier is None:
            # the config refuses this; never let it through as an open mount
            raise RuntimeError("@%s has role= but the gateway is not enabled" % alias.name)
        self.verifier = verifier
        self.realm = realm
        self.limiter = limiter
        self.alias_limit = alias.rate_limit if alias is not None and limiter else None
        # [gateway] rate_limit: every request whose token verifies counts on its subject
        self.by_subject = bool(limiter is not None and limiter.subject and verifier is not None)

    def handle(self, exchange, resolved=None):
        request = exchange.request
        if self.networks and not client_in(request.client, self.networks):
            exchange.respond(*error_response(403))
            return
        claims = None
        if self.roles:
            try:
                claims, roles = self.verifier.verify(request)   # (shared: read only)
            except Invalid as e:
                unauthorized(exchange, self.realm, e.description)
                return
            if self.hook is not None:
                if self.pool is None:           # threads = 0: app code runs on the loop
                    self._ask(exchange, resolved, claims, inline=True)
                else:
                    self.pool.submit(self._ask, exchange, resolved, claims)
                return
            if self.roles.isdisjoint(roles):
                exchange.respond(*error_response(403))
                return
            request.user = _subject(claims)
        elif self.by_subject:
            try:
                claims = self.verifier.verify(request)[0]
            except Invalid:
                claims = None       # no valid token: only [server] rate_limit counts it
        self._admit(exchange, resolved, claims)

    def _admit(self, exchange, resolved, claims):
        """Past the access rules: the rate limits, then the mount itself."""
        limiter = self.limiter
        if claims is not None and self.by_subject:
            if not limiter.admit_subject(exchange, claims, self.verifier.token(exchange.request)):
                return
        if self.alias_limit is not None:
            if not limiter.admit_alias(exchange, self.alias, self.alias_limit):
                return
        self.inner.handle(exchange, resolved)

    def _ask(self, exchange, resolved, claims, inline=False):
        """The auth handler's answer (on an app thread), taken back to the loop."""
        request = exchange.request
        user = None
        try:
            answer = self.hook(request, copy_claims(claims))     # the handler's own copy
            roles = None
            if answer is not None:
                user, roles = answer
                roles = frozenset(roles.split() if isinstance(roles, str) else roles)
        except Exception:
            error_log.error("error in the auth handler for %s %s\n%s", request.method,
                            request.target, traceback.format_exc())
            decision = 500
        else:
            decision = 200 if roles is not None and not self.roles.isdisjoint(roles) else 403
        if decision == 200:
            # the request log's user: the handler's, else the token's subject
            request.user = str(user) if user not in (None, "") else _subject(claims)
        if inline:
            self._decided(exchange, resolved, decision, claims)
        else:
            self.loop.call_soon_threadsafe(self._decided, exchange, resolved, decision, claims)

    def _decided(self, exchange, resolved, decision, claims):
        if exchange.closed:
            return
        if decision != 200:
            exchange.respond(*error_response(decision))
            return
        self._admit(exchange, resolved, claims)


def _subject(claims):
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub else None
