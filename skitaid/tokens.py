"""Bearer tokens (JWT) for the gateway: the only module that uses PyJWT.

Only the configured algorithms are accepted, never `none`; an HMAC algorithm
never goes with a public key or a JWKS, and a JWKS's symmetric ("oct") keys
are refused, so a public key can never be used as an HMAC secret. Keys are
loaded once (here, when the config is checked, and again in each worker);
verifying is then about 25 µs for HS256 and 65 µs for RS256 (2048-bit) —
cheap enough for the event loop.

A token that verified is remembered (per worker, CACHE_SIZE tokens at most)
until its `exp` (plus leeway): the same token again costs a dict lookup and
a clock read instead of a decode — what keeps the gateway's cost per
proxied request small, since a client sends one token many times. Only the
exact same string hits; the time claims are the only ones that change, and
`exp` is checked on every hit (a token refused once is never remembered).
"""
import json
import re
import threading
import time

MAX_TOKEN = 8192                # bytes; a longer token is refused unread
# an HMAC secret is at least as long as the hash (RFC 7518 3.2)
MIN_SECRET = {"HS256": 32, "HS384": 48, "HS512": 64}
HMAC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA")
ALGORITHMS = HMAC + ASYMMETRIC
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")     # RFC 6750 2.1
CACHE_SIZE = 4096               # verified tokens remembered per worker


class Invalid(Exception):
    """The request's token is not accepted; args[0] says why, in words fit for
    the client's error_description (None: there was no token at all)."""

    @property
    def description(self):
        return self.args[0] if self.args else None


def check_algorithms(algorithms, secret, public):
    """What is wrong with using `algorithms` with these keys, or None."""
    for alg in algorithms:
        if alg not in ALGORITHMS:
            return "algorithms from %s (%r is not one; 'none' never is)" % (
                ", ".join(ALGORITHMS), alg)
        if public and alg in HMAC:
            return "asymmetric algorithms only with a public key or JWKS (%s is HMAC)" % alg
        if secret and alg not in HMAC:
            return "HMAC algorithms (HS256, HS384, HS512) only with a secret (%s is not)" % alg
    return None


class Verifier:
    """Checks tokens for one server's [gateway]; ValueError when its keys
    cannot be used (args[0] says what was expected)."""

    def __init__(self, gateway):
        import jwt
        self._jwt = jwt
        self.algorithms = list(gateway.algorithms)
        self.issuer = gateway.issuer or None
        self.audience = list(gateway.audience) or None
        self.leeway = gateway.leeway
        self.header = gateway.header.lower()
        self.bearer = self.header == "authorization"
        self.roles_claim = gateway.roles_claim
        self.options = {"require": ["exp"]}
        self.secret = None
        self._cache = {}                # token → (claims, roles, valid until)
        self._cache_lock = threading.Lock()
        self.keys = {}                  # algorithm → prepared public key
        self.jwks = None
        problem = check_algorithms(self.algorithms, gateway.secret,
                                   gateway.public_key or gateway.jwks)
        if problem:
            raise ValueError(problem)
        if gateway.secret:
            self.secret = gateway.secret
        elif gateway.public_key:
            for alg in self.algorithms:
                try:
                    self.keys[alg] = jwt.get_algorithm_by_name(alg).prepare_key(gateway.public_key)
                except (jwt.InvalidKeyError, ValueError, TypeError) as e:
                    raise ValueError("a PEM public key for %s (%s)" % (alg, e)) from None
        elif gateway.jwks:
            try:
                self.jwks = jwt.PyJWKSet.from_json(gateway.jwks)
            except (jwt.PyJWKSetError, jwt.PyJWKError, ValueError) as e:
                raise ValueError("a JWKS file of public keys (%s)" % e) from None
            for key in self.jwks.keys:
                if key.key_type == "oct":
                    raise ValueError("a JWKS file of public keys only (a symmetric 'oct' key "
                                     "is not one)")
        else:
            raise ValueError("a secret, public key or JWKS")

    def token(self, request):
        """The request's token; Invalid when it has none or a malformed one."""
        values = [v for k, v in request.headers if k == self.header]
        if not values:
            raise Invalid(None)
        if len(values) > 1:
            raise Invalid("more than one token")
        value = values[0].strip()
        if self.bearer or value[:7].lower() == "bearer ":
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer":
                raise Invalid(None)         # another scheme: no bearer token at all
            value = value.strip()
        if len(value) > MAX_TOKEN:
            raise Invalid("the token is too large")
        if not _B64TOKEN.fullmatch(value):
            raise Invalid("the token is malformed")
        return value

    def _key(self, token):
        if self.secret is not None:
            return self.secret
        jwt = self._jwt
        alg = jwt.get_unverified_header(token).get("alg")
        if alg not in self.algorithms:
            raise jwt.InvalidAlgorithmError(alg)
        if self.jwks is None:
            return self.keys[alg]
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None and len(self.jwks.keys) == 1:
            return self.jwks.keys[0]
        return self.jwks[kid]       # KeyError: no such key

    def verify(self, request):
        """(claims, roles) of the request's verified token, or Invalid. The
        claims are shared with later requests carrying the same token: read
        them, never change them (claims() gives a copy of one's own)."""
        token = self.token(request)
        hit = self._cache.get(token)
        if hit is not None:
            if time.time() < hit[2]:
                return hit[0], hit[1]
            self._cache.pop(token, None)    # expired since: decode again for the answer
        jwt = self._jwt
        try:
            claims = jwt.decode(token, self._key(token), algorithms=self.algorithms,
                                audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options=self.options)
        except jwt.ExpiredSignatureError:
            raise Invalid("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Invalid("the token is not valid yet") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError, KeyError, ValueError, TypeError):
            raise Invalid("the token is not valid") from None
        roles = self.roles(claims)
        until = float(claims["exp"]) + self.leeway      # (exp is required and numeric)
        with self._cache_lock:                          # app threads verify too
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))    # the oldest goes
            self._cache[token] = (claims, roles, until)
        return claims, roles

    def claims(self, request):
        """The verified claims of the request's token (a dict of the caller's
        own), or Invalid."""
        claims, _ = self.verify(request)
        return copy_claims(claims)

    def roles(self, claims):
        """The token's roles: a list of strings, or one space-separated string."""
        got = claims.get(self.roles_claim)
        if isinstance(got, str):
            return tuple(got.split())
        if isinstance(got, (list, tuple)):
            return tuple(r for r in got if isinstance(r, str))
        return ()


def copy_claims(claims):
    """A deep copy of JSON claims (faster than copy.deepcopy)."""
    return json.loads(json.dumps(claims))
