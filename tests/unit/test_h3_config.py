"""The HTTP/3 keys (`quic`, `alt_svc_port`, `quic_retry`) in a server file
and in skitaid.run(): what they turn into and what a mistake says."""
import pytest

from skitaid.config.build import ROUTES, SERVER, FileContext, RawSection, build_server


@pytest.fixture
def root(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "cert.pem").write_text("not read here\n")
    return tmp_path


def build(root, server):
    ctx = FileContext("web.conf", str(root))
    sections = [RawSection("server", SERVER, list(server)),
                RawSection("routes:line", ROUTES, [("/", "www")])]
    config = build_server(ctx, sections, "web", "web.conf")
    return config, [str(p) for p in ctx.problems]


TLS = [("ssl", "yes"), ("certfile", "%s/cert.pem")]


def tls(root):
    return [(k, v % root if "%s" in v else v) for k, v in TLS]


def test_quic_on_a_tls_server(root):
    config, problems = build(root, tls(root) + [("port", "443"), ("quic", "4433")])
    assert problems == []
    assert (config.quic, config.alt_svc_port, config.quic_retry) == (4433, 0, False)
    assert config.alt_svc == 'h3=":4433"; ma=86400'


def test_the_advertised_port_and_retry(root):
    config, problems = build(root, tls(root) + [("quic", "4433"), ("alt_svc_port", "443"),
                                                ("quic_retry", "yes")])
    assert problems == []
    assert config.alt_svc == 'h3=":443"; ma=86400' and config.quic_retry


def test_no_quic_no_alt_svc(root):
    config, problems = build(root, tls(root))
    assert problems == [] and config.alt_svc == ""


def test_quic_needs_tls(root):
    _, problems = build(root, [("quic", "4433")])
    assert problems == ["web.conf [server] quic: found '4433', expected ssl = yes and a "
                        "certfile (HTTP/3 always runs over TLS)"]


@pytest.mark.parametrize("key, value, expected", [
    ("quic", "0", "expected an integer 1-65535"),
    ("quic", "udp", "expected an integer 1-65535"),
    ("alt_svc_port", "70000", "expected an integer 1-65535"),
    ("quic_retry", "maybe", "quic_retry: found 'maybe'"),
])
def test_bad_values(root, key, value, expected):
    _, problems = build(root, tls(root) + [("quic", "4433"), (key, value)] if key != "quic"
                        else tls(root) + [(key, value)])
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize("key, value", [("alt_svc_port", "443"), ("quic_retry", "yes")])
def test_keys_that_need_quic(root, key, value):
    _, problems = build(root, tls(root) + [(key, value)])
    assert problems == ["web.conf [server] %s: found %r, expected quic = PORT too (%s only "
                        "applies to HTTP/3)" % (key, value, key)]


def test_quic_on_a_unix_socket(root):
    _, problems = build(root, tls(root) + [("address", "unix:%s/s.sock" % root), ("quic", "4433")])
    assert any("quic" in p and "UNIX socket" in p for p in problems), problems


def test_run_refuses_quic_without_tls():
    import skitaid
    from skitaid import api
    from skitaid.api import build_config
    saved = list(api._mounts)
    try:
        skitaid.mount("/", lambda e, s: [])
        with pytest.raises(ValueError, match=r"skitaid.run\(quic=4433\): needs ssl = yes"):
            build_config(quic=4433)
        with pytest.raises(ValueError, match=r"skitaid.run\(alt_svc_port=443\): needs quic"):
            build_config(alt_svc_port=443)
        with pytest.raises(ValueError, match=r"skitaid.run\(quic='4433'\): needs a UDP port"):
            build_config(quic="4433")
    finally:
        api._mounts[:] = saved
