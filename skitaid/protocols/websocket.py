"""WebSocket framing (RFC 6455), sans I/O.

`FrameParser.feed(bytes)` returns the events found in the bytes so far:
whole data messages (text as str, binary as bytes) and control frames.
Data payloads are unmasked and, for text, UTF-8-checked as they arrive,
piece by piece, so a bad byte fails the connection at once (not at the end
of a 16 MB message) and a big frame is never re-buffered. Violations raise
`ProtocolError` carrying the close code to send. `frame()` builds the
server's (unmasked) frames. `Deflate` is the permessage-deflate extension
(RFC 7692).
"""
import base64
import codecs
import hashlib
import struct
import zlib

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

# events
MESSAGE, PING, PONG, CLOSE = range(4)

# close codes
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED = 1003
NO_STATUS = 1005
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class ProtocolError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.events = []


def accept_key(key):
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode("ascii")


def valid_key(key):
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeError):
        return False


def valid_close_code(code):
    """Codes a peer may send in a close frame (RFC 6455 7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def frame(opcode, payload, fin=True, rsv1=False):
    """One unmasked frame (server to client)."""
    n = len(payload)
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return _pack_short(b0, 126, n) + payload
    return _pack_long(b0, 127, n) + payload


def close_payload(code, reason=""):
    if code is None or code == NO_STATUS:
        return b""
    data = reason.encode("utf-8")[:123]
    return struct.pack("!H", code) + data


def unmask(data, mask, offset=0):
    """XOR `data` with the 4-byte `mask`, starting at mask position `offset`."""
    n = len(data)
    if not n:
        return b""
    k = offset & 3
    if k:
        mask = mask[k:] + mask[:k]
    # big-int XOR: one C pass over the data however large it is
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _check_utf8_tail(decoder):
    """The stdlib decoder accepts a dangling ED A0..BF (a surrogate) until
    the next byte: refuse it at once, as the bytes so far can never be valid."""
    pending = decoder.getstate()[0]
    if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
        raise ProtocolError(INVALID_DATA, "invalid UTF-8 in text message")


class FrameParser:
    """Client-to-server frames: masking required, reassembly, size limit."""

    def __init__(self, max_message_size, deflate=None):
        self.max_message_size = max_message_size
        self.deflate = deflate        # a Deflate, or None when not negotiated
        self._buf = bytearray()
        # the frame whose payload is being read (None: expecting a header)
        self._op = None
        self._fin = False
        self._mask = b""
        self._left = 0                # payload bytes of this frame not yet read
        self._pos = 0                 # payload bytes of this frame read so far
        # the data message being assembled
        self._msg_op = None
        self._parts = []
        self._raw = []                # unmasked payload pieces not yet inflated/decoded
        self._size = 0
        self._decoder = None
        self._compressed = False
        self.closed = False           # a close frame was read: ignore the rest

    def feed(self, data):
        """Events in `data` (and what came before it). A violation raises
        ProtocolError with the events found before it in `.events`, so that
        messages the client sent before its mistake can still be answered."""
        if self.closed:
            return []
        events = []
        try:
            self._feed(data, events)
        except ProtocolError as e:
            self.closed = True
            e.events = events
            raise
        return events

    def _feed(self, data, events):
        buf = self._buf
        if buf:
            buf += data
            data = buf
        pos = 0
        end = len(data)
        while True:
            if self._op is None:
                # -- a frame header ----------------------------------------
                if end - pos < 2:
                    break
                b0 = data[pos]
                b1 = data[pos + 1]
                if not b1 & 0x80:
                    # (checked before waiting for the rest of the header, which
                    # would include a mask key: a short unmasked frame is refused at once)
                    raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
                n = b1 & 0x7F
                hlen = 6
                if n == 126:
                    hlen = 8
                elif n == 127:
                    hlen = 14
                if end - pos < hlen:
                    break
                if n == 126:
                    n = _unpack_h(data, pos + 2)[0]
                elif n == 127:
                    n = _unpack_q(data, pos + 2)[0]
                    if n >> 63:
                        raise ProtocolError(PROTOCOL_ERROR, "frame length too large")
                op = b0 & 0x0F
                fin = b0 & 0x80
                rsv = b0 & 0x70
                self._start_frame(op, fin, rsv, n)
                self._mask = bytes(data[pos + hlen - 4:pos + hlen])
                pos += hlen
                self._op = op
                self._fin = fin
                self._left = n
                self._pos = 0
            # -- payload (all of it, or what has arrived) -------------------
            take = self._left
            if take > end - pos:
                take = end - pos
                if take == 0 or self._op >= 8:
                    break     # control frames are read whole (<= 125 bytes)
            chunk = bytes(data[pos:pos + take])
            pos += take
            self._left -= take
            if take:
                chunk = unmask(chunk, self._mask, self._pos)
                self._pos += take
            if self._op >= 8:
                ev = self._control(self._op, chunk)
                self._op = None
                if ev is not None:
                    events.append(ev)
                    if ev[0] == CLOSE:
                        self.closed = True
                        break
                continue
            self._data(chunk)
            if self._left:
                break         # more of this frame to come
            self._op = None
            if self._fin:
                events.append(self._finish_message())
        if self._raw:
            self._flush_raw()
        # keep only the unread tail (a partial header or control frame)
        if pos < end:
            if data is buf:
                del buf[:pos]
            else:
                buf += data[pos:]
        elif buf:
            buf.clear()

    # -- frame level ---------------------------------------------------------------
    def _start_frame(self, op, fin, rsv, n):
        if op >= 8:
            if op > OP_PONG:
                raise ProtocolError(PROTOCOL_ERROR, "reserved opcode %d" % op)
            if rsv:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
            if not fin:
                raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
            if n > 125:
                raise ProtocolError(PROTOCOL_ERROR, "control frame too long")
            return
        if op > OP_BINARY:
            raise ProtocolError(PROTOCOL_ERROR, "reserved opcode %d" % op)
        if op == OP_CONT:
            if self._msg_op is None:
                raise ProtocolError(PROTOCOL_ERROR, "continuation without a message")
            if rsv:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
        else:
            if self._msg_op is not None:
                raise ProtocolError(PROTOCOL_ERROR, "new message inside a fragmented one")
            compressed = False
            if rsv:
                if rsv != 0x40 or self.deflate is None:
                    raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
                compressed = True
            self._msg_op = op
            self._parts = []
            self._size = 0
            self._compressed = compressed
            self._decoder = _utf8_decoder() if op == OP_TEXT else None
        if not self._compressed:
            # compressed sizes say nothing of the message: checked after inflating
            self._size += n
            if self._size > self.max_message_size:
                raise ProtocolError(TOO_BIG, "message too big")

    def _data(self, chunk):
        # Pieces are collected and inflated/decoded once per feed() (see
        # _flush_raw): a message cut into many small frames costs one zlib and
        # one UTF-8 call per read, not per frame. Failing fast still holds:
        # every read is checked before the next one is taken.
        self._raw.append(chunk)

    def _flush_raw(self):
        raw = self._raw
        if not raw:
            return
        chunk = raw[0] if len(raw) == 1 else b"".join(raw)
        raw.clear()
        if self._compressed:
            chunk = self.deflate.inflate(chunk, self.max_message_size - self._size)
            if chunk is None:
                raise ProtocolError(TOO_BIG, "message too big")
            self._size += len(chunk)
            if not chunk:
                return
        self._decode(chunk)

    def _decode(self, chunk):
        dec = self._decoder
        if dec is not None:
            try:
                chunk = dec.decode(chunk)
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_DATA, "invalid UTF-8 in text message") from None
            _check_utf8_tail(dec)
        self._parts.append(chunk)

    def _finish_message(self):
        op = self._msg_op
        parts = self._parts
        self._flush_raw()
        if self._compressed:
            tail = self.deflate.inflate_end(self.max_message_size - self._size)
            if tail is None:
                raise ProtocolError(TOO_BIG, "message too big")
            if tail:
                self._size += len(tail)
                self._decode(tail)
        dec = self._decoder
        if dec is not None:
            try:
                last = dec.decode(b"", True)
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_DATA, "invalid UTF-8 in text message") from None
            if last:
                parts.append(last)
            msg = parts[0] if len(parts) == 1 else "".join(parts)
        else:
            msg = parts[0] if len(parts) == 1 else b"".join(parts)
        self._msg_op = None
        self._parts = []
        self._decoder = None
        return (MESSAGE, msg)

    def _control(self, op, payload):
        if op == OP_PING:
            return (PING, payload)
        if op == OP_PONG:
            return (PONG, payload)
        if not payload:
            return (CLOSE, NO_STATUS, "")
        if len(payload) == 1:
            raise ProtocolError(PROTOCOL_ERROR, "close frame with a 1-byte payload")
        code = _unpack_h(payload)[0]
        if not valid_close_code(code):
            raise ProtocolError(PROTOCOL_ERROR, "invalid close code %d" % code)
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "invalid UTF-8 in close reason") from None
        return (CLOSE, code, reason)


class Deflate:
    """permessage-deflate (RFC 7692) state for one connection."""

    def __init__(self, server_no_context_takeover=False, client_no_context_takeover=False,
                 server_max_window_bits=15, client_max_window_bits=15, level=1):
        self.server_no_context = server_no_context_takeover
        self.client_no_context = client_no_context_takeover
        self.server_bits = server_max_window_bits
        self.client_bits = client_max_window_bits
        self.level = level
        self._inflater = None
        self._deflater = None

    # -- inbound ----------------------------------------------------------------------
    def inflate(self, data, room):
        """Inflate a piece of a compressed message; None when the output
        would exceed `room` bytes (a deflate bomb is cut off early)."""
        z = self._inflater
        if z is None:
            z = self._inflater = zlib.decompressobj(-self.client_bits)
        out = z.decompress(data, room + 1)
        if len(out) > room:
            return None
        if z.unconsumed_tail:
            return None     # more output than room is waiting
        return out

    def inflate_end(self, room):
        z = self._inflater
        if z is None:
            z = self._inflater = zlib.decompressobj(-self.client_bits)
        out = z.decompress(b"\x00\x00\xff\xff", room + 1)
        if len(out) > room or z.unconsumed_tail:
            return None
        if self.client_no_context:
            self._inflater = None
        return out

    # -- outbound -----------------------------------------------------------------------
    def compress(self, data):
        z = self._deflater
        if z is None:
            z = self._deflater = zlib.compressobj(self.level, zlib.DEFLATED, -self.server_bits)
        out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(b"\x00\x00\xff\xff"):
            out = out[:-4]
        if self.server_no_context:
            self._deflater = None
        return out or b"\x00"


def negotiate_deflate(header):
    """The client's Sec-WebSocket-Extensions value → (Deflate, response header
    value) for the first permessage-deflate offer we can take, else (None, None)."""
    for offer in header.split(","):
        parts = [p.strip() for p in offer.split(";")]
        if parts[0].lower() != "permessage-deflate":
            continue
        params = {}
        ok = True
        for p in parts[1:]:
            if not p:
                continue
            name, eq, value = p.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name in params:
                ok = False
                break
            params[name] = value if eq else None
        if not ok:
            continue
        kw = {}
        answer = ["permessage-deflate"]
        try:
            for name, value in params.items():
                if name == "server_no_context_takeover":
                    if value is not None:
                        raise ValueError
                    kw["server_no_context_takeover"] = True
                    answer.append(name)
                elif name == "client_no_context_takeover":
                    if value is not None:
                        raise ValueError
                    kw["client_no_context_takeover"] = True
                    answer.append(name)
                elif name == "server_max_window_bits":
                    bits = int(value)
                    # (zlib cannot make raw deflate streams with an 8-bit
                    # window: such an offer is declined, not violated)
                    if not 9 <= bits <= 15 or not value.isdigit():
                        raise ValueError
                    kw["server_max_window_bits"] = bits
                    answer.append("server_max_window_bits=%d" % bits)
                elif name == "client_max_window_bits":
                    if value is None:
                        continue    # the client lets us choose: keep 15
                    bits = int(value)
                    if not 8 <= bits <= 15 or not value.isdigit():
                        raise ValueError
                    kw["client_max_window_bits"] = max(bits, 9)
                    answer.append("client_max_window_bits=%d" % max(bits, 9))
                else:
                    raise ValueError
        except (TypeError, ValueError):
            continue        # an offer we cannot take: try the next one
        return Deflate(**kw), "; ".join(answer)
    return None, None
