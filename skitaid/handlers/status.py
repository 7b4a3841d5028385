"""The status page, its JSON and Prometheus metrics: `status_path`, `metrics_path`.

Served by the worker the request reached, from the document the master
publishes once a second (bulletin.py): every worker answers with the same
figures, those of `skitaid status --json`. Access: the client's address must
be in `status_allow` (default loopback only) and, with `status_auth`, HTTP
Basic credentials must match the scrypt hash; anyone else gets a bare
403/401 and nothing about the server.
"""
import base64
import hashlib
import hmac
import json
import os
import time
from urllib.parse import parse_qs

from .. import bulletin, passwords
from ..version import __version__
from .errors import error_response
from .gateway import client_in, parse_networks

_NO_STORE = ("Cache-Control", "no-store")
_CHECKED_MAX = 64           # credentials already verified (scrypt is slow on purpose)


class StatusHandler:
    def __init__(self, config):
        self.status_path = config.status_path
        self.metrics_path = config.metrics_path
        self.networks = parse_networks(config.status_allow)
        self.auth = tuple(config.status_auth) or None
        self.server_name = config.name
        self._checked = {}          # sha256 of an Authorization value → True
        self._template = None

    def paths(self):
        return tuple(p for p in (self.status_path, self.metrics_path) if p)

    def handle(self, exchange, resolved=None):
        request = exchange.request
        if not client_in(request.client, self.networks):
            exchange.respond(*error_response(403))
            return
        if self.auth is not None and not self._authorized(request.header("authorization")):
            status, headers, body = error_response(401)
            headers.append(("WWW-Authenticate", 'Basic realm="status", charset="UTF-8"'))
            exchange.respond(status, headers, body)
            return
        if request.method not in ("GET", "HEAD"):
            status, headers, body = error_response(405)
            headers.append(("Allow", "GET, HEAD"))
            exchange.respond(status, headers, body)
            return
        data, written = bulletin.region().read() if bulletin.region() is not None else (None, 0)
        if data is None:
            exchange.respond(*error_response(503, "no status published yet"))
            return
        doc = json.loads(data)
        if request.path == self.metrics_path:
            from .metrics import exposition
            body, ctype = exposition(doc)
            exchange.respond(200, [("Content-Type", ctype), _NO_STORE], body)
            return
        query = parse_qs(request.query or "", keep_blank_values=True)
        if "json" in query:
            exchange.respond(200, [("Content-Type", "application/json"), _NO_STORE], data)
            return
        refresh = _refresh(query)
        body = self.render(doc, written, refresh, request)
        exchange.respond(200, [("Content-Type", "text/html; charset=utf-8"), _NO_STORE,
                               ("Content-Security-Policy",
                                "default-src 'none'; style-src 'unsafe-inline'")], body)

    def _authorized(self, value):
        if not value:
            return False
        digest = hashlib.sha256(value.encode("latin-1", "replace")).digest()
        if self._checked.get(digest):
            return True
        scheme, _, cred = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, colon, password = base64.b64decode(cred.strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        want_user, hashed = self.auth
        ok = hmac.compare_digest(user.encode("utf-8"), want_user.encode("utf-8"))
        ok = passwords.verify(password, hashed) and ok and bool(colon)
        if ok:
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            self._checked[digest] = True
        return ok

    def render(self, doc, written, refresh, request):
        if self._template is None:
            import jinja2
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(
                    os.path.dirname(os.path.abspath(__file__))), "templates")),
                autoescape=True)            # everything shown is escaped
            env.filters["duration"] = duration
            env.filters["mib"] = lambda n: "%.1f" % ((n or 0) / 1048576.0)
            env.filters["ago"] = lambda t: duration(time.time() - t) if t else "-"
            self._template = env.get_template("status.html")
        return self._template.render(
            doc=doc, version=__version__, refresh=refresh, written=written,
            now=time.time(), host=request.host, path=request.path,
            server_name=self.server_name).encode("utf-8")


def _refresh(query):
    """?refresh=N seconds (1-3600); default 5; 0 turns it off."""
    try:
        n = int(query.get("refresh", ["5"])[0])
    except ValueError:
        return 5
    return max(0, min(3600, n)) if n else 0


def duration(seconds):
    seconds = int(seconds or 0)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    if seconds < 86400:
        h, rest = divmod(seconds, 3600)
        return "%dh%02dm" % (h, rest // 60)
    d, rest = divmod(seconds, 86400)
    return "%dd%02dh" % (d, rest // 3600)
