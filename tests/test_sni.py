"""Per-virtual-host certificates (SNI) against real servers.

Self-signed certificates for different names are made at run time with
`openssl`. A config dir holds an INI server and a YAML server, each with a
default certificate and host certificates in its routes sections; Python's
ssl module connects with different server names (or none) and reads the
certificate it was given, and ALPN must still pick h2 whatever the name.
"""
import os
import socket
import ssl
import subprocess
import sys
import textwrap

import httpx
import pytest

from conftest import ROOT, free_port, wait_for_port

APP = r'''
def app(environ, start_response):
    body = ("%s %s %s" % (GROUP, environ.get("HTTP_HOST"), environ["SERVER_PROTOCOL"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def make_cert(cert_dir, name, cn, sans, passphrase=None):
    """A self-signed certificate `name.pem` and key `name.key` for CN and SANs."""
    key = cert_dir / (name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert_dir / (name + ".pem")),
                    "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=" + ",".join("DNS:" + s for s in sans)],
                   check=True, capture_output=True)
    if passphrase:
        plain = key.with_suffix(".plain")
        os.rename(key, plain)
        subprocess.run(["openssl", "pkey", "-in", str(plain), "-aes256",
                        "-passout", "pass:" + passphrase, "-out", str(key)],
                       check=True, capture_output=True)
        plain.unlink()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_site(d, name):
    write(d / "sites" / (name + ".py"), "GROUP = %r\n" % name + APP)


WEB_CONF = """\
    [server]
    ip = 127.0.0.1
    port = {port}
    threads = 2
    ssl = yes
    certfile = default.pem
    keyfile = default.key

    [routes:line]
    default
    / = sites/main.py:app

    [routes:line]
    www.exact.test
    certfile = exact.pem          ; in <config dir>/cert/, key in the same file
    / = sites/exact.py:app

    [routes:line]
    .example.com
    certfile = example.pem
    keyfile = example.key
    passphrase = s3cret
    / = sites/example.py:app

    [routes:line]
    *.wild.test
    certfile = {wild}
    keyfile = {wild_key}
    / = sites/wild.py:app
"""

API_YAML = """\
    server:
      ip: 127.0.0.1
      port: {port}
      threads: 1
      ssl: yes
      certfile: default.pem
      keyfile: default.key
    routes:
      /: sites/main.py:app
    hosts:
      api.yaml.test .yaml.test:
        certfile: yaml.pem
        keyfile: yaml.key
        /: sites/example.py:app
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sni")
    cert = d / "cert"
    cert.mkdir()
    make_cert(cert, "default", "default.test", ["localhost", "default.test"])
    make_cert(cert, "example", "example.com", ["example.com", "*.example.com"], "s3cret")
    make_cert(cert, "wild", "wild.test", ["*.wild.test"])
    make_cert(cert, "yaml", "yaml.test", ["yaml.test", "*.yaml.test"])
    make_cert(cert, "exact", "www.exact.test", ["www.exact.test"])
    # the exact host's key lives in its certificate file
    exact = (cert / "exact.pem").read_text() + (cert / "exact.key").read_text()
    (cert / "exact.pem").write_text(exact)
    # an absolute path outside cert/ works too
    (d / "elsewhere").mkdir()
    for suffix in ("pem", "key"):
        os.rename(cert / ("wild." + suffix), d / "elsewhere" / ("wild." + suffix))
    return d


def config_dir(certs, port, yaml_port=None, web=WEB_CONF):
    d = certs
    for name in ("main", "exact", "example", "wild"):
        make_site(d, name)
    enabled = d / "servers-enabled"
    enabled.mkdir(exist_ok=True)
    for old in enabled.iterdir():
        old.unlink()
    write(enabled / "web.conf", web.format(port=port, wild=d / "elsewhere" / "wild.pem",
                                           wild_key=d / "elsewhere" / "wild.key"))
    if yaml_port:
        write(enabled / "api.yaml", API_YAML.format(port=yaml_port))
    return str(d)


@pytest.fixture(scope="module")
def server(certs):
    from conftest import ServerProc
    port, yaml_port = free_port(), free_port()
    conf = config_dir(certs, port, yaml_port)
    s = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", conf], str(certs), port=port)
    wait_for_port(yaml_port, s.proc)
    s.yaml_port = yaml_port
    yield s
    s.stop()


def client_ctx(certs, alpn=("h2", "http/1.1")):
    """Trusts every test certificate (each is its own CA); names are checked by the tests."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    for name in ("default", "example", "yaml", "exact"):
        ctx.load_verify_locations(cafile=str(certs / "cert" / (name + ".pem")))
    ctx.load_verify_locations(cafile=str(certs / "elsewhere" / "wild.pem"))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def presented(certs, port, server_name, alpn=("h2", "http/1.1")):
    """(CN of the certificate the server presented, ALPN protocol chosen)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx(certs, alpn).wrap_socket(raw, server_hostname=server_name) as tls:
            subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
            return subject["commonName"], tls.selected_alpn_protocol()


@pytest.mark.parametrize("name, cn", [
    ("www.exact.test", "www.exact.test"),      # exact name
    ("WWW.Exact.Test", "www.exact.test"),      # names are case-insensitive
    ("example.com", "example.com"),            # .example.com: the domain itself
    ("api.example.com", "example.com"),        # ... and its subdomains
    ("a.b.example.com", "example.com"),
    ("x.wild.test", "wild.test"),              # *.wild.test: subdomains only
    ("wild.test", "default.test"),
    ("exact.test", "default.test"),            # an exact name is no suffix
    ("unknown.org", "default.test"),           # unknown → the server's certificate
    (None, "default.test"),                    # no SNI at all
])
def test_certificate_by_server_name(server, certs, name, cn):
    assert presented(certs, server.port, name) == (cn, "h2")


@pytest.mark.parametrize("name, cn", [
    ("api.yaml.test", "yaml.test"), ("yaml.test", "yaml.test"), ("x.yaml.test", "yaml.test"),
    ("other.test", "default.test"), (None, "default.test"),
])
def test_yaml_host_certificates(server, certs, name, cn):
    assert presented(certs, server.yaml_port, name) == (cn, "h2")


def test_http11_by_alpn_with_a_host_certificate(server, certs):
    assert presented(certs, server.port, "api.example.com", ("http/1.1",)) == \
        ("example.com", "http/1.1")


@pytest.mark.parametrize("name, group", [
    ("api.example.com", "example"), ("www.exact.test", "exact"), ("unknown.org", "main")])
def test_h2_requests_with_sni(server, certs, name, group):
    """A full HTTP/2 exchange: SNI picks the certificate, Host the routes."""
    with httpx.Client(http2=True, verify=client_ctx(certs)) as client:
        r = client.get("https://127.0.0.1:%d/" % server.port, headers={"Host": name},
                       extensions={"sni_hostname": name})
    assert r.http_version == "HTTP/2"
    assert r.text == "%s %s HTTP/2" % (group, name)
    assert "Traceback" not in server.log


# -- mistakes --------------------------------------------------------------------------

def run_cli(command, conf, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SKITAID_CONFIG_DIR", None)
    return subprocess.run([sys.executable, "-m", "skitaid", command, "-c", conf],
                          capture_output=True, text=True, env=env, timeout=timeout)


def conf_line(text, needle):
    """The line number `check` gives for the line of `text` holding `needle`."""
    return 1 + next(i for i, line in enumerate(textwrap.dedent(text).splitlines())
                    if needle in line)


def test_missing_host_certificate(tmp_path, certs):
    web = WEB_CONF.replace("example.key", "nope.key")
    conf = config_dir(certs, free_port(), web=web)
    expected = ("servers-enabled/web.conf [routes:line] keyfile: found 'nope.key', "
                "expected an existing file (%s)" % (certs / "cert" / "nope.key"))
    check = run_cli("check", conf)
    assert check.returncode == 1 and expected.replace(
        "web.conf ", "web.conf:%d " % conf_line(web, "nope.key")) in check.stderr.splitlines(), \
        check.stderr
    run = run_cli("run", conf)
    assert run.returncode != 0 and expected in run.stderr, run.stderr


def test_unloadable_host_certificate(tmp_path, certs):
    """A file that exists but is no certificate, or a wrong passphrase: `check`
    says so, and the master refuses to start before it listens."""
    (certs / "cert" / "junk.pem").write_text("not a certificate\n")
    for web, value in [(WEB_CONF.replace("certfile = exact.pem", "certfile = junk.pem"),
                        "junk.pem"),
                       (WEB_CONF.replace("passphrase = s3cret", "passphrase = wrong"),
                        "example.pem")]:
        port = free_port()
        conf = config_dir(certs, port, web=web)
        check = run_cli("check", conf)
        assert check.returncode == 1
        assert ("servers-enabled/web.conf:%d [routes:line] certfile: found '%s', expected a "
                "certificate that loads" % (conf_line(web, "certfile = " + value),
                                            certs / "cert" / value)) in check.stderr, check.stderr
        run = run_cli("run", conf)
        assert run.returncode != 0
        assert "servers-enabled/web.conf [routes:line] certfile (for " in run.stderr, run.stderr
        assert "cannot load the TLS certificate %s" % (certs / "cert" / value) in run.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


CONFIG_MISTAKES = [
    ("[routes:line]\nexample.com\nkeyfile = a.key\n/ = www\n",
     "web.conf [routes:line] keyfile: found 'a.key', expected a certfile in the same section"),
    ("[routes:line]\ndefault\ncertfile = a.pem\n/ = www\n",
     "web.conf [routes:line] certfile: found 'a.pem', expected a routes section for named "
     "hosts"),
    ("[routes:line]\nexample.com\ncertfile = a.pem\ncertfile = a.pem\n/ = www\n",
     "web.conf [routes:line] certfile: found 'a.pem', expected certfile only once"),
    ("[routes:line]\nexample.com\ncertfile = a.pem\n",
     "web.conf [routes:line]: expected at least one route"),
]


@pytest.mark.parametrize("routes, expected", CONFIG_MISTAKES)
def test_config_mistakes(tmp_path, routes, expected):
    from skitaid.config import ConfigError, load_config
    (tmp_path / "servers-enabled").mkdir()
    (tmp_path / "www").mkdir()
    (tmp_path / "cert").mkdir()
    (tmp_path / "cert" / "a.pem").write_text("x")
    (tmp_path / "cert" / "d.pem").write_text("x")
    (tmp_path / "servers-enabled" / "web.conf").write_text(
        "[server]\nssl = yes\ncertfile = d.pem\n" + routes)
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    assert any(line.startswith("servers-enabled/" + expected) for line in str(e.value).splitlines()), \
        str(e.value)


def test_host_certificate_needs_ssl(tmp_path):
    from skitaid.config import ConfigError, load_config
    (tmp_path / "servers-enabled").mkdir()
    (tmp_path / "www").mkdir()
    (tmp_path / "servers-enabled" / "web.yaml").write_text(
        "server: {port: 8000}\nhosts:\n  .example.com: {certfile: a.pem, /: www}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path))
    assert ("servers-enabled/web.yaml [hosts: .example.com] certfile: found 'a.pem', expected "
            "ssl = yes in the server section") in str(e.value)


def test_config_model(tmp_path, certs):
    from skitaid.config import load_config
    conf = config_dir(certs, 8443, 8444)
    servers = {s.name: s for s in load_config(conf).servers}
    web = servers["web"].host_certs
    assert [hc.names for hc in web] == [("www.exact.test",), (".example.com",), ("*.wild.test",)]
    assert web[0].certfile == str(certs / "cert" / "exact.pem") and web[0].keyfile == ""
    assert web[1].keyfile == str(certs / "cert" / "example.key") and web[1].passphrase == "s3cret"
    assert web[1].where == ("servers-enabled/web.conf", "routes:line")
    yaml = servers["api"].host_certs
    assert yaml[0].names == ("api.yaml.test", ".yaml.test")
    assert yaml[0].where == ("servers-enabled/api.yaml", "hosts: api.yaml.test .yaml.test")
    # the host groups keep their routes (the certificate keys are no routes)
    assert [r.prefix for g in servers["web"].hosts for r in g.routes] == ["/"] * 4


# -- Python API ------------------------------------------------------------------------

API_APP = '''
import os, skitaid

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["HTTP_HOST"].encode()]

skitaid.enable_ssl("cert/default.pem", "cert/default.key")
skitaid.enable_ssl("cert/example.pem", "cert/example.key", "s3cret", host=".example.com")
skitaid.mount("/", app)
skitaid.mount("/", app, host=".example.com")
skitaid.run(port=int(os.environ["PORT"]), threads=1)
'''


def test_api_host_certificate(certs, serve):
    (certs / "api_app.py").write_text(API_APP)
    from conftest import ServerProc
    s = ServerProc([sys.executable, str(certs / "api_app.py")], str(certs))
    try:
        assert presented(certs, s.port, "www.example.com") == ("example.com", "h2")
        assert presented(certs, s.port, "other.org") == ("default.test", "h2")
        assert presented(certs, s.port, None) == ("default.test", "h2")
    finally:
        s.stop()


def test_api_host_certificate_needs_a_default(tmp_path, monkeypatch):
    import skitaid.api as api
    monkeypatch.setattr(api, "_host_certs", {})
    monkeypatch.setattr(api, "_settings", {})
    monkeypatch.setattr(api, "_mounts", [])
    (tmp_path / "c.pem").write_text("x")
    api.mount("/", lambda e, s: [])
    api.enable_ssl(str(tmp_path / "c.pem"), host="example.com")
    with pytest.raises(RuntimeError, match="default certificate"):
        api.build_config()
    with pytest.raises(ValueError, match="host names"):
        api.enable_ssl(str(tmp_path / "c.pem"), host="*")


def test_reload_adds_a_host_certificate_and_refuses_a_bad_one(certs, tmp_path):
    """HUP: a host certificate that does not load is refused (the running
    config keeps serving, the log names file, section and key); a good one is
    presented by the new workers."""
    import shutil
    import signal
    from conftest import ServerProc, wait_for
    d = tmp_path / "etc"
    shutil.copytree(certs / "cert", d / "cert")
    shutil.copytree(certs / "elsewhere", d / "elsewhere")
    port = free_port()
    no_cert = WEB_CONF.replace("certfile = example.pem\n    keyfile = example.key\n"
                               "    passphrase = s3cret\n", "")
    conf = config_dir(d, port, web=no_cert)
    s = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", conf], str(d), port=port)
    try:
        assert presented(certs, port, "api.example.com") == ("default.test", "h2")
        (d / "cert" / "junk.pem").write_text("not a certificate\n")
        config_dir(d, port, web=WEB_CONF.replace("certfile = example.pem", "certfile = junk.pem"))
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_log("servers-enabled/web.conf [routes:line] certfile (for .example.com): "
                          "cannot load the TLS certificate %s" % (d / "cert" / "junk.pem"), 15), s.log
        assert presented(certs, port, "api.example.com") == ("default.test", "h2")
        config_dir(d, port)
        s.proc.send_signal(signal.SIGHUP)

        assert wait_for(lambda: presented(certs, port, "api.example.com")[0] == "example.com", 20)
        assert presented(certs, port, "www.exact.test") == ("www.exact.test", "h2")
    finally:
        s.stop()


def test_sni_names():
    from skitaid.protocols.tls import sni_names
    assert sni_names(("default", "*", "example.com:8443", ".example.com", "*.b.org.")) == \
        ("example.com", ".example.com", "*.b.org.")


def test_a_retiring_worker_finishes_handshakes_it_accepted(certs, tmp_path):
    """Connections a worker accepted before a reload, whose TLS handshake
    starts only after that worker began to retire, still complete."""
    import shutil
    import signal
    import psutil
    from conftest import ServerProc, wait_for
    d = tmp_path / "etc"
    shutil.copytree(certs / "cert", d / "cert")
    shutil.copytree(certs / "elsewhere", d / "elsewhere")
    port = free_port()
    conf = config_dir(d, port)
    s = ServerProc([sys.executable, "-m", "skitaid", "run", "-c", conf], str(d), port=port)
    raws = []
    try:
        old = [p for p in psutil.Process(s.proc.pid).children()]

        def accepted():
            n = 0
            for p in old:
                n += sum(1 for c in p.net_connections("tcp") if c.laddr.port == port
                         and c.status == psutil.CONN_ESTABLISHED)
            return n >= 3
        raws = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        assert wait_for(accepted, 10)          # the old workers hold them, mid-handshake
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_log("retiring", 15)      # the new generation serves; the old one stops
        for raw in raws:
            with client_ctx(certs, ("h2",)).wrap_socket(raw, server_hostname="www.exact.test") as tls:
                assert tls.getpeercert()["subject"][0][0][1] == "www.exact.test"
    finally:
        for raw in raws:
            raw.close()
        s.stop()
