"""The Date header, formatted once per second."""
import time
from email.utils import formatdate

_sec = -1
_header = b""      # b"Date: ...\r\n" (HTTP/1.1)
_value = ""        # the value alone (HTTP/2 header lists)


def _refresh(sec):
    global _sec, _header, _value
    _sec = sec
    _value = formatdate(sec, usegmt=True)
    _header = ("Date: %s\r\n" % _value).encode("ascii")


def header():
    sec = int(time.time())
    if sec != _sec:
        _refresh(sec)
    return _header


def value():
    sec = int(time.time())
    if sec != _sec:
        _refresh(sec)
    return _value
