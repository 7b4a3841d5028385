"""Value kinds of the status page, metrics and request-log keys of [server]."""
from __future__ import annotations

from . import values as v
from ..passwords import parse_hash


def _url_path(s):
    if not s.startswith("/") or any(c in s for c in "?#% \t") or "//" in s:
        raise ValueError(s)
    return s.rstrip("/") or "/"


url_path = v.Kind("a URL path starting with / (e.g. /server-status), without ? # % or blanks",
                  _url_path)


def _auth(s):
    user, colon, hashed = s.partition(":")
    if not colon or not user or "\0" in user:
        raise ValueError(s)
    parse_hash(hashed)
    return (user, hashed)


auth = v.Kind("user:HASH, the line `skitaid passwd USER` prints (never a plain password)",
              _auth)


def _log_format(s):
    if s.lower() not in ("text", "json"):
        raise ValueError(s)
    return s.lower()


log_format = v.Kind("text or json", _log_format)
