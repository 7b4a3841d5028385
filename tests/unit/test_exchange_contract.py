"""The Exchange contract is complete: handlers call its methods instead of
probing for them, so every protocol's exchange answers each one."""
from skitaid.exchange import Exchange
from skitaid.protocols.base import Tracked
from skitaid.protocols.forward import ForwardConnection
from skitaid.protocols.h1 import H1Connection, H1Exchange
from skitaid.protocols.h2 import H2Connection, H2Exchange
from skitaid.protocols.tunnel import Tunnel
from skitaid.protocols.wsconn import WSConnection

METHODS = ("respond", "start", "write", "sendfile", "finish", "abort", "writing_paused",
           "drain", "can_switch", "switch_protocol", "push", "can_push", "set_trailers")


def test_the_base_says_cannot_where_a_protocol_cannot():
    ex = Exchange()
    assert ex.head_sent is False and ex.closed is False
    assert ex.can_switch() is False
    assert ex.switch_protocol([], object()) is False
    assert ex.can_push() is False and ex.push("/x") is False


def test_every_exchange_implements_the_whole_contract():
    for cls in (H1Exchange, H2Exchange):
        for name in METHODS:
            assert callable(getattr(cls, name)), (cls, name)
        assert cls.abort is not Exchange.abort, cls


def test_only_http1_can_switch_protocols():
    assert H1Exchange.can_switch(None) is True
    assert H2Exchange.can_switch(None) is False


def test_everything_the_worker_tracks_reports_its_running_exchanges():
    for cls in (H1Connection, H2Connection, WSConnection, Tunnel, ForwardConnection):
        assert issubclass(cls, Tracked), cls
    assert Tunnel.in_flight(None) == ()


def test_what_a_protocol_can_do_is_declared_not_guessed_from_its_version():
    assert (H1Exchange.supports_push, H1Exchange.supports_trailers) == (False, False)
    assert (H2Exchange.supports_push, H2Exchange.supports_trailers) == (True, True)
    assert not hasattr(H2Exchange, "wsgi_environ")     # WSGI keys are the handler's
