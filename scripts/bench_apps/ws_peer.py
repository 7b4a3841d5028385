#!/usr/bin/env python3
"""The peer for `scripts/bench ws`: an echo server on the `websockets`
library (asyncio, uvloop when installed), compression off like skitaid's.

    ws_peer.py --port 18080
"""
import argparse
import asyncio
import signal

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(echo, "127.0.0.1", port, compression=None,
                                ping_interval=None):
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port))
