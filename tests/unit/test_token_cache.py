"""The verifier remembers tokens that verified: same answers, far less work."""
import time

import jwt
import pytest

from skitaid import tokens
from skitaid.config.model import GatewayConfig
from skitaid.tokens import Invalid, Verifier

SECRET = b"k" * 40


class Req:
    def __init__(self, token):
        self.headers = [("authorization", "Bearer " + token)]


def make(exp_in, **claims):
    payload = {"sub": "alice", "roles": ["admin"], "exp": int(time.time()) + exp_in}
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def verifier(**kw):
    return Verifier(GatewayConfig(enabled=True, secret=SECRET, algorithms=("HS256",), **kw))


def test_a_remembered_token_still_expires():
    v = verifier()
    exp = int(time.time()) + 1              # within the next second
    t = jwt.encode({"sub": "alice", "roles": ["admin"], "exp": exp}, SECRET, algorithm="HS256")
    assert v.verify(Req(t))[1] == ("admin",)
    assert t in v._cache
    deadline = time.monotonic() + 5
    while True:
        try:
            v.verify(Req(t))
        except Invalid as e:
            assert e.description == "the token has expired"
            break
        assert time.time() < exp + 0.05, "answered from the cache after its exp"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert t not in v._cache


def test_refused_tokens_are_not_remembered():
    v = verifier()
    bad = make(60)[:-2] + "xx"
    for _ in range(2):
        with pytest.raises(Invalid):
            v.verify(Req(bad))
    assert not v._cache
    with pytest.raises(Invalid):
        v.verify(Req(make(60, nbf=int(time.time()) + 100)))
    assert not v._cache


def test_claims_are_the_callers_own_copy():
    v = verifier()
    t = make(60)
    mine = v.claims(Req(t))
    mine["roles"].append("root")
    mine["sub"] = "mallory"
    claims, roles = v.verify(Req(t))
    assert claims["sub"] == "alice" and claims["roles"] == ["admin"] and roles == ("admin",)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "CACHE_SIZE", 3)
    v = verifier()
    for i in range(5):
        v.verify(Req(make(60, n=i)))
    assert len(v._cache) == 3
