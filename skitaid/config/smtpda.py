"""`[smtpda]` of skitaid.conf → SmtpdaConfig: the mail delivery agent's keys.

    [smtpda]
    server = smtp.example.com:587
    user = mailer
    password_file = smtp.secret         ; relative to the config dir
    starttls = yes
    retry_delays = 10s, 30s, 2m, 10m, 1h
    max_age = 2d
"""
from __future__ import annotations

import ipaddress
import re
from typing import Tuple

from . import values as v
from .model import SmtpdaConfig

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.I)


def _duration(s):
    m = _DURATION.fullmatch(s.strip())
    if not m:
        raise ValueError(s)
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def _positive_duration(s):
    x = _duration(s)
    if x <= 0:
        raise ValueError(s)
    return x


def _durations(s):
    found = tuple(_positive_duration(w) for w in v.split_words(s))
    if not found:
        raise ValueError(s)
    return found


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def split_server(s: str) -> Tuple[str, int]:
    """'host', 'host:587', '[::1]:25', '10.0.0.1' → (host, port or 0); ValueError."""
    s = s.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        ipaddress.IPv6Address(host)
        if rest and not rest.startswith(":"):
            raise ValueError(s)
        port = rest[1:]
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""
        if ":" in s:
            ipaddress.IPv6Address(s)        # a bare IPv6 address, no port
    if not host or not (_HOST.fullmatch(host) or ":" in host):
        raise ValueError(s)
    if port:
        n = int(port, 10)
        if not 0 < n < 65536:
            raise ValueError(s)
        return host, n
    return host, 0


def _server(s):
    split_server(s)
    return s.strip()


duration = v.Kind("a duration: seconds, or with s, m, h or d (e.g. 30s, 10m, 2d)",
                  _positive_duration)
durations = v.Kind("durations separated by commas (e.g. 10s, 30s, 2m, 10m, 1h)", _durations)
server = v.Kind("an SMTP server as host or host:port (e.g. smtp.example.com:587)", _server)

KEYS = {
    "server": ("server", server),
    "user": ("user", v.text()),
    "password": ("password", v.text()),
    "password_file": ("password_file", v.text("a file holding the password")),
    "ssl": ("ssl", v.boolean),
    "starttls": ("starttls", v.boolean),
    "verify": ("verify", v.boolean),
    "cafile": ("cafile", v.text("a PEM file of CA certificates")),
    "retry_delays": ("retry_delays", durations),
    "max_age": ("max_age", duration),
    "concurrency": ("concurrency", v.integer(1, 64)),
    "poll_interval": ("poll_interval", v.Kind("a number of seconds 0.05-60",
                                              lambda s: _ranged(s, 0.05, 60))),
    "timeout": ("timeout", duration),
    "spool": ("spool", v.text("a directory")),
    "fsync": ("fsync", v.boolean),
    "pidfile": ("pidfile", v.text()),
    "log_file": ("log_file", v.text()),
}


def _ranged(s, lo, hi):
    x = float(s)
    if not lo <= x <= hi:
        raise ValueError(s)
    return x


def value_rule(key: str) -> v.Kind:
    """The rule of an [smtpda] key's value (KeyError for an unknown key)."""
    return KEYS[key][1]


def build(ctx, sections, read_keys) -> SmtpdaConfig:
    """Every [smtpda] section → SmtpdaConfig; mistakes go to ctx.problems.
    `read_keys` is build.py's key reader (unknown keys, bad values, where)."""
    found = {}
    for sec in sections:
        read_keys(ctx, sec, KEYS, found)
    where = found.pop("_where", {})
    if found.get("ssl") and found.get("starttls"):
        sec, key, value = where["starttls"]
        ctx.problem(sec, key, value, "ssl or starttls, not both (ssl is TLS from the start, "
                    "starttls upgrades a plain connection)")
    if found.get("password") and found.get("password_file"):
        sec, key, value = where["password_file"]
        ctx.problem(sec, key, "(hidden)" if key == "password" else value,
                    "password or password_file, not both")
    if found.get("password_file"):
        sec, key, value = where["password_file"]
        path = ctx.path(found.pop("password_file"))
        try:
            with open(path, encoding="utf-8") as f:
                found["password"] = f.read(4096).strip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            ctx.problem(sec, key, value, "a readable file (%s: %s)"
                        % (path, getattr(e, "strerror", None) or e))
    found.pop("password_file", None)
    if (found.get("user") or found.get("password")) and not found.get("server"):
        key = "user" if found.get("user") else "password"
        sec, k, value = where.get(key, where.get("password_file", ("smtpda", key, None)))
        ctx.problem(sec, k, "(hidden)" if k == "password" else value,
                    "a server key too (credentials are for the [smtpda] server)")
    for key in ("cafile", "spool", "pidfile", "log_file"):
        if found.get(key):
            found[key] = ctx.path(found[key])
    if found.get("cafile"):
        import os
        if not os.path.isfile(found["cafile"]):
            sec, key, value = where["cafile"]
            ctx.problem(sec, key, value, "an existing file (%s)" % found["cafile"])
    return SmtpdaConfig(**found)
