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


def test_an_exact_name_wins_over_any_suffix_whatever_the_order():
    table = HostTable([((".example.com",), "domain"), (("a.example.com",), "exact")])
    assert table.lookup("a.example.com") == "exact"
    assert table.lookup("b.example.com") == "domain"


def test_the_longest_suffix_wins_whatever_the_order():
    table = HostTable([((".com",), "com"), ((".example.com",), "example"),
                       (("*.b.example.com",), "b")])
    assert [table.lookup(h) for h in ("x.com", "a.example.com", "x.b.example.com",
                                      "b.example.com")] == ["com", "example", "b", "example"]


def test_the_first_entry_wins_a_tie():
    table = HostTable([(("a.test",), 1), (("a.test",), 2), (("default",), 3), (("*",), 4)])
    assert table.lookup("a.test") == 1 and table.lookup("b.test") == 3


def test_a_port_is_not_stripped_by_the_table():
    # (callers strip it: a table holds host names only)
    table = HostTable([(("a.test",), 1)])
    assert table.lookup("a.test:80") is None
