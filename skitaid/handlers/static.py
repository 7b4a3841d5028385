"""Static files, served from the event-loop thread.

Per request the hot path is: one dict lookup by the raw request path, one
os.stat() to validate the cached entry by (st_mtime_ns, st_size, st_ino,
st_dev), the conditional/range checks, and one `exchange.respond()` with a
precomputed header list and (for files up to 64 KB) the cached content, or
`exchange.start()` + `exchange.sendfile()` for bigger files. Nothing here
blocks for long: stat/open/small reads of local files only; gzipping a file
bigger than 64 KB happens once, in the loop's default executor.

Safety: the request path is split on raw "/", each segment percent-decoded
on its own (so "%2f" never becomes a separator), NUL and invalid UTF-8 → 400,
backslashes → 404, "." / ".." resolved lexically without ever climbing above
the mount's root (→ 404), and every file (and directory, and precompressed
sibling) must have its os.path.realpath() inside realpath(root), so symlinks
that point outside the root are 404 as well.

HTTP semantics (RFC 9110/9111): strong ETag from inode+size+mtime_ns (weak,
and not cached, while the file was modified in the last `settle` seconds,
because a second write within the filesystem's timestamp granularity could
keep the same mtime), Last-Modified, If-Match / If-Unmodified-Since (412),
If-None-Match (weak comparison) / If-Modified-Since (304), single byte
ranges with If-Range (206/416), gzip (precompressed FILE.gz or on the fly)
with Vary: Accept-Encoding.
"""
from __future__ import annotations

import asyncio
import os
import stat as _stat
import time
import zlib
from email.utils import formatdate, mktime_tz, parsedate_tz
from functools import partial
from urllib.parse import quote, unquote_to_bytes

from .. import mode
from ..logs import error_log
from .errors import error_response
from .mimetypes_ import guess

_GET_HEAD = frozenset(("GET", "HEAD"))
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_S_ISREG = _stat.S_ISREG
_S_ISDIR = _stat.S_ISDIR
# characters left unescaped in a redirect Location path segment (RFC 3986 pchar)
_PCHAR_SAFE = "!$&'()*+,;=:@"

# gzip variant states of an entry
GZ_NO = 0        # no gzip variant (not compressible, too small/big, or gzip off)
GZ_BYTES = 1     # e.gz holds the compressed bytes (precompressed ≤ 64 KB, or made by us)
GZ_FILE = 2      # a big precompressed FILE.gz: sendfile() it
GZ_LAZY = 3      # compressible, 64 KB < size ≤ 1 MB: compress in the executor on first use
GZ_PENDING = 4   # that compression is running; requests wait in e.gz_waiters

_UNSATISFIABLE = -1


class Resolved:
    """What `StaticHandler.find()` returns and `handle()` takes back.

    Opaque to the router: either a file entry or a directory redirect."""

    __slots__ = ()


class _Redirect(Resolved):
    """A directory asked for without its trailing slash."""

    __slots__ = ("segs", "has_index")

    def __init__(self, segs, has_index):
        self.segs = segs
        self.has_index = has_index


class _Entry(Resolved):
    """Everything needed to answer for one file, computed once per version."""

    __slots__ = ("path", "fspath", "url", "key", "size", "mtime", "weak", "tag",
                 "gz_tag", "last_modified", "body", "gz", "gz_state", "gz_path",
                 "gz_key", "gz_size", "gz_waiters", "h200", "h304", "h200gz",
                 "h304gz", "nbytes", "max_age", "expires_at")


def _key(st):
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _gzip(data):
    # wbits=31: a gzip container with mtime 0, so the output is reproducible
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _worth_it(compressed, size):
    return len(compressed) <= size - size // 10


def _read_upto(fd, limit):
    """Read until EOF but at most `limit` bytes."""
    chunks = []
    left = limit
    while left > 0:
        b = os.read(fd, left)
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def _compress_file(path, key):
    """Runs in the executor: gzip a (64 KB, 1 MB] file, None if it changed."""
    with open(path, "rb") as f:
        if _key(os.fstat(f.fileno())) != key:
            return None
        data = f.read()
    if len(data) != key[1]:
        return None
    return _gzip(data)


def _parse_date(value):
    """An HTTP-date (any of the three formats) → POSIX seconds, None if invalid."""
    try:
        t = parsedate_tz(value)
        return None if t is None else mktime_tz(t)
    except (TypeError, ValueError, OverflowError):
        return None


_ae_cache = {}


def _accepts_gzip(value):
    """Does an Accept-Encoding value allow gzip (q > 0)? Memoised per value."""
    r = _ae_cache.get(value)
    if r is None:
        gz = star = None
        for part in value.split(","):
            name, _, params = part.partition(";")
            name = name.strip().lower()
            q = 1.0
            for p in params.split(";"):
                k, _, v = p.partition("=")
                if k.strip().lower() == "q":
                    try:
                        q = float(v.strip())
                    except ValueError:
                        q = 0.0
            if name == "gzip" or name == "x-gzip":
                gz = q if gz is None else max(gz, q)
            elif name == "*":
                star = q
        if gz is not None:
            r = gz > 0
        else:
            r = star is not None and star > 0
        if len(_ae_cache) >= 512:
            _ae_cache.clear()
        _ae_cache[value] = r
    return r


def _weak_match(value, tag):
    """If-None-Match: weak comparison against our opaque tag ('"…"')."""
    for t in value.split(","):
        t = t.strip()
        if t == tag or t == "*" or (t[:2] == "W/" and t[2:] == tag):
            return True
    return False


def _strong_match(value, tag, weak):
    """If-Match: strong comparison; "*" matches any current representation."""
    value = value.strip()
    if value == "*":
        return True
    if weak:
        return False
    for t in value.split(","):
        if t.strip() == tag:
            return True
    return False


def _digits(s):
    return s.isascii() and s.isdigit()


def _parse_range(value, size):
    """A Range value → (first, last) inclusive, _UNSATISFIABLE, or None to
    ignore it (not bytes, invalid syntax, or several ranges)."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s for s in (s.strip() for s in spec.split(",")) if s]
    if len(specs) != 1:
        # Several ranges: RFC 9110 §14.2 lets a server ignore Range, so we
        # answer 200 with the whole file instead of multipart/byteranges
        # (what browsers and download tools ask for is a single range).
        return None
    first, dash, last = specs[0].partition("-")
    if not dash:
        return None
    first = first.strip()
    last = last.strip()
    try:
        if first:
            if not _digits(first) or (last and not _digits(last)):
                return None
            a = int(first)
            b = int(last) if last else size - 1
            if last and b < a:
                return None                       # invalid → ignored
            if a >= size:
                return _UNSATISFIABLE
            return a, min(b, size - 1)
        if not _digits(last):
            return None
        n = int(last)
    except ValueError:            # absurdly long numbers (int digit limit)
        return None
    if n == 0 or size == 0:
        return _UNSATISFIABLE
    return max(0, size - n), size - 1


def error(exchange, code, extra=None):
    """A small error page (with extra headers), HEAD-aware."""
    status, headers, body = error_response(code)
    if extra:
        headers = headers + extra
    if exchange.request.method == "HEAD":
        headers = headers + [("Content-Length", str(len(body)))]
        body = b""
    exchange.respond(status, headers, body)


def _send(exchange, status, headers, body, head):
    if head:
        # HEAD: the H1 protocol keeps an explicit Content-Length we pass for
        # HEAD (the length a GET would have had) and sends no body.
        exchange.respond(status, headers + [("Content-Length", str(len(body)))], b"")
    else:
        # Content-Length comes from len(body); protocols only read the list,
        # the copy keeps the cached one safe should one ever append to it.
        exchange.respond(status, list(headers), body)


class StaticHandler:
    """Serve the files under `root` at the URL prefix `prefix`."""

    small_size = 64 * 1024          # content of files up to this size is cached
    gzip_min = 1024                 # on-the-fly gzip for compressible types in
    gzip_max = 1024 * 1024          #   [gzip_min, gzip_max] bytes
    cache_entries = 4096            # bounded per-file cache (FIFO eviction)
    cache_bytes = 32 * 1024 * 1024  # cached content + gzip bytes, per worker
    settle = 2.0                    # seconds after a write before the ETag is strong
    index = "index.html"

    def __init__(self, root, prefix, max_age_for=None, gzip=True):
        self.root = os.path.realpath(root)
        self._root_slash = self.root if self.root.endswith("/") else self.root + "/"
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else "/"
        self.prefix = prefix
        self._plen = 0 if prefix == "/" else len(prefix)
        self._url_base = "/" if prefix == "/" else prefix + "/"
        self._loc_base = quote(self._url_base, safe="/" + _PCHAR_SAFE)
        self.max_age_for = max_age_for or (lambda path: 0)
        self.gzip = gzip
        self._cache = {}            # raw request path → _Entry
        self._bytes = 0

    # -- the router's side -------------------------------------------------------
    def find(self, request):
        """Does this request name a file (or a directory with an index.html)
        under root? Cheap: usually one dict lookup and one stat.

        Used by the router so that at the same prefix an existing static file
        wins over an app. Methods other than GET/HEAD, invalid paths and
        directories without index.html are left to the app (None): a POST to
        "/" must reach the app even when the static root has an index.html.
        """
        if request.method not in _GET_HEAD:
            return None
        r = self._resolve(request.path)
        cls = r.__class__
        if cls is _Entry or (cls is _Redirect and r.has_index):
            return r
        return None

    def handle(self, exchange, resolved=None):
        """Answer exchange.request fully (maybe later, for big files/gzip)."""
        request = exchange.request
        r = resolved if resolved is not None else self._resolve(request.path)
        if r.__class__ is int:
            return error(exchange, r)
        if request.method not in _GET_HEAD:
            return error(exchange, 405, [("Allow", "GET, HEAD")])
        if r.__class__ is _Entry:
            return self._serve(exchange, r, dict(request.headers), True)
        return self._redirect(exchange, r)

    # -- path → entry ---------------------------------------------------------------
    def _resolve(self, path):
        """_Entry, _Redirect, or an int status (400/404)."""
        e = self._cache.get(path)
        if e is not None:
            try:
                st = os.stat(e.fspath)
            except OSError:
                st = None
            if st is not None and (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev) == e.key:
                return e
            self._forget(e)
        return self._resolve_slow(path)

    def _parse(self, path):
        """Raw path → (segments, trailing slash) or an int status."""
        plen = self._plen
        if plen:
            if not path.startswith(self.prefix) or (len(path) > plen and path[plen] != "/"):
                return 404
            rel = path[plen:]
        else:
            rel = path
        if rel and rel[0] != "/":
            return 400
        segs = []
        dotted = False
        for raw in rel.split("/"):
            dotted = False
            if not raw:
                continue
            if "%" in raw or not raw.isascii():
                try:
                    b = raw.encode("latin-1")        # the protocol's latin-1 view of the bytes
                except UnicodeEncodeError:
                    b = raw.encode("utf-8")
                b = unquote_to_bytes(b)
                if b"\0" in b:
                    return 400
                try:
                    s = b.decode("utf-8")
                except UnicodeDecodeError:
                    return 400
                if "/" in s:
                    return 404                       # %2f is never a separator
            else:
                s = raw
                if "\0" in s:
                    return 400
            if s == "." or s == "..":
                dotted = True
                if s == "..":
                    if not segs:
                        return 404                   # would climb above the root
                    segs.pop()
                continue
            if "\\" in s:
                return 404
            segs.append(s)
        trailing = dotted or rel.endswith("/")
        return segs, trailing

    def _inside(self, fspath):
        real = os.path.realpath(fspath)
        return real == self.root or real.startswith(self._root_slash)

    def _resolve_slow(self, path):
        parsed = self._parse(path)
        if parsed.__class__ is int:
            return parsed
        segs, trailing = parsed
        fspath = os.path.join(self.root, *segs) if segs else self.root
        try:
            st = os.stat(fspath)
        except (OSError, ValueError):
            return 404
        url = self._url_base + "/".join(segs)
        if _S_ISDIR(st.st_mode):
            if not self._inside(fspath):
                return 404
            if not trailing:
                index = os.path.join(fspath, self.index)
                return _Redirect(segs, os.path.isfile(index) and self._inside(index))
            fspath = os.path.join(fspath, self.index)
            if segs:
                url += "/"
            try:
                st = os.stat(fspath)
            except (OSError, ValueError):
                return 404
        elif trailing:
            return 404                               # "/file.txt/"
        if not _S_ISREG(st.st_mode) or not self._inside(fspath):
            return 404
        e = self._build(path, fspath, st, url)
        if e is None:
            return 404
        if not e.weak:
            self._insert(e)
        return e

    # -- entries ------------------------------------------------------------------------
    def _build(self, path, fspath, st, url):
        body = None
        if st.st_size <= self.small_size:
            try:
                fd = os.open(fspath, _OPEN_FLAGS)
            except OSError:
                return None
            try:
                st2 = os.fstat(fd)
                if not _S_ISREG(st2.st_mode) or (st2.st_ino, st2.st_dev) != (st.st_ino, st.st_dev):
                    return None                      # replaced between stat and open
                st = st2
                if st.st_size <= self.small_size:
                    body = _read_upto(fd, self.small_size + 1)
                    if len(body) > self.small_size:
                        body = None                  # it grew: serve it as a big file
            finally:
                os.close(fd)
        e = _Entry()
        e.path = path
        e.fspath = fspath
        e.url = url
        e.key = _key(st)
        e.body = body
        e.size = len(body) if body is not None else st.st_size
        e.mtime = st.st_mtime_ns // 1000000000
        now = time.time()
        # Modified moments ago (or being written: the read length differs)?
        # Then another same-size write could keep this mtime: weak ETag and
        # no caching until the file has settled.
        e.weak = (now - st.st_mtime < self.settle) or (body is not None and len(body) != st.st_size)
        base = "%x-%x-%x" % (st.st_ino, st.st_size, st.st_mtime_ns)
        e.tag = '"%s"' % base
        e.last_modified = formatdate(e.mtime, usegmt=True)
        e.gz = None
        e.gz_state = GZ_NO
        e.gz_path = e.gz_key = e.gz_waiters = None
        e.gz_size = 0
        e.gz_tag = None
        ctype, compressible = guess(fspath)
        if self.gzip:
            if not self._probe_precompressed(e, st, base, now):
                if compressible and self.gzip_min <= e.size <= self.gzip_max:
                    if body is not None:
                        gz = _gzip(body)
                        if _worth_it(gz, e.size):
                            e.gz = gz
                            e.gz_state = GZ_BYTES
                    elif not e.weak:
                        e.gz_state = GZ_LAZY
                    if e.gz_state != GZ_NO:
                        e.gz_tag = '"%s-gz"' % base
        # development mode: every reload of a page sees the edited files
        max_age = 0 if mode.is_devel() else self.max_age_for(url)
        e.max_age = max_age if max_age and max_age > 0 else 0
        e.expires_at = -1
        # max-age=0 would also allow caching with revalidation, but "no-cache"
        # says it plainly: store it, revalidate every time (a cheap 304).
        cc = "max-age=%d" % max_age if e.max_age else "no-cache"
        w = "W/" if e.weak else ""
        etag = w + e.tag
        lm = e.last_modified
        vary = [("Vary", "Accept-Encoding")] if e.gz_state != GZ_NO else []
        e.h200 = [("Content-Type", ctype), ("Accept-Ranges", "bytes"), ("ETag", etag),
                  ("Last-Modified", lm), ("Cache-Control", cc)] + vary
        e.h304 = [("ETag", etag), ("Last-Modified", lm), ("Cache-Control", cc)] + vary
        if e.gz_state != GZ_NO:
            # No Accept-Ranges here: ranges are served from the identity form only.
            etag = w + e.gz_tag
            e.h200gz = [("Content-Type", ctype), ("Content-Encoding", "gzip"), ("ETag", etag),
                        ("Last-Modified", lm), ("Cache-Control", cc), ("Vary", "Accept-Encoding")]
            e.h304gz = [("ETag", etag), ("Last-Modified", lm), ("Cache-Control", cc),
                        ("Vary", "Accept-Encoding")]
        else:
            e.h200gz = e.h304gz = None
        if e.max_age:     # HTTP/1.0 caches read Expires; _expires() keeps it current
            for name in ("h200", "h304", "h200gz", "h304gz"):
                if getattr(e, name) is not None:
                    getattr(e, name).append(("Expires", ""))
        e.nbytes = 512 + (len(body) if body is not None else 0) + (len(e.gz) if e.gz else 0)
        return e

    def _probe_precompressed(self, e, st, base, now):
        """Use FILE.gz when it is a regular file inside root, not older than FILE.

        Checked when the entry is built (i.e. whenever FILE changes): a .gz
        rewritten later without touching FILE is noticed for big .gz files
        (they are fstat-checked at each send) but a small cached one is used
        until FILE changes — build tools write both together."""
        gzpath = e.fspath + ".gz"
        try:
            gst = os.stat(gzpath)
        except (OSError, ValueError):
            return False
        if not _S_ISREG(gst.st_mode) or gst.st_mtime_ns < st.st_mtime_ns or not self._inside(gzpath):
            return False
        if gst.st_size <= self.small_size:
            try:
                fd = os.open(gzpath, _OPEN_FLAGS)
            except OSError:
                return False
            try:
                gst = os.fstat(fd)
                if gst.st_size > self.small_size:
                    return False
                data = _read_upto(fd, self.small_size + 1)
            finally:
                os.close(fd)
            if len(data) != gst.st_size:
                return False
            e.gz = data
            e.gz_state = GZ_BYTES
        else:
            e.gz_path = gzpath
            e.gz_key = _key(gst)
            e.gz_size = gst.st_size
            e.gz_state = GZ_FILE
        if now - gst.st_mtime < self.settle:
            e.weak = True
        e.gz_tag = '"%s-%x-%x-%x-gz"' % (base, gst.st_ino, gst.st_size, gst.st_mtime_ns)
        return True

    def _insert(self, e):
        cache = self._cache
        old = cache.pop(e.path, None)
        if old is not None:
            self._bytes -= old.nbytes
        cache[e.path] = e
        self._bytes += e.nbytes
        self._trim()

    def _trim(self):
        cache = self._cache
        while cache and (len(cache) > self.cache_entries or self._bytes > self.cache_bytes):
            # FIFO: cheaper than LRU bookkeeping on every hit; a hot file that
            # gets evicted costs one rebuild.
            old = cache.pop(next(iter(cache)))
            self._bytes -= old.nbytes

    def _forget(self, e):
        if self._cache.get(e.path) is e:
            del self._cache[e.path]
            self._bytes -= e.nbytes

    # -- answering --------------------------------------------------------------------
    @staticmethod
    def _expires(e):
        """Expires = now + max-age, next to Cache-Control, redone once a second."""
        now = int(time.time())
        if now == e.expires_at:
            return
        e.expires_at = now
        value = ("Expires", formatdate(now + e.max_age, usegmt=True))
        for name in ("h200", "h304", "h200gz", "h304gz"):
            headers = getattr(e, name)
            if headers is not None:
                setattr(e, name, [value if k == "Expires" else (k, v) for k, v in headers])

    def _serve(self, exchange, e, h, retry):
        if e.max_age:
            self._expires(e)
        head = exchange.request.method == "HEAD"
        # Range is defined for GET only (RFC 9110 §14.2): HEAD gets the 200 head.
        rng = None if head else h.get("range")
        gz = False
        if e.gz_state != GZ_NO and rng is None:
            # No gzip for Range requests: ranges address the identity bytes.
            ae = h.get("accept-encoding")
            if ae is not None and _accepts_gzip(ae):
                if e.gz_state >= GZ_LAZY:
                    if self._wait_gzip(exchange, e, h):
                        return
                else:
                    gz = True

        # Conditionals, in RFC 9110 §13.2.2 order, against the selected representation.
        tag = e.gz_tag if gz else e.tag
        v = h.get("if-match")
        if v is not None:
            if not _strong_match(v, tag, e.weak):
                return error(exchange, 412)
        else:
            v = h.get("if-unmodified-since")
            if v is not None:
                t = _parse_date(v)
                if t is not None and e.mtime > t:
                    return error(exchange, 412)
        v = h.get("if-none-match")
        if v is not None:
            # (If-Modified-Since is ignored when If-None-Match is present.)
            if _weak_match(v, tag):
                return exchange.respond(304, list(e.h304gz if gz else e.h304), b"")
        else:
            v = h.get("if-modified-since")
            if v is not None and (v == e.last_modified or self._not_modified_since(v, e)):
                return exchange.respond(304, list(e.h304gz if gz else e.h304), b"")

        if gz:
            if e.gz_state == GZ_BYTES:
                return _send(exchange, 200, e.h200gz, e.gz, head)
            if head:
                return exchange.respond(200, e.h200gz + [("Content-Length", str(e.gz_size))], b"")
            if self._sendfile(exchange, 200, e.h200gz, e.gz_path, 0, e.gz_size, e.gz_key):
                return
            return self._retry(exchange, e, retry)   # the .gz changed under us

        if rng is not None:
            ir = h.get("if-range")
            if ir is None or self._if_range(ir, e):
                r = _parse_range(rng, e.size)
                if r is not None:
                    if r == _UNSATISFIABLE:
                        return error(exchange, 416, [("Content-Range", "bytes */%d" % e.size)])
                    a, b = r
                    headers = e.h200 + [("Content-Range", "bytes %d-%d/%d" % (a, b, e.size))]
                    if e.body is not None:
                        return exchange.respond(206, headers, e.body[a:b + 1])
                    if self._sendfile(exchange, 206, headers, e.fspath, a, b - a + 1, e.key):
                        return
                    return self._retry(exchange, e, retry)
            # If-Range did not match, or Range was ignored: the whole file.

        if e.body is not None:
            return _send(exchange, 200, e.h200, e.body, head)
        if head:
            return exchange.respond(200, e.h200 + [("Content-Length", str(e.size))], b"")
        if self._sendfile(exchange, 200, e.h200, e.fspath, 0, e.size, e.key):
            return
        return self._retry(exchange, e, retry)

    @staticmethod
    def _not_modified_since(value, e):
        t = _parse_date(value)
        # A date in the future is invalid (RFC 9110 §13.1.3) and ignored.
        return t is not None and e.mtime <= t <= time.time()

    @staticmethod
    def _if_range(value, e):
        """Does If-Range still describe the current file? Strong validators only."""
        value = value.strip()
        if value[:1] == '"' or value[:2] == "W/":
            return not e.weak and value == e.tag
        if e.weak:
            return False
        if value == e.last_modified:
            return True
        return _parse_date(value) == e.mtime

    def _retry(self, exchange, e, retry):
        """The file changed between stat and open: forget it and start over once."""
        self._forget(e)
        if not retry:
            return error(exchange, 503)
        r = self._resolve(exchange.request.path)
        if r.__class__ is int:
            return error(exchange, r)
        if r.__class__ is _Redirect:
            return self._redirect(exchange, r)
        return self._serve(exchange, r, dict(exchange.request.headers), False)

    def _sendfile(self, exchange, status, headers, path, offset, count, key):
        """start() + sendfile() of an open file that is still the version `key`
        describes; False (nothing sent) if it is gone or changed."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return False
        try:
            if _key(os.fstat(fd)) != key:
                os.close(fd)
                return False
            f = os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

        def done(ok):
            f.close()

        try:
            exchange.start(status, list(headers), count)
            exchange.sendfile(f, offset, count, done)
        except BaseException:
            f.close()
            raise
        return True

    def _redirect(self, exchange, r):
        # Built from the normalised segments, never echoing the raw path, so
        # "//evil.example/" style paths cannot make an off-site Location.
        loc = self._loc_base + "".join(quote(s, safe=_PCHAR_SAFE) + "/" for s in r.segs)
        query = exchange.request.query
        if query:
            loc += "?" + query
        body = ('<!DOCTYPE html>\n<html><head><title>301 Moved Permanently</title></head>'
                '<body><a href="%s">%s</a></body></html>\n'
                % (loc.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;"),
                   loc.replace("&", "&amp;").replace("<", "&lt;"))).encode("utf-8")
        headers = [("Location", loc), ("Content-Type", "text/html; charset=utf-8")]
        _send(exchange, 301, headers, body, exchange.request.method == "HEAD")

    # -- gzip of 64 KB..1 MB files, off the loop -----------------------------------------
    def _wait_gzip(self, exchange, e, h):
        """Queue this request until e's gzip bytes exist; False → serve identity."""
        if e.gz_state == GZ_LAZY:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                e.gz_state = GZ_NO
                return False
            e.gz_state = GZ_PENDING
            e.gz_waiters = []
            fut = loop.run_in_executor(None, _compress_file, e.fspath, e.key)
            fut.add_done_callback(partial(self._gzip_done, e))
        e.gz_waiters.append((exchange, h))
        return True

    def _gzip_done(self, e, fut):
        try:
            gz = fut.result()
        except Exception:
            error_log.exception("gzip of %s", e.fspath)
            gz = None
        if gz is not None and _worth_it(gz, e.size):
            e.gz = gz
            e.gz_state = GZ_BYTES
            if self._cache.get(e.path) is e:
                e.nbytes += len(gz)
                self._bytes += len(gz)
                self._trim()
        else:
            e.gz_state = GZ_NO
        waiters, e.gz_waiters = e.gz_waiters or (), None
        for exchange, h in waiters:
            if exchange.closed:
                continue
            try:
                self._serve(exchange, e, h, True)
            except Exception:
                error_log.exception("serving %s", e.fspath)
                if not exchange.head_sent:
                    error(exchange, 500)
