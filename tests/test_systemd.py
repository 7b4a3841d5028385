"""sd_notify and socket activation, against real sockets and processes."""
import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import time

import shutil

import pytest

from skitaid.daemon import systemd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_datagram(sock, timeout=5.0):
    sock.settimeout(timeout)
    return sock.recv(65536).decode()


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield path, sock


def test_notify_to_a_path(path_socket, monkeypatch):
    path, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    usec = systemd.monotonic_usec()
    assert systemd.notify("RELOADING=1", "MONOTONIC_USEC=%d" % usec, "STATUS=reloading")
    assert read_datagram(sock) == "RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading" % usec
    assert systemd.notify("READY=1")
    assert read_datagram(sock) == "READY=1"
    # the same clock as systemd's (CLOCK_MONOTONIC), in microseconds
    assert abs(usec / 1e6 - time.monotonic()) < 5


def test_notify_to_an_abstract_name(monkeypatch):
    name = "skitaid-test-%d" % os.getpid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STOPPING=1", "STATUS=stopping: 2 connection(s)")
        assert read_datagram(sock) == "STOPPING=1\nSTATUS=stopping: 2 connection(s)"


def test_notify_without_socket_or_listener(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    # a socket path nobody listens on, and a transport we do not speak: no exception
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.notify("WATCHDOG=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False


def test_notify_from_a_child_process(path_socket):
    """What the master does: a separate process with NOTIFY_SOCKET in its environment."""
    path, sock = path_socket
    env = dict(os.environ, NOTIFY_SOCKET=path, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c",
                    "from skitaid.daemon import systemd; "
                    "import os; systemd.notify('READY=1', 'MAINPID=%d' % os.getpid())"],
                   env=env, check=True, timeout=30)
    lines = read_datagram(sock).split("\n")
    assert lines[0] == "READY=1" and lines[1].startswith("MAINPID=")


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert systemd.watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))    # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    monkeypatch.delenv("WATCHDOG_PID")
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert systemd.watchdog_interval() is None


# A socket-activated process: the parent (standing in for systemd) passes a
# listening socket at fd 3; the child sets LISTEN_PID to its own pid, as
# systemd does between fork and exec, then takes the socket and serves one
# connection on it.
CHILD = textwrap.dedent("""\
    import json, os, socket, sys
    os.environ["LISTEN_PID"] = os.environ.pop("OTHER_PID", None) or str(os.getpid())
    from skitaid.daemon import systemd
    named = systemd.listen_fds_with_names()
    left = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    info = []
    for name, sock in named:
        info.append({"name": name, "fd": sock.fileno(), "family": int(sock.family),
                     "cloexec": not os.get_inheritable(sock.fileno())})
    print(json.dumps({"socks": info, "env": left}), flush=True)
    if not named:
        sys.exit(0)
    sock = named[0][1]
    conn, _ = sock.accept()
    conn.sendall(b"hello from " + named[0][0].encode() + b": " + conn.recv(100))
    conn.close()
""")


def run_activated(fds, names=None, count=None, pid=None):
    env = dict(os.environ, PYTHONPATH=ROOT, LISTEN_FDS=str(count if count is not None else len(fds)))
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    if pid is not None:                    # LISTEN_PID for another process: not for us
        env["OTHER_PID"] = str(pid)
    # Put the sockets at 3, 4, …: dup2 in the child before exec.
    sources = [s.fileno() for s in fds]

    def place():
        for i, fd in enumerate(sources):
            os.dup2(fd, 100 + i)
        for i in range(len(sources)):
            os.dup2(100 + i, 3 + i)        # dup2 clears CLOEXEC: the fd survives exec
            os.close(100 + i)
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                            text=True, preexec_fn=place, close_fds=False)


def test_listen_fds_in_an_activated_process():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("\0skitaid-activation-%d" % os.getpid())
    unix.listen(8)
    proc = run_activated([listener, unix], names="web:api")
    try:
        report = json.loads(proc.stdout.readline())
        assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
        assert report["socks"] == [
            {"name": "web", "fd": 3, "family": int(socket.AF_INET), "cloexec": True},
            {"name": "api", "fd": 4, "family": int(socket.AF_UNIX), "cloexec": True},
        ]
        # the child really listens on the inherited socket
        with socket.create_connection(listener.getsockname(), timeout=5) as c:
            c.sendall(b"ping")
            c.settimeout(5)
            assert c.recv(100) == b"hello from web: ping"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        listener.close()
        unix.close()


def test_listen_fds_default_names_and_foreign_pid():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    proc = run_activated([listener])                 # no LISTEN_FDNAMES
    try:
        report = json.loads(proc.stdout.readline())
        assert [s["name"] for s in report["socks"]] == ["unknown"]
        with socket.create_connection(listener.getsockname(), timeout=5) as c:
            c.sendall(b"x")
            c.settimeout(5)
            assert c.recv(100) == b"hello from unknown: x"
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    proc = run_activated([listener], pid=1)        # LISTEN_PID names another process
    try:
        report = json.loads(proc.stdout.readline())
        assert report["socks"] == []
        assert report["env"]["LISTEN_FDS"] is None  # still cleared, as sd_listen_fds does
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        listener.close()


# ---------------------------------------------------------------- the unit file

def skitaid_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SKITAID_CONFIG_DIR", None)
    return subprocess.run([sys.executable, "-m", "skitaid"] + list(args),
                          capture_output=True, text=True, env=env, timeout=60)


def unit_config(tmp_path, timeouts):
    root = tmp_path / "etc dir"                       # a space: ExecStart must quote it
    (root / "servers-enabled").mkdir(parents=True)
    (root / "www").mkdir()
    for i, t in enumerate(timeouts):
        (root / "servers-enabled" / ("s%d.conf" % i)).write_text(
            "[server]\nport = %d\ngraceful_timeout = %s\n[routes:line]\n/ = www\n" % (5000 + i, t))
    return root


def unit_lines(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def test_install_and_remove_the_unit(tmp_path):
    root = unit_config(tmp_path, ["12.5", "45"])
    dest = tmp_path / "skitaid.service"
    result = skitaid_cli("install", "-c", str(root), "--unit-path", str(dest))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("installed %s" % dest)
    unit = unit_lines(dest)
    argv = shlex.split(unit["ExecStart"])
    assert os.path.isfile(argv[0]) and os.access(argv[0], os.X_OK)
    assert argv[-3:] == ["run", "-c", str(root)]
    assert len(argv) == 4 or argv[1:3] == ["-m", "skitaid"]    # the script, or python -m
    assert unit["TimeoutStopSec"] == "55"             # the largest graceful_timeout + 10
    assert (unit["Type"], unit["NotifyAccess"], unit["KillMode"]) == ("notify", "main", "mixed")
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID" and unit["Restart"] == "on-failure"
    assert int(unit["LimitNOFILE"]) >= 4096
    assert oct(os.stat(dest).st_mode & 0o777) == "0o644"
    if shutil.which("systemd-analyze"):
        check = subprocess.run(["systemd-analyze", "verify", str(dest)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0 and check.stderr == "", check.stderr

    # again with a changed config: our own file is updated
    (root / "servers-enabled" / "s1.conf").unlink()
    assert skitaid_cli("install", "-c", str(root), "--unit-path", str(dest)).returncode == 0
    assert unit_lines(dest)["TimeoutStopSec"] == "23"
    result = skitaid_cli("install", "-c", str(root), "--unit-path", str(dest))
    assert "up to date" in result.stdout

    result = skitaid_cli("remove", "--unit-path", str(dest))
    assert result.returncode == 0 and not dest.exists()
    assert "nothing to remove" in skitaid_cli("remove", "--unit-path", str(dest)).stdout


def test_foreign_unit_file_is_kept(tmp_path):
    root = unit_config(tmp_path, ["30"])
    dest = tmp_path / "skitaid.service"
    dest.write_text("[Service]\nExecStart=/opt/mine\n")
    result = skitaid_cli("install", "-c", str(root), "--unit-path", str(dest))
    assert result.returncode == 1 and "was not written by skitaid install" in result.stderr
    result = skitaid_cli("remove", "--unit-path", str(dest))
    assert result.returncode == 1 and dest.read_text() == "[Service]\nExecStart=/opt/mine\n"
    assert skitaid_cli("install", "-c", str(root), "--unit-path", str(dest), "--force").returncode == 0
    assert unit_lines(dest)["TimeoutStopSec"] == "40"
    result = skitaid_cli("install", "-c", str(tmp_path / "none"), "--unit-path", str(dest))
    assert result.returncode == 1                      # a config that does not load: nothing written


def test_shipped_unit_and_repo_link():
    path = os.path.join(ROOT, "systemd", "skitaid.service")
    assert os.path.islink(path) and os.path.samefile(
        path, os.path.join(ROOT, "skitaid", "daemon", "skitaid.service"))
    with open(path) as f:
        text = f.read()
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID",
                 "KillMode=mixed", "Restart=on-failure", "ExecStart=/usr/local/bin/skitaid run"):
        assert "\n%s\n" % line in text
