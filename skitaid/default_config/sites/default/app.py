"""The demo app of the default skitaid server: plain WSGI, no framework.

    /hello  a greeting
    /echo   the request method, path and query; a POST body is echoed back
    /env    the WSGI environ, as text
"""
import html

MAX_ECHO = 1024 * 1024      # echo at most 1 MiB of a POST body


def _reply(start_response, status, body, content_type="text/plain; charset=utf-8"):
    data = body.encode("utf-8") if isinstance(body, str) else body
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(data)))])
    return [data]


def hello(environ, start_response):
    return _reply(start_response, "200 OK", "Hello from skitaid\n")


def echo(environ, start_response):
    body = b""
    if environ["REQUEST_METHOD"] in ("POST", "PUT", "PATCH"):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(length, MAX_ECHO) if length else MAX_ECHO)
    if environ["REQUEST_METHOD"] == "GET":
        page = ("<!doctype html><meta charset=utf-8><title>echo</title>"
                "<p>%s %s%s</p>"
                "<form method=post><textarea name=text rows=4 cols=40>type here</textarea>"
                "<p><button>POST it</button></form>") % (
            html.escape(environ["REQUEST_METHOD"]), html.escape(environ.get("PATH_INFO", "")),
            html.escape("?" + environ["QUERY_STRING"]) if environ.get("QUERY_STRING") else "")
        return _reply(start_response, "200 OK", page, "text/html; charset=utf-8")
    head = "method: %s\npath: %s\nquery: %s\ncontent-type: %s\nbody (%d bytes):\n" % (
        environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
        environ.get("QUERY_STRING", ""), environ.get("CONTENT_TYPE", ""), len(body))
    return _reply(start_response, "200 OK", head.encode("utf-8") + body)


def env(environ, start_response):
    lines = ["%s = %r" % (k, environ[k]) for k in sorted(environ)]
    return _reply(start_response, "200 OK", "\n".join(lines) + "\n")


PAGES = {"/hello": hello, "/echo": echo, "/env": env}


def app(environ, start_response):
    page = PAGES.get(environ.get("PATH_INFO", "").rstrip("/") or "/")
    if page is None:
        return _reply(start_response, "404 Not Found", "Not Found\n")
    return page(environ, start_response)
