"""The mail agent's pure parts: [smtpda] rules, was.email() arguments, spool states."""
import os

import pytest

from skitaid.config.build import GLOBAL, SMTPDA, FileContext, RawSection, build_global
from skitaid.config.ini import parse_global
from skitaid.smtpda import compose, spool
from skitaid.smtpda.agent import next_delay


def build(root, entries, global_entries=()):
    ctx = FileContext("skitaid.conf", str(root))
    g = build_global(ctx, [RawSection("global", GLOBAL, list(global_entries)),
                           RawSection("smtpda", SMTPDA, entries)])
    return g, [str(p) for p in ctx.problems]


def test_smtpda_section_values(tmp_path):
    (tmp_path / "pw").write_text("top secret\n")
    g, problems = build(tmp_path, [("server", "smtp.example.com:587"), ("user", "me"),
                                   ("password_file", "pw"), ("starttls", "yes"),
                                   ("retry_delays", "10s, 30s, 2m, 10m, 1h"),
                                   ("max_age", "2d"), ("concurrency", "8")],
                        [("smtpda", "yes")])
    assert problems == []
    m = g.mail
    assert g.smtpda and m.server == "smtp.example.com:587" and m.password == "top secret"
    assert m.retry_delays == (10, 30, 120, 600, 3600) and m.max_age == 172800
    assert m.concurrency == 8 and m.starttls and not m.ssl and m.verify
    assert "top secret" not in repr(g)


def test_smtpda_section_mistakes_name_file_section_and_key(tmp_path):
    _, problems = build(tmp_path, [("server", "smtp example"), ("retry_delays", "10s, soon"),
                                   ("max_age", "0"), ("ssl", "yes"), ("starttls", "yes"),
                                   ("concurrency", "0"), ("retrys", "3"),
                                   ("password_file", "missing")])
    joined = "\n".join(problems)
    for line in ("skitaid.conf [smtpda] server: found 'smtp example', expected an SMTP server "
                 "as host or host:port",
                 "[smtpda] retry_delays: found '10s, soon', expected durations separated by commas",
                 "[smtpda] max_age: found '0', expected a duration",
                 "[smtpda] starttls: found 'yes', expected ssl or starttls, not both",
                 "[smtpda] concurrency: found '0', expected an integer 1-64",
                 "[smtpda] retrys: found '3', expected a known key of [smtpda] (did you mean "
                 "'retry_delays'?)",
                 "[smtpda] password_file: found 'missing', expected a readable file"):
        assert line in joined, joined


def test_credentials_without_a_server_are_an_error(tmp_path):
    _, problems = build(tmp_path, [("user", "me"), ("password", "pw")])
    assert problems == ["skitaid.conf [smtpda] user: found 'me', expected a server key too "
                        "(credentials are for the [smtpda] server)"]


def test_smtpda_section_in_an_ini_file(tmp_path):
    conf = tmp_path / "skitaid.conf"
    conf.write_text("[global]\nvar_path = var\n[smtpda]\nserver = 127.0.0.1:2525\n"
                    "spool = /tmp/x-spool\n")
    g, problems = parse_global(str(conf), str(tmp_path))
    assert problems == [] and g.mail.server == "127.0.0.1:2525" and g.mail.spool == "/tmp/x-spool"


def test_email_arguments_are_checked():
    with pytest.raises(ValueError, match=r"was.email\(\): rcpt: not an e-mail address"):
        compose.Email("s", "me@example.com", "nobody")
    with pytest.raises(ValueError, match=r"was.email\(\): subject must not contain line breaks"):
        compose.Email("s\r\nBcc: x@example.com", "me@example.com", "a@example.com")
    with pytest.raises(ValueError, match=r"was.email\(\): snd: one sender"):
        compose.Email("s", ["a@example.com", "b@example.com"], "c@example.com")
    e = compose.Email("s", "me@example.com", "you@example.com")
    with pytest.raises(ValueError, match=r"Email.add_content\(\): mimetype"):
        e.add_content("x", "image/png")
    with pytest.raises(ValueError, match=r"Email.add_attachment\(\): cannot read"):
        e.add_attachment("/nonexistent/file.png")
    with pytest.raises(ValueError, match=r"Email.set_smtp\(\): server must be"):
        e.set_smtp("smtp example.com")
    with pytest.raises(TypeError, match=r"skitaid.set_smtp\(\): password must be a string"):
        compose.set_smtp("smtp.example.com", "me", 1234)


def test_set_smtp_modes():
    def mode(server, **kw):
        t = compose._smtp_target("f", server, None, None, kw.get("ssl", False),
                                 kw.get("starttls"))
        return t["mode"], t["port"]
    assert mode("smtp.example.com") == ("plain", 25)
    assert mode("smtp.example.com", ssl=True) == ("ssl", 465)
    assert mode("smtp.example.com:587", ssl=True) == ("starttls", 587)
    assert mode("smtp.example.com", starttls=True) == ("starttls", 587)
    assert mode("[::1]:2525") == ("plain", 2525)


def test_send_without_a_spool_says_how_to_get_one(monkeypatch):
    monkeypatch.setitem(compose._defaults, "spool", None)
    monkeypatch.delenv(compose.ENV_SPOOL, raising=False)
    with pytest.raises(RuntimeError, match="no mail spool configured"):
        compose.Email("s", "me@example.com", "you@example.com").send()


def test_spool_states_and_recovery(tmp_path):
    s = spool.Spool(str(tmp_path / "spool"))
    a = s.put({"from": "me@example.com", "to": ["a@example.com"]}, b"Subject: a\r\n\r\nx")
    b = s.put({"from": "me@example.com", "to": ["b@example.com"]}, b"Subject: b\r\n\r\nx")
    c = s.put({"from": "me@example.com", "to": ["c@example.com"]}, b"Subject: c\r\n\r\nx")
    for d in [s.path] + [s.dir(x) for x in spool.STATES]:
        assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(s.dir("new"), a)).st_mode & 0o777 == 0o600
    assert [n for _, n in s.due(0)] == sorted([a, b, c])
    path = s.claim("new", a)
    assert s.claim("new", a) is None                    # a second claim loses
    envelope, data = s.load(path)
    assert envelope["id"] == a and data == b"Subject: a\r\n\r\nx"
    s.defer(a, 1000, 1)
    assert s.listing("deferred") == ["1000~1~%s" % a]
    assert [n for _, n in s.due(999)] == sorted([b, c])
    # a killed agent: b answered (in done/), c claimed without an answer, a deferred claimed
    s.claim("new", b)
    os.rename(os.path.join(s.dir("sending"), b), os.path.join(s.dir("done"), b))
    s.claim("new", c)
    s.claim("deferred", "1000~1~%s" % a)
    removed, requeued = s.recover(now=2000)
    assert removed == [b] and sorted(requeued) == sorted([a, c])
    assert s.listing("new") == [c] and s.listing("deferred") == ["2000~1~%s" % a]
    assert s.listing("done") == [] and s.listing("sending") == []
    counts = s.counts()
    assert counts["queued"] == 1 and counts["deferred"] == 1 and counts["failed"] == 0


def test_failed_record_keeps_no_password(tmp_path):
    s = spool.Spool(str(tmp_path / "spool"))
    ident = s.put({"from": "me@example.com", "to": ["a@example.com"],
                   "smtp": {"server": "smtp.example.com", "password": "hunter2"}}, b"m")
    s.claim("new", ident)
    envelope, data = s.load(os.path.join(s.dir("sending"), ident))
    s.fail(ident, envelope, data, {"answer": "550 no"})
    record = open(os.path.join(s.dir("failed"), ident + ".json")).read()
    assert "hunter2" not in record and "550 no" in record and "smtp.example.com" in record
    assert s.listing("sending") == []


def test_retry_delays_repeat_the_last():
    delays = (10, 30, 120)
    assert [next_delay(delays, n) for n in (1, 2, 3, 4, 9)] == [10, 30, 120, 120, 120]
