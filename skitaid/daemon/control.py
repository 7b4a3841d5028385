"""The master's control socket: a UNIX stream socket, root-only (0600).

One JSON object per line in, one JSON object per line out, then the
connection closes. The CLI uses it for `status`, `reload`, `stop` and
`restart SERVER`; signals keep working for systemd and kill(1).
"""
import json
import os
import socket

SOCKET_NAME = "skitaid.sock"
MAX_REQUEST = 4096


def socket_path(run_path):
    return os.path.join(run_path, SOCKET_NAME)


def listen(path):
    """Bind the control socket (replacing a stale one); mode 0600."""
    try:
        if os.path.exists(path):
            os.unlink(path)
    except OSError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def serve_one(listener, handle):
    """Accept one client and answer its request with handle(dict) → dict."""
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    with conn:
        # a local root-only client: a short timeout keeps a stuck one from
        # holding the master's loop
        conn.settimeout(1.0)
        try:
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                chunk = conn.recv(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data.decode("utf-8"))
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                reply = {"ok": False, "error": "bad request: %s" % e}
            else:
                reply = handle(request)
            conn.sendall(json.dumps(reply).encode("utf-8") + b"\n")
        except OSError:
            pass


class NotRunning(Exception):
    pass


def call(path, request, timeout=10.0):
    """Send one request to the master at `path`; raises NotRunning if nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(str(e))
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise NotRunning("no answer")
    return json.loads(data.decode("utf-8"))
