"""Rate limits shared by all workers: `rate_limit` in [server], [gateway] and [@alias].

Real servers with real clients: a burst from many connections into two
workers must be admitted at the configured total rate (one bucket in memory
the master shares), not at twice it; refusals are 429 with Retry-After and
never reach the backend. The gateway's request-log user and auth_handler
key are here too.
"""
import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import jwt
import pytest

from conftest import ROOT, ServerProc, free_port, wait_for
from helpers.recording_backend import RecordingBackend

SECRET = "s3cret-for-tests-only-" + "0123456789abcdef" * 3


def token(sub, roles=("reader",), **claims):
    payload = {"sub": sub, "roles": list(roles), "exp": int(time.time()) + 600}
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- 2 workers, one bucket

TWO_WORKERS = r'''
import os
import skitaid
def app(env, start):
    start("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
skitaid.mount("/", app)
skitaid.set_rate_limit(os.environ["LIMIT"])
skitaid.run(port=int(os.environ["PORT"]), processes=2, threads=2, request_log=False)
'''

# a burst of a second's worth: a stall of the busy test machine under a second
# costs no admissions
RATE, BURST, SECONDS, CLIENTS = 40, 40, 5.0, 12


def hammer(port, seconds, clients):
    """`clients` threads, each on its own connections, as fast as they can for
    `seconds`: ([(status, retry_after, body)], first send, last answer)."""
    results = []
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + seconds
    last = [start]

    def one_client():
        conn = None
        mine = []
        while time.monotonic() < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                mine.append((r.status, r.getheader("Retry-After"), r.read()))
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                continue
            if r.getheader("Connection", "").lower() == "close" or len(mine) % 5 == 0:
                conn.close()            # new connections now and then: both workers see some
                conn = None
        end = time.monotonic()
        if conn is not None:
            conn.close()
        with lock:
            results.extend(mine)
            last[0] = max(last[0], end)

    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return results, start, last[0]


def test_two_workers_share_one_bucket_at_the_configured_total_rate(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(TWO_WORKERS)
    limit = "%d/s burst %d" % (RATE, BURST)
    with ServerProc([sys.executable, str(script)], str(tmp_path), env={"LIMIT": limit}) as p:
        results, start, end = hammer(p.port, SECONDS, CLIENTS)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) + len(refused) == len(results)
    elapsed = end - start
    expected = BURST + RATE * elapsed
    # the clients asked for far more than the limit: the limit, not them, decided
    assert len(results) > 2 * expected, (len(results), expected)
    assert 0.9 * expected <= len(ok) <= 1.1 * expected, (len(ok), expected, elapsed)
    assert len({r[2] for r in ok}) == 2, "both workers served some requests"
    assert all(r[1] is not None and int(r[1]) >= 1 for r in refused)


# ---------------------------------------------------------------- per client address

PER_CLIENT = r'''
import os
import skitaid
def app(env, start):
    start("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
skitaid.mount("/", app)
skitaid.set_rate_limit("3/m burst 3")
skitaid.run(port=int(os.environ["PORT"]), threads=2, request_log=False)
'''


def get_from(port, source, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("Retry-After")
    finally:
        conn.close()


def test_server_limit_is_per_client_address_over_h1_and_h2(tmp_path):
    import httpx
    script = tmp_path / "app.py"
    script.write_text(PER_CLIENT)
    with ServerProc([sys.executable, str(script)], str(tmp_path)) as p:
        assert [get_from(p.port, "127.0.0.1")[0] for _ in range(2)] == [200, 200]
        with httpx.Client(http1=False, http2=True) as client:     # h2c, prior knowledge
            r = client.get(p.url + "/")
            assert r.http_version == "HTTP/2" and r.status_code == 200
            r = client.get(p.url + "/")
            assert r.status_code == 429 and 15 <= int(r.headers["retry-after"]) <= 21
        status, retry = get_from(p.port, "127.0.0.1")
        assert status == 429 and int(retry) >= 1
        assert get_from(p.port, "127.0.0.2")[0] == 200      # another client, its own bucket


# ---------------------------------------------------------------- alias and subject buckets

GATEWAY = r'''
import json, os
import skitaid
def who(env, start):
    start("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"user": env.get("REMOTE_USER")}).encode()]
skitaid.enable_gateway(True, os.environ["SECRET"], rate_limit="3/m burst 3")
skitaid.alias("@slow", "http", [os.environ["MEMBER"]], rate_limit="4/m burst 4")
skitaid.alias("@members", "http", [os.environ["MEMBER"]], role="reader")
skitaid.mount("/slow", "@slow")
skitaid.mount("/members", "@members")
skitaid.mount("/who", who)
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5,
            request_log_file=os.environ["LOG"])
'''


@pytest.fixture
def gateway_server(tmp_path):
    script = tmp_path / "gw.py"
    script.write_text(GATEWAY)
    log = tmp_path / "request.log"
    with RecordingBackend() as b:
        with ServerProc([sys.executable, str(script)], str(tmp_path),
                        env={"MEMBER": b.member, "SECRET": SECRET, "LOG": str(log)}) as p:
            yield b, p, log


def test_alias_bucket_and_subject_buckets(gateway_server):
    backend, proxy, log = gateway_server
    # @slow: 4 at once for everyone together, then 429 without touching the backend
    statuses = [get(proxy.port, "/slow/%d" % i)[0] for i in range(4)]
    assert statuses == [200] * 4
    status, headers, _ = get(proxy.port, "/slow/x")
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 16      # 4/m: one more in 15 s
    assert wait_for(lambda: backend.count() == 4)
    time.sleep(0.3)
    assert backend.count() == 4

    # [gateway]: 3 per subject, on alias and app mounts alike; each subject its own
    alice = {"Authorization": "Bearer " + token("alice")}
    bob = {"Authorization": "Bearer " + token("bob")}
    assert get(proxy.port, "/members/a", alice)[0] == 200
    assert get(proxy.port, "/who", alice)[0] == 200
    assert get(proxy.port, "/members/b", alice)[0] == 200
    status, headers, _ = get(proxy.port, "/who", alice)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert get(proxy.port, "/members/c", alice)[0] == 429
    assert get(proxy.port, "/members/d", bob)[0] == 200
    # a request without a token is not counted on any subject (nor refused by it)
    assert get(proxy.port, "/who")[0] == 200
    assert wait_for(lambda: backend.count() == 7)


def test_request_log_user_is_the_token_subject_and_the_token_never_whole(gateway_server):
    backend, proxy, log = gateway_server
    t = token("carol")
    assert get(proxy.port, "/members/x", {"Authorization": "Bearer " + t})[0] == 200
    assert wait_for(lambda: " /members/x " in log.read_text(), 5)
    line = [ln for ln in log.read_text().splitlines() if " /members/x " in ln][0]
    assert ' "carol" sha256:' in line
    assert t not in log.read_text() and t.split(".")[2] not in log.read_text()


# ---------------------------------------------------------------- [gateway] auth_handler

AUTH_CONF = """\
[server]
port = %(port)d
threads = 2
pythonpath = lib
request_log_file = %(log)s

[gateway]
enabled = yes
secret = %(secret)s
auth_handler = %(handler)s

[routes:line]
/api = @api

[@api]
members = %(member)s
role = reader
"""

AUTH_MODULE = '''
def decide(request, claims):
    if claims["sub"] == "mallory":
        return None
    return ("directory:" + claims["sub"], ["reader"])
not_a_function = 42
'''


def auth_etc(tmp_path, handler, member="127.0.0.1:9", port=8080):
    etc = tmp_path / "etc"
    (etc / "servers-enabled").mkdir(parents=True)
    (etc / "lib").mkdir()
    (etc / "lib" / "authmod.py").write_text(AUTH_MODULE)
    (etc / "skitaid.conf").write_text("[global]\nuser =\n")
    (etc / "servers-enabled" / "api.conf").write_text(AUTH_CONF % {
        "port": port, "secret": SECRET, "handler": handler, "member": member,
        "log": tmp_path / "request.log"})
    return etc


def test_auth_handler_key_decides_and_names_the_log_user(tmp_path):
    port = free_port()
    with RecordingBackend() as b:
        etc = auth_etc(tmp_path, "authmod:decide", b.member, port)
        with ServerProc([sys.executable, "-m", "skitaid", "run", "-c", str(etc)],
                        str(tmp_path), port=port):
            ok = get(port, "/api/x", {"Authorization": "Bearer " + token("dave", roles=())})
            assert ok[0] == 200
            no = get(port, "/api/y", {"Authorization": "Bearer " + token("mallory")})
            assert no[0] == 403
            assert wait_for(lambda: b.count() == 1)
            log = tmp_path / "request.log"
            assert wait_for(lambda: log.exists() and " /api/x " in log.read_text(), 5)
            assert '"directory:dave"' in log.read_text()
        time.sleep(0.2)
        assert b.count() == 1


@pytest.mark.parametrize("handler, expected", [
    ("nosuchmod:decide", "No module named 'nosuchmod'"),
    ("authmod:missing", "missing"),
    ("authmod:not_a_function", "not callable"),
])
def test_check_names_a_broken_auth_handler(tmp_path, handler, expected):
    etc = auth_etc(tmp_path, handler)
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "skitaid", "check", "-c", str(etc)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    line = [ln for ln in done.stderr.splitlines() if "auth_handler" in ln]
    assert line, done.stderr
    assert "servers-enabled/api.conf" in line[0] and "[gateway] auth_handler" in line[0]
    assert expected in line[0], line[0]


def test_auth_handler_key_must_look_like_a_function(tmp_path):
    from skitaid.config import ConfigError, load_config
    etc = auth_etc(tmp_path, "authmod.decide")
    with pytest.raises(ConfigError) as info:
        load_config(str(etc))
    assert "[gateway] auth_handler: found 'authmod.decide', expected a function as " \
           "package.module:function" in str(info.value)
