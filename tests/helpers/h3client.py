"""A small HTTP/3 client on aioquic's own client API, for the tests.

    async with h3_connect(port, cafile) as client:
        status, headers, body = await client.request("GET", "/hello")
"""
import asyncio
import contextlib
import ssl

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Response:
    def __init__(self, loop):
        self.status = 0
        self.headers = []
        self.body = bytearray()
        self.trailers = []
        self.done = loop.create_future()

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses = {}
        self.goaway = False
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            for r in self.responses.values():
                if not r.done.done():
                    r.done.set_exception(ConnectionError("connection closed: %r" % event))
        if isinstance(event, StreamReset):
            r = self.responses.get(event.stream_id)
            if r is not None and not r.done.done():
                r.done.set_exception(ConnectionResetError("stream reset %d" % event.error_code))
        for ev in self.h3.handle_event(event):
            r = self.responses.get(ev.stream_id)
            if r is None:
                continue
            if isinstance(ev, HeadersReceived):
                if r.status:
                    r.trailers = [(k.decode(), v.decode()) for k, v in ev.headers]
                else:
                    for k, v in ev.headers:
                        if k == b":status":
                            r.status = int(v)
                        else:
                            r.headers.append((k.decode(), v.decode()))
            elif isinstance(ev, DataReceived):
                r.body += ev.data
            if getattr(ev, "stream_ended", False) and not r.done.done():
                r.done.set_result(r)

    def start(self, method, path, body=None, headers=(), authority="localhost", trailers=None):
        """Send a request; returns its Response (await response.done)."""
        sid = self._quic.get_next_available_stream_id()
        head = [(b":method", method.encode()), (b":scheme", b"https"),
                (b":authority", authority.encode()), (b":path", path.encode())]
        head += [(k.encode(), v.encode()) for k, v in headers]
        r = self.responses[sid] = Response(self._loop)
        self.h3.send_headers(sid, head, end_stream=body is None)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=not trailers)
            if trailers:
                self.h3.send_headers(sid, [(k.encode(), v.encode()) for k, v in trailers],
                                     end_stream=True)
        self.transmit()
        return r

    async def request(self, method, path, body=None, headers=(), timeout=20.0):
        r = self.start(method, path, body, headers)
        await asyncio.wait_for(asyncio.shield(r.done), timeout)
        return r


def client_config(cafile):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile)
    config.verify_mode = ssl.CERT_REQUIRED
    return config


@contextlib.asynccontextmanager
async def h3_connect(port, cafile, host="127.0.0.1", local_port=0):
    async with connect(host, port, configuration=client_config(cafile),
                       create_protocol=H3Client, wait_connected=True,
                       local_port=local_port) as client:
        yield client
