"""Error pages: short HTML, a traceback only when debug is on."""
from html import escape

from ..http_status import reason

_PAGE = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%(code)d %(reason)s</title>"
         "</head><body><h1>%(code)d %(reason)s</h1>%(detail)s<hr><address>skitaid</address>"
         "</body></html>\n")


def error_response(code, detail=None):
    """(status, headers, body) for an error page."""
    text = reason(code)
    extra = "<pre>%s</pre>" % escape(detail) if detail else ""
    body = (_PAGE % {"code": code, "reason": escape(text), "detail": extra}).encode("utf-8")
    return code, [("Content-Type", "text/html; charset=utf-8")], body
