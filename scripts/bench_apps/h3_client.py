#!/usr/bin/env python3
"""An HTTP/3 load client for scripts/bench h3, on aioquic's client API.

    h3_client.py --port 18443 --connections 4 --streams 10 --duration 10 --warmup 2

Keeps `streams` requests in flight on each of `connections` QUIC connections
(a closed loop, like h2load -c/-m), GET /, for `warmup` seconds (not counted)
and then `duration` seconds, and prints one JSON line: requests done, 2xx,
errors, seconds, req/s. Certificates are not verified (a self-signed one on
127.0.0.1).
"""
import argparse
import asyncio
import json
import ssl
import time

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}       # stream id → [future, status]

    def quic_event_received(self, event):
        if isinstance(event, (ConnectionTerminated, StreamReset)):
            for sid, (fut, _) in list(self.waiting.items()):
                if isinstance(event, ConnectionTerminated) or sid == event.stream_id:
                    if not fut.done():
                        fut.set_result(0)
        for ev in self.h3.handle_event(event):
            w = self.waiting.get(ev.stream_id)
            if w is None:
                continue
            if isinstance(ev, HeadersReceived):
                for k, v in ev.headers:
                    if k == b":status":
                        w[1] = int(v)
            if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended:
                del self.waiting[ev.stream_id]
                if not w[0].done():
                    w[0].set_result(w[1])

    async def get(self, path, authority):
        sid = self._quic.get_next_available_stream_id()
        fut = self._loop.create_future()
        self.waiting[sid] = [fut, 0]
        self.h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                   (b":authority", authority), (b":path", path)],
                             end_stream=True)
        self.transmit()
        return await fut


async def run(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                               verify_mode=ssl.CERT_NONE)
    authority = ("127.0.0.1:%d" % args.port).encode()
    counts = {"done": 0, "ok": 0, "errors": 0}
    state = {"counting": False}
    t_end = time.monotonic() + args.warmup + args.duration

    async def stream_loop(client):
        while time.monotonic() < t_end:
            try:
                status = await asyncio.wait_for(client.get(b"/", authority), 10)
            except Exception:
                status = 0
            if state["counting"]:
                counts["done"] += 1
                if 200 <= status < 300:
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1

    async def connection():
        async with connect("127.0.0.1", args.port, configuration=config,
                           create_protocol=Client) as client:
            await asyncio.gather(*[stream_loop(client) for _ in range(args.streams)])

    async def clock():
        await asyncio.sleep(args.warmup)
        state["counting"] = True
        state["t0"] = time.monotonic()

    clocker = asyncio.ensure_future(clock())
    await asyncio.gather(*[connection() for _ in range(args.connections)])
    await clocker
    seconds = time.monotonic() - state["t0"]
    counts.update(seconds=round(seconds, 3), rps=round(counts["ok"] / seconds, 1))
    print(json.dumps(counts))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
