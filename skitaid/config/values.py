"""Value kinds of config keys: text as written in a file → typed value.

Each kind knows how to describe what it expects, so every mistake is reported
the same way whether it came from INI or YAML.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, Optional

from .model import RateLimit


class Bad(ValueError):
    """A value does not fit its kind; args[0] is what was expected."""


class Kind:
    def __init__(self, expected: str, convert: Callable[[str], Any]):
        self.expected = expected
        self._convert = convert

    def __call__(self, text: str) -> Any:
        try:
            return self._convert(text.strip())
        except (ValueError, TypeError, OverflowError):
            raise Bad(self.expected) from None


def text(expected="a text value"):
    return Kind(expected, lambda s: s)


def integer(lo: int, hi: Optional[int] = None):
    expected = "an integer %d-%d" % (lo, hi) if hi is not None else "an integer >= %d" % lo

    def convert(s):
        n = int(s, 10)
        if n < lo or (hi is not None and n > hi):
            raise ValueError(s)
        return n
    return Kind(expected, convert)


def seconds(lo: float = 0.0):
    def convert(s):
        x = float(s)
        if not x >= lo:             # also rejects nan
            raise ValueError(s)
        return x
    return Kind("a number of seconds >= %g" % lo, convert)


_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def _boolean(s):
    low = s.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(s)


boolean = Kind("yes or no (or true/false, on/off, 1/0)", _boolean)

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _size(s):
    m = _SIZE.fullmatch(s)
    if not m:
        raise ValueError(s)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


size = Kind("a size in bytes, or with a K, M or G suffix (e.g. 100M)", _size)

POLLERS = ("uvloop", "epoll", "poll", "select")


def _poller(s):
    if s.lower() not in POLLERS:
        raise ValueError(s)
    return s.lower()


poller = Kind("uvloop, or epoll, poll or select (asyncio's loop with that selector)", _poller)

START_METHODS = ("forkserver", "spawn", "fork")


def _start_method(s):
    if s.lower() not in START_METHODS:
        raise ValueError(s)
    return s.lower()


start_method = Kind("forkserver, spawn or fork (multiprocessing's start methods)", _start_method)

# Host names: letters, digits, '-', dots; no scheme, no path.
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


# sun_path holds 108 bytes with the terminating NUL
_UNIX_PATH_MAX = 107


def _address(s):
    if s.startswith("unix:"):
        path = s[5:]
        if not path.startswith("/") or len(path.encode()) > _UNIX_PATH_MAX or "\0" in path:
            raise ValueError(s)
        return "unix:" + os.path.normpath(path)
    if not s or s == "*":
        return "0.0.0.0"            # empty means every interface, as the old daemon had it
    candidate = s[1:-1] if s.startswith("[") and s.endswith("]") else s
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(s):
        return s
    raise ValueError(s)


address = Kind("an IP address or host name (empty: all interfaces), or unix:/absolute/path "
               "(at most %d bytes)" % _UNIX_PATH_MAX, _address)


def split_words(s: str):
    """'a, b c' → ('a', 'b', 'c'): lists may be separated by commas, spaces or lines."""
    return tuple(w for w in re.split(r"[\s,]+", s) if w)


words = Kind("a list separated by spaces or commas", split_words)


def _paths(s):
    # paths may hold blanks: only commas and line breaks separate them
    found = tuple(p.strip() for p in re.split(r"[,\n]", s) if p.strip())
    if not found:
        raise ValueError(s)
    return found


paths = Kind("directories separated by commas", _paths)


def _critical_point(s):
    parts = split_words(s)
    if not parts or (len(parts) == 1 and parts[0].lower() in _FALSE):
        return ()
    if len(parts) != 3:
        raise ValueError(s)
    cpu, times, interval = float(parts[0]), int(parts[1]), float(parts[2])
    if not (0 < cpu <= 100 * 1024) or times < 1 or interval < 0:
        raise ValueError(s)
    return () if interval == 0 else (cpu, times, interval)


critical_point = Kind(
    "CPU percent, consecutive checks and interval seconds (e.g. 90, 3, 20), or off",
    _critical_point)


def normalise_network(s: str) -> str:
    """'192.168.1/24' (the old short form) → '192.168.1.0/24'; checked by ipaddress."""
    net, slash, mask = s.partition("/")
    if ":" not in net and net.count(".") < 3 and re.fullmatch(r"[\d.]+", net):
        net = ".".join((net.split(".") + ["0", "0", "0"])[:4])
    return str(ipaddress.ip_network(net + slash + mask, strict=False))


def _networks(s):
    return tuple(normalise_network(w) for w in split_words(s))


def _ports(s):
    ports = tuple(int(w, 10) for w in split_words(s))
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ValueError(s)
    return ports


ports = Kind("port numbers separated by commas (e.g. 443, 8443)", _ports)

networks = Kind("IP networks separated by commas (e.g. 10.0.0.0/8, 192.168.1/24)", _networks)


_FORWARD = re.compile(r"(\d+)\s*->\s*(?:(\d+)|([A-Za-z0-9.-]+)(?::(\d+))?)\s*")


def _forward(s):
    """'80 -> 443', '80 -> example.com', '80 -> example.com:8443'."""
    m = _FORWARD.fullmatch(s)
    if not m:
        raise ValueError(s)
    http_port = int(m.group(1))
    if m.group(2):
        https_port, domain = int(m.group(2)), ""
    else:
        domain = m.group(3)
        https_port = int(m.group(4) or 443)
    if not (0 < http_port < 65536 and 0 < https_port < 65536):
        raise ValueError(s)
    return (http_port, https_port, domain)


forward = Kind("HTTP_PORT -> HTTPS_PORT, or HTTP_PORT -> DOMAIN[:HTTPS_PORT] (e.g. 80 -> 443)",
               _forward)


# rate_limit = 100/s burst 200: COUNT per second/minute/hour, a bucket of BURST
_RATE = re.compile(r"(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)"
                   r"(?:\s+burst\s+(\d+))?", re.I)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}
MAX_RATE = 1000000          # requests per second; above it a limit means nothing


def _rate_limit(s):
    """'100/s burst 200' → RateLimit(100.0, 200, text); 'off' → None. Without
    a burst, the bucket holds one second's worth (at least 1)."""
    if s.lower() in _FALSE:
        return None
    m = _RATE.fullmatch(s)
    if not m:
        raise ValueError(s)
    count, per = int(m.group(1)), _PER[m.group(2).lower()]
    rate = count / per
    burst = int(m.group(3)) if m.group(3) is not None else max(1, int(rate))
    if count < 1 or rate > MAX_RATE or not 1 <= burst <= MAX_RATE:
        raise ValueError(s)
    return RateLimit(rate=rate, burst=burst, text=" ".join(s.split()))


rate_limit = Kind("a rate as COUNT/s, COUNT/m or COUNT/h with an optional burst 1-%d "
                  "(e.g. 100/s burst 200), or off" % MAX_RATE, _rate_limit)
