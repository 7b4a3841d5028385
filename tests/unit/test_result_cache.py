"""The per-worker corequest result cache (skitaid/corequest/cache.py)."""
import time

import pytest

from skitaid.corequest import cache as cachemod
from skitaid.corequest.cache import LazyKey, ResultCache, cache_threshold, max_age


class Clock:
    def __init__(self, monkeypatch):
        self.now = 1000.0
        monkeypatch.setattr(cachemod.time, "time", lambda: self.now)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def test_a_stored_result_is_found_until_it_expires(clock):
    c = ResultCache()
    c.put("k", "result", 10)
    assert c.get("k") == "result"
    clock.now += 9.9
    assert c.get("k") == "result"
    clock.now += 0.2
    assert c.get("k") is None and len(c) == 0      # and forgotten


def test_an_entry_older_than_the_last_update_is_refused(clock):
    c = ResultCache()
    c.put("k", "old", 60)
    stored = clock.now
    assert c.get("k", newer_than=stored - 1) == "old"
    assert c.get("k", newer_than=stored) is None    # updated at (or after) the store
    assert c.get("k") is None


def test_the_least_recently_used_entry_goes_first(clock):
    c = ResultCache(max_entries=2)
    c.put("a", 1, 60)
    c.put("b", 2, 60)
    assert c.get("a") == 1          # a is now the most recent
    c.put("c", 3, 60)
    assert (c.get("a"), c.get("b"), c.get("c")) == (1, None, 3) and len(c) == 2


def test_a_cache_of_size_zero_keeps_nothing(clock):
    c = ResultCache(max_entries=0)
    c.put("a", 1, 60)
    assert c.get("a") is None and len(c) == 0


def test_a_lazy_key_is_made_once_and_only_when_asked():
    calls = []
    key = LazyKey(lambda: calls.append(1) or ("GET", "/x"))
    assert calls == []
    assert key() == ("GET", "/x") and key() == ("GET", "/x") and calls == [1]


@pytest.mark.parametrize("use_cache, expected", [
    (False, None), (None, None), (True, 0.0), (5, 5.0), (12.5, 12.5),
])
def test_cache_threshold(use_cache, expected):
    assert cache_threshold(use_cache, "srv") == expected


@pytest.mark.parametrize("headers, seconds", [
    ([("Cache-Control", "max-age=60")], 60),
    ([("cache-control", "public, max-age=60, s-maxage=120")], 120),
    ([("Cache-Control", 'max-age="30"')], 30),
    ([("Cache-Control", "max-age=60, private")], 0),
    ([("Cache-Control", "no-store")], 0),
    ([("Cache-Control", "no-cache, max-age=60")], 0),
    ([("Cache-Control", "max-age=soon")], 0),
    ([("Cache-Control", "public")], 0),
    ([], 0),
    ([("Expires", "not a date")], 0),
    ([("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], 0),     # in the past
    ([("Cache-Control", "max-age=5"), ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], 5),
])
def test_max_age(headers, seconds):
    assert max_age(headers) == seconds


def test_max_age_from_a_future_expires():
    from email.utils import formatdate
    got = max_age([("Expires", formatdate(time.time() + 100, usegmt=True))])
    assert 98 <= got <= 100
