"""New TLS handshakes per second against one skitaid worker, with and without
per-host certificates (SNI), to see what choosing a certificate costs.

    taskset -c 1 python scripts/bench_apps/sni_handshakes.py [--n 3000] [--memory]

The server runs pinned to CPU 0 (`taskset -c 0`); this client makes one
connection after another (handshake only, no request) and prints handshakes/s
for each server name asked. With --memory, both ends run in this process over
memory BIOs (no sockets, no scheduling noise): the server context's cost alone.
"""
import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cert(d, name, cn, sans):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", os.path.join(d, name + ".key"),
                    "-out", os.path.join(d, name + ".pem"), "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=" + ",".join("DNS:" + s for s in sans)],
                   check=True, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(d, port, host_certs):
    os.makedirs(os.path.join(d, "servers-enabled"), exist_ok=True)
    groups = ""
    for i, names in enumerate(("www.exact.test", ".example.com", "*.wild.test")):
        groups += "[routes:line]\n%s\n%s/ = app.py:app\n" % (
            names, "certfile = h%d.pem\nkeyfile = h%d.key\n" % (i, i) if host_certs else "")
    with open(os.path.join(d, "servers-enabled", "web.conf"), "w") as f:
        f.write("[server]\nport = %d\nthreads = 1\nssl = yes\ncertfile = default.pem\n"
                "keyfile = default.key\nrequest_log = no\n[routes:line]\ndefault\n"
                "/ = app.py:app\n%s" % (port, groups))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "skitaid", "run",
                             "-c", d], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(0.5)           # the worker, not only the master's listener
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def rate(port, name, n):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname=name):
                pass
    return n / (time.perf_counter() - t0)


def in_memory(d, n):
    sys.path.insert(0, ROOT)
    from dataclasses import replace
    from skitaid.config.model import HostCert, ServerConfig
    from skitaid.tlsctx import config_context
    c = os.path.join(d, "cert")
    plain = ServerConfig(ssl=True, certfile=os.path.join(c, "default.pem"),
                         keyfile=os.path.join(c, "default.key"))
    sni = replace(plain, host_certs=tuple(
        HostCert((names,), os.path.join(c, "h%d.pem" % i), os.path.join(c, "h%d.key" % i))
        for i, names in enumerate(("www.exact.test", ".example.com", "*.wild.test"))))
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE

    def handshake(server_ctx, name):
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        cli = client.wrap_bio(to_client, to_server, server_hostname=name)
        srv = server_ctx.wrap_bio(to_server, to_client, server_side=True)
        pending = [cli, srv]
        while pending:
            for end in list(pending):
                try:
                    end.do_handshake()
                    pending.remove(end)
                except ssl.SSLWantReadError:
                    pass

    for config in (plain, sni, plain, sni):
        ctx = config_context(config)
        figures = []
        for name in ("api.example.com", "unknown.org", None):
            t0 = time.perf_counter()
            for _ in range(n):
                handshake(ctx, name)
            figures.append("%s %.0f/s" % (name or "(no SNI)", n / (time.perf_counter() - t0)))
        print("%-14s %s" % ("host certs" if config.host_certs else "no host certs",
                            "  ".join(figures)), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--memory", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cdir = os.path.join(d, "cert")
        os.mkdir(cdir)
        cert(cdir, "default", "default.test", ["localhost"])
        for i, sans in enumerate((["www.exact.test"], ["example.com", "*.example.com"],
                                  ["*.wild.test"])):
            cert(cdir, "h%d" % i, sans[0].lstrip("*."), sans)
        with open(os.path.join(d, "app.py"), "w") as f:
            f.write("def app(e, s):\n    s('200 OK', [])\n    return [b'']\n")
        if args.memory:
            return in_memory(d, args.n)
        for host_certs in (False, True, False, True):
            port = free_port()
            proc = serve(d, port, host_certs)
            try:
                figures = ["%s %.0f/s" % (name or "(no SNI)", rate(port, name, args.n))
                           for name in ("api.example.com", "unknown.org", None)]
            finally:
                proc.terminate()
                proc.wait()
            print("%-14s %s" % ("host certs" if host_certs else "no host certs",
                                "  ".join(figures)), flush=True)


if __name__ == "__main__":
    main()
