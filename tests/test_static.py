"""The static-files handler, against a real server on a loopback port.

One server (module scope) serves a tree built under a temporary directory:

    www/      mounted at "/"        (default static_max_age → max-age=300)
    s/        mounted at "/static"  (set_max_age 600)
    nc/       mounted at "/nocache" (set_max_age 0 → no-cache)
    both/     mounted at "/both" together with a WSGI app
    outside/, secret.txt            never reachable
"""
import email.utils
import gzip
import http.client
import os
import socket
import sys
import time
import urllib.parse

import pytest

from conftest import ServerProc
from helpers.clients import fetch, read_until_close

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

PAST = int(time.time()) - 10000          # settled files: strong ETags
LM = email.utils.formatdate(PAST, usegmt=True)

SCRIPT = '''
import os, skitaid
HERE = os.path.dirname(os.path.abspath(__file__))

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("APP %s %s" % (environ["REQUEST_METHOD"], environ["PATH_INFO"])).encode()]

skitaid.mount("/", os.path.join(HERE, "www"))
skitaid.mount("/static", os.path.join(HERE, "s"))
skitaid.mount("/nocache", os.path.join(HERE, "nc"))
skitaid.mount("/both", app)
skitaid.mount("/both", os.path.join(HERE, "both"))
skitaid.set_max_age("/static", 600)
skitaid.set_max_age("/nocache", 0)
skitaid.run(address="127.0.0.1", port=int(os.environ["PORT"]))
'''

JS = ("function f(a, b) { return a + b; }\n" * 60).encode()            # ~2 KB
CSS = ("body { margin: 0; padding: 0; color: #333; }\n" * 70).encode()  # ~3 KB
PAGE = b"".join(b"line %05d: the quick brown fox jumps over the lazy dog\n" % i
                for i in range(180))                                      # ~10 KB
MID = b"".join(b"row %06d, lorem ipsum dolor sit amet, consectetur\n" % i
               for i in range(6000))                                      # ~300 KB
HUGE = b"".join(b"row %07d, lorem ipsum dolor sit amet\n" % i
                for i in range(40000))                                    # ~1.5 MB
DATA = bytes(range(256))
BIG = os.urandom(3 * 1000 * 1000)
BIGPRE = os.urandom(150 * 1000).hex().encode()                             # 300 KB text
PRE_JS_GZ = gzip.compress(JS + b"// precompressed\n")
BIGPRE_GZ = gzip.compress(BIGPRE, compresslevel=1)


def write(path, data, mtime=PAST):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    root = str(base)
    www = os.path.join(root, "www")
    w = lambda rel, data, mtime=PAST: write(os.path.join(www, rel), data, mtime)
    w("index.html", b"<h1>home</h1>\n")
    w("hello.txt", b"Hello, world!\n")
    w("data.bin", DATA)
    w("big.bin", BIG)
    w("app.js", JS)
    w("app.js.gz", PRE_JS_GZ, PAST + 10)            # newer than app.js → used
    w("stale.css", CSS)
    w("stale.css.gz", gzip.compress(b"STALE"), PAST - 100)   # older → ignored
    w("page.txt", PAGE)
    w("tiny.txt", b"tiny\n" * 20)
    w("img.png", os.urandom(10000))
    w("mid.txt", MID)
    w("huge.txt", HUGE)
    w("bigpre.js", BIGPRE)
    w("bigpre.js.gz", BIGPRE_GZ, PAST + 10)
    w("sub/index.html", b"<h1>sub</h1>\n")
    w("sub/inner.txt", b"inner\n")
    os.makedirs(os.path.join(www, "empty"))
    w("\u00e9t\u00e9.txt", b"summer\n")
    w("a b.txt", b"space\n")
    for ext in ("js", "mjs", "wasm", "webp", "svg", "json", "woff2", "avif", "css",
                "html", "txt", "png", "weird123"):
        w("types/x." + ext, b"x")
    write(os.path.join(root, "secret.txt"), b"TOPSECRET\n")
    write(os.path.join(root, "outside", "secret.txt"), b"TOPSECRET\n")
    os.symlink(os.path.join(www, "hello.txt"), os.path.join(www, "link_in.txt"))
    os.symlink(os.path.join(root, "secret.txt"), os.path.join(www, "link_out.txt"))
    os.symlink(os.path.join(root, "outside"), os.path.join(www, "linkdir"))
    os.symlink("../secret.txt", os.path.join(www, "sub", "rel_out.txt"))
    write(os.path.join(root, "s", "style.css"), CSS)
    write(os.path.join(root, "nc", "file.txt"), b"no cache\n")
    write(os.path.join(root, "both", "x.txt"), b"static x\n")
    write(os.path.join(root, "both", "index.html"), b"static index\n")
    with open(os.path.join(root, "app.py"), "w") as f:
        f.write(SCRIPT)
    srv = ServerProc([sys.executable, os.path.join(root, "app.py")], root)
    srv.www = www
    srv.root = root
    yield srv
    srv.stop()


# -- helpers ------------------------------------------------------------------------------
class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # lower-case name → value (last one wins)
        self.body = body

    def h(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<Resp %s %r %r>" % (self.status, self.headers, self.body[:80])


def get(site, path, headers=None, method="GET"):
    r = fetch(site.port, path, method, headers=headers)
    return Resp(r.status, {k.lower(): v for k, v in r.headers}, r.body)


def raw(site, request_bytes, timeout=10):
    """Send raw bytes on a new connection, read until the server closes."""
    with socket.create_connection(("127.0.0.1", site.port), timeout=timeout) as s:
        s.sendall(request_bytes)
        data = read_until_close(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Resp(status, headers, body)


def raw_get(site, target, method=b"GET"):
    if isinstance(target, str):
        target = target.encode("latin-1")
    return raw(site, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def still_serving(site):
    r = get(site, "/hello.txt")
    assert r.status == 200 and r.body == b"Hello, world!\n"


# -- basics ---------------------------------------------------------------------------------
def test_small_file_headers(site):
    r = get(site, "/hello.txt")
    assert r.status == 200
    assert r.body == b"Hello, world!\n"
    assert r.h("content-length") == "14"
    assert r.h("content-type") == "text/plain; charset=utf-8"
    assert r.h("accept-ranges") == "bytes"
    assert r.h("last-modified") == LM
    etag = r.h("etag")
    assert etag.startswith('"') and etag.endswith('"')      # strong: the file has settled
    assert r.h("cache-control") == "max-age=300"
    assert r.h("content-encoding") is None
    assert r.h("vary") is None                             # too small to ever be gzipped
    # the same answer again (from the cache)
    r2 = get(site, "/hello.txt")
    assert r2.body == r.body and r2.h("etag") == etag


def test_index_and_max_age(site):
    r = get(site, "/")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n"
    assert r.h("content-type") == "text/html; charset=utf-8"
    r = get(site, "/static/style.css")
    assert r.status == 200 and r.body == CSS
    assert r.h("cache-control") == "max-age=600"
    r = get(site, "/nocache/file.txt")
    assert r.status == 200 and r.h("cache-control") == "no-cache"
    assert get(site, "/nope.txt").status == 404
    assert get(site, "/static/nope.css").status == 404


def test_large_file_sendfile_and_keepalive(site):
    c = http.client.HTTPConnection("127.0.0.1", site.port, timeout=20)
    try:
        for _ in range(2):
            c.request("GET", "/big.bin")
            r = c.getresponse()
            body = r.read()
            assert r.status == 200
            assert r.getheader("content-length") == str(len(BIG))
            assert r.getheader("content-type") == "application/octet-stream"
            assert r.getheader("accept-ranges") == "bytes"
            assert r.getheader("etag")
            assert body == BIG
        c.request("GET", "/hello.txt")          # the connection is still in sync
        assert c.getresponse().read() == b"Hello, world!\n"
    finally:
        c.close()


def test_mime_types(site):
    expect = {
        "js": "text/javascript; charset=utf-8",
        "mjs": "text/javascript; charset=utf-8",
        "wasm": "application/wasm",
        "webp": "image/webp",
        "svg": "image/svg+xml",
        "json": "application/json",
        "woff2": "font/woff2",
        "avif": "image/avif",
        "css": "text/css; charset=utf-8",
        "html": "text/html; charset=utf-8",
        "txt": "text/plain; charset=utf-8",
        "png": "image/png",
        "weird123": "application/octet-stream",
    }
    for ext, ctype in expect.items():
        r = get(site, "/types/x." + ext)
        assert r.status == 200, ext
        assert r.h("content-type") == ctype, ext


def test_encoded_names(site):
    r = get(site, "/%C3%A9t%C3%A9.txt")
    assert r.status == 200 and r.body == b"summer\n"
    r = get(site, "/a%20b.txt")
    assert r.status == 200 and r.body == b"space\n"
    # raw UTF-8 bytes in the request line (not percent-encoded): llhttp rejects
    # them (400); should a protocol pass them on, they name the same file
    r = raw_get(site, "/\u00e9t\u00e9.txt".encode("utf-8"))
    assert r.status == 400 or (r.status == 200 and r.body == b"summer\n")
    still_serving(site)


# -- methods ------------------------------------------------------------------------------------
def test_methods(site):
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        r = get(site, "/hello.txt", method=method, headers={"Content-Length": "0"})
        assert r.status == 405, method
        assert r.h("allow") == "GET, HEAD"
    still_serving(site)


def test_head(site):
    c = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        for path, length in (("/data.bin", 256), ("/big.bin", len(BIG))):
            c.request("HEAD", path)
            r = c.getresponse()
            assert r.status == 200
            assert r.getheader("content-length") == str(length)
            assert r.getheader("etag") and r.getheader("last-modified") == LM
            assert r.read() == b""
        # a gzip HEAD tells the length of the gzip body a GET would get
        c.request("HEAD", "/page.txt", headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        r.read()
        assert r.getheader("content-encoding") == "gzip"
        head_len = int(r.getheader("content-length"))
        c.request("GET", "/page.txt", headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        assert len(r.read()) == head_len
        c.request("HEAD", "/nope")
        r = c.getresponse()
        assert r.status == 404 and r.read() == b""
        # after all those HEADs the connection is in sync (no stray body bytes)
        c.request("GET", "/data.bin")
        r = c.getresponse()
        assert r.status == 200 and r.read() == DATA
    finally:
        c.close()
    # a raw HEAD: nothing after the head
    r = raw_get(site, "/data.bin", method=b"HEAD")
    assert r.status == 200 and r.h("content-length") == "256" and r.body == b""
    r = raw_get(site, "/sub", method=b"HEAD")
    assert r.status == 301 and r.body == b"" and r.h("location").endswith("/sub/")


# -- directories ------------------------------------------------------------------------------
def test_directories(site):
    base = "http://127.0.0.1:%d" % site.port
    r = get(site, "/sub")
    assert r.status == 301
    assert urllib.parse.urljoin(base + "/sub", r.h("location")) == base + "/sub/"
    r = get(site, "/sub?x=1&y=%20")
    assert r.status == 301
    assert urllib.parse.urljoin(base + "/sub", r.h("location")) == base + "/sub/?x=1&y=%20"
    r = get(site, "/sub/")
    assert r.status == 200 and r.body == b"<h1>sub</h1>\n"
    assert r.h("content-type") == "text/html; charset=utf-8"
    assert get(site, "/sub/inner.txt").body == b"inner\n"
    r = get(site, "/static")
    assert r.status == 301
    assert urllib.parse.urljoin(base + "/static", r.h("location")) == base + "/static/"
    # no directory listings
    r = get(site, "/empty")
    assert r.status == 301
    assert get(site, "/empty/").status == 404
    assert get(site, "/static/").status == 404
    # a file is not a directory
    assert get(site, "/hello.txt/").status == 404
    # "//evil.example" style paths never make an off-site Location
    r = raw_get(site, "//sub")
    assert r.status == 301 and r.h("location").startswith("/") and not r.h("location").startswith("//")


# -- conditional requests -------------------------------------------------------------------------
def test_if_none_match(site):
    r = get(site, "/hello.txt")
    etag = r.h("etag")
    for inm in (etag, "W/" + etag, '"nope", ' + etag, '"a",%s,"b"' % etag, "*"):
        r = get(site, "/hello.txt", {"If-None-Match": inm})
        assert r.status == 304, inm
        assert r.body == b""
        assert r.h("etag") == etag
        assert r.h("last-modified") == LM
        assert r.h("cache-control") == "max-age=300"
    r = get(site, "/hello.txt", {"If-None-Match": '"nope"'})
    assert r.status == 200 and r.body == b"Hello, world!\n"
    # If-Modified-Since is ignored when If-None-Match is present
    r = get(site, "/hello.txt", {"If-None-Match": '"nope"', "If-Modified-Since": LM})
    assert r.status == 200
    # big files too
    etag = get(site, "/big.bin", {"Range": "bytes=0-0"}).h("etag")
    r = get(site, "/big.bin", {"If-None-Match": etag})
    assert r.status == 304 and r.body == b""


def test_if_modified_since(site):
    r = get(site, "/hello.txt", {"If-Modified-Since": LM})
    assert r.status == 304 and r.body == b""
    assert r.h("etag") and r.h("cache-control") == "max-age=300"
    later = email.utils.formatdate(PAST + 50, usegmt=True)
    assert get(site, "/hello.txt", {"If-Modified-Since": later}).status == 304
    # RFC 850 and asctime forms are HTTP-dates too
    assert get(site, "/hello.txt", {"If-Modified-Since": time.strftime(
        "%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(PAST))}).status == 304
    earlier = email.utils.formatdate(PAST - 50, usegmt=True)
    r = get(site, "/hello.txt", {"If-Modified-Since": earlier})
    assert r.status == 200 and r.body == b"Hello, world!\n"
    future = email.utils.formatdate(time.time() + 86400 * 2, usegmt=True)
    assert get(site, "/hello.txt", {"If-Modified-Since": future}).status == 200   # invalid
    assert get(site, "/hello.txt", {"If-Modified-Since": "yesterday"}).status == 200


def test_if_match_and_unmodified_since(site):
    etag = get(site, "/hello.txt").h("etag")
    assert get(site, "/hello.txt", {"If-Match": etag}).status == 200
    assert get(site, "/hello.txt", {"If-Match": "*"}).status == 200
    assert get(site, "/hello.txt", {"If-Match": '"nope"'}).status == 412
    assert get(site, "/hello.txt", {"If-Match": "W/" + etag}).status == 412   # strong comparison
    assert get(site, "/hello.txt", {"If-Unmodified-Since": LM}).status == 200
    earlier = email.utils.formatdate(PAST - 50, usegmt=True)
    assert get(site, "/hello.txt", {"If-Unmodified-Since": earlier}).status == 412


# -- ranges ---------------------------------------------------------------------------------------
def test_ranges_small(site):
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=10-": (10, 255),
        "bytes=-5": (251, 255),
        "bytes=250-1000": (250, 255),
        "bytes=-1000": (0, 255),
        "bytes = 3-3": (3, 3),
        "bytes=7-8,": (7, 8),
    }
    for rng, (a, b) in cases.items():
        r = get(site, "/data.bin", {"Range": rng})
        assert r.status == 206, rng
        assert r.h("content-range") == "bytes %d-%d/256" % (a, b), rng
        assert r.h("content-length") == str(b - a + 1)
        assert r.body == DATA[a:b + 1], rng
        assert r.h("etag") and r.h("last-modified") == LM


def test_ranges_large(site):
    n = len(BIG)
    for rng, (a, b) in {"bytes=1000000-1000099": (1000000, 1000099),
                        "bytes=-100": (n - 100, n - 1),
                        "bytes=%d-" % (n - 10): (n - 10, n - 1),
                        "bytes=0-0": (0, 0)}.items():
        r = get(site, "/big.bin", {"Range": rng})
        assert r.status == 206, rng
        assert r.h("content-range") == "bytes %d-%d/%d" % (a, b, n)
        assert r.body == BIG[a:b + 1]


def test_range_unsatisfiable_and_ignored(site):
    for rng in ("bytes=256-", "bytes=1000-2000", "bytes=-0"):
        r = get(site, "/data.bin", {"Range": rng})
        assert r.status == 416, rng
        assert r.h("content-range") == "bytes */256"
    r = get(site, "/big.bin", {"Range": "bytes=%d-" % len(BIG)})
    assert r.status == 416 and r.h("content-range") == "bytes */%d" % len(BIG)
    # several ranges: we answer 200 with the whole file (allowed by RFC 9110 §14.2)
    # invalid or non-bytes ranges are ignored
    for rng in ("bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=x-y", "bytes=1"):
        r = get(site, "/data.bin", {"Range": rng})
        assert r.status == 200, rng
        assert r.body == DATA
    still_serving(site)


def test_if_range(site):
    r = get(site, "/data.bin")
    etag = r.h("etag")
    assert get(site, "/data.bin", {"Range": "bytes=0-3", "If-Range": etag}).status == 206
    assert get(site, "/data.bin", {"Range": "bytes=0-3", "If-Range": LM}).status == 206
    r = get(site, "/data.bin", {"Range": "bytes=0-3", "If-Range": '"other"'})
    assert r.status == 200 and r.body == DATA
    r = get(site, "/data.bin", {"Range": "bytes=0-3", "If-Range": "W/" + etag})
    assert r.status == 200                  # weak validators never match If-Range
    earlier = email.utils.formatdate(PAST - 50, usegmt=True)
    r = get(site, "/data.bin", {"Range": "bytes=0-3", "If-Range": earlier})
    assert r.status == 200 and r.body == DATA
    # a range that If-Range allows can still be unsatisfiable
    r = get(site, "/data.bin", {"Range": "bytes=300-", "If-Range": etag})
    assert r.status == 416
    # big file, matching If-Range
    etag = get(site, "/big.bin", {"Range": "bytes=0-0"}).h("etag")
    r = get(site, "/big.bin", {"Range": "bytes=5-9", "If-Range": etag})
    assert r.status == 206 and r.body == BIG[5:10]


def test_head_ignores_range(site):
    r = raw(site, b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n")
    assert r.status == 200 and r.h("content-length") == "256" and r.body == b""


# -- gzip --------------------------------------------------------------------------------------------
def test_precompressed(site):
    r = get(site, "/app.js", {"Accept-Encoding": "gzip, deflate, br"})
    assert r.status == 200
    assert r.h("content-encoding") == "gzip"
    assert r.h("vary") == "Accept-Encoding"
    assert r.h("content-type") == "text/javascript; charset=utf-8"
    assert r.body == PRE_JS_GZ                      # the .gz file, byte for byte
    assert r.h("accept-ranges") is None             # ranges only over the identity form
    gz_etag = r.h("etag")
    r = get(site, "/app.js")
    assert r.status == 200 and r.body == JS and r.h("content-encoding") is None
    assert r.h("vary") == "Accept-Encoding"
    assert r.h("etag") != gz_etag                    # two representations, two ETags
    # 304 for the gzip variant carries its own ETag and Vary
    r = get(site, "/app.js", {"Accept-Encoding": "gzip", "If-None-Match": gz_etag})
    assert r.status == 304 and r.h("etag") == gz_etag and r.h("vary") == "Accept-Encoding"
    # big precompressed file (sent with sendfile)
    r = get(site, "/bigpre.js", {"Accept-Encoding": "gzip"})
    assert r.h("content-encoding") == "gzip" and r.body == BIGPRE_GZ
    r = raw(site, b"HEAD /bigpre.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                  b"Connection: close\r\n\r\n")
    assert r.h("content-length") == str(len(BIGPRE_GZ)) and r.body == b""
    assert get(site, "/bigpre.js").body == BIGPRE


def test_accept_encoding_negotiation(site):
    cases = {
        "gzip": True, "GZIP": True, "deflate, gzip;q=0.5": True, "*": True,
        "x-gzip": True, "br;q=1.0, gzip;q=0.8, *;q=0.1": True,
        "gzip;q=0": False, "gzip; q=0.000": False, "gzip;q=0, *": False,
        "identity": False, "deflate, br": False, "*;q=0": False, "": False,
    }
    for ae, gz in cases.items():
        r = get(site, "/page.txt", {"Accept-Encoding": ae})
        assert r.status == 200
        assert (r.h("content-encoding") == "gzip") is gz, ae
        assert r.h("vary") == "Accept-Encoding"
        assert (gzip.decompress(r.body) if gz else r.body) == PAGE


def test_stale_precompressed_is_ignored(site):
    r = get(site, "/stale.css", {"Accept-Encoding": "gzip"})
    assert r.h("content-encoding") == "gzip"           # gzipped on the fly instead
    assert gzip.decompress(r.body) == CSS


def test_gzip_on_the_fly(site):
    # small (cached content), medium (compressed once in the executor)
    for path, content in (("/page.txt", PAGE), ("/mid.txt", MID), ("/mid.txt", MID)):
        r = get(site, path, {"Accept-Encoding": "gzip"})
        assert r.status == 200
        assert r.h("content-encoding") == "gzip", path
        assert int(r.h("content-length")) == len(r.body) < len(content) // 2
        assert gzip.decompress(r.body) == content
    # not compressible, too small or too big: never gzipped
    for path in ("/img.png", "/tiny.txt", "/huge.txt", "/big.bin"):
        r = get(site, path, {"Accept-Encoding": "gzip"})
        assert r.status == 200 and r.h("content-encoding") is None, path
    assert get(site, "/huge.txt", {"Accept-Encoding": "gzip"}).body == HUGE
    assert get(site, "/img.png").h("vary") is None


def test_no_gzip_for_ranges(site):
    for path, content in (("/page.txt", PAGE), ("/app.js", JS), ("/mid.txt", MID)):
        r = get(site, path, {"Accept-Encoding": "gzip", "Range": "bytes=10-19"})
        assert r.status == 206, path
        assert r.h("content-encoding") is None
        assert r.body == content[10:20]


# -- safety ------------------------------------------------------------------------------------------
TRAVERSALS = [
    "/static/../../etc/passwd",
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/static/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/sub/..\\..\\secret.txt",
    "/static/%2e%2e/www/hello.txt",     # climbing out of one mount into another
    "/link_out.txt",
    "/linkdir/secret.txt",
    "/linkdir",
    "/linkdir/",
    "/sub/rel_out.txt",
    "//etc/passwd",
    "/%2fetc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_impossible(site, target):
    r = raw_get(site, target)
    assert r.status in (400, 404), (target, r)
    assert b"TOPSECRET" not in r.body
    assert b"root:" not in r.body
    still_serving(site)


@pytest.mark.parametrize("target", [
    "/hello.txt%00", "/hello.txt%00.png", "/%00", "/sub/%00/x",
    "/%ff.txt", "/%c3%28.txt", "/%e9t%e9.txt",
])
def test_bad_encoding_is_400(site, target):
    r = raw_get(site, target)
    assert r.status == 400, (target, r)
    still_serving(site)


def test_dot_segments_are_normalised_inside_root(site):
    for target in ("/sub/../hello.txt", "/./hello.txt", "/sub/%2e%2e/hello.txt",
                   "//hello.txt", "/sub/./../hello.txt"):
        r = raw_get(site, target)
        assert r.status == 200 and r.body == b"Hello, world!\n", target


def test_symlink_inside_root_is_served(site):
    r = get(site, "/link_in.txt")
    assert r.status == 200 and r.body == b"Hello, world!\n"


# -- the router's find(): static files win over an app at the same prefix ----------------------------
def test_static_and_app_at_same_prefix(site):
    r = get(site, "/both/x.txt")
    assert r.status == 200 and r.body == b"static x\n"
    r = get(site, "/both/")
    assert r.status == 200 and r.body == b"static index\n"
    r = get(site, "/both/missing")
    assert r.status == 200 and r.body.startswith(b"APP GET")
    r = get(site, "/both/x.txt", method="POST", headers={"Content-Length": "0"})
    assert r.status == 200 and r.body.startswith(b"APP POST")
    r = get(site, "/both/%00")
    assert r.body.startswith(b"APP") or r.status == 400


# -- cache coherence ------------------------------------------------------------------------------------
def test_changed_file_is_noticed(site):
    path = os.path.join(site.www, "changing.txt")
    write(path, b"version 1\n")
    r1 = get(site, "/changing.txt")
    assert r1.body == b"version 1\n"
    write(path, b"version 2, longer\n", PAST + 100)
    r2 = get(site, "/changing.txt")
    assert r2.body == b"version 2, longer\n"
    assert r2.h("etag") != r1.h("etag")
    assert get(site, "/changing.txt", {"If-None-Match": r1.h("etag")}).status == 200
    # grows past the small-file limit: now sent with sendfile
    write(path, BIGPRE, PAST + 200)
    r3 = get(site, "/changing.txt")
    assert r3.body == BIGPRE
    # shrinks again
    write(path, b"v4\n", PAST + 300)
    assert get(site, "/changing.txt").body == b"v4\n"
    os.unlink(path)
    assert get(site, "/changing.txt").status == 404
    # a directory index that appears later
    os.makedirs(os.path.join(site.www, "later"))
    assert get(site, "/later/").status == 404
    write(os.path.join(site.www, "later", "index.html"), b"later\n")
    assert get(site, "/later/").body == b"later\n"


def test_fresh_file_gets_weak_etag(site):
    path = os.path.join(site.www, "fresh.txt")
    with open(path, "wb") as f:
        f.write(b"just written\n")
    r = get(site, "/fresh.txt")
    assert r.status == 200 and r.body == b"just written\n"
    etag = r.h("etag")
    assert etag.startswith('W/"')
    # weak comparison for If-None-Match still works
    assert get(site, "/fresh.txt", {"If-None-Match": etag}).status == 304
    # but a weak validator cannot make a range conditional
    r = get(site, "/fresh.txt", {"Range": "bytes=0-3", "If-Range": etag})
    assert r.status == 200
    os.utime(path, (PAST, PAST))
    r = get(site, "/fresh.txt")
    assert r.h("etag").startswith('"')


# (the range and path rules without a server: tests/unit/test_static_rules.py)
