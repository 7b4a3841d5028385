"""The Date header, formatted once per second."""
import time
from email.utils import formatdate

_sec = -1
_header = b""


def header():
    global _sec, _header
    now = time.time()
    sec = int(now)
    if sec != _sec:
        _sec = sec
        _header = ("Date: %s\r\n" % formatdate(sec, usegmt=True)).encode("ascii")
    return _header
