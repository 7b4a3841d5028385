"""HTTP/2 frames as bytes: split a byte stream into hyperframe frames.

For tests that look at the frames themselves (GOAWAY's last stream id, a
RST_STREAM's code, which frames carry END_STREAM) rather than at what a
client state machine makes of them.
"""
import socket
import time

from hyperframe.frame import Frame, GoAwayFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def split_frames(buf):
    """(complete frames at the start of `buf`, the bytes after them)."""
    frames = []
    buf = bytes(buf)
    while len(buf) >= 9:
        f, length = Frame.parse_frame_header(memoryview(buf[:9]))
        if len(buf) < 9 + length:
            break
        f.parse_body(memoryview(buf[9:9 + length]))
        frames.append(f)
        buf = buf[9 + length:]
    return frames, buf


def read_frames(sock, timeout=10.0, stop=None):
    """Every frame the server sends until GOAWAY (or `stop(frames)`), the close, or the timeout."""
    sock.settimeout(timeout)
    buf = b""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not data:
            break
        got, buf = split_frames(buf + data)
        frames += got
        if stop(frames) if stop else any(isinstance(f, GoAwayFrame) for f in frames):
            break
    return frames
