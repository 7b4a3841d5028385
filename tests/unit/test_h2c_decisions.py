"""The h2c hand-off decides from bytes and heads alone; the HTTP/1.1
connection keeps its own state and calls switch_to_h2() when told yes."""
from skitaid.exchange import Request
from skitaid.protocols import h2c
from skitaid.protocols.h1 import H1Connection

FULL = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_the_preface_is_told_from_its_first_bytes():
    assert h2c.preface(FULL) is True
    assert h2c.preface(b"PRI * HT") is None          # a prefix: wait for more
    assert h2c.preface(b"") is None
    assert h2c.preface(b"GET / HTTP/1.1\r\n") is False
    assert h2c.preface(b"PRX") is False


def _upgrade(headers, method="GET"):
    req = Request(method, "/", "/", "", "1.1", headers, "http", ("127.0.0.1", 1), None)
    return req


def test_an_upgrade_needs_one_settings_header_named_in_connection_and_an_idle_connection():
    good = [("upgrade", "h2c"), ("connection", "Upgrade, HTTP2-Settings"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")]
    assert h2c.wants_upgrade(_upgrade(good), idle=True)
    assert not h2c.wants_upgrade(_upgrade(good), idle=False)
    assert not h2c.wants_upgrade(_upgrade(good, "CONNECT"), idle=True)
    assert not h2c.wants_upgrade(_upgrade(good + [good[2]]), idle=True)
    assert not h2c.wants_upgrade(_upgrade(good[:1] + good[2:]), idle=True)
    assert not h2c.wants_upgrade(_upgrade([("upgrade", "websocket")] + good[1:]), idle=True)


def test_the_hand_off_is_a_public_method():
    assert callable(H1Connection.hand_off)
    assert not hasattr(H1Connection, "_hand_off")
