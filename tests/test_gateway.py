"""The gateway: `source =` and `role =` on alias mounts, bearer tokens (JWT).

A real skitaid proxy sits in front of a raw recording backend
(tests/helpers/recording_backend.py) that counts what reaches it: every
refusal must leave it untouched. Tokens are made with PyJWT in the test and
RSA keys with `cryptography`, as a user's identity provider would.
"""
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import ServerProc, wait_for
from helpers.http1 import ResponseReader
from helpers.recording_backend import RecordingBackend

SOURCE_PROXY = r'''
import os
import skitaid
skitaid.alias("@open", "http", [os.environ["MEMBER"]])
skitaid.alias("@local", "http", [os.environ["MEMBER"]], source="127.0.0.1, 10.0.0.0/8")
skitaid.mount("/open", "@open")
skitaid.mount("/local", "@local")
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
'''


def request(port, path, headers=(), source="127.0.0.1"):
    """One GET from the client address `source`; the parsed response."""
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    try:
        head = "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % path
        head += "".join("%s: %s\r\n" % h for h in headers)
        sock.sendall(head.encode("latin-1") + b"\r\n")
        return ResponseReader(lambda: sock.recv(65536)).response()
    finally:
        sock.close()


def quiet(backend, n, timeout=0.5):
    """The backend has seen exactly `n` requests, and no more arrive meanwhile."""
    wait_for(lambda: backend.count() > n, timeout)
    return backend.count() == n


@pytest.fixture(scope="module")
def source_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    script = root / "proxy.py"
    script.write_text(SOURCE_PROXY)
    with RecordingBackend() as b:
        with ServerProc([sys.executable, str(script)], str(root), env={"MEMBER": b.member}) as p:
            yield b, p


def test_source_refuses_other_networks_before_the_backend(source_pair):
    backend, proxy = source_pair
    backend.reset()
    r = request(proxy.port, "/local/x", source="127.0.0.2")
    assert r.status == 403
    assert quiet(backend, 0)
    assert request(proxy.port, "/open/x", source="127.0.0.2").status == 200
    assert wait_for(lambda: backend.count() == 1)
    r = request(proxy.port, "/local/y", source="127.0.0.1")
    assert r.status == 200 and r.body == b"ok"
    assert wait_for(lambda: backend.count() == 2)
    assert backend.snapshot()[-1].target == "/y"


def make_server_dir(tmp_path, text, name="web.conf"):
    root = tmp_path / "etc"
    (root / "servers-enabled").mkdir(parents=True)
    (root / "servers-enabled" / name).write_text(textwrap.dedent(text))
    return root


ROLE_WITHOUT_GATEWAY = """\
    [server]
    port = 8080
    [routes:line]
    /members = @members
    [@members]
    members = 127.0.0.1:5001
    role = admin
    """


def test_role_without_gateway_is_a_config_error(tmp_path):
    from skitaid.config import ConfigError, load_config
    root = make_server_dir(tmp_path, ROLE_WITHOUT_GATEWAY)
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    text = str(info.value)
    assert "[@members] role" in text and "'admin'" in text and "gateway" in text


def test_role_without_gateway_in_the_api_refuses_to_start(serve, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent('''
        import skitaid
        skitaid.alias("@members", "http", ["127.0.0.1:5001"], role="admin")
        skitaid.mount("/members", "@members")
        skitaid.run(port=5999)
        '''))
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=20)
    assert done.returncode != 0
    assert "@members" in done.stderr and "role" in done.stderr and "enable_gateway" in done.stderr


# ---------------------------------------------------------------- bearer tokens

import json  # noqa: E402
import time  # noqa: E402

import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from conftest import free_port  # noqa: E402

SECRET = "s3cret-for-tests-only-" + "0123456789abcdef" * 3
ISSUER = "https://idp.test"

HS_PROXY = r'''
import json, os
import skitaid
def who(env, start):
    start("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"user": env.get("REMOTE_USER"), "roles": env.get("skitaid.roles"),
                        "claims": env.get("skitaid.claims")}).encode()]
skitaid.enable_gateway(True, os.environ["SECRET"], issuer="https://idp.test", audience="api",
                       realm="members")
skitaid.alias("@members", "http", [os.environ["MEMBER"]], role="admin")
skitaid.alias("@staff", "http", [os.environ["MEMBER"]], role="staff, admin",
              source="127.0.0.1")
skitaid.mount("/members", "@members")
skitaid.mount("/staff", "@staff")
skitaid.mount("/who", who)
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
'''


def claims(**extra):
    now = int(time.time())
    c = {"sub": "alice", "iss": ISSUER, "aud": "api", "iat": now, "exp": now + 300,
         "roles": ["admin"]}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def hs256(**extra):
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def bearer(token):
    return [("Authorization", "Bearer " + token)]


@pytest.fixture(scope="module")
def hs_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("hs")
    script = root / "proxy.py"
    script.write_text(HS_PROXY)
    with RecordingBackend() as b:
        with ServerProc([sys.executable, str(script)], str(root),
                        env={"MEMBER": b.member, "SECRET": SECRET}) as p:
            yield b, p


@pytest.fixture
def hs(hs_pair):
    hs_pair[0].reset()
    return hs_pair


def challenge_of(r):
    value = r.header("www-authenticate")
    assert value and value.startswith('Bearer realm="members"'), r.headers
    return value


def test_valid_hs256_token_reaches_the_backend_with_its_authorization(hs):
    backend, proxy = hs
    token = hs256()
    r = request(proxy.port, "/members/list", bearer(token))
    assert r.status == 200 and r.body == b"ok"
    assert wait_for(lambda: backend.count() == 1)
    rec = backend.snapshot()[0]
    assert rec.target == "/list"
    assert rec.header("authorization") == "Bearer " + token     # passed on unchanged


def test_no_token_is_401_with_the_realm_only(hs):
    backend, proxy = hs
    r = request(proxy.port, "/members/list")
    assert r.status == 401
    assert challenge_of(r) == 'Bearer realm="members"'
    r = request(proxy.port, "/members/list", [("Authorization", "Basic YTpi")])
    assert r.status == 401 and challenge_of(r) == 'Bearer realm="members"'
    assert quiet(backend, 0)


BAD_TOKENS = {
    "expired": lambda: hs256(exp=int(time.time()) - 60, iat=int(time.time()) - 120),
    "not yet valid": lambda: hs256(nbf=int(time.time()) + 300),
    "wrong signature": lambda: jwt.encode(claims(), SECRET + "x", algorithm="HS256"),
    "alg none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "wrong audience": lambda: hs256(aud="other"),
    "no audience": lambda: hs256(aud=None),
    "wrong issuer": lambda: hs256(iss="https://evil.test"),
    "no exp": lambda: hs256(exp=None),
    "HS512 not configured": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "garbage": lambda: "not.a.token",
    "bad characters": lambda: "abc def,ghi",
    "oversized": lambda: "a" * 9000,
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_invalid_token_and_never_reach_the_backend(hs, case):
    backend, proxy = hs
    r = request(proxy.port, "/members/list", bearer(BAD_TOKENS[case]()))
    assert r.status == 401, (case, r.status, r.body)
    value = challenge_of(r)
    assert 'error="invalid_token"' in value and "error_description=" in value
    if case == "expired":
        assert "expired" in value
    assert SECRET not in value and "Traceback" not in r.body.decode("latin-1")
    assert quiet(backend, 0)


def test_two_authorization_fields_are_refused(hs):
    backend, proxy = hs
    r = request(proxy.port, "/members/x", bearer(hs256()) + bearer(hs256(sub="bob")))
    assert r.status == 401 and 'error="invalid_token"' in challenge_of(r)
    assert quiet(backend, 0)


def test_roles_as_list_or_string_and_wrong_role_is_403(hs):
    backend, proxy = hs
    assert request(proxy.port, "/members/a", bearer(hs256(roles="user admin"))).status == 200
    assert request(proxy.port, "/staff/a", bearer(hs256(roles=["staff"]))).status == 200
    assert wait_for(lambda: backend.count() == 2)
    for token in (hs256(roles=["user"]), hs256(roles="user staffer"), hs256(roles=None),
                  hs256(roles={"admin": True})):
        r = request(proxy.port, "/members/a", bearer(token))
        assert r.status == 403 and r.header("www-authenticate") is None
    assert quiet(backend, 2)


def test_valid_token_from_outside_source_is_403(hs):
    backend, proxy = hs
    r = request(proxy.port, "/staff/a", bearer(hs256()), source="127.0.0.2")
    assert r.status == 403
    r = request(proxy.port, "/staff/a", source="127.0.0.2")    # no token: the source first
    assert r.status == 403
    assert quiet(backend, 0)


def test_app_mounts_get_the_identity_of_a_valid_token(hs):
    _, proxy = hs
    token = hs256(roles="admin ops")
    got = json.loads(request(proxy.port, "/who", bearer(token)).body)
    assert got["user"] == "alice" and got["roles"] == ["admin", "ops"]
    assert got["claims"]["iss"] == ISSUER
    # no token, or a bad one: anonymous, the app decides
    assert json.loads(request(proxy.port, "/who").body) == {"user": None, "roles": None,
                                                            "claims": None}
    bad = json.loads(request(proxy.port, "/who", bearer(hs256(aud="x"))).body)
    assert bad["user"] is None


# ---------------------------------------------------------------- RS256 from a server file

RS_CONF = """\
[server]
port = %(port)d
threads = 2
request_log = no

[gateway]
enabled = yes
public_key_file = keys/idp.pem
algorithms = RS256
issuer = https://idp.test
audience = api

[routes:line]
/api = @api

[@api]
members = %(member)s
role = reader
"""


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rs_pair(tmp_path_factory, rsa_key):
    root = tmp_path_factory.mktemp("rs")
    (root / "etc" / "servers-enabled").mkdir(parents=True)
    (root / "etc" / "keys").mkdir()
    (root / "etc" / "keys" / "idp.pem").write_bytes(public_pem(rsa_key))
    (root / "etc" / "skitaid.conf").write_text("[global]\nuser =\n")
    port = free_port()
    with RecordingBackend() as b:
        (root / "etc" / "servers-enabled" / "api.conf").write_text(
            RS_CONF % {"port": port, "member": b.member})
        with ServerProc([sys.executable, "-m", "skitaid", "run", "-c", str(root / "etc")],
                        str(root), port=port) as p:
            yield b, p


def test_rs256_valid_and_the_public_key_as_hmac_secret_refused(rs_pair, rsa_key):
    backend, proxy = rs_pair
    backend.reset()
    good = jwt.encode(claims(roles="reader"), rsa_key, algorithm="RS256")
    assert request(proxy.port, "/api/x", bearer(good)).status == 200
    assert wait_for(lambda: backend.count() == 1)
    # the classic confusion: HS256 "signed" with the public key as the secret
    # (made by hand: PyJWT itself refuses to use a PEM key as an HMAC secret)
    import base64
    import hashlib
    import hmac

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(
        json.dumps(claims(roles="reader")).encode())
    forged = signing + b"." + b64(hmac.new(public_pem(rsa_key), signing, hashlib.sha256).digest())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (forged.decode(), jwt.encode(claims(roles="reader"), other, algorithm="RS256"),
                  jwt.encode(claims(roles="reader"), rsa_key, algorithm="PS256")):
        r = request(proxy.port, "/api/x", bearer(token))
        assert r.status == 401 and 'error="invalid_token"' in r.header("www-authenticate")
    assert request(proxy.port, "/api/x", bearer(
        jwt.encode(claims(roles="writer"), rsa_key, algorithm="RS256"))).status == 403
    assert quiet(backend, 1)


# ---------------------------------------------------------------- [gateway] mistakes

ROUTES = "[routes:line]\n/ = www\n"


@pytest.mark.parametrize("section, expected", [
    ("enabled = yes\n", "[gateway] enabled: found 'yes', expected a key to check tokens with"),
    ("enabled = yes\nsecret = %s\npublic_key_file = k.pem\n" % SECRET,
     "[gateway] public_key_file: found 'k.pem', expected one of secret, secret_file"),
    ("enabled = yes\nsecret = %s\nalgorithms = none\n" % SECRET,
     "[gateway] algorithms: found 'none', expected algorithms from HS256"),
    ("enabled = yes\nsecret = %s\nalgorithms = RS256\n" % SECRET,
     "expected HMAC algorithms (HS256, HS384, HS512) only with a secret"),
    ("enabled = yes\npublic_key_file = k.pem\nalgorithms = RS256, HS256\n",
     "expected asymmetric algorithms only with a public key or JWKS (HS256 is HMAC)"),
    ("enabled = yes\nsecret = short\n", "[gateway] secret: found '(hidden)', expected a secret "
     "of 32 bytes or more for HS256 (it has 5)"),
    ("enabled = yes\nsecret = %s\nalgorithms = HS512\n" % SECRET[:40],
     "expected a secret of 64 bytes or more for HS512"),
    ("enabled = yes\npublic_key_file = nowhere.pem\n",
     "[gateway] public_key_file: found 'nowhere.pem', expected a readable file"),
    ("enabled = yes\npublic_key_file = notakey.pem\n",
     "[gateway] public_key_file: found 'notakey.pem', expected a PEM public key for RS256"),
    ("enabled = yes\njwks_file = notakey.pem\n",
     "[gateway] jwks_file: found 'notakey.pem', expected a JWKS file of public keys"),
    ("enabled = yes\nsecret = %s\nleeway = -1\nrealm = a\"b\nheader = X Token\n" % SECRET,
     "[gateway] leeway: found '-1', expected a number of seconds"),
    ("enabled = yes\nsecret = %s\nsecrets = x\n" % SECRET,
     "[gateway] secrets: found 'x', expected a known key of [gateway] (did you mean 'secret'?)"),
])
def test_gateway_mistakes_name_file_section_and_key(tmp_path, rsa_key, section, expected):
    from skitaid.config import ConfigError, load_config
    root = make_server_dir(tmp_path, "[server]\nport = 8080\n[gateway]\n" + section + ROUTES)
    (root / "www").mkdir()
    (root / "k.pem").write_bytes(public_pem(rsa_key))
    (root / "notakey.pem").write_text("hello\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(root))
    text = str(info.value)
    assert "servers-enabled/web.conf" in text and expected in text, text
    assert SECRET not in text


def test_gateway_in_yaml_and_ini_alike(tmp_path, rsa_key):
    from skitaid.config import load_config
    root = tmp_path / "etc"
    (root / "servers-enabled").mkdir(parents=True)
    (root / "www").mkdir()
    (root / "k.pem").write_bytes(public_pem(rsa_key))
    (root / "servers-enabled" / "a.yaml").write_text(textwrap.dedent("""\
        server: {port: 8080}
        gateway:
          enabled: yes
          public_key_file: k.pem
          algorithms: [RS256, PS256]
          audience: api
          leeway: 5
          realm: api
          roles_claim: groups
        routes: {/: www, /api: "@api"}
        "@api": {members: 127.0.0.1:5001, role: reader, source: 10.0.0.0/8}
        """))
    (root / "servers-enabled" / "b.conf").write_text(textwrap.dedent("""\
        [server]
        port = 8081
        [gateway]
        enabled = yes
        public_key_file = k.pem
        algorithms = RS256, PS256
        audience = api
        leeway = 5
        realm = api
        roles_claim = groups
        [routes:line]
        / = www
        /api = @api
        [@api]
        members = 127.0.0.1:5001
        role = reader
        source = 10.0.0.0/8
        """))
    a, b = load_config(str(root)).servers
    assert a.gateway == b.gateway
    g = a.gateway
    assert g.enabled and g.algorithms == ("RS256", "PS256") and g.audience == ("api",)
    assert g.public_key.startswith(b"-----BEGIN PUBLIC KEY") and g.roles_claim == "groups"
    assert "BEGIN PUBLIC KEY" not in repr(g)
    assert a.aliases[0].allow == ("10.0.0.0/8",)


def test_enable_gateway_refuses_what_the_section_refuses(tmp_path):
    code = textwrap.dedent('''
        import skitaid
        for kw in ({"secret_key": "short"}, {"secret_key": "x" * 40, "algorithms": ["none"]},
                   {"public_key_file": "missing.pem"}):
            try:
                skitaid.enable_gateway(True, **kw)
            except ValueError as e:
                print("refused:", e)
        ''')
    done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=20)
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stderr
    assert "secret" in lines[0] and "32 bytes" in lines[0] and "short" not in lines[0]
    assert "algorithms" in lines[1] and "'none'" in lines[1]
    assert "public_key_file" in lines[2] and "readable file" in lines[2]


# ---------------------------------------------------------------- the auth handler

HOOK_PROXY = r'''
import os, threading
import skitaid
def auth(request, claims):
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("the auth handler ran on the event loop")
    user = claims["sub"]
    if user == "carol":
        raise RuntimeError("directory-is-down")
    if user == "bob":
        return None
    return user, ("admin" if user == "alice" else "guest")
skitaid.enable_gateway(True, os.environ["SECRET"], issuer="https://idp.test", audience="api")
skitaid.set_auth_handler(auth)
skitaid.alias("@members", "http", [os.environ["MEMBER"]], role="admin")
skitaid.mount("/members", "@members")
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
'''


def test_auth_handler_allows_denies_and_raises_in_the_thread_pool(tmp_path):
    script = tmp_path / "proxy.py"
    script.write_text(HOOK_PROXY)
    with RecordingBackend() as backend:
        with ServerProc([sys.executable, str(script)], str(tmp_path),
                        env={"MEMBER": backend.member, "SECRET": SECRET}) as proxy:
            # the hook decides, not the token's roles claim
            assert request(proxy.port, "/members/a", bearer(hs256(roles=[]))).status == 200
            assert wait_for(lambda: backend.count() == 1)
            assert request(proxy.port, "/members/a", bearer(hs256(sub="bob"))).status == 403
            assert request(proxy.port, "/members/a", bearer(hs256(sub="dave"))).status == 403
            r = request(proxy.port, "/members/a", bearer(hs256(sub="carol")))
            assert r.status == 500 and b"directory-is-down" not in r.body
            assert proxy.wait_log("RuntimeError: directory-is-down")
            assert "Traceback (most recent call last)" in proxy.log
            # a bad token never reaches the hook
            assert request(proxy.port, "/members/a", bearer(hs256(aud="x"))).status == 401
            assert quiet(backend, 1)


# ---------------------------------------------------------------- a JWKS file

def test_jwks_file_picks_the_key_by_kid(tmp_path, rsa_key):
    from jwt.algorithms import RSAAlgorithm
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = []
    for kid, key in (("one", rsa_key), ("two", other)):
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg="RS256", use="sig")
        keys.append(jwk)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    script = tmp_path / "proxy.py"
    script.write_text(r'''
import os
import skitaid
skitaid.enable_gateway(True, jwks_file="jwks.json", algorithms="RS256", audience="api")
skitaid.alias("@members", "http", [os.environ["MEMBER"]], role="admin")
skitaid.mount("/members", "@members")
skitaid.run(port=int(os.environ["PORT"]), threads=2, backend_timeout=5, request_log=False)
''')
    with RecordingBackend() as backend:
        with ServerProc([sys.executable, str(script)], str(tmp_path),
                        env={"MEMBER": backend.member}) as proxy:
            def token(key, kid):
                return jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid})
            assert request(proxy.port, "/members/a", bearer(token(other, "two"))).status == 200
            assert request(proxy.port, "/members/a", bearer(token(rsa_key, "one"))).status == 200
            assert wait_for(lambda: backend.count() == 2)
            for bad in (token(rsa_key, "two"), token(rsa_key, "three"),
                        jwt.encode(claims(), rsa_key, algorithm="RS256")):
                assert request(proxy.port, "/members/a", bearer(bad)).status == 401
            assert quiet(backend, 2)
    # a symmetric key in a JWKS is refused: it would be an HMAC secret
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    done = subprocess.run([sys.executable, "-c", "import skitaid; skitaid.enable_gateway("
                           "True, jwks_file='jwks.json')"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=20)
    assert done.returncode != 0 and "oct" in done.stderr
