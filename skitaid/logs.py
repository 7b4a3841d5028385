"""Request log (the original Skitai's space-separated format) and error log.

Request-log lines are collected in memory and written once per loop
iteration batch, so a busy worker makes one write() per flush, not one per
request.
"""
import logging
import os
import sys
import time

error_log = logging.getLogger("skitaid")


def setup_error_log(path=None, debug=False):
    """Errors go to `path` (a file) or stderr, with tracebacks."""
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(levelname)s] %(process)d %(message)s", "%Y.%m.%d %H:%M:%S"))
    error_log.handlers[:] = [handler]
    error_log.setLevel(logging.DEBUG if debug else logging.INFO)
    error_log.propagate = False


_stdio_path = None


def reopen_stdio():
    """USR1: reopen the daemon's error log (stdout/stderr) if it is a file."""
    if _stdio_path:
        redirect_stdio(_stdio_path)


def redirect_stdio(path):
    """Point this process's stdout and stderr (fds 1 and 2) at the log file `path`.

    The daemon logs through stderr, so reopening after logrotate is one
    dup2(); tracebacks and faulthandler dumps land in the same file."""
    global _stdio_path
    _stdio_path = path
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _quoted(value):
    return '"%s"' % value.replace('"', "'") if value else "-"


class RequestLog:
    """Formats and buffers request-log lines; `flush()` is called by the loop."""

    def __init__(self, loop, path=None, worker_id="W0", log_off=(), enabled=True):
        self.loop = loop
        self.path = path
        self.worker_id = worker_id
        self.enabled = enabled
        self.prefixes = tuple(p for p in log_off if not p.startswith("*"))
        self.suffixes = tuple(p[1:] for p in log_off if p.startswith("*"))
        self._lines = []
        self._scheduled = False
        self._stamp_sec = -1
        self._stamp = ""
        self._fd = None
        self.reopen()

    def reopen(self):
        """Open (again) the log file; USR1 calls this after logrotate."""
        if self._fd is not None and self._fd != 2:
            os.close(self._fd)
        if self.path:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        else:
            self._fd = 2

    def wanted(self, path):
        if not self.enabled:
            return False
        if self.prefixes and path.startswith(self.prefixes):
            return False
        if self.suffixes and path.endswith(self.suffixes):
            return False
        return True

    def _timestamp(self):
        now = time.time()
        sec = int(now)
        if sec != self._stamp_sec:
            self._stamp_sec = sec
            self._stamp = time.strftime("%Y.%m.%d %H:%M:%S", time.localtime(sec))
        return self._stamp

    def log(self, request, status, sent, active, handling_ms, transfer_ms):
        """One line per finished request (loop thread)."""
        if not self.wanted(request.path):
            return
        user = bearer = referer = agent = "-"
        xff = None
        for name, value in request.headers:      # one pass for the five header fields
            if name == "user-agent":
                agent = _quoted(value)
            elif name == "referer":
                referer = _quoted(value)
            elif name == "authorization":
                scheme, _, cred = value.partition(" ")
                scheme = scheme.lower()
                if scheme == "bearer":
                    bearer = _quoted(cred)
                elif scheme == "basic":
                    user = _quoted(_basic_user(cred))
            elif name == "x-forwarded-for":
                xff = value if xff is None else xff + "," + value
        if xff:
            # "a, b" would be two fields of a blank-separated line
            xff = xff.replace(" ", "") or "-"
        host = request.host
        if not host:
            host = "-"
        elif " " in host:
            host = _quoted(host)
        received = request.body.received if request.body is not None else 0
        line = "%s %s %s %s %s HTTP/%s %d %d %d %s %s %s %s %s %s %s %s %d %.2f %.2f\n" % (
            self._timestamp(), request.client[0] if request.client else "-",
            host, request.method, request.target, request.version,
            received, status, sent, request.gtxid or "-", request.ltxid or "-",
            user, bearer, referer, agent, xff or "-", self.worker_id, active,
            handling_ms, transfer_ms)
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_later(0.1, self.flush)

    def flush(self):
        self._scheduled = False
        if not self._lines:
            return
        # header values and the target are latin-1 str holding the bytes the
        # client sent: encoding back to latin-1 logs those bytes (UTF-8 stays UTF-8)
        data = "".join(self._lines).encode("latin-1", "replace")
        self._lines.clear()
        try:
            os.write(self._fd, data)
        except OSError:   # a full disk must not take the worker down
            pass


def _basic_user(cred):
    import base64
    try:
        return base64.b64decode(cred).decode("latin-1").partition(":")[0]
    except Exception:
        return ""
