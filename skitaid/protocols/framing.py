"""The response-framing rules HTTP/1.1 and HTTP/2 share, written once.

`FramedExchange` holds what does not depend on how bytes go out: which
responses have no body (1xx, 204, 304) and the Content-Length they still
announce (HEAD: what a GET would get), the accounting of a declared
Content-Length (`sent`, `remaining`: nothing beyond it goes out, and a
response short of it cannot end cleanly), the sendfile loop with its
backpressure, and the drain waiters. A protocol subclass implements only how
a head, a chunk of data and the end are written (`_head`, `write`, `finish`,
`abort`), plus `_zero_copy` where its transport can send from a file itself.
"""
import asyncio
import os

from ..exchange import Exchange

FILE_CHUNK = 256 * 1024     # bytes read per step when a file goes through the transport


def bodiless(code):
    """No body ever, whatever the handler writes (RFC 9110 6.4.1)."""
    return code < 200 or code == 204 or code == 304


def add_waiter(loop, waiters):
    """(waiters, future): a new future appended to `waiters` (a list, or None)."""
    fut = loop.create_future()
    if waiters is None:
        waiters = [fut]
    else:
        waiters.append(fut)
    return waiters, fut


def wake(waiters):
    """Resolve every future of `waiters` still pending (None: none)."""
    if waiters:
        for w in waiters:
            if not w.done():
                w.set_result(None)


class FramedExchange(Exchange):
    """Subclasses declare the slots `is_head`, `sent`, `remaining`,
    `closed`, `conn` (with `loop` and `worker`) and `request`."""

    __slots__ = ()

    def __init__(self, conn, request):
        """The state every exchange starts with (a subclass adds its own after it)."""
        self.conn = conn
        self.request = request
        self.is_head = request.method == "HEAD"
        self.closed = False
        self.status = 0
        self.sent = 0
        self.head_sent = False
        self.done = False
        self.t_start = request.started
        self.t_handled = 0.0
        self.remaining = None    # body bytes still owed under a start() Content-Length

    def start(self, status, headers, content_length=None):
        """Send the head; a body of `content_length` bytes (None: framed by
        the protocol) follows through write()/sendfile() and finish()."""
        if self.closed or self.head_sent:
            return
        if content_length is not None and content_length < 0:
            content_length = None
        try:
            head = self._head(status, headers, content_length)
        except ValueError:
            return self._bad_head()
        if content_length is not None and not self.is_head:
            self.remaining = content_length
        self._send_head(head)

    def _announced_length(self, code, explicit, length):
        """The Content-Length the head announces: None when it announces none
        (the protocol then frames the body its own way). `explicit` is the
        handler's own Content-Length header, `length` the body's length when
        known. A bodiless status flags the exchange like HEAD, so that
        write()/sendfile() drop what a handler still sends."""
        if code < 200 or code == 204 or code == 304:
            self.is_head = True
            return explicit if code == 304 else None
        if self.is_head and explicit is not None:
            return explicit     # HEAD: the length a GET would have had
        return length

    def _counted(self, data):
        """`data` cut to what the declared Content-Length still allows (a
        keep-alive client would read an excess as the next response), and
        counted as sent."""
        rem = self.remaining
        if rem is not None:
            if len(data) > rem:
                data = data[:rem]
            self.remaining = rem - len(data)
        self.sent += len(data)
        return data

    # -- files ------------------------------------------------------------------------
    def sendfile(self, file, offset, count, done):
        self.conn.loop.create_task(self._sendfile(file, offset, count, done))

    def _zero_copy(self, in_fd, offset, count):
        """Send up to `count` bytes of `in_fd` from `offset` without reading
        them into Python; the bytes sent (0: not now, copy a chunk instead).
        None once it never can on this exchange."""
        return None

    def _sending(self):
        """False once the bytes have nowhere to go (the client is gone)."""
        return not self.closed

    async def _sendfile(self, file, offset, count, done):
        """`count` bytes of `file` from `offset`, zero-copy where the protocol
        can, else chunk by chunk through write(); waits while the client is
        not keeping up, and yields between chunks when it is (or one big file
        would have the loop to itself). Then done(ok), and the exchange ends:
        finish() when all went out, abort() when not."""
        in_fd = file.fileno()
        ok = False
        if self.is_head:
            count = 0       # HEAD, 1xx, 204, 304: no body
        elif self.remaining is not None:
            count = min(count, self.remaining)
        zero_copy = True
        try:
            while count > 0 and self._sending():
                n = self._zero_copy(in_fd, offset, count) if zero_copy else None
                if n is None:
                    zero_copy, n = False, 0
                if not n:
                    chunk = os.pread(in_fd, min(count, FILE_CHUNK), offset)
                    if not chunk:
                        break       # the file shrank under us
                    self.write(chunk)       # counts sent / remaining itself
                    n = len(chunk)
                offset += n
                count -= n
                if self.writing_paused():
                    await self.drain()
                elif count > 0:
                    await asyncio.sleep(0)
            ok = count == 0 and not self.closed
        except Exception:
            self.conn.worker.log_exception("sending a file for %s %s"
                                           % (self.request.method, self.request.target))
        finally:
            try:
                done(ok)
            finally:
                if ok:
                    self.finish()
                elif not self.closed:
                    self.abort()
