"""`was.email(...)`: compose a mail in app code and spool it; the agent delivers it.

    e = was.email("Hello", "me@example.com", ["you@example.com", "Él <el@example.com>"])
    e.add_content("Hello World<div><img src='cid:ID_A'></div>", "text/html")
    e.add_attachment("001.png", cid="ID_A")       # inline, shown by the HTML
    e.add_attachment("report.pdf")                # attached
    e.send()                                      # written to the spool; no SMTP here

The message is built with the standard `email` package: text and HTML as
multipart/alternative, inline images with the HTML as multipart/related,
attachments around them as multipart/mixed; non-ASCII subjects, names and
file names are encoded as RFC 2047/2231 say; Message-ID and Date are set.
"""
import email.policy
import email.utils
import mimetypes
import os
import re
import threading
import time
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage

from .spool import Spool

ENV_SPOOL = "SKITAID_SMTPDA_SPOOL"      # where send() spools, for processes skitaid did not start
PORTS = {"ssl": 465, "starttls": 587, "plain": 25}



class _Registry(HeaderRegistry):
    """The standard header classes, made once: the stock registry builds a new
    class per header set (about a third of the time of a small mail)."""

    def __init__(self):
        super().__init__()
        self._made = {}

    def __getitem__(self, name):
        key = name.lower()
        cls = self._made.get(key)
        if cls is None:
            cls = self._made[key] = super().__getitem__(name)
        return cls


POLICY = email.policy.SMTP.clone(header_factory=_Registry())
_defaults = {"smtp": None, "spool": None, "fsync": True}
_spools = {}
_lock = threading.Lock()
_ADDR = re.compile(r"[^@\s<>()\[\]\\,;:\"]+@[^@\s<>()\[\]\\,;:\"]+")


def _smtp_target(func, server, user, password, ssl, starttls):
    """The `smtp` part of an envelope: where and how this mail is delivered."""
    from ..config.smtpda import split_server
    if not isinstance(server, str):
        raise TypeError("%s(): server must be 'host' or 'host:port', got %r" % (func, server))
    try:
        host, port = split_server(server)
    except ValueError:
        raise ValueError("%s(): server must be 'host' or 'host:port', got %r"
                         % (func, server)) from None
    for name, value in (("user", user), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise TypeError("%s(): %s must be a string, got %s" % (func, name,
                                                                    type(value).__name__))
    if starttls:
        mode = "starttls"
    elif ssl:
        # TLS from the start on 465; elsewhere (587, the submission port) STARTTLS
        mode = "ssl" if port in (0, 465) else "starttls"
    else:
        mode = "plain"
    return {"server": server.strip(), "host": host, "port": port or PORTS[mode], "mode": mode,
            "user": user or "", "password": password or ""}


def set_smtp(server, user=None, password=None, ssl=False, starttls=None):
    """The SMTP server for mail that does not name its own (skitaid.set_smtp).
    Without it, the agent's [smtpda] server is used."""
    _defaults["smtp"] = _smtp_target("skitaid.set_smtp", server, user, password, ssl, starttls)


def configure_spool(path, fsync=True):
    """Where send() writes, and whether it waits for the disk (set from the
    config before the workers start)."""
    _defaults["spool"] = path
    _defaults["fsync"] = bool(fsync)
    if path:
        os.environ[ENV_SPOOL] = path


def spool_path():
    return _defaults["spool"] or os.environ.get(ENV_SPOOL) or ""


def _spool():
    path = spool_path()
    if not path:
        raise RuntimeError("was.email().send(): no mail spool configured: serve with skitaid "
                           "(the spool is <var_path>/smtpda, or [smtpda] spool), or set $%s"
                           % ENV_SPOOL)
    with _lock:
        spool = _spools.get(path)
        if spool is None or spool.fsync != _defaults["fsync"]:
            spool = _spools[path] = Spool(path, _defaults["fsync"])
    return spool


def _no_newline(func, name, value):
    if not isinstance(value, str):
        raise TypeError("%s(): %s must be a string, got %s" % (func, name, type(value).__name__))
    if "\r" in value or "\n" in value:
        raise ValueError("%s(): %s must not contain line breaks: %r" % (func, name, value))
    return value


def _addresses(func, name, value, required=True):
    """'a@b', 'Name <a@b>', or a list of them → [(display, addr-spec)]."""
    if value is None:
        value = []
    items = [value] if isinstance(value, str) else list(value)
    found = []
    for item in items:
        _no_newline(func, name, item)
        for display, addr in email.utils.getaddresses([item]):
            if not _ADDR.fullmatch(addr or ""):
                raise ValueError("%s(): %s: not an e-mail address: %r" % (func, name, item))
            found.append((display, addr))
    if required and not found:
        raise ValueError("%s(): %s: at least one e-mail address" % (func, name))
    return found


def _header_address(display, addr):
    user, _, domain = addr.rpartition("@")
    return Address(display, user, domain)


class Email:
    """One mail; `send()` spools it. Not shared between threads."""

    def __init__(self, subject, snd, rcpt, cc=None, bcc=None, reply_to=None):
        func = "was.email"
        self.subject = _no_newline(func, "subject", subject)
        self.sender = _addresses(func, "snd", snd)
        if len(self.sender) != 1:
            raise ValueError("was.email(): snd: one sender address, got %r" % (snd,))
        self.to = _addresses(func, "rcpt", rcpt, required=not (cc or bcc))
        self.cc = _addresses(func, "cc", cc, required=False)
        self.bcc = _addresses(func, "bcc", bcc, required=False)
        self.reply_to = _addresses(func, "reply_to", reply_to, required=False)
        self._texts = []            # (content, subtype, charset)
        self._inline = []           # (data, maintype, subtype, filename, cid)
        self._attached = []
        self._headers = []
        self._smtp = None

    def set_smtp(self, server, user=None, password=None, ssl=False, starttls=None):
        """Deliver this mail through `server` ('host:port'); ssl=True: TLS
        (from the start on 465, by STARTTLS elsewhere); starttls=True: STARTTLS."""
        self._smtp = _smtp_target("Email.set_smtp", server, user, password, ssl, starttls)

    def add_content(self, content, mimetype="text/plain", charset="utf-8"):
        """The body: 'text/plain' and/or 'text/html' (both: the reader picks)."""
        if not isinstance(content, str):
            raise TypeError("Email.add_content(): content must be a string, got %s"
                            % type(content).__name__)
        maintype, _, subtype = str(mimetype).partition("/")
        if maintype != "text" or subtype not in ("plain", "html"):
            raise ValueError("Email.add_content(): mimetype must be 'text/plain' or "
                             "'text/html', got %r" % (mimetype,))
        self._texts.append((content, subtype, charset))

    def add_attachment(self, path, name=None, cid=None, mimetype=None, data=None):
        """A file (a path, or `data` bytes with a `name`). With `cid` it is
        inline, shown where the HTML says <img src='cid:...'>."""
        func = "Email.add_attachment"
        if data is None:
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError("%s(): path must be a file path (or give data=bytes), got %r"
                                % (func, path))
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise ValueError("%s(): cannot read %s: %s" % (func, path, e.strerror)) from None
        elif not isinstance(data, (bytes, bytearray)):
            raise TypeError("%s(): data must be bytes, got %s" % (func, type(data).__name__))
        name = name or (os.path.basename(os.fspath(path)) if path else "")
        if not name:
            raise ValueError("%s(): a name for the attached data" % func)
        _no_newline(func, "name", name)
        mimetype = mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream"
        maintype, _, subtype = mimetype.partition("/")
        if not subtype:
            raise ValueError("%s(): mimetype must be type/subtype, got %r" % (func, mimetype))
        if cid is not None:
            cid = _no_newline(func, "cid", cid).strip("<>")
            if not cid or " " in cid:
                raise ValueError("%s(): cid must be a word without spaces, got %r" % (func, cid))
            self._inline.append((bytes(data), maintype, subtype, name, cid))
        else:
            self._attached.append((bytes(data), maintype, subtype, name, None))

    def add_header(self, name, value):
        _no_newline("Email.add_header", "name", name)
        _no_newline("Email.add_header", "value", value)
        if name.lower() in ("from", "to", "cc", "bcc", "subject", "message-id", "date"):
            raise ValueError("Email.add_header(): %s is set by was.email() itself" % name)
        self._headers.append((name, value))

    # -- building ------------------------------------------------------------------------
    def build(self):
        """The EmailMessage (headers and parts), without sending it."""
        msg = EmailMessage(policy=POLICY)
        msg["Subject"] = self.subject
        msg["From"] = [_header_address(*a) for a in self.sender]
        if self.to:
            msg["To"] = [_header_address(*a) for a in self.to]
        if self.cc:
            msg["Cc"] = [_header_address(*a) for a in self.cc]
        if self.reply_to:
            msg["Reply-To"] = [_header_address(*a) for a in self.reply_to]
        msg["Date"] = email.utils.formatdate(localtime=True)
        # the sender's domain, not socket.getfqdn(): that may wait on DNS
        msg["Message-ID"] = email.utils.make_msgid(domain=self.sender[0][1].rpartition("@")[2])
        for name, value in self._headers:
            msg[name] = value
        plain = [t for t in self._texts if t[1] == "plain"]
        html = [t for t in self._texts if t[1] == "html"]
        body = msg
        if plain:
            msg.set_content(_joined(plain), subtype="plain", charset=plain[0][2])
        if html:
            if plain:
                msg.add_alternative(_joined(html), subtype="html", charset=html[0][2])
                body = msg.get_payload()[-1]
            else:
                msg.set_content(_joined(html), subtype="html", charset=html[0][2])
        elif not plain:
            msg.set_content("", subtype="plain")
        for data, maintype, subtype, name, cid in self._inline:
            body.add_related(data, maintype=maintype, subtype=subtype, cid="<%s>" % cid,
                             disposition="inline", filename=name)
        for data, maintype, subtype, name, _ in self._attached:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return msg

    def envelope(self):
        rcpt = [a for _, a in self.to + self.cc + self.bcc]
        return {"from": self.sender[0][1], "to": rcpt, "created": time.time(),
                "smtp": self._smtp or _defaults["smtp"]}

    def send(self):
        """Spool the mail (atomically) and return its spool id; the agent
        delivers it. Never talks to an SMTP server."""
        msg = self.build()
        envelope = self.envelope()
        envelope["message_id"] = msg["Message-ID"]
        return _spool().put(envelope, msg.as_bytes())


def _joined(texts):
    return "\n".join(t[0] for t in texts)
