"""Clients for the end-to-end tests: one request over http.client (`fetch`,
`get_json`), and raw sockets for tests that must control every byte a server
receives (`raw_exchange`, `read_until_close`, `read_head`, `h2_exchange`)."""
import http.client
import json
import socket

import h2.config
import h2.connection
import h2.events


class Reply:
    """A whole response: status, headers as http.client lists them, body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # [(name, value)]
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Reply %d %r %r>" % (self.status, self.headers, self.body[:200])


def fetch(port, path, method="GET", body=None, headers=None, host=None, timeout=10):
    """One request on a new http.client connection to 127.0.0.1:`port`.
    `host` sets the Host header."""
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def get_json(port, path, timeout=20, close=False):
    """(status, decoded JSON body) of a GET; `close` asks for Connection: close."""
    r = fetch(port, path, headers={"Connection": "close"} if close else None, timeout=timeout)
    return r.status, r.json()


def read_until_close(sock):
    """Everything the peer sends until it closes its side."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def read_head(sock):
    """(response head as latin-1 text, the bytes after it) from a raw socket;
    the head is whatever came when the peer closed before a blank line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def raw_exchange(port, data, method="GET", timeout=10):
    """Send `data` as it is on a new connection, read one response:
    (status, [(name, value)], body). status 0 when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        r = http.client.HTTPResponse(s, method=method)
        try:
            r.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return 0, [], b""
        return r.status, r.getheaders(), r.read()


class H2Result:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.reset = None            # the error code of a RST_STREAM, if one came
        self.terminated = None       # the error code of a GOAWAY, if one came


def h2_exchange(port, headers, data=(), end_in_headers=None, timeout=10):
    """One HTTP/2 request over cleartext prior knowledge (h2c), sending the
    header block as given (no client-side checks or normalisation) and each
    item of `data` as one DATA frame. `end_in_headers`: END_STREAM on the
    HEADERS frame (default: when there is no data). Small bodies only
    (within the initial flow-control window)."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                       validate_outbound_headers=False,
                                       normalize_outbound_headers=False,
                                       validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    result = H2Result()
    data = list(data)
    if end_in_headers is None:
        end_in_headers = not data
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=end_in_headers)
        for i, chunk in enumerate(data):
            conn.send_data(1, chunk, end_stream=i == len(data) - 1 and not end_in_headers)
        if not data and not end_in_headers:
            conn.end_stream(1)
        s.sendall(conn.data_to_send())
        while True:
            try:
                got = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return result
            if not got:
                return result
            for ev in conn.receive_data(got):
                if isinstance(ev, h2.events.ResponseReceived):
                    result.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in ev.headers]
                    result.status = int(dict(result.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    result.body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return result
                elif isinstance(ev, h2.events.StreamReset):
                    result.reset = ev.error_code
                    return result
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    result.terminated = ev.error_code
                    return result
            s.sendall(conn.data_to_send())
