"""skitaid.test_client against real servers: the script runs as a real
skitaid process on the port the test gives, and the client speaks HTTP/1.1,
HTTP/2 and WebSocket to it."""
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import skitaid
from conftest import ROOT, ServerProc, free_port

APP = '''
import os
import skitaid
from flask import Flask, jsonify, request

app = Flask(__name__)

@app.route("/")
def index():
    return "something on " + request.environ.get("SERVER_PROTOCOL", "?")

@app.route("/apis/pets/<int:pid>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def pet(pid):
    return jsonify(id=pid, method=request.method, args=request.args.to_dict(),
                   body=request.get_json(silent=True))

@app.route("/echo")
@skitaid.websocket(60)
def echo():
    while True:
        message = yield
        if message is None:
            return
        yield "ECHO:" + message

if __name__ == "__main__":
    skitaid.mount("/", app)
    skitaid.run(port=5000, name="tc-app")        # test_client's port wins
'''


def project(tmp_path, text=APP, name="app.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def script(tmp_path):
    return project(tmp_path)


def test_get_api_stub_http2_and_websocket(script):
    port = free_port()
    with skitaid.test_client(script, port) as cli:
        resp = cli.get("/")
        assert resp.status_code == 200 and "something" in resp.text
        assert resp.data == resp.text and resp.content == resp.text.encode()
        assert resp.headers["content-type"].startswith("text/html")
        stub = cli.api()
        resp = stub.apis.pets(45).get()                 # GET /apis/pets/45
        assert resp.data["id"] == 45 and resp.json()["method"] == "GET"
        assert stub.apis.pets(45).get(q=1).data["args"] == {"q": "1"}
        assert stub.apis.pets(7).post({"name": "rex"}).data == {
            "id": 7, "method": "POST", "args": {}, "body": {"name": "rex"}}
        assert stub.apis.pets(7).put({"a": 1}).data["method"] == "PUT"
        assert stub.apis.pets(7).patch({"a": 1}).data["method"] == "PATCH"
        assert stub.apis.pets(7).delete().data["method"] == "DELETE"
        assert cli.api("/apis").pets(8).get().data["id"] == 8
        assert cli.head("/").status_code == 200
        assert cli.options("/").status_code == 200
        assert cli.post("/apis/pets/3", json=[1]).data["body"] == [1]
        # HTTP/2 (prior knowledge, in the clear)
        resp = cli.http2.get("/")
        assert resp.http_version == "HTTP/2" and resp.text.endswith("HTTP/2")
        assert cli.http2.api().apis.pets(9).get().data["id"] == 9
        # WebSocket
        with cli.ws("/echo") as ws:
            ws.send("hi")
            assert ws.recv() == "ECHO:hi"
        assert " ready: " in cli.output         # the server's console so far
    with pytest.raises(OSError):            # stopped by leaving the with block
        socket.create_connection(("127.0.0.1", port), 1).close()


def test_http2_as_an_argument(script):
    with skitaid.test_client(script, free_port(), http2=True) as cli:
        assert cli.get("/").http_version == "HTTP/2"
        assert cli.http2 is cli


def test_a_script_failing_at_import_raises_at_once_with_the_error(tmp_path):
    path = project(tmp_path, "import skitaid\nimport no_such_module_xyz\n")
    started = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        skitaid.test_client(path, free_port())
    assert time.monotonic() - started < 10
    assert "No module named 'no_such_module_xyz'" in str(e.value)
    assert "exited" in str(e.value)


def test_an_app_failing_to_import_in_its_worker_raises(tmp_path):
    """The script runs, but the app file it mounts is broken: no worker starts."""
    (tmp_path / "broken.py").write_text("raise ValueError('broken at import')\n")
    path = project(tmp_path, "import skitaid\nskitaid.mount('/', 'broken.py')\nskitaid.run()\n")
    started = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        skitaid.test_client(path, free_port())
    assert time.monotonic() - started < 10
    assert "broken at import" in str(e.value)


def test_a_script_that_never_serves_times_out_with_its_output(tmp_path):
    path = project(tmp_path, "import time\nprint('thinking', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(TimeoutError) as e:
        skitaid.test_client(path, free_port(), timeout=2)
    assert "thinking" in str(e.value)


def test_dry_talks_to_a_server_running_elsewhere(tmp_path, script):
    port = free_port()
    server = ServerProc([sys.executable, "-m", "skitaid.testclient", script, str(port),
                         str(tmp_path / "state")], str(tmp_path), port=port)
    try:
        with skitaid.test_client(script, port, dry=True) as cli:
            assert "something" in cli.get("/").text
        assert server.proc.poll() is None       # dry: stop() leaves it running
        assert "something" in skitaid.test_client(script, port, dry=True).get("/").text
    finally:
        server.stop()
    with pytest.raises(ConnectionError):
        skitaid.test_client(script, port, dry=True)


def test_a_project_suite_with_the_fixture_pattern_passes_under_pytest(tmp_path):
    """As the original's page shows: a session-scoped fixture, and plain unittest."""
    project(tmp_path)
    tests = tmp_path / "tests"
    tests.mkdir()
    port = free_port()
    (tests / "conftest.py").write_text(textwrap.dedent('''
        import os
        import pytest
        import skitaid

        @pytest.fixture(scope="session")
        def cli():
            c = skitaid.test_client(os.path.join(os.path.dirname(__file__), "..", "app.py"),
                                    %d)
            yield c
            c.stop()
        ''' % port))
    (tests / "test_app.py").write_text(textwrap.dedent('''
        import os
        import unittest
        import skitaid

        def test_index(cli):
            resp = cli.get("/")
            assert "something" in resp.text

        def test_api(cli):
            stub = cli.api()
            resp = stub.apis.pets(45).get()
            assert resp.data["id"] == 45

        class PlainUnittest(unittest.TestCase):
            def test_with_block(self):
                here = os.path.dirname(__file__)
                with skitaid.test_client(os.path.join(here, "..", "app.py"), %d) as cli:
                    self.assertEqual(cli.api().apis.pets(3).get().data["id"], 3)
        ''' % free_port()))
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout
    done = subprocess.run([sys.executable, "-m", "unittest", "-q", "tests.test_app"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "OK" in done.stderr, done.stdout + done.stderr
