"""request_log_format = json writes one JSON object per request, still
reopened on USR1; `skitaid passwd` prints a status_auth line that works."""
import json
import os
import signal
import subprocess
import sys

from conftest import ROOT, free_port, wait_for
from test_daemon import master, site, get  # noqa: F401  (fixtures)

from skitaid.passwords import parse_hash, verify


def test_json_request_log_and_reopen(site, master):
    site.app()
    port = free_port()
    log = os.path.join(site.root, "req.log")
    site.ini("web", port, request_log_file=log, request_log_format="json")
    m = master(port)
    get(port, "/hello?x=1")

    def lines(path):
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    first = wait_for(lambda: lines(log), 10, 0.1)
    rec = first[0]
    assert rec["method"] == "GET" and rec["target"] == "/hello?x=1" and rec["status"] == 200
    assert rec["client"] == "127.0.0.1" and rec["protocol"] == "HTTP/1.1"
    for key in ("time", "host", "request_bytes", "response_bytes", "gtxid", "ltxid", "user",
                "bearer", "referer", "user_agent", "forwarded_for", "worker", "connections",
                "handling_ms", "transfer_ms"):
        assert key in rec
    os.rename(log, log + ".1")
    os.kill(m.proc.pid, signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(log), 10, 0.1)
    get(port, "/after")
    assert wait_for(lambda: any(r["target"] == "/after" for r in lines(log)), 10, 0.1)


def test_passwd_prints_a_line_the_config_accepts():
    r = subprocess.run([sys.executable, "-m", "skitaid", "passwd", "admin"], input="s3cret\n",
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("status_auth = admin:scrypt$")
    assert "s3cret" not in line
    hashed = line.split(":", 1)[1]
    parse_hash(hashed)
    assert verify("s3cret", hashed) and not verify("wrong", hashed)
