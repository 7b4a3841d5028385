"""What a connection may use of the process that serves it: the contract
between protocols/ and worker/.

Every connection class (HTTP/1.1, HTTP/2, WebSocket, the tunnel, the HTTPS
forwarder, the TLS selector) takes a `ConnectionHost`, never the `Worker`
itself: the worker satisfies it (tests/unit's fake host does too), and a
member a connection needs is added here first. Typing only: nothing here runs
on the request path.
"""
from __future__ import annotations

import asyncio
from typing import Any, MutableSet, Protocol, runtime_checkable

from ..config.model import Limits


class HostConfig(Protocol):
    """The server settings a connection reads itself (the rest come as
    `limits` or as constructor arguments)."""

    http2: bool         # cleartext HTTP/1.1 may hand over to h2c
    alt_svc: str        # Alt-Svc of HTTP/1.1 and HTTP/2 responses ("": none; HTTP/3)


@runtime_checkable
class ConnectionHost(Protocol):
    loop: asyncio.AbstractEventLoop
    limits: Limits
    config: HostConfig
    # every open connection (Tracked): the sweep, max_connections, graceful stop
    connections: MutableSet[Any]
    # TLS connections whose handshake is not done (a graceful stop waits for them)
    handshaking: MutableSet[Any]

    def dispatch(self, exchange) -> None:
        """A request head is complete: route it to its handler."""

    def queue_flush(self, conn) -> None:
        """Call conn.flush() once at the end of this loop iteration."""

    def exchange_finished(self, exchange) -> None:
        """The response is out (count it, write the request log line)."""

    def exchange_aborted(self, exchange) -> None:
        """The client went away before the response was out."""

    def count_rejected(self, status, detail, client) -> None:
        """A request refused at the protocol level (400, 413, 431, ...)."""

    def log_exception(self, what) -> None:
        """Log the exception being handled, `what` saying while doing what."""
