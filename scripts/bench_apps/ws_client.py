#!/usr/bin/env python3
"""Load client for `scripts/bench ws`: N connections, each sending a small
text message and waiting for its echo, again and again, for D seconds.
Prints one JSON line: round trips, round trips per second, p99 latency (ms),
errors, wrong echoes.

    ws_client.py --url ws://127.0.0.1:PORT/ --connections 50 --duration 10 --size 32
"""
import argparse
import asyncio
import json
import time

import websockets


async def worker(url, size, deadline, lat, counts):
    payload = "x" * size
    try:
        async with websockets.connect(url, compression=None, ping_interval=None,
                                      max_size=None) as ws:
            clock = time.perf_counter
            while clock() < deadline:
                t0 = clock()
                await ws.send(payload)
                got = await ws.recv()
                lat.append(clock() - t0)
                if got != payload:
                    counts["wrong"] += 1
    except Exception:  # noqa: BLE001 - counted, reported
        counts["errors"] += 1


async def main(args):
    lat = []
    counts = {"errors": 0, "wrong": 0}
    deadline = time.perf_counter() + args.duration
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(args.url, args.size, deadline, lat, counts)
                           for _ in range(args.connections)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else None
    print(json.dumps({"round_trips": len(lat), "rps": len(lat) / elapsed, "p99_ms": p99,
                      "errors": counts["errors"], "wrong": counts["wrong"],
                      "seconds": elapsed}))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
