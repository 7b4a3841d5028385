"""The unit tier: no sockets, no processes; the whole directory runs in a few
seconds (`python -m pytest -q tests/unit`, budget 20 s). A unit test that
takes more than a few seconds is stuck (a state machine looping): it fails
after UNIT_TIMEOUT instead of using up the tier's budget."""
import asyncio
import os

import pytest

UNIT_TIMEOUT = 5
_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    # what the code under test left scheduled runs out (transports' connection_lost)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
