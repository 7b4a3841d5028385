"""State shared by all workers of a server: setlu/getlu and setgs/getgs.

The master maps one anonymous shared region before it forks any worker
(`create()` in Master.run()); every worker inherits it. The region is a
table of named entries, each holding a last-update timestamp (setlu/getlu:
cache keys) and an integer (setgs/getgs: states). Names are claimed once,
under a process-shared lock, and never freed; lookups after that are plain
reads of 8 bytes. Names are kept per server ("server/key").
"""
import mmap
import os
import multiprocessing
import struct
import threading
import time

ENTRIES = 1024
MAX_KEYS = 256             # per server, as the original Skitai had it
NAME_SIZE = 48
_ENTRY = struct.Struct("=48sdq")          # name, last update, state value
_SIZE = 64

_registered = []           # names from register_cache_keys()/register_states() before run()
_region = None
_local_lock = threading.Lock()


class SharedState:
    def __init__(self):
        self.mem = mmap.mmap(-1, ENTRIES * _SIZE)     # MAP_SHARED | MAP_ANONYMOUS
        self.lock = multiprocessing.Lock()            # a semaphore the forks share
        self._index = {}                              # name → offset (this process's memo)

    def _find(self, name):
        off = self._index.get(name)
        if off is not None:
            return off
        raw = name.encode("utf-8")
        mem = self.mem
        for i in range(ENTRIES):
            o = i * _SIZE
            stored = mem[o:o + NAME_SIZE].rstrip(b"\0")
            if not stored:
                return None
            if stored == raw:
                self._index[name] = o
                return o
        return None

    def claim(self, name):
        off = self._find(name)
        if off is not None:
            return off
        raw = name.encode("utf-8")
        if len(raw) > NAME_SIZE or not raw:
            raise ValueError("a shared key name is 1 to %d bytes: %r" % (NAME_SIZE, name))
        server = name.partition("/")[0] + "/"
        with _local_lock, self.lock:
            used = 0
            for i in range(ENTRIES):
                o = i * _SIZE
                stored = self.mem[o:o + NAME_SIZE].rstrip(b"\0")
                if stored == raw:
                    self._index[name] = o
                    return o
                if not stored:
                    if used >= MAX_KEYS:
                        break
                    _ENTRY.pack_into(self.mem, o, raw, 0.0, 0)
                    self._index[name] = o
                    return o
                if stored.decode("utf-8", "replace").startswith(server):
                    used += 1
        raise ValueError("no room for shared key %r: at most %d per server" % (name, MAX_KEYS))

    def set_lu(self, name, when=None):
        off = self.claim(name)
        struct.pack_into("=d", self.mem, off + NAME_SIZE, time.time() if when is None else when)

    def get_lu(self, name):
        off = self._find(name)
        return 0.0 if off is None else struct.unpack_from("=d", self.mem, off + NAME_SIZE)[0]

    def set_gs(self, name, value):
        off = self.claim(name)
        struct.pack_into("=q", self.mem, off + NAME_SIZE + 8, int(value))

    def get_gs(self, name):
        off = self._find(name)
        return 0 if off is None else struct.unpack_from("=q", self.mem, off + NAME_SIZE + 8)[0]


def _after_fork_in_child():
    # a lock another thread (the shared-state syncer) held at fork stays held in the child
    global _local_lock
    _local_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def server_key(server, key):
    """The region's name for `key` of server `server`."""
    return "%s/%s" % (server, key)


def register(*names):
    """Record key names before run() (skitaid.register_cache_keys/register_states)."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError("a shared key name is a non-empty string: %r" % (name,))
        if name not in _registered:
            _registered.append(name)


def create(server_names=()):
    """Master, before fork: the region, with the registered names claimed."""
    global _region
    _region = SharedState()
    for server in server_names:
        for name in _registered:
            _region.claim(server_key(server, name))
    return _region


def region():
    """The region this process shares (a private one when there is no master)."""
    global _region
    if _region is None:
        with _local_lock:
            if _region is None:
                _region = SharedState()
    return _region
