"""The memory tier: one per worker, an LRU bounded by bytes.

Used from the loop (proxy) and from app threads (`was` calls): one lock.
"""
import collections
import threading


class MemoryTier:
    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries = collections.OrderedDict()     # key → Entry
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, entry):
        size = entry.size
        if size > self.max_bytes:
            self.remove(entry.key)
            return
        with self._lock:
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self.bytes -= old.size
            self._entries[entry.key] = entry
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self.bytes -= gone.size

    def remove(self, key):
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.size

    def purge(self, prefix=""):
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.url.startswith(prefix)]:
                self.bytes -= self._entries.pop(key).size

    def __len__(self):
        return len(self._entries)
