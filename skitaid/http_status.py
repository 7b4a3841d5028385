"""Status lines with reason phrases, built once."""
from http import HTTPStatus

from .http.headers import bad_value

REASONS = {s.value: s.phrase for s in HTTPStatus}
REASONS.setdefault(425, "Too Early")

_lines = {}


def reason(code):
    return REASONS.get(code, "Unknown")


def status_line(status, version="1.1"):
    """b'HTTP/1.1 200 OK\\r\\n' for an int code or a WSGI 'NNN Reason' string.

    ValueError for a status that cannot be sent (CR/LF, not latin-1)."""
    key = (status, version)
    line = _lines.get(key)
    if line is None:
        if isinstance(status, int):
            text = "%d %s" % (status, reason(status))
        else:
            code, _, phrase = status.partition(" ")
            # every status line gets a reason phrase, even "299 " from an app
            text = "%s %s" % (code, phrase.strip() or reason(int(code)))
            if bad_value(text):
                # a CR/LF in an app's status would inject headers (NUL: RFC 9110 5.5)
                raise ValueError("CR, LF or NUL in status %r" % status)
        line = ("HTTP/%s %s\r\n" % (version, text)).encode("latin-1")
        if len(_lines) < 4096:   # apps with odd reason phrases must not grow this forever
            _lines[key] = line
    return line


def plain_error(code, detail=None):
    """(status, headers, body) for a protocol's own small rejection answer
    (400, 413, 431, 500, ...): plain text, so that protocols need no page
    templates; handlers render their richer pages themselves."""
    text = "%d %s\n" % (code, detail or reason(code))
    return code, [("Content-Type", "text/plain; charset=utf-8")], \
        text.encode("latin-1", "replace")


def status_code(status):
    return status if isinstance(status, int) else int(status[:3])
