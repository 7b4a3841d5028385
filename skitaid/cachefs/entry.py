"""A stored response, and the bytes it is kept as on disk.

File layout: MAGIC, meta length (4), body length (8), CRC-32 of meta+body (4),
then the meta (JSON) and the body. A file shorter than its lengths say, or
whose checksum does not match, is not an entry (decode() → None): a partly
written or damaged file is a miss, never a wrong answer.
"""
import json
import struct
import zlib

from . import rules

MAGIC = b"SKC1"
_HEAD = struct.Struct(">4sIQI")
HEAD_SIZE = _HEAD.size


class Entry:
    __slots__ = ("key", "url", "status", "reason", "headers", "body", "request_time",
                 "response_time", "stored", "vary", "_lifetime", "_initial_age", "_no_cache",
                 "served")

    def __init__(self, key, url, status, reason, headers, body, request_time, response_time,
                 stored, vary=None):
        self.key = key                  # the variant's key (the base key + vary values)
        self.url = url                  # host + target, for purge by prefix
        self.status = status
        self.reason = reason
        self.headers = headers          # [(name, value)] as the origin sent them (no framing)
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.stored = stored            # when it was written: setlu thresholds compare this
        self.vary = vary                # a Vary record: the names, and no response
        self._lifetime = -1
        self._initial_age = None    # corrected initial age (RFC 9111 4.2.3), on first use
        self._no_cache = None
        self.served = None          # the headers a hit sends, made once (store.Cache)

    @classmethod
    def vary_record(cls, key, url, names, now):
        return cls(key, url, 0, "", [], b"", now, now, now, list(names))

    @property
    def size(self):
        return len(self.body) + sum(len(k) + len(v) + 4 for k, v in self.headers) + 200

    def lifetime(self):
        if self._lifetime == -1:
            value = rules.freshness_lifetime(self.headers, self.response_time)
            self._lifetime = 0 if value is None else value
        return self._lifetime

    def age(self, now):
        if self._initial_age is None:
            self._initial_age = rules.current_age(self.headers, self.request_time,
                                                  self.response_time, self.response_time)
        return self._initial_age + max(0.0, now - self.response_time)

    def fresh(self, now):
        if self._no_cache is None:
            self._no_cache = rules.must_revalidate(self.headers)
        return not self._no_cache and self.age(now) < self.lifetime()

    def staleness(self, now):
        """Seconds past its freshness (0 while fresh)."""
        return max(0.0, self.age(now) - self.lifetime())

    def refreshed(self, headers, request_time, response_time, stored):
        """This entry after a 304 with `headers`."""
        return Entry(self.key, self.url, self.status, self.reason,
                     rules.refreshed_headers(self.headers, headers), self.body,
                     request_time, response_time, stored)

    def encode(self):
        meta = json.dumps({"key": self.key, "url": self.url, "status": self.status,
                           "reason": self.reason, "headers": self.headers,
                           "request_time": self.request_time,
                           "response_time": self.response_time, "stored": self.stored,
                           "vary": self.vary}, separators=(",", ":")).encode("utf-8")
        crc = zlib.crc32(self.body, zlib.crc32(meta))
        return _HEAD.pack(MAGIC, len(meta), len(self.body), crc) + meta + self.body


def decode(data):
    """bytes of a file → Entry, or None when they are not a whole, intact entry."""
    if len(data) < HEAD_SIZE:
        return None
    magic, meta_len, body_len, crc = _HEAD.unpack_from(data)
    if magic != MAGIC or len(data) != HEAD_SIZE + meta_len + body_len:
        return None
    mv = memoryview(data)
    meta = mv[HEAD_SIZE:HEAD_SIZE + meta_len]
    body = mv[HEAD_SIZE + meta_len:]
    if zlib.crc32(body, zlib.crc32(meta)) != crc:
        return None
    try:
        m = json.loads(bytes(meta))
        return Entry(m["key"], m["url"], m["status"], m["reason"],
                     [tuple(h) for h in m["headers"]], bytes(body), m["request_time"],
                     m["response_time"], m["stored"], m.get("vary"))
    except (ValueError, KeyError, TypeError):
        return None


def read_meta(data):
    """The meta of an entry's first bytes (purge reads no bodies), or None."""
    if len(data) < HEAD_SIZE:
        return None
    magic, meta_len, _, _ = _HEAD.unpack_from(data)
    if magic != MAGIC or len(data) < HEAD_SIZE + meta_len:
        return None
    try:
        return json.loads(bytes(data[HEAD_SIZE:HEAD_SIZE + meta_len]))
    except ValueError:
        return None
