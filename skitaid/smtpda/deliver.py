"""One delivery with smtplib, and what the server's answer means for the mail.

An outcome is one of
    ("sent", answer, [])                        every recipient accepted
    ("partial", answer, [(rcpt, code, text)])   some refused (the rest accepted)
    ("temporary", answer, [])                   4xx, a lost connection, TLS or AUTH trouble
    ("permanent", answer, [])                   5xx: retrying will not help
`answer` is the server's words (or the error), for logs and failed/ records.
"""
import smtplib
import socket
import ssl

from .compose import PORTS


def tls_context(cfg):
    """Certificates are verified (against cafile, else the system's CAs)
    unless `verify = no`."""
    ctx = ssl.create_default_context(cafile=cfg.cafile or None)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def target_of(envelope, cfg):
    """(host, port, mode, user, password) for this mail: its own set_smtp(),
    else the [smtpda] server; None when neither names one."""
    smtp = envelope.get("smtp")
    if smtp:
        return (smtp["host"], int(smtp["port"]), smtp["mode"], smtp.get("user", ""),
                smtp.get("password", ""))
    if not cfg.server:
        return None
    from ..config.smtpda import split_server
    host, port = split_server(cfg.server)
    mode = "ssl" if cfg.ssl else "starttls" if cfg.starttls else "plain"
    return host, port or PORTS[mode], mode, cfg.user, cfg.password


def describe(target):
    """host:port (mode, user) — never the password."""
    host, port, mode, user, _ = target
    return "%s:%d (%s%s)" % (host, port, mode, ", user %s" % user if user else "")


def connect(target, cfg, context):
    host, port, mode, user, password = target
    if mode == "ssl":
        conn = smtplib.SMTP_SSL(host, port, timeout=cfg.timeout, context=context)
    else:
        conn = smtplib.SMTP(host, port, timeout=cfg.timeout)
    try:
        conn.ehlo()
        if mode == "starttls":
            conn.starttls(context=context)
            conn.ehlo()
        if user:
            conn.login(user, password)
    except BaseException:
        _close(conn)
        raise
    return conn


def _close(conn):
    try:
        conn.quit()
    except Exception:
        try:
            conn.close()
        except Exception:
            pass


def close(conn):
    _close(conn)


def _words(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return "%s %s" % (code, " ".join(str(msg).split()))


def send(conn, envelope, data):
    """Send one mail over an open connection: an outcome (see the module)."""
    try:
        refused = conn.sendmail(envelope["from"], envelope["to"], data)
    except smtplib.SMTPRecipientsRefused as e:
        return _refused(e.recipients, everyone=True)
    except smtplib.SMTPResponseException as e:
        # sender refused, data refused, ...: the code decides
        kind = "permanent" if 500 <= e.smtp_code < 600 else "temporary"
        return kind, _words(e.smtp_code, e.smtp_error), []
    if refused:
        return _refused(refused, everyone=False)
    return "sent", "250 accepted", []


def _refused(recipients, everyone):
    listed = [(r, code, _words(code, msg)) for r, (code, msg) in recipients.items()]
    answer = "; ".join("%s: %s" % (r, words) for r, _, words in listed)
    if everyone and all(500 <= code < 600 for _, code, _ in listed):
        return "permanent", answer, []
    return "partial", answer, listed


def attempt(conn_cache, target, cfg, context, envelope, data):
    """Connect (or reuse the thread's connection to the same server) and send.
    Connection-level trouble is temporary; returns (outcome, kept connection)."""
    conn = conn_cache.get(target)
    if conn is not None:
        try:                        # an idle connection the server may have dropped
            if conn.noop()[0] != 250:
                raise smtplib.SMTPServerDisconnected("noop refused")
        except (smtplib.SMTPException, OSError):
            _close(conn)
            conn = None
    try:
        if conn is None:
            conn = connect(target, cfg, context)
        outcome = send(conn, envelope, data)
    except Exception as e:
        conn_cache.pop(target, None)
        if conn is not None:
            _close(conn)
        return _trouble(e), None
    conn_cache[target] = conn
    return outcome, conn


def _trouble(e):
    """The outcome of an exception raised while connecting or sending."""
    if isinstance(e, smtplib.SMTPAuthenticationError):
        # a wrong password is fixed by the operator; the mail waits for it
        return "temporary", "authentication failed: " + _words(e.smtp_code, e.smtp_error), []
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return "temporary", "server does not support it: %s" % e, []
    if isinstance(e, smtplib.SMTPResponseException):        # the greeting, HELO, STARTTLS
        permanent = 500 <= e.smtp_code < 600 and not isinstance(e, smtplib.SMTPConnectError)
        return ("permanent" if permanent else "temporary"), _words(e.smtp_code, e.smtp_error), []
    if isinstance(e, ssl.SSLCertVerificationError):
        return "temporary", "TLS: certificate verify failed: %s" % e.verify_message, []
    if isinstance(e, ssl.SSLError):
        return "temporary", "TLS: %s" % e, []
    if isinstance(e, (smtplib.SMTPException, OSError, socket.timeout)):
        return "temporary", "%s: %s" % (type(e).__name__, e), []
    raise e
