"""A socketpair between the master and each worker it forks.

Worker → master: one byte "R" once the worker serves (the master's loop wakes
at once instead of noticing on its next tick), or "E<reason>\\n" just before a
worker that could not start exits (the cause a reload or `status` reports),
"T<traceback as a JSON string>\n" before that in development mode (the
master logs it once for the generation, not once per worker),
or "W" from a worker whose app set `use_reloader = True` (the master starts
watching its server's sources: it never imports the app to see that itself).

Master → worker: nothing is ever sent; the worker watches its end for EOF.
Only the master holds the other end (every other child closes its copy right
after fork), so EOF means the master is gone, however it died.
"""
import json
import os
import socket

READY = b"R"
FAILED = b"E"
WATCH = b"W"
TRACE = b"T"
MAX_REASON = 500            # bytes of a failure reason kept
MAX_TRACE = 32768           # bytes of a traceback kept


class WorkerChannel:
    """The master's side of one worker's channel."""

    def __init__(self):
        self.master_end, self.worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.master_end.setblocking(False)
        self.ready = False
        self.reason = ""
        self.wants_watch = False
        self.trace = ""             # the boot failure's traceback (development mode)
        self.server = ""            # the server the worker belongs to
        self._buffer = b""
        self.eof = False

    def forked(self):
        """In the master after fork: only the worker keeps its end."""
        self.worker_end.close()

    def fileno(self):
        return self.master_end.fileno()

    def read(self):
        """Take what the worker said; returns True once the worker's end is closed."""
        while not self.eof:
            try:
                data = self.master_end.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            if len(self._buffer) < MAX_TRACE + 4 * MAX_REASON:
                self._buffer += data
        self._parse()
        return self.eof

    def _parse(self):
        buf = self._buffer
        while buf:
            if buf[:1] == READY:
                self.ready = True
                buf = buf[1:]
            elif buf[:1] == WATCH:
                self.wants_watch = True
                buf = buf[1:]
            elif buf[:1] == TRACE:
                line, nl, rest = buf[1:].partition(b"\n")
                if not nl and not self.eof:
                    break
                try:
                    self.trace = str(json.loads(line.decode("utf-8", "replace")))
                except ValueError:
                    self.trace = line.decode("utf-8", "replace")
                buf = rest
            elif buf[:1] == FAILED:
                line, nl, rest = buf[1:].partition(b"\n")
                if not nl and not self.eof:
                    break               # the rest of the line is still on its way
                self.reason = line[:MAX_REASON].decode("utf-8", "replace").strip()
                buf = rest
            else:
                buf = buf[1:]           # nothing else is spoken here
        self._buffer = buf

    def close(self):
        self.worker_end.close()
        self.master_end.close()


class MasterLink:
    """The worker's side: tell the master, and notice when it is gone."""

    def __init__(self, sock, master_pid):
        self.sock = sock
        self.master_pid = master_pid

    def fileno(self):
        return self.sock.fileno()

    def _send(self, data):
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
        except OSError:
            pass                        # the master is gone; gone() says so
        finally:
            try:
                self.sock.setblocking(False)
            except OSError:
                pass

    def ready(self):
        self._send(READY)

    def watch(self):
        self._send(WATCH)

    def traceback(self, text):
        data = json.dumps(text[-MAX_TRACE // 2:]).encode("utf-8", "replace")
        self._send(TRACE + data + b"\n")

    def failed(self, reason):
        reason = " ".join(str(reason).split())
        self._send(FAILED + reason.encode("utf-8", "replace")[:MAX_REASON] + b"\n")

    def gone(self):
        """Has the master died? (EOF on the channel, or another parent)"""
        if os.getppid() != self.master_pid:
            return True
        try:
            self.sock.setblocking(False)
            data = self.sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return not data
