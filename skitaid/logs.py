"""Request log (the original Skitai's space-separated format) and error log.

Request-log lines are collected in memory and written once per loop
iteration batch, so a busy worker makes one write() per flush, not one per
request.
"""
import errno
import hashlib
import logging
import os
import stat
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
_stdio_owner = None        # uid the daemon's error log is handed to (the workers' user)


def describe_os_error(e):
    """"Permission denied (EACCES)": what an operator needs from an OSError."""
    name = errno.errorcode.get(e.errno, "errno %s" % e.errno) if e.errno else ""
    text = e.strerror or str(e)
    return "%s (%s)" % (text, name) if name else text


def open_log(path):
    """A descriptor to append to `path` (created 0644). Raises OSError."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def share_stdio(uid):
    """Workers of this uid reopen the error log themselves on USR1 (they have
    their own copies of fds 1/2): the master, which reopens it first as root,
    makes each new file theirs, as nginx does. None: leave ownership alone."""
    global _stdio_owner
    _stdio_owner = uid


def reopen_stdio():
    """USR1: reopen the daemon's error log (stdout/stderr) if it is a file.

    Returns None when reopened (or nothing to do). On failure fds 1 and 2
    keep the old file, one error says why, and that message is returned: a
    log that cannot be reopened must never take a process down."""
    if not _stdio_path:
        return None
    try:
        redirect_stdio(_stdio_path)
    except OSError as e:
        message = "cannot reopen the error log %s: %s" % (_stdio_path, describe_os_error(e))
        error_log.error("%s; still writing to the file it replaced", message)
        return message
    return None


def redirect_stdio(path):
    """Point this process's stdout and stderr (fds 1 and 2) at the log file `path`.

    The daemon logs through stderr, so reopening after logrotate is one
    dup2(); tracebacks and faulthandler dumps land in the same file. The new
    file is opened before anything is touched and dup2() replaces fds 1 and 2
    atomically: they are never closed, so no other file or socket can take
    their numbers. Raises OSError with 1 and 2 unchanged."""
    global _stdio_path
    fd = open_log(path)
    try:
        if _stdio_owner is not None and os.geteuid() == 0:
            st = os.fstat(fd)
            if st.st_uid != _stdio_owner or not st.st_mode & stat.S_IWUSR:
                os.fchown(fd, _stdio_owner, -1)
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(fd, 1, inheritable=True)
        os.dup2(fd, 2, inheritable=True)
    finally:
        os.close(fd)
    _stdio_path = path


def _quoted(value):
    return '"%s"' % value.replace('"', "'") if value else "-"


def token_fingerprint(token):
    """The request log's stand-in for a bearer token: "sha256:" + 12 hex digits."""
    return "sha256:" + hashlib.sha256(token.encode("latin-1", "replace")).hexdigest()[:12]


class RequestLog:
    """Formats and buffers request-log lines; `flush()` is called by the loop."""

    def __init__(self, loop, path=None, worker_id="W0", log_off=(), enabled=True, fmt="text"):
        self.loop = loop
        self.json = fmt == "json"       # request_log_format: one JSON object per line
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
        """Open (again) the log file; USR1 calls this after logrotate.

        The new file is opened first: only once that worked does it replace
        the old descriptor. Closing first would free the old fd number for the
        next accepted connection, and the next flush would write log lines
        (with other users' tokens) into that client's socket. On failure the
        old file stays in use and one error names the file. Returns True when
        the log now writes to `path`."""
        if not self.path:
            self._fd = 2
            return True
        try:
            fd = open_log(self.path)
        except OSError as e:
            if self._fd is None:
                raise           # at start: the worker cannot serve without its log
            error_log.error("cannot reopen the request log %s: %s; still writing to the "
                            "file it replaced", self.path, describe_os_error(e))
            return False
        self.flush()            # lines of the old file's time go to the old file
        old, self._fd = self._fd, fd
        if old is not None and old > 2:
            os.close(old)
        return True

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
                    # never the token itself (a log is no place for a secret):
                    # a fingerprint still tells one client's requests apart
                    bearer = token_fingerprint(cred)
                elif scheme == "basic":
                    user = _quoted(_basic_user(cred))
            elif name == "x-forwarded-for":
                xff = value if xff is None else xff + "," + value
        if request.user:
            user = _quoted(request.user)      # the gateway's: the token's sub, the auth handler's
        if xff:
            # "a, b" would be two fields of a blank-separated line
            xff = xff.replace(" ", "") or "-"
        host = request.host
        if not host:
            host = "-"
        elif " " in host:
            host = _quoted(host)
        received = request.body.received if request.body is not None else 0
        if self.json:
            self._lines.append(_json_line(
                self._timestamp(), request, received, status, sent, user, bearer, referer,
                agent, xff, self.worker_id, active, handling_ms, transfer_ms))
            if not self._scheduled:
                self._scheduled = True
                self.loop.call_later(0.1, self.flush)
            return
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


def _unquoted(value):
    """The text form's field back as the value ("-" → None, quotes off)."""
    if value == "-":
        return None
    return value[1:-1] if len(value) >= 2 and value[0] == '"' else value


def _json_line(stamp, request, received, status, sent, user, bearer, referer, agent, xff,
               worker_id, active, handling_ms, transfer_ms):
    """request_log_format = json: the text line's fields, named. Header values
    stay the latin-1 str of the bytes the client sent; json.dumps escapes
    anything that is not printable ASCII, so a line cannot be broken."""
    import json
    return json.dumps({
        "time": stamp, "client": request.client[0] if request.client else None,
        "host": request.host or None, "method": request.method, "target": request.target,
        "protocol": "HTTP/" + request.version, "request_bytes": received, "status": status,
        "response_bytes": sent, "gtxid": request.gtxid, "ltxid": request.ltxid,
        "user": _unquoted(user), "bearer": None if bearer == "-" else bearer,
        "referer": _unquoted(referer), "user_agent": _unquoted(agent),
        "forwarded_for": xff or None, "worker": worker_id, "connections": active,
        "handling_ms": round(handling_ms, 2), "transfer_ms": round(transfer_ms, 2),
    }, ensure_ascii=True) + "\n"


def _basic_user(cred):
    import base64
    try:
        return base64.b64decode(cred).decode("latin-1").partition(":")[0]
    except Exception:
        return ""
