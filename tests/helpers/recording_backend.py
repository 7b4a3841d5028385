"""A raw HTTP/1.1 backend that records every byte a proxy sends it.

It parses what arrives with httptools (llhttp, the strict parser real
backends use), keeps each request's head and body, counts the requests, and
answers each one with a fixed small response. Tests put a skitaid proxy in
front of it and look at exactly what the proxy forwarded: a request the
proxy's framing lets through as a second request shows up here as one more.
"""
import socket
import threading

import httptools

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Recorded:
    """One request as the backend parsed it."""

    def __init__(self, conn_id):
        self.conn_id = conn_id
        self.method = ""
        self.target = ""
        self.version = ""
        self.headers = []        # [(name, value)] str, as received (names not folded)
        self.body = bytearray()  # the body after llhttp's de-chunking
        self.complete = False    # the whole message arrived
        self.upgraded = False    # llhttp stopped at an Upgrade/CONNECT head
        self.tail = b""          # bytes after such a head (all of them after a 101)

    def values(self, name):
        """Every value of header `name` (case-insensitive)."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name):
        got = self.values(name)
        return got[0] if got else None

    def __repr__(self):
        return "<%s %s %r body=%d>" % (self.method, self.target, self.headers, len(self.body))


class _Parse:
    """httptools callbacks for one backend connection."""

    def __init__(self, backend, conn_id):
        self.backend = backend
        self.conn_id = conn_id
        self.parser = httptools.HttpRequestParser(self)
        self.current = None
        self.url = b""
        self.done = 0            # complete requests, each owed one response
        self.mine = []           # this connection's requests (kept across reset())

    def on_message_begin(self):
        self.current = Recorded(self.conn_id)
        self.url = b""
        self.mine.append(self.current)
        self.backend._add(self.current)

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self):
        r = self.current
        r.method = self.parser.get_method().decode("latin-1")
        r.version = self.parser.get_http_version()
        r.target = self.url.decode("latin-1")

    def on_body(self, body):
        self.current.body += body

    def on_message_complete(self):
        self.current.complete = True
        self.done += 1


class RecordingBackend:
    """Listens on a free loopback port in a thread; `requests` fills as they come.

    `response`: the bytes sent for every request, or a callable that makes
    them from the Recorded request."""

    def __init__(self, response=RESPONSE):
        self.response = response
        self.requests = []
        self.raw = {}            # conn id → every byte received on it
        self.errors = []         # (conn id, parser error) for bytes llhttp refused
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._conns = []
        self._threads = []
        self._stopped = False
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def member(self):
        return "127.0.0.1:%d" % self.port

    def _add(self, rec):
        with self._lock:
            self.requests.append(rec)

    def snapshot(self):
        with self._lock:
            return list(self.requests)

    def reset(self):
        """Forget what was recorded (connections stay open: the proxy pools them)."""
        with self._lock:
            self.requests.clear()
            self.errors.clear()
            for buf in self.raw.values():
                del buf[:]

    def received(self):
        """Bytes received so far on all connections."""
        with self._lock:
            return sum(len(b) for b in self.raw.values())

    def count(self):
        with self._lock:
            return len(self.requests)

    def answer(self, rec):
        """The response bytes for `rec`: `response`, or what it returns when callable."""
        return self.response(rec) if callable(self.response) else self.response

    def _accept(self):
        n = 0
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            n += 1
            with self._lock:
                self._conns.append(conn)
                self.raw[n] = bytearray()
            t = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn, conn_id):
        p = _Parse(self, conn_id)
        answered = 0
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                with self._lock:
                    self.raw[conn_id] += data
                try:
                    p.parser.feed_data(data)
                except httptools.HttpParserUpgrade as e:
                    at = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
                    rec = p.current
                    rec.upgraded = True
                    rec.tail = bytes(data[at:])
                    answer = self.answer(rec)
                    if not answer.startswith(b"HTTP/1.1 101"):
                        conn.sendall(answer.replace(
                            b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                        return
                    conn.sendall(answer)        # switched: keep what follows, answer nothing
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            return
                        rec.tail += data
                except httptools.HttpParserError as e:
                    with self._lock:
                        self.errors.append((conn_id, repr(e)))
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                while answered < p.done:
                    rec = p.mine[answered]
                    answered += 1
                    conn.sendall(self.answer(rec))
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self._stopped = True
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(2)
        self._accepter.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
