"""TLS session resumption across the workers of one server, and across reloads.

A server with `processes = 4` accepts on one shared socket, so a client cannot
choose the worker it lands on: a ticket issued by one worker must resume on
any other. Every worker inherits the same SSL context (and so the same ticket
key) from the master; a reload keeps that context while the certificate files
are unchanged, and builds a new one (a new ticket key) when they change.

Certificates are made at run time with `openssl` (see test_sni.py).
"""
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, ServerProc, free_port, wait_for
from test_sni import make_cert

APP = r'''
import os
def app(environ, start_response):
    body = ("%d %s" % (os.getpid(), environ.get("HTTP_HOST"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

WEB = """\
    [server]
    ip = 127.0.0.1
    port = {port}
    processes = 4
    threads = 1
    ssl = yes
    certfile = default.pem
    keyfile = default.key

    [routes:line]
    default
    / = {root}/app.py:app

    [routes:line]
    .example.com
    certfile = example.pem
    keyfile = example.key
    / = {root}/app.py:app
"""

ATTEMPTS = 20           # resumptions over new connections
MAX_ATTEMPTS = 200      # ... more, until they landed on other workers than the issuer


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume-certs")
    make_cert(d, "default", "default.test", ["localhost", "default.test"])
    make_cert(d, "example", "example.com", ["example.com", "*.example.com"])
    make_cert(d, "default2", "renewed.test", ["localhost", "renewed.test"])
    return d


@pytest.fixture
def server(tmp_path, cert_files):
    root = tmp_path
    shutil.copytree(cert_files, root / "cert")
    (root / "app.py").write_text(APP)
    (root / "skitaid.conf").write_text("[global]\nrun_path = %s\nlog_path = %s\n"
                                       % (root / "run", root / "log"))
    (root / "servers-enabled").mkdir()
    port = free_port()
    (root / "servers-enabled" / "web.conf").write_text(
        textwrap.dedent(WEB).format(port=port, root=root))
    s = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", str(root)], str(root),
                   port=port)
    s.root = root
    # every worker is up before the test counts on landing on several of them
    assert wait_for(lambda: len(worker_pids(s)) == 4, 15)
    yield s
    s.stop()


def worker_pids(s):
    import psutil
    try:
        return {p.pid for p in psutil.Process(s.proc.pid).children()}
    except psutil.Error:
        return set()


def client_context(root, version):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    for name in ("default", "example", "default2"):
        ctx.load_verify_locations(cafile=str(root / "cert" / (name + ".pem")))
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def fetch(port, ctx, server_name, session=None):
    """One request on a new connection → (session, reused, worker pid, certificate CN)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                        % (server_name or "x").encode())
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            # (TLS 1.3 tickets arrive after the handshake: read before taking the session)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), data
            cn = dict(p[0] for p in tls.getpeercert()["subject"])["commonName"]
            return tls.session, tls.session_reused, int(body.split()[0]), cn


def resume_everywhere(port, ctx, server_name, session, issuer):
    """Offer `session` on new connections until at least ATTEMPTS were made and
    some landed on a worker other than the one that issued it; returns the
    (reused, pid) of every attempt."""
    results = []
    while len(results) < MAX_ATTEMPTS:
        _, reused, pid, _ = fetch(port, ctx, server_name, session)
        results.append((reused, pid))
        if len(results) >= ATTEMPTS and any(p != issuer for _, p in results):
            break
    return results


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
@pytest.mark.parametrize("server_name", [None, "www.example.com"], ids=["default", "sni"])
def test_tickets_resume_on_every_worker(server, version, server_name):
    ctx = client_context(server.root, version)
    session, reused, issuer, _ = fetch(server.port, ctx, server_name)
    assert not reused and session is not None and session.has_ticket
    results = resume_everywhere(server.port, ctx, server_name, session, issuer)
    others = {pid for _, pid in results if pid != issuer}
    assert others, "every connection landed on the issuing worker"
    assert [pid for reused, pid in results if not reused] == [], \
        "not resumed on workers %s (issuer %d)" % (others, issuer)
    assert "Traceback" not in server.log


def reload_and_wait(s, old_pids, how="hup"):
    """HUP (or `skitaid restart web`), then wait until the new generation
    serves and the old one is gone."""
    if how == "hup":
        s.proc.send_signal(signal.SIGHUP)
    else:
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-m", "skitaid", "-c", str(s.root), "restart",
                               "web"], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: "reload done" in s.log, 20), s.log
    assert wait_for(lambda: len(worker_pids(s)) == 4 and not worker_pids(s) & old_pids, 20)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
def test_ticket_from_before_a_reload_resumes_after_it(server, version):
    ctx = client_context(server.root, version)
    session, _, issuer, _ = fetch(server.port, ctx, None)
    before = worker_pids(server)
    reload_and_wait(server, before)
    results = resume_everywhere(server.port, ctx, None, session, issuer)
    assert all(pid not in before for _, pid in results)     # the new generation answered
    assert len({pid for _, pid in results}) >= 2
    assert all(reused for reused, _ in results), results


@pytest.mark.parametrize("how", ["hup", "restart"])
def test_a_renewed_certificate_gets_a_new_ticket_key(server, how):
    """Changed certificate files: the new generation (a reload, or a restart
    of the one server) presents the new certificate, and tickets made under
    the old key no longer resume (a full handshake instead)."""
    ctx = client_context(server.root, ssl.TLSVersion.TLSv1_3)
    session, _, _, cn = fetch(server.port, ctx, None)
    assert cn == "default.test"
    cert = server.root / "cert"
    for suffix in ("pem", "key"):
        os.replace(cert / ("default2." + suffix), cert / ("default." + suffix))
    reload_and_wait(server, worker_pids(server), how)
    _, reused, _, cn = fetch(server.port, ctx, None)
    assert (reused, cn) == (False, "renewed.test")
    for _ in range(8):
        assert fetch(server.port, ctx, None, session)[1] is False


def test_context_cache_keeps_a_context_until_its_files_change(tmp_path, cert_files):
    """The master's cache: the same context (the same ticket key) while the
    settings and file bytes are unchanged, a new one when a file's bytes
    change (even with its old mtime), when the key is TICKET_KEY_MAX_AGE old,
    or when a setting changes; a file that does not load raises, naming it,
    and leaves the last good context in place."""
    from skitaid.config import load_config
    from skitaid.tlsctx import TICKET_KEY_MAX_AGE, ContextCache
    shutil.copytree(cert_files, tmp_path / "cert")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "servers-enabled").mkdir()
    conf = tmp_path / "servers-enabled" / "web.conf"

    def server(web=WEB):
        conf.write_text(textwrap.dedent(web).format(port=8443, root=tmp_path))
        return load_config(str(tmp_path)).servers[0]

    clock = [1000.0]
    cache = ContextCache(clock=lambda: clock[0])
    first = cache.build(server())
    assert cache.build(server()) is first and cache.get("web") is first
    clock[0] += TICKET_KEY_MAX_AGE - 1
    assert cache.build(server()) is first

    host_cert = tmp_path / "cert" / "example.pem"
    stat = host_cert.stat()
    host_cert.write_bytes(host_cert.read_bytes())           # same bytes: same context
    assert cache.build(server()) is first
    # a renewed host certificate, its mtime put back
    host_cert.write_bytes((tmp_path / "cert" / "default2.pem").read_bytes())
    (tmp_path / "cert" / "example.key").write_bytes(
        (tmp_path / "cert" / "default2.key").read_bytes())
    os.utime(host_cert, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = cache.build(server())
    assert second is not first

    clock[0] += TICKET_KEY_MAX_AGE
    third = cache.build(server())
    assert third is not second and cache.build(server()) is third
    fourth = cache.build(server(WEB.replace("threads = 1", "threads = 1\n    http2 = no")))
    assert fourth is not third

    (tmp_path / "cert" / "example.key").write_text("not a key\n")
    with pytest.raises(ValueError, match="cannot load the TLS certificate %s" % host_cert):
        cache.build(server())
    assert cache.get("web") is fourth
