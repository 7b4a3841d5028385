"""Redis servers for the tests: the machine's own at 127.0.0.1:6379, and private
`redis-server` processes on free ports that a test may kill and restart."""
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port

MAIN = ("127.0.0.1", 6379)


def ping(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def command(port, *args, host="127.0.0.1", db=0):
    """One command with redis-cli; its output (str)."""
    out = subprocess.run(["redis-cli", "-h", host, "-p", str(port), "-n", str(db)]
                         + [str(a) for a in args], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def need_main():
    if not ping(*MAIN):
        pytest.skip("no Redis at %s:%d (.ci/run starts it)" % MAIN)


class RedisServer:
    """A private redis-server (no persistence) on `port`; stop() kills it."""

    def __init__(self, port=None, workdir="/tmp"):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.port = port or free_port()
        self.workdir = workdir
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not ping("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server on port %d did not start" % self.port)
            time.sleep(0.02)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def cmd(self, *args, db=0):
        return command(self.port, *args, db=db)
