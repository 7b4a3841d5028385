"""The unit tier: no sockets, no processes; the whole directory runs in a few
seconds (`python -m pytest -q tests/unit`, budget 20 s)."""
import asyncio

import pytest


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    # what the code under test left scheduled runs out (transports' connection_lost)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
