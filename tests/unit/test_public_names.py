"""The package's public names, whichever import order an app script uses."""
import subprocess
import sys

import pytest

from conftest import ROOT

ORDERS = [
    "import skitaid",
    "import skitaid.websocket; import skitaid",
    "from skitaid.websocket import WS_GROUPCHAT; import skitaid",
    "from skitaid import was, websocket; import skitaid",
]


@pytest.mark.parametrize("imports", ORDERS)
def test_the_websocket_decorator_survives_any_import_order(imports):
    code = imports + """
decorate = skitaid.websocket(60, skitaid.WS_GROUPCHAT)
def view():
    yield
wrapped = decorate(view)
assert callable(wrapped) and wrapped is not view, wrapped
assert skitaid.was.get is not None and callable(skitaid.push)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=20)
    assert done.stdout.strip() == "ok", done.stderr
