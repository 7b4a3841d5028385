"""WebSocket echo app for `scripts/bench ws` (served by serve_skitaid.py)."""
import skitaid


@skitaid.websocket(60, compression=False)
def app(environ, start_response):
    while True:
        message = yield
        if message is None:
            return
        yield message
