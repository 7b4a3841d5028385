"""A raw HTTP/1.1 origin that frames requests by hand, for proxy tests.

Unlike RecordingBackend (recording_backend.py, which parses with llhttp and
so refuses what llhttp refuses), this one only splits the byte stream the way
RFC 9112 says a recipient must: a head up to the blank line, then a body by
its chunked coding or its Content-Length. Whatever a proxy forwards is kept
byte for byte (`raw`, one buffer per connection), each request as a `Seen`
(head bytes, body bytes, [(lower-case name, value)] bytes fields), and every
request gets `answer(seen)` back.
"""
import collections
import socket
import threading

Seen = collections.namedtuple("Seen", "head body fields")


def echo_body(seen):
    """200 with the body the backend got."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body


def saw_request_line(seen):
    """200 with "saw <request line> body=<length>"."""
    answer = b"saw " + seen.head.split(b"\r\n")[0] + b" body=%d" % len(seen.body)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)


def _chunked(fields):
    """RFC 9112 6.3: the body is chunked when chunked is the last transfer coding."""
    codings = b",".join(v for k, v in fields if k == b"transfer-encoding")
    last = [c.strip().lower() for c in codings.split(b",") if c.strip()][-1:]
    return last == [b"chunked"]


class FramingBackend:
    """Listens on a free loopback port, one thread per connection."""

    def __init__(self, answer=echo_body, timeout=None):
        self.answer = answer
        self.timeout = timeout          # per recv, seconds (None: wait for ever)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.raw = []                   # one bytearray per connection
        self.requests = []              # Seen, in arrival order
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def all_bytes(self):
        """Every byte received so far, on all connections."""
        with self.lock:
            return b"".join(bytes(r) for r in self.raw)

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        raw = bytearray()
        with self.lock:
            self.raw.append(raw)
        buf = bytearray()
        conn.settimeout(self.timeout)

        def more():
            data = conn.recv(65536)
            if not data:
                raise EOFError
            with self.lock:
                raw.extend(data)
            buf.extend(data)

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    more()
                end = buf.index(b"\r\n\r\n")
                head = bytes(buf[:end])
                del buf[:end + 4]
                fields = [line.partition(b":") for line in head.split(b"\r\n")[1:]]
                fields = [(k.strip().lower(), v.strip()) for k, _, v in fields]
                body = bytearray()
                if _chunked(fields):
                    while True:
                        while b"\r\n" not in buf:
                            more()
                        end = buf.index(b"\r\n")
                        size = int(bytes(buf[:end]).split(b";")[0], 16)
                        del buf[:end + 2]
                        if size == 0:
                            # the trailer section, up to its blank line
                            while b"\r\n\r\n" not in buf and not buf.startswith(b"\r\n"):
                                more()
                            cut = 2 if buf.startswith(b"\r\n") else buf.index(b"\r\n\r\n") + 4
                            del buf[:cut]
                            break
                        while len(buf) < size + 2:
                            more()
                        body += buf[:size]
                        del buf[:size + 2]
                else:
                    n = next((int(v) for k, v in fields if k == b"content-length"), 0)
                    while len(buf) < n:
                        more()
                    body += buf[:n]
                    del buf[:n]
                seen = Seen(head, bytes(body), fields)
                with self.lock:
                    self.requests.append(seen)
                conn.sendall(self.answer(seen))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            conn.close()

    def close(self):
        self.closed = True
        self.sock.close()
