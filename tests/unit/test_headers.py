"""Header-field rules shared by the protocols, the proxy and the clients (skitaid/http/headers.py)."""
import pytest

from skitaid.http.headers import (BODY_METHODS, FORBIDDEN_IN_TRAILERS, HOP_BY_HOP, bad_value,
                                  header_tokens, host_without_port, is_request_target, is_token,
                                  trailer_fields)


@pytest.mark.parametrize("value, bad", [
    ("plain", False), ("with space and\ttab", False), ("é", False),
    ("a\rb", True), ("a\nb", True), ("a\x00b", True), ("\r\n", True),
])
def test_bad_value(value, bad):
    assert bad_value(value) is bad


def test_header_tokens():
    assert header_tokens("Keep-Alive, Upgrade ,close") == {"keep-alive", "upgrade", "close"}
    assert header_tokens("h2c") == {"h2c"}


@pytest.mark.parametrize("host, expected", [
    ("Example.COM", "example.com"), ("example.com:8080", "example.com"),
    ("[::1]:80", "[::1]"), ("[::1]", "[::1]"), ("", ""),
])
def test_host_without_port(host, expected):
    assert host_without_port(host) == expected


@pytest.mark.parametrize("name, ok", [
    ("Content-Type", True), ("x-a_b.c~!#$%&'*+^`|", True), ("", False),
    ("a b", False), ("a:b", False), ("é", False), ("a\r", False), ("(x)", False),
])
def test_is_token(name, ok):
    assert is_token(name) is ok


@pytest.mark.parametrize("target, ok", [
    ("/a?b=c", True), ("*", True), ("http://x/y", True), ("", False), ("/a b", False),
    ("/a\tb", False), ("/é", False), ("/\x7f", False),
])
def test_is_request_target(target, ok):
    assert is_request_target(target) is ok


def test_trailer_fields_drop_what_may_not_stand_in_a_trailer():
    fields = [("x-checksum", "1"), ("content-length", "5"), ("host", "evil"),
              ("authorization", "x"), ("set-cookie", "a=b"), ("x-other", "2")]
    assert trailer_fields(fields) == [("x-checksum", "1"), ("x-other", "2")]


def test_the_sets():
    assert {"connection", "transfer-encoding", "upgrade", "te", "keep-alive"} <= HOP_BY_HOP
    assert "content-type" not in HOP_BY_HOP
    # framing and routing can never be restated after the body
    assert {"content-length", "transfer-encoding", "host", "trailer"} <= FORBIDDEN_IN_TRAILERS
    assert BODY_METHODS == {"POST", "PUT", "PATCH"}
