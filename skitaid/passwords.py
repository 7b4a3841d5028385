"""Password hashes for `status_auth = user:HASH` (HTTP Basic on the status page).

scrypt from the standard library; the hash is "scrypt$N$r$p$salt$key" with
salt and key in base64. A config holds the hash, never the password;
`skitaid passwd USER` makes the line.
"""
import base64
import hashlib
import hmac
import os

N, R, P = 1 << 14, 8, 1
_PREFIX = "scrypt"


def _derive(password, salt, n, r, p):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=32)


def make_hash(password):
    if not isinstance(password, str) or not password:
        raise ValueError("make_hash: password must be a non-empty string")
    salt = os.urandom(16)
    key = _derive(password, salt, N, R, P)
    return "%s$%d$%d$%d$%s$%s" % (_PREFIX, N, R, P, base64.b64encode(salt).decode(),
                                   base64.b64encode(key).decode())


def parse_hash(text):
    """(n, r, p, salt, key); ValueError when `text` is not such a hash."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise ValueError("not a scrypt hash")
    n, r, p = (int(x, 10) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    salt = base64.b64decode(parts[4], validate=True)
    key = base64.b64decode(parts[5], validate=True)
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt or key too short")
    return n, r, p, salt, key


def verify(password, hashed):
    """Does `password` match `hashed`? (constant-time comparison)"""
    try:
        n, r, p, salt, key = parse_hash(hashed)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, n, r, p)[:len(key)], key)


def auth_line(user, password):
    """The line `skitaid passwd USER` prints."""
    if not user or ":" in user:
        raise ValueError("auth_line: a user name without ':' is needed")
    return "status_auth = %s:%s" % (user, make_hash(password))
