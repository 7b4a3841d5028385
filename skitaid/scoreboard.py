"""Per-worker slots in memory shared by the master and its workers.

Below both the daemon and the worker (the master reads the slots, each
worker writes its own), so neither imports the other for it.

The master maps one anonymous shared region before it forks anything; every
worker forked later writes its own slot (state, heartbeat, requests served)
and the master reads them without any message passing. A worker that stops
writing its heartbeat is hung; a worker that sets RECYCLE asks to be
replaced (max_requests reached).
"""
import mmap
import os
import struct
import time

SLOTS = 1024
# state, pid, heartbeat (CLOCK_MONOTONIC, shared by all processes), requests
_FORMAT = struct.Struct("=iidQ")
_SIZE = 32

FREE, BOOTING, READY, RECYCLE, STOPPING = range(5)
STATE_NAMES = {FREE: "free", BOOTING: "booting", READY: "ready", RECYCLE: "recycle",
               STOPPING: "stopping"}


class Scoreboard:
    def __init__(self, slots=SLOTS):
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * _SIZE)     # MAP_SHARED | MAP_ANONYMOUS
        self._free = list(range(slots - 1, -1, -1))

    # -- master side ----------------------------------------------------------
    def allocate(self):
        index = self._free.pop()
        _FORMAT.pack_into(self.mem, index * _SIZE, BOOTING, 0, time.monotonic(), 0)
        return index

    def release(self, index):
        _FORMAT.pack_into(self.mem, index * _SIZE, FREE, 0, 0.0, 0)
        self._free.append(index)

    def read(self, index):
        """(state, pid, heartbeat, requests)"""
        return _FORMAT.unpack_from(self.mem, index * _SIZE)

    def slot(self, index):
        return Slot(self.mem, index)


class Slot:
    """What a worker holds: its own entry."""

    __slots__ = ("mem", "offset", "index")

    def __init__(self, mem, index):
        self.mem = mem
        self.index = index          # also its row in stats.py's region
        self.offset = index * _SIZE

    def set(self, state, requests=0):
        _FORMAT.pack_into(self.mem, self.offset, state, os.getpid(), time.monotonic(), requests)

    def beat(self, requests):
        state = _FORMAT.unpack_from(self.mem, self.offset)[0]
        self.set(state, requests)
