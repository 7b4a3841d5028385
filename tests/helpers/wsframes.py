"""WebSocket frames as a client writes and reads them (RFC 6455 5.2), by hand:
tests need frames no client library would send (unmasked, reserved bits,
fragmented control frames, bad UTF-8)."""
import os
import struct


def client_frame(op, payload, fin=True, mask=True, rsv=0, key=None):
    """One client frame: masked unless `mask` is false; `rsv` is ORed into the
    first byte (0x40 = RSV1)."""
    b0 = op | (0x80 if fin else 0) | rsv
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = key or os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def split_server_frame(buf):
    """(opcode, fin, payload, rest) for the first whole server frame in `buf`,
    or None while it is incomplete. Server frames are never masked."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    assert not b1 & 0x80, "server frames must not be masked"
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack("!H", buf[2:4])[0]
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack("!Q", buf[2:10])[0]
        pos = 10
    if len(buf) < pos + n:
        return None
    return b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos:pos + n]), buf[pos + n:]


def server_frames(data):
    """[(opcode, payload)] of every whole server frame in `data`."""
    out = []
    while True:
        got = split_server_frame(data)
        if got is None:
            assert not data, "an incomplete frame: %r" % bytes(data[:20])
            return out
        op, _, payload, data = got
        out.append((op, payload))


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


class FrameReader:
    """Server frames from a socket, in order."""

    def __init__(self, s, buf=b""):
        self.s = s
        self.buf = buf

    def read(self):
        """(opcode, payload) of the next server frame."""
        while True:
            got = split_server_frame(self.buf)
            if got is not None:
                op, _, payload, self.buf = got
                return op, payload
            data = self.s.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
