"""Start real skitaid servers on free loopback ports for the tests."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Poll `predicate` until it returns something true, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def wait_for_port(port, proc=None, timeout=15.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("port %d not ready" % port)


class ServerProc:
    """A server process running `script` with PORT in its environment."""

    def __init__(self, args, cwd, env=None, port=None):
        self.port = port or free_port()
        self.cwd = cwd
        self.log_path = os.path.join(cwd, "server-%d.log" % self.port)
        full_env = dict(os.environ)
        full_env["PORT"] = str(self.port)
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=full_env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.proc)
            # the master listens before its workers have imported the apps:
            # wait for its "ready" line so timing-sensitive tests start clean
            if not wait_for(lambda: " ready: " in self.log or self.proc.poll() is not None, 15):
                raise TimeoutError("no ready line")
        except Exception:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def serve(tmp_path):
    """serve(script_text, **env) → ServerProc running the script in tmp_path.

    The script reads its port from os.environ["PORT"]."""
    started = []

    def start(script, env=None, filename="app.py"):
        path = tmp_path / filename
        path.write_text(textwrap.dedent(script))
        s = ServerProc([sys.executable, str(path)], str(tmp_path), env=env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def serve_cli(tmp_path):
    """serve_cli(*args, env=None) → ServerProc running `python -m skitaid args`."""
    started = []

    def start(*args, env=None, port=None):
        s = ServerProc([sys.executable, "-m", "skitaid"] + list(args),
                       str(tmp_path), env=env, port=port)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
