"""`[cachefs]` in a server file, `skitaid cache purge` and the cache in `skitaid status`."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, ServerProc, free_port, wait_for
from helpers.clients import fetch
from test_cachefs import BACKEND, hits


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


@pytest.fixture
def site(tmp_path, serve):
    backend = serve(BACKEND, env={"BOOT": str(int(time.time()))}, filename="backend.py")
    root = str(tmp_path / "etc")
    var = str(tmp_path / "var")
    write(os.path.join(root, "skitaid.conf"), """
        [global]
        run_path = %s/run
        log_path = %s/log
        var_path = %s
        pidfile = %s/run/skitaid.pid
        """ % (var, var, var, var))
    port = free_port()
    write(os.path.join(root, "servers-enabled", "web.conf"), """
        [server]
        ip = 127.0.0.1
        port = %d
        processes = 2
        [routes:line]
        / = @b
        [@b]
        members = 127.0.0.1:%d
        [cachefs]
        memmax = 1M
        diskmax = 4M
        """ % (port, backend.port))
    master = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", root], root, port=port)
    yield root, var, master, backend
    master.stop()


def cli(root, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "skitaid", "-c", root] + list(args),
                          capture_output=True, text=True, timeout=60, env=env)


def get(port, path):
    return fetch(port, path, host="site.test", timeout=20)


def test_purge_and_status(site):
    root, var, master, backend = site
    for path in ("/p1/a?cc=max-age=600", "/p2/b?cc=max-age=600"):
        assert get(master.port, path).header("X-Cache") == "MISS"
        assert get(master.port, path).header("X-Cache") == "HIT"
    # the default place: VAR_PATH/cache/SERVER
    assert os.path.isfile(os.path.join(var, "cache", "web", "state"))

    def cache_of(status):
        return next(s for s in status["servers"] if s["name"] == "web")["cachefs"]
    # the workers write their counters once a second
    got = wait_for(lambda: (lambda c: c if c["hits"] >= 2 else None)(
        cache_of(json.loads(cli(root, "status", "--json").stdout))), 10)
    assert got and got["entries"] == 2 and got["bytes"] > 0 and got["misses"] == 2
    assert got["hit_ratio"] == 0.5
    text = cli(root, "status").stdout
    assert "cache %s" % os.path.join(var, "cache", "web") in text and "hit ratio 50.0%" in text

    out = cli(root, "cache", "purge", "web", "/p1")
    assert out.returncode == 0 and "web: 1 entry removed under /p1" in out.stdout, out.stderr
    # the memory tiers follow within a second; /p2 stays
    assert wait_for(lambda: get(master.port, "/p1/a?cc=max-age=600").header("X-Cache") == "MISS"
                    or None, 10)
    assert get(master.port, "/p2/b?cc=max-age=600").header("X-Cache") == "HIT"
    out = cli(root, "cache", "purge")
    assert out.returncode == 0 and "web: 2 entries removed" in out.stdout
    assert wait_for(lambda: get(master.port, "/p2/b?cc=max-age=600").header("X-Cache") == "MISS"
                    or None, 10)
    bad = cli(root, "cache", "purge", "nosuch")
    assert bad.returncode == 1 and "no server 'nosuch'" in bad.stderr


def test_bad_cachefs_key_is_named(tmp_path):
    root = str(tmp_path)
    write(os.path.join(root, "skitaid.conf"), "[global]\n")
    write(os.path.join(root, "servers-enabled", "web.conf"), """
        [server]
        port = %d
        [routes:line]
        / = /tmp
        [cachefs]
        memmax = lots
        use_stale = sometimes
        """ % free_port())
    out = cli(root, "check")
    assert out.returncode == 1
    assert "servers-enabled/web.conf" in out.stderr and "[cachefs] memmax: found 'lots'" in out.stderr
    assert "[cachefs] use_stale: found 'sometimes'" in out.stderr
