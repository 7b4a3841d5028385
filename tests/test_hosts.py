"""The host-name table SNI picks certificates with (skitaid/hosts.py)."""
import pytest

from skitaid.hosts import HostTable

TABLE = HostTable([
    (("www.example.com",), "exact"),
    ((".example.com",), "domain"),
    (("*.api.example.com",), "api-subs"),
    (("*.wild.test", "Other.Test."), "wild"),
    (("default",), "fallback"),
    (("*",), "second fallback"),
    ((".example.com",), "later duplicate"),
])


@pytest.mark.parametrize("host, expected", [
    ("www.example.com", "exact"),
    ("WWW.Example.COM.", "exact"),          # case and a trailing dot do not matter
    ("example.com", "domain"),              # .suffix: the domain itself
    ("a.b.example.com", "domain"),          # ... and any subdomain
    ("x.api.example.com", "api-subs"),      # the longest suffix wins
    ("api.example.com", "domain"),          # *.suffix: subdomains only
    ("x.wild.test", "wild"),
    ("wild.test", "fallback"),
    ("other.test", "wild"),
    ("notexample.com", "fallback"),         # a suffix matches at a dot only
    ("", "fallback"),
])
def test_lookup(host, expected):
    assert TABLE.lookup(host) == expected


def test_without_fallback():
    table = HostTable([((".example.com",), 1)])
    assert table.lookup("unknown.org") is None
    assert table.lookup("unknown.org", default=0) == 0
    assert table and not HostTable()
