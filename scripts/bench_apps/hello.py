"""The hello-world WSGI app every server is benchmarked with (scripts/bench h1).

Kept trivial on purpose: the benchmark measures the server, not the app.
"""

BODY = b"Hello, World!"
HEADERS = [
    ("Content-Type", "text/plain"),
    ("Content-Length", str(len(BODY))),
]


def app(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]
