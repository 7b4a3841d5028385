"""Rate limits shared by all workers of a server: GCRA buckets in shared memory.

The master maps one table before it forks any worker (`create()` in
Master.run()); every worker inherits it, so `100/s` means 100/s for the
server, not per worker. The table survives reloads (it belongs to the master).

Each bucket is the generic cell rate algorithm's one number, its
"theoretical arrival time" (TAT): a request at `now` is admitted when
`max(TAT, now) - now <= (burst - 1) / rate`, and then moves TAT on by
`1 / rate`. A bucket whose TAT is in the past is full again and holds no
information, so its slot is free for any other key: nothing ever needs to
be cleaned up.

Layout: SLOTS entries of 16 bytes (a 64-bit key hash, the TAT as a double
of CLOCK_MONOTONIC, which every process on the machine shares), in groups
of GROUP. A key hashes (BLAKE2b keyed with a secret the master draws, so a
client cannot choose addresses that collide on purpose) to one group; it
takes its own entry there, else a free one, else — all GROUP entries busy
with other keys at once — the one nearest to full is given up (its owner
starts afresh: at most one burst more for it). Two keys with the same
64-bit hash would share a bucket; that is left to chance (2^-64 a pair).

The lock is a POSIX record lock (fcntl) on the group's byte of the table's
file (a memfd): a group's read-modify-write is exclusive among processes,
groups do not contend with each other, and the kernel lets go of a lock
when the process holding it dies — a worker killed mid-update cannot wedge
the others. Record locks are per process, so a thread lock serialises the
threads of one worker too. A check costs two system calls and a hash:
a few microseconds.
"""
import fcntl
import hashlib
import math
import mmap
import os
import struct
import tempfile
import threading
import time

SLOTS = 65536                   # entries: 1 MiB, touched pages only
GROUP = 8                       # entries a key may use (one lock each)
_ENTRY = struct.Struct("=Qd")
_GROUP = struct.Struct("=" + "Qd" * GROUP)
_GROUP_SIZE = _ENTRY.size * GROUP

_table = None
_local_lock = threading.Lock()


def _backing_file(size):
    """An anonymous file to map and to lock: a memfd, else an unlinked temp file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("skitaid-ratelimit", getattr(os, "MFD_CLOEXEC", 0))
    else:
        f = tempfile.TemporaryFile()
        fd = os.dup(f.fileno())
        f.close()
    os.ftruncate(fd, size)
    return fd


class Table:
    def __init__(self, slots=SLOTS):
        if slots % GROUP:
            raise ValueError("slots: a multiple of %d" % GROUP)
        self.groups = slots // GROUP
        self.fd = _backing_file(slots * _ENTRY.size)
        self.mem = mmap.mmap(self.fd, slots * _ENTRY.size)     # MAP_SHARED
        self.secret = os.urandom(16)        # drawn before fork: the same in every worker
        self._lock = threading.Lock()

    def _hash(self, name):
        digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8,
                                 key=self.secret).digest()
        return int.from_bytes(digest, "little") | 1         # 0 marks a never-used entry

    def take(self, name, rate, burst):
        """Take one request from `name`'s bucket (`rate` per second, `burst` at
        once): 0.0 when admitted, else the seconds until one would be."""
        h = self._hash(name)
        group = h % self.groups
        base = group * _GROUP_SIZE
        interval = 1.0 / rate
        tolerance = (burst - 1) * interval
        mem = self.mem
        with self._lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, group)
            try:
                now = time.monotonic()
                row = _GROUP.unpack_from(mem, base)
                slot = None
                for i in range(GROUP):
                    if row[2 * i] == h:
                        slot = i
                        tat = row[2 * i + 1]
                        break
                else:
                    # a free entry (never used, or its bucket is full again),
                    # else the one nearest to full gives way
                    tat = now
                    oldest = math.inf
                    for i in range(GROUP):
                        t = row[2 * i + 1]
                        if t <= now:
                            slot = i
                            break
                        if t < oldest:
                            oldest, slot = t, i
                if tat < now:
                    tat = now
                if tat - now > tolerance:       # (never for a key new here)
                    return tat - tolerance - now
                _ENTRY.pack_into(mem, base + slot * _ENTRY.size, h, tat + interval)
                return 0.0
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, group)


def retry_after(wait):
    """Retry-After's whole seconds for a wait (rounded up, at least 1)."""
    return max(1, math.ceil(wait))


def create():
    """Master, before fork: the table every worker of every server shares."""
    global _table
    _table = Table()
    return _table


def table():
    """The table this process shares (a private one when there is no master)."""
    global _table
    if _table is None:
        with _local_lock:
            if _table is None:
                _table = Table()
    return _table
