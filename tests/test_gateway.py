"""The gateway: `source =` and `role =` on alias mounts, bearer tokens (JWT).

A real skitaid proxy sits in front of a raw recording backend
(tests/helpers/recording_backend.py) that counts what reaches it: every
refusal must leave it untouched. Tokens are made with PyJWT in the test and
RSA keys with `cryptography`, as a user's identity provider would.
"""
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import ServerProc, wait_for
from helpers.http1 import ResponseReader
from helpers.recording_backend import RecordingBackend

SOURCE_PROXY = r'''
import os
import skitaid
skitaid.alias("@open", "http", [os.environ["MEMBER"]])
skitaid.alias("@local", "http", [os.environ["MEMBER"]], source="127.0.0.1, 10.0.0.0/8")
skitaid.mount("/open", "@open")
skitaid.mount("/local", "@local")
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
'''


def request(port, path, headers=(), source="127.0.0.1"):
    """One GET from the client address `source`; the parsed response."""
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    try:
        head = "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % path
        head += "".join("%s: %s\r\n" % h for h in headers)
        sock.sendall(head.encode("latin-1") + b"\r\n")
        return ResponseReader(lambda: sock.recv(65536)).response()
    finally:
        sock.close()


def quiet(backend, n, timeout=0.5):
    """The backend has seen exactly `n` requests, and no more arrive meanwhile."""
    wait_for(lambda: backend.count() > n, timeout)
    return backend.count() == n


@pytest.fixture(scope="module")
def source_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    script = root / "proxy.py"
    script.write_text(SOURCE_PROXY)
    with RecordingBackend() as b:
        with ServerProc([sys.executable, str(script)], str(root), env={"MEMBER": b.member}) as p:
            yield b, p


def test_source_refuses_other_networks_before_the_backend(source_pair):
    backend, proxy = source_pair
    backend.reset()
    r = request(proxy.port, "/local/x", source="127.0.0.2")
    assert r.status == 403
    assert quiet(backend, 0)
    assert request(proxy.port, "/open/x", source="127.0.0.2").status == 200
    assert wait_for(lambda: backend.count() == 1)
    r = request(proxy.port, "/local/y", source="127.0.0.1")
    assert r.status == 200 and r.body == b"ok"
    assert wait_for(lambda: backend.count() == 2)
    assert backend.snapshot()[-1].target == "/y"


def make_server_dir(tmp_path, text, name="web.conf"):
    root = tmp_path / "etc"
    (root / "servers-enabled").mkdir(parents=True)
    (root / "servers-enabled" / name).write_text(textwrap.dedent(text))
    return root


ROLE_WITHOUT_GATEWAY = """\
    [server]
    port = 8080
    [routes:line]
    /members = @members
    [@members]
    members = 127.0.0.1:5001
    role = admin
    """


def test_role_without_gateway_is_a_config_error(tmp_path):
    from skitaid.config import ConfigError, load_config
    root = make_server_dir(tmp_path, ROLE_WITHOUT_GATEWAY)
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    text = str(info.value)
    assert "[@members] role" in text and "'admin'" in text and "gateway" in text


def test_role_without_gateway_in_the_api_refuses_to_start(serve, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent('''
        import skitaid
        skitaid.alias("@members", "http", ["127.0.0.1:5001"], role="admin")
        skitaid.mount("/members", "@members")
        skitaid.run(port=5999)
        '''))
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=20)
    assert done.returncode != 0
    assert "@members" in done.stderr and "role" in done.stderr and "enable_gateway" in done.stderr
