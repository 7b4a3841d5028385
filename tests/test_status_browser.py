"""The status page in a real browser (headless Chromium) and `skitaid top` in
a real terminal (tmux), against a running two-worker server."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

import pytest

from conftest import ROOT, free_port, wait_for
from test_daemon import master, site  # noqa: F401  (fixtures)
from test_status_page import request


def png_size_and_colours(path):
    """(width, height, distinct colours in a sample of rows): enough to tell a
    rendered page from a blank one, without an imaging library."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            bpp = {2: 3, 6: 4, 0: 1, 4: 2}.get(ctype, 4)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp + 1
    colours = set()
    # filter bytes make raw rows differ from pixels; distinct byte runs still
    # tell text from a uniform page
    for y in range(0, height, max(1, height // 50)):
        row = raw[y * stride + 1:(y + 1) * stride]
        for x in range(0, len(row) - bpp, bpp * 7):
            colours.add(row[x:x + bpp])
    return width, height, len(colours)


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium (Debian package) not installed")
def test_the_page_renders_in_headless_chromium(site, master, tmp_path):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2, status_path="/server-status")
    master(port)
    assert wait_for(lambda: request(port, "/server-status?json")[0] == 200, 15)
    url = "http://127.0.0.1:%d/server-status?refresh=0" % port
    shot = str(tmp_path / "status.png")
    common = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1200,900"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert "<title>skitaid status</title>" in dom.stdout, dom.stderr[-2000:]
    r = subprocess.run(common + ["--screenshot=%s" % shot, url], capture_output=True,
                       text=True, timeout=120)
    assert os.path.exists(shot), r.stderr[-2000:]
    width, height, colours = png_size_and_colours(shot)
    assert (width, height) == (1200, 900)
    assert colours > 5            # not a blank page
    status = site.status()
    html = dom.stdout
    doc = json.loads(request(port, "/server-status?json")[2])
    assert doc["pid"] == status["pid"]
    assert 'id="master-pid">%d<' % status["pid"] in html
    for w in status["servers"][0]["workers"]:
        assert 'data-pid="%d"' % w["pid"] in html       # one row per worker
    assert html.count('class="worker"') == len(status["servers"][0]["workers"]) == 2


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux (Debian package) not installed")
def test_top_shows_every_worker_and_quits_on_q(site, master, tmp_path):
    site.app()
    port = free_port()
    site.ini("web", port, processes=2)          # no status page: top uses the control socket
    master(port)
    pids = wait_for(lambda: len(site.pids("web")) == 2 and site.pids("web"), 15)
    session = "skitaid-top-%d" % os.getpid()
    sock = str(tmp_path / "tmux.sock")
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm")
    cmd = "%s -m skitaid -c %s top; echo TOP-EXITED $?; sleep 30" % (sys.executable, site.root)
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", session, "-x", "160",
                    "-y", "40", cmd], check=True, env=env, timeout=30)
    try:
        def screen():
            return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True, timeout=30).stdout
        shown = wait_for(lambda: all(str(p) in screen() for p in pids) and screen(), 20, 0.2)
        assert shown, screen()
        assert "skitaid master pid" in shown
        subprocess.run(["tmux", "-S", sock, "send-keys", "-t", session, "m"], timeout=30)
        assert wait_for(lambda: "sorted by RSS" in screen(), 10, 0.2), screen()
        subprocess.run(["tmux", "-S", sock, "send-keys", "-t", session, "q"], timeout=30)
        assert wait_for(lambda: "TOP-EXITED 0" in screen(), 10, 0.2), screen()
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], timeout=30)
