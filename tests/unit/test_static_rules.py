"""Static files' HTTP rules (skitaid/handlers/static.py): Range parsing,
entity-tag comparison, dates, Accept-Encoding, and the order in which the
conditionals apply, through a fake exchange over files in a temporary
directory (no server)."""
import os
import time
from email.utils import formatdate

import pytest

from skitaid.exchange import Request
from skitaid.handlers.static import (_UNSATISFIABLE, StaticHandler, _accepts_gzip, _parse_date,
                                     _parse_range, _strong_match, _weak_match)

PAST = int(time.time()) - 3600


# -- pure rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, size, expected", [
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=2-5", 10, (2, 5)),
    ("bytes=2-", 10, (2, 9)),
    ("bytes=5-100", 10, (5, 9)),            # clipped to the end
    ("bytes=-3", 10, (7, 9)),               # the last three
    ("bytes=-20", 10, (0, 9)),
    ("BYTES = 1-2", 10, (1, 2)),
    ("bytes=10-", 10, _UNSATISFIABLE),      # starts past the end
    ("bytes=0-", 0, _UNSATISFIABLE),
    ("bytes=-0", 10, _UNSATISFIABLE),
    ("bytes=-1", 0, _UNSATISFIABLE),
    ("bytes=5-2", 10, None),                # invalid: ignored
    ("bytes=0-1, 3-4", 10, None),           # several ranges: the whole file instead
    ("items=0-1", 10, None),
    ("bytes", 10, None),
    ("bytes=x-1", 10, None),
    ("bytes=1", 10, None),
    ("bytes=\u0661-2", 10, None),           # non-ASCII digits
    ("bytes=" + "9" * 5000 + "-", 10, None),
])
def test_parse_range(value, size, expected):
    assert _parse_range(value, size) == expected


@pytest.mark.parametrize("value, matches", [
    ('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True),
    ('"abcd"', False), ('abc', False), ('"ABC"', False),
])
def test_if_none_match_compares_weakly(value, matches):
    assert _weak_match(value, '"abc"') is matches


def test_if_match_compares_strongly():
    assert _strong_match('"abc"', '"abc"', weak=False)
    assert _strong_match('"x" , "abc"', '"abc"', weak=False)
    assert not _strong_match('W/"abc"', '"abc"', weak=False)
    assert not _strong_match('"abc"', '"abc"', weak=True)    # a weak tag never matches strongly
    assert _strong_match("*", '"abc"', weak=True)


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
])
def test_the_three_http_date_formats(value):
    assert _parse_date(value) == 784111777


@pytest.mark.parametrize("value", ["", "yesterday", "06 Nov"])
def test_invalid_dates_are_none(value):
    assert _parse_date(value) is None


@pytest.mark.parametrize("value, ok", [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("GZIP", True), ("x-gzip", True),
    ("gzip;q=0", False), ("br", False), ("*", True), ("*;q=0", False),
    ("gzip;q=0, *", False), ("gzip;q=bad", False), ("identity", False),
])
def test_accept_encoding(value, ok):
    assert _accepts_gzip(value) is ok


def test_parse_path(tmp_path):
    h = StaticHandler(str(tmp_path), "/static")
    assert h._parse("/static") == ([], False)
    assert h._parse("/static/") == ([], True)
    assert h._parse("/static/a/b/") == (["a", "b"], True)
    assert h._parse("/static/a/%2e%2e/b") == (["b"], False)
    assert h._parse("/static/a/..") == ([], True)
    assert h._parse("/static/..") == 404
    assert h._parse("/staticx/a") == 404
    assert h._parse("/static/a%2fb") == 404
    assert h._parse("/static/a%00") == 400
    assert h._parse("/static/%C3%A9") == (["\u00e9"], False)
    assert h._parse("/static/\u00c3\u00a9") == (["\u00e9"], False)   # latin-1 view of raw UTF-8


# -- the conditionals, through the handler ----------------------------------------------------------

class FakeExchange:
    """Records the one response a handler gives."""

    def __init__(self, method, path, headers):
        self.request = Request(method, path, path, "", "1.1",
                               [(k.lower(), v) for k, v in headers.items()], "http",
                               ("127.0.0.1", 1), ("127.0.0.1", 80))
        self.closed = False
        self.head_sent = False
        self.answer = None

    def respond(self, status, headers, body=b""):
        assert self.answer is None, "answered twice"
        self.head_sent = True
        self.answer = (status, dict(headers), body)


@pytest.fixture
def files(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"0123456789")
    os.utime(str(path), (PAST, PAST))
    return StaticHandler(str(tmp_path), "/", gzip=False)


def serve(handler, headers=None, method="GET", path="/f.txt"):
    ex = FakeExchange(method, path, headers or {})
    handler.handle(ex, handler.find(ex.request))
    status, hdrs, body = ex.answer
    return status if isinstance(status, int) else int(status[:3]), hdrs, body


def validators(handler):
    _, h, _ = serve(handler)
    return h["ETag"], h["Last-Modified"]


def test_a_plain_get(files):
    status, h, body = serve(files)
    assert (status, body) == (200, b"0123456789")
    assert h["ETag"].startswith('"') and h["Last-Modified"] == formatdate(PAST, usegmt=True)
    assert h["Accept-Ranges"] == "bytes"


def test_if_none_match_304_and_if_modified_since_304(files):
    etag, lm = validators(files)
    assert serve(files, {"If-None-Match": etag})[0] == 304
    assert serve(files, {"If-None-Match": "W/" + etag})[0] == 304
    assert serve(files, {"If-Modified-Since": lm})[0] == 304
    assert serve(files, {"If-Modified-Since": formatdate(PAST + 10, usegmt=True)})[0] == 304
    assert serve(files, {"If-Modified-Since": formatdate(PAST - 10, usegmt=True)})[0] == 200


def test_if_none_match_wins_over_if_modified_since(files):
    _, lm = validators(files)
    assert serve(files, {"If-None-Match": '"other"', "If-Modified-Since": lm})[0] == 200


def test_an_if_modified_since_in_the_future_is_ignored(files):
    future = formatdate(time.time() + 86400, usegmt=True)
    assert serve(files, {"If-Modified-Since": future})[0] == 200


def test_if_match_and_if_unmodified_since_412(files):
    etag, lm = validators(files)
    assert serve(files, {"If-Match": etag})[0] == 200
    assert serve(files, {"If-Match": '"other"'})[0] == 412
    # If-Match is checked first: a failing one wins over a matching If-None-Match
    assert serve(files, {"If-Match": '"other"', "If-None-Match": etag})[0] == 412
    assert serve(files, {"If-Unmodified-Since": formatdate(PAST - 10, usegmt=True)})[0] == 412
    assert serve(files, {"If-Unmodified-Since": lm})[0] == 200
    # with If-Match present, If-Unmodified-Since is not looked at
    assert serve(files, {"If-Match": etag,
                         "If-Unmodified-Since": formatdate(PAST - 10, usegmt=True)})[0] == 200


def test_range_206_and_416(files):
    status, h, body = serve(files, {"Range": "bytes=2-4"})
    assert (status, body, h["Content-Range"]) == (206, b"234", "bytes 2-4/10")
    status, h, _ = serve(files, {"Range": "bytes=10-"})
    assert (status, h["Content-Range"]) == (416, "bytes */10")
    assert serve(files, {"Range": "bytes=0-1,4-5"})[:3:2] == (200, b"0123456789")


def test_range_with_if_range(files):
    etag, lm = validators(files)
    assert serve(files, {"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    assert serve(files, {"Range": "bytes=0-0", "If-Range": lm})[0] == 206
    # a validator that no longer describes the file: the whole file
    assert serve(files, {"Range": "bytes=0-0", "If-Range": '"old"'})[:3:2] == (200, b"0123456789")
    assert serve(files, {"Range": "bytes=0-0",
                         "If-Range": formatdate(PAST - 10, usegmt=True)})[0] == 200


def test_head_ignores_range_and_sends_the_length_only(files):
    status, h, body = serve(files, {"Range": "bytes=0-1"}, method="HEAD")
    assert (status, body, h["Content-Length"]) == (200, b"", "10")


def test_a_recently_written_file_has_a_weak_etag_that_never_matches_strongly(files, tmp_path):
    fresh = tmp_path / "fresh.txt"
    fresh.write_bytes(b"new")
    _, h, _ = serve(files, path="/fresh.txt")
    assert h["ETag"].startswith('W/"')
    assert serve(files, {"If-Match": h["ETag"][2:]}, path="/fresh.txt")[0] == 412
    assert serve(files, {"Range": "bytes=0-0", "If-Range": h["ETag"]},
                 path="/fresh.txt")[0] == 200


def test_other_methods_are_405(files):
    status, h, _ = serve(files, method="POST")
    assert (status, h["Allow"]) == (405, "GET, HEAD")
