"""HTTP/1.x on the wire, for tests that must see every byte.

`ResponseReader` is a strict response parser over any source of bytes: `Conn`
reads it from a raw client socket (end-to-end tests), `parse_responses()`
from bytes a connection wrote to a fake transport (unit tests). Either way
every status line must carry a reason phrase, a response may not have two
Content-Lengths or both Content-Length and Transfer-Encoding, and chunked
bodies must be well-formed. `get`, `post` and `chunked` build request bytes.
"""
import re
import socket

STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) (\d{3}) (\S[^\r\n]*)")


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # [(lower-case name, value)]
        self.body = body
        self.trailers = []              # of a chunked body: [(lower-case name, value)]

    def header(self, name, default=None):
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def all(self, name):
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


def _field(line):
    name, sep, value = line.partition(b":")
    assert sep and name == name.strip(), "bad response header %r" % line
    return name.decode("latin-1").lower(), value.strip().decode("latin-1")


class ResponseReader:
    """Reads responses from `recv()`, which returns more bytes, or b"" at the end."""

    def __init__(self, recv):
        self._source = recv
        self.buf = bytearray()

    def _recv(self):
        data = self._source()
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._recv()

    def _exact(self, n):
        while len(self.buf) < n:
            self._recv()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _until_eof(self):
        try:
            while True:
                self._recv()
        except EOFError:
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def head_only(self):
        """Status line and headers; the body is left in the stream."""
        line = self._line()
        m = STATUS_LINE.fullmatch(line)
        assert m, "bad status line (a reason phrase is required): %r" % line
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            headers.append(_field(line))
        return Response(m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1"),
                        headers, b"")

    def response(self, head=False):
        r = self.head_only()
        te = r.header("transfer-encoding")
        cl = r.all("content-length")
        assert len(cl) <= 1, "several Content-Length headers: %r" % r.headers
        assert not (te and cl), "both Transfer-Encoding and Content-Length: %r" % r.headers
        if head or r.status < 200 or r.status in (204, 304):
            return r
        if te is not None:
            assert te == "chunked", te
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while True:
                        line = self._line()
                        if not line:
                            break
                        name, _, value = line.partition(b":")
                        r.trailers.append((name.decode("latin-1").lower(),
                                           value.strip().decode("latin-1")))
                    break
                parts.append(self._exact(size))
                assert self._line() == b""
            r.body = b"".join(parts)
        elif cl:
            r.body = self._exact(int(cl[0]))
        else:
            r.body = self._until_eof()
        return r


class Conn(ResponseReader):
    """A raw client socket with a strict HTTP/1.x response reader."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        super().__init__(lambda: self.sock.recv(262144))

    def send(self, data):
        self.sock.sendall(data)

    def eof(self, timeout=3.0):
        """True when the server closes (FIN or reset) within `timeout` without
        sending anything more; False if the connection is still open then."""
        assert not self.buf, "unread data: %r" % bytes(self.buf)
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        assert not data, "unexpected data after the response: %r" % data
        return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_responses(data, heads=()):
    """Every response in `data` (bytes a server wrote), in order. `heads`:
    indexes of the responses that answer HEAD (their heads carry no body)."""
    chunks = [bytes(data)]
    reader = ResponseReader(lambda: chunks.pop() if chunks else b"")
    reader._recv()
    out = []
    while reader.buf:
        out.append(reader.response(head=len(out) in heads))
    return out


def get(path="/", host="t", extra=b"", version=b"1.1", method=b"GET"):
    return b"%s %s HTTP/%s\r\nHost: %s\r\n%s\r\n" % (method, path.encode(), version,
                                                     host.encode(), extra)


def post(path, body, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(body), extra)) + body


def chunked(chunks, ext=b"", trailers=b""):
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks)
    return out + b"0\r\n" + trailers + b"\r\n"
