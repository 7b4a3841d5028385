"""The worker contract is explicit: a connection uses only what
`ConnectionHost` declares of its worker, the WSGI handler only what
`WSGIHost` declares, and the worker satisfies both."""
import os
import re
import types

from skitaid.config.model import ServerConfig
from skitaid.handlers import wsgi
from skitaid.handlers.wsgi import WSGIHost
from skitaid.protocols.host import ConnectionHost
from skitaid.worker.worker import Worker

PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOCOLS = os.path.join(PACKAGE, "skitaid", "protocols")


def members(protocol):
    names = set()
    for cls in protocol.__mro__:
        if cls.__module__ in ("typing", "builtins"):
            continue
        names |= set(getattr(cls, "__annotations__", {}))
        names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names


def used(source, name):
    """Members of `name` (e.g. `worker`, `self.worker`) the source reads or calls."""
    return set(re.findall(r"\b%s\.([A-Za-z_]\w*)" % re.escape(name), source))


def test_connections_use_only_what_the_host_contract_declares():
    allowed = members(ConnectionHost)
    for fname in sorted(os.listdir(PROTOCOLS)):
        if not fname.endswith(".py"):
            continue
        with open(os.path.join(PROTOCOLS, fname)) as f:
            source = f.read()
        extra = (used(source, "worker") | used(source, "conn.worker")) - allowed
        assert not extra, "protocols/%s uses worker members %s that ConnectionHost " \
                          "does not declare" % (fname, sorted(extra))


def test_the_wsgi_handler_uses_only_what_its_host_contract_declares():
    with open(wsgi.__file__) as f:
        source = f.read()
    assert "worker" not in used(source, "self") and not used(source, "worker")
    extra = (used(source, "host") | used(source, "self.host")) - members(WSGIHost)
    assert not extra, extra


def test_the_worker_satisfies_both_contracts():
    worker = Worker(ServerConfig(), [])
    worker.corequests = types.SimpleNamespace(loop_thread=None)   # set when it serves
    assert isinstance(worker, ConnectionHost)
    assert isinstance(worker, WSGIHost)
    assert members(ConnectionHost) <= members(WSGIHost)


def test_the_unit_tiers_fake_host_is_a_connection_host():
    import asyncio
    from .fakes import FakeHost
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(FakeHost(loop), ConnectionHost)
    finally:
        loop.close()
