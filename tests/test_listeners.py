"""Listening sockets: IPv4, IPv6, UNIX; reuse of inherited ones; UNIX addresses in config."""
import errno
import http.client
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, free_port, wait_for
from skitaid.config import ConfigError, load_config
from skitaid.config.model import ServerConfig
from skitaid.daemon.listeners import ListenError, bind_listener, close_listener, listeners_for


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv4_and_ipv6_wildcards_share_a_port():
    port = free_port()
    v4 = bind_listener("0.0.0.0", port, 16)
    try:
        assert v4.getblocking() is False
        if has_ipv6():
            v6 = bind_listener("::", port, 16)     # V6ONLY: no clash with 0.0.0.0
            assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            with socket.create_connection(("::1", port), timeout=5):
                pass
            close_listener(v6)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(OSError) as info:
            bind_listener("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        close_listener(v4)


def test_unix_socket_file(tmp_path):
    path = tmp_path / "run" / "sub" / "web.sock"       # parent dirs are created
    sock = bind_listener("unix:%s" % path, 0, 16)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))
    # a live socket is never taken over
    with pytest.raises(OSError) as info:
        bind_listener("unix:%s" % path, 0)
    assert info.value.errno == errno.EADDRINUSE
    close_listener(sock)
    assert not path.exists()                            # our own file goes with the socket


def test_unix_stale_socket_replaced_other_files_kept(tmp_path):
    path = str(tmp_path / "web.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()                                       # file left behind, nobody listens
    sock = bind_listener("unix:" + path, 0)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(path)
    close_listener(sock)

    other = tmp_path / "data.txt"
    other.write_text("keep me")
    with pytest.raises(OSError) as info:
        bind_listener("unix:%s" % other, 0)
    assert info.value.errno == errno.EEXIST and other.read_text() == "keep me"


def test_close_listener_leaves_a_newer_file(tmp_path):
    path = str(tmp_path / "web.sock")
    old = bind_listener("unix:" + path, 0)
    os.unlink(path)
    new = bind_listener("unix:" + path, 0)              # someone else's now
    close_listener(old)
    assert os.path.exists(path)
    close_listener(new)
    assert not os.path.exists(path)


def test_listeners_for_reuses_inherited_and_names_failures(tmp_path):
    port_a, port_b = free_port(), free_port()
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", port_a))
    inherited.listen(8)
    unix_inherited = socket.socket(socket.AF_UNIX)
    unix_inherited.bind(str(tmp_path / "a.sock"))
    unix_inherited.listen(8)
    servers = [ServerConfig(name="a", address="127.0.0.1", port=port_a),
               ServerConfig(name="b", address="localhost", port=port_b),
               ServerConfig(name="c", address="unix:%s" % (tmp_path / "a.sock")),
               ServerConfig(name="d", address="unix:%s" % (tmp_path / "d.sock"))]
    got = listeners_for(servers, inherited=[inherited, unix_inherited])
    assert got["a"] == [inherited] and got["c"] == [unix_inherited]
    assert got["b"][0].getsockname() == ("127.0.0.1", port_b)
    assert got["d"][0].getsockname() == str(tmp_path / "d.sock")
    # a reload: the running generation's listeners are reused by address
    again = listeners_for(servers, inherited=[got[s.name][0] for s in servers])
    assert all(again[s.name] == got[s.name] for s in servers)

    blocker = got["b"][0]
    with pytest.raises(ListenError) as info:
        listeners_for([ServerConfig(name="e", address="unix:%s" % (tmp_path / "e.sock")),
                       ServerConfig(name="web", address="127.0.0.1", port=port_b)])
    assert str(info.value) == "server 'web': cannot listen on 127.0.0.1:%d: " \
                              "Address already in use" % port_b
    assert info.value.errno == errno.EADDRINUSE
    assert not (tmp_path / "e.sock").exists()           # what it bound was closed again
    for s in (inherited, unix_inherited, blocker, got["d"][0]):
        close_listener(s)


# ---------------------------------------------------------------- config

def write_config(root, files):
    (root / "servers-enabled").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "www" / "app.py").write_text(textwrap.dedent("""\
        def app(env, start):
            body = ("%s %s %s" % (env["PATH_INFO"], env["REQUEST_METHOD"],
                    env["wsgi.input"].read().decode())).encode()
            start("200 OK", [("Content-Type", "text/plain")])
            return [body]
    """))
    for name, text in files.items():
        (root / "servers-enabled" / name).write_text(textwrap.dedent(text))
    return root


def test_unix_address_in_ini_and_yaml(tmp_path):
    root = write_config(tmp_path / "etc", {
        "a.conf": "[server]\naddress = unix:%s/run/a.sock\n[routes:line]\n/ = www/app.py:app\n"
                  % tmp_path,
        "b.yaml": "server: {ip: 'unix:%s/run/./b.sock'}\nroutes: {/: www/app.py:app}\n" % tmp_path,
        "c.conf": "[server]\nport = 5000\n[routes:line]\n/ = www/app.py:app\n",
    })
    a, b, c = load_config(str(root)).servers
    assert a.address == "unix:%s/run/a.sock" % tmp_path and a.unix_path == "%s/run/a.sock" % tmp_path
    assert b.unix_path == "%s/run/b.sock" % tmp_path         # normalised
    assert c.unix_path == ""


@pytest.mark.parametrize("text, expected", [
    ("[server]\nip = unix:run/a.sock\n",
     "servers-enabled/a.conf [server] ip: found 'unix:run/a.sock', expected an IP address or "
     "host name (empty: all interfaces), or unix:/absolute/path"),
    ("[server]\nip = unix:/%s.sock\n" % ("x" * 120),
     "servers-enabled/a.conf [server] ip: found 'unix:/xxx"),
    ("[server]\naddress = unix:{tmp}/www/app.py/a.sock\n",
     "servers-enabled/a.conf [server] address: found 'unix:{tmp}/www/app.py/a.sock', expected "
     "a UNIX socket path whose directory exists or can be created ({tmp}/www/app.py is not a "
     "directory)"),
    ("[server]\naddress = unix:{tmp}/www/app.py\n",
     "servers-enabled/a.conf [server] address: found 'unix:{tmp}/www/app.py', expected a UNIX "
     "socket path ({tmp}/www/app.py exists and is not a socket)"),
])
def test_unix_address_mistakes(tmp_path, text, expected):
    etc = tmp_path / "etc"
    text = text.replace("{tmp}", str(etc))
    root = write_config(etc, {"a.conf": text + "[routes:line]\n/ = www/app.py:app\n"})
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    assert str(info.value).startswith(expected.replace("{tmp}", str(etc))), str(info.value)


def test_two_servers_on_one_socket_path(tmp_path):
    route = "[routes:line]\n/ = www/app.py:app\n"
    root = write_config(tmp_path / "etc", {
        "a.conf": "[server]\naddress = unix:/tmp/x/web.sock\n" + route,
        "b.yaml": "server: {address: 'unix:/tmp/x//web.sock', port: 1}\nroutes: {/: www/app.py:app}\n",
        "c.conf": "[server]\naddress = unix:/tmp/x/other.sock\n" + route,
        # same port as a TCP server is fine for a UNIX socket
        "d.conf": "[server]\nport = 5000\n" + route,
    })
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    assert str(info.value) == ("servers-enabled/b.yaml [server] address: found "
                               "'unix:/tmp/x/web.sock', expected a socket path not used by "
                               "servers-enabled/a.conf")


# ---------------------------------------------------------------- serving

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def test_run_serves_over_a_unix_socket(tmp_path):
    sock_path = str(tmp_path / "run" / "web.sock")
    port = free_port()
    root = write_config(tmp_path / "etc", {
        "web.conf": "[server]\naddress = unix:%s\n[routes:line]\n/ = www/app.py:app\n" % sock_path,
        # a TCP server next to it, both from one `skitaid run`
        "api.yaml": "server: {address: 127.0.0.1, port: %d}\nroutes: {/: www/app.py:app}\n" % port,
    })
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "skitaid", "run", "-c", str(root)],
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def ready():
            try:
                with socket.socket(socket.AF_UNIX) as c:
                    c.connect(sock_path)
                return True
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                return False
        assert wait_for(ready, timeout=15)
        conn = UnixHTTPConnection(sock_path)
        for i in range(2):                               # keep-alive on the UNIX socket
            conn.request("POST", "/hello", body=b"ping%d" % i)
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"/hello POST ping%d" % i)
        conn.close()
        curl = subprocess.run(["curl", "-sS", "--unix-socket", sock_path,
                               "http://localhost/x?y=1"], capture_output=True, timeout=30)
        assert curl.stdout == b"/x GET " and curl.returncode == 0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/tcp")
        assert c.getresponse().read() == b"/tcp GET "
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
