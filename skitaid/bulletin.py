"""The master's published status document, in memory shared with the workers.

The status page and /metrics are served by workers (they listen; the master
never imports the request stack), but what they show is the master's: its
pools, generations, psutil figures and the counters of every worker. So the
master writes the document of `skitaid status --json` here once a second
(only when some server serves a status page or metrics) and a worker reads
the latest copy. One writer; readers use a sequence number (odd while a
write is under way) and retry, so they never see half a document.
"""
import mmap
import struct
import time

SIZE = 8 << 20                  # ample: a few KiB per server, 1 KiB per worker
_HEAD = struct.Struct("=QQd")   # sequence, length, time.time() of the write
_region = None


class Bulletin:
    def __init__(self, size=SIZE):
        self.size = size
        self.mem = mmap.mmap(-1, size)          # MAP_SHARED | MAP_ANONYMOUS

    def publish(self, data):
        """Master: replace the document with `data` (bytes)."""
        if len(data) > self.size - _HEAD.size:
            raise ValueError("status document of %d bytes does not fit" % len(data))
        seq = _HEAD.unpack_from(self.mem, 0)[0]
        _HEAD.pack_into(self.mem, 0, seq + 1, 0, 0.0)            # odd: writing
        self.mem[_HEAD.size:_HEAD.size + len(data)] = data
        _HEAD.pack_into(self.mem, 0, seq + 2, len(data), time.time())

    def read(self, tries=200):
        """(bytes, written at) of the latest document; (None, 0.0) before the first."""
        mem = self.mem
        for _ in range(tries):
            seq, length, when = _HEAD.unpack_from(mem, 0)
            if seq & 1:
                time.sleep(0.0005)
                continue
            if seq == 0:
                return None, 0.0
            data = mem[_HEAD.size:_HEAD.size + length]
            if _HEAD.unpack_from(mem, 0)[0] == seq:
                return data, when
        return None, 0.0


def create(size=SIZE):
    """Master, before any fork."""
    global _region
    _region = Bulletin(size)
    return _region


def region():
    """The bulletin this process inherited (None outside a master's workers)."""
    return _region
