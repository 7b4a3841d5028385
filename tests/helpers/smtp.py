"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

    with SMTPServer() as smtp:                    # plain
    with SMTPServer(tls=ctx, starttls=True, auth={"u": "p"}) as smtp:
        ...
        smtp.wait_count(10)
        smtp.received[0].rcpt_tos, smtp.received[0].message (an email.message)

Answers can be scripted: `data_answers` (popped per DATA, e.g. two "451 …"),
`rcpt_answers` (address → answer), and `hold()` stops every transaction at
RCPT until `release()` (to kill a client mid-transaction).
"""
import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    data: bytes
    tls: bool
    user: str

    @property
    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


def _login(session):
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    return login.decode() if isinstance(login, bytes) else (login or "")


class _Handler:
    def __init__(self, owner):
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        o = self.owner
        while o._held.is_set():
            with o.lock:
                o.waiting.add(id(session))
            await asyncio.sleep(0.01)
        with o.lock:
            o.waiting.discard(id(session))
        answer = o.rcpt_answers.get(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        o = self.owner
        with o.lock:
            o.data_tries += 1
            if o.data_answers:
                return o.data_answers.pop(0)
            o.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                       envelope.original_content or envelope.content,
                                       session.ssl is not None or server.transport
                                       .get_extra_info("ssl_object") is not None,
                                       _login(session)))
        return "250 2.0.0 queued"


class SMTPServer:
    def __init__(self, tls=None, starttls=False, implicit_tls=False, auth=None):
        self.lock = threading.Lock()
        self.received = []
        self.data_answers = []
        self.rcpt_answers = {}
        self.data_tries = 0
        self.waiting = set()
        self._held = threading.Event()
        self.logins = []
        kw = {}
        if auth is not None:
            kw.update(authenticator=self._authenticator(auth), auth_required=True,
                      auth_require_tls=bool(tls))
        if starttls:
            kw.update(tls_context=tls, require_starttls=True)
        if implicit_tls:
            kw.update(ssl_context=tls)
        from conftest import free_port
        self.port = free_port()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     server_hostname="localhost", **kw)

    def _authenticator(self, users):
        def check(server, session, envelope, mechanism, auth_data):
            user = auth_data.login.decode()
            ok = users.get(user) == auth_data.password.decode()
            with self.lock:
                self.logins.append((user, ok))
            return AuthResult(success=ok, handled=False, auth_data=auth_data)
        return check

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.release()
        self.controller.stop()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def hold(self):
        self._held.set()

    def release(self):
        self._held.clear()

    def count(self):
        with self.lock:
            return len(self.received)

    def wait_count(self, n, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.02)
        return self.count() >= n
