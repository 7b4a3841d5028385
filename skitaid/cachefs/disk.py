"""The disk tier: one directory per server, shared by its workers, kept across
restarts and reloads.

    PATH/state              counters (struct, below), updated under lockf
    PATH/purges             "TIME PREFIX" lines: memory tiers follow them
    PATH/ab/abcdef…         one entry per file, named by the SHA-256 of its key
    PATH/ab/abcdef….lock    the cross-worker fetch lock (O_CREAT|O_EXCL)

An entry is written to a temporary file in its directory and moved into
place with os.replace(), so a reader sees the old entry or the new one,
never half of one; a file that does not decode (entry.decode) is removed and
counts as a miss. Use is recorded in the file's mtime (touched at most once
a minute per hit), and when the bytes on disk pass `diskmax` the least
recently used files go until 90 % of it is left. Only one worker evicts at a
time (a non-blocking lockf on `state`'s neighbour `evict.lock`).
"""
import errno
import fcntl
import hashlib
import os
import struct
import time

from .entry import HEAD_SIZE, decode, read_meta

# epoch of purges, bytes, entries, then the counters status shows
_STATE = struct.Struct("=9q")
FIELDS = ("epoch", "bytes", "entries", "hits", "misses", "revalidated", "stale", "bypass",
          "stores")
COUNTERS = FIELDS[3:]
TOUCH_EVERY = 60.0
LOW_WATER = 0.9


def key_name(key):
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class DiskTier:
    def __init__(self, path, max_bytes):
        self.path = path
        self.max_bytes = max_bytes
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._state_fd = os.open(os.path.join(path, "state"), os.O_RDWR | os.O_CREAT, 0o600)

    def close(self):
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None

    # -- files ----------------------------------------------------------------
    def file_of(self, key):
        name = key_name(key)
        return os.path.join(self.path, name[:2], name)

    def get(self, key):
        path = self.file_of(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError:
            return None
        entry = decode(data)
        if entry is None or entry.key != key:
            self._unlink(path, len(data))       # partial or damaged: a miss, and gone
            return None
        now = time.time()
        if now - st.st_mtime > TOUCH_EVERY:
            try:
                os.utime(path)
            except OSError:
                pass
        return entry

    def put(self, entry):
        data = entry.encode()
        if self.max_bytes <= 0 or len(data) > self.max_bytes:
            return False
        path = self.file_of(entry.key)
        folder = os.path.dirname(path)
        tmp = os.path.join(folder, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            try:
                old = os.stat(path).st_size
            except OSError:
                old = None
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        total = self.add(bytes=len(data) - (old or 0), entries=0 if old is not None else 1,
                         stores=1)
        if total > self.max_bytes:
            self.evict()
        return True

    def remove(self, key):
        path = self.file_of(key)
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        self._unlink(path, size)

    def _unlink(self, path, size):
        try:
            os.unlink(path)
        except OSError:
            return
        self.add(bytes=-size, entries=-1)

    def entries(self):
        """(path, size, mtime) of every entry file."""
        out = []
        try:
            folders = os.scandir(self.path)
        except OSError:
            return out
        with folders:
            for folder in folders:
                if len(folder.name) != 2 or not folder.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(folder.path) as files:
                    for f in files:
                        name = f.name
                        if name.startswith(".") or name.endswith(".lock"):
                            if name.endswith(".tmp"):
                                _remove_old_tmp(f)
                            continue
                        try:
                            st = f.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        out.append((f.path, st.st_size, st.st_mtime))
        return out

    def evict(self):
        """Least recently used files go until LOW_WATER of diskmax is left;
        the counts are set from what is really there."""
        lock = os.open(os.path.join(self.path, "evict.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return          # another worker evicts now
                raise
            files = self.entries()
            total = sum(s for _, s, _ in files)
            target = int(self.max_bytes * LOW_WATER)
            count = len(files)
            if total > self.max_bytes:
                files.sort(key=lambda f: f[2])
                for path, size, _ in files:
                    if total <= target:
                        break
                    try:
                        os.unlink(path)
                    except OSError:
                        continue
                    total -= size
                    count -= 1
            self.set(bytes=total, entries=count)
        finally:
            os.close(lock)

    def purge(self, prefix=""):
        """Remove the entries whose URL starts with `prefix`; how many went.
        The memory tiers follow through the `purges` file (epoch)."""
        removed = 0
        for path, size, _ in self.entries():
            if prefix:
                try:
                    with open(path, "rb") as f:
                        meta = read_meta(f.read(HEAD_SIZE + 65536))
                except OSError:
                    continue
                if meta is not None and not meta.get("url", "").startswith(prefix):
                    continue
            try:
                os.unlink(path)
            except OSError:
                continue
            removed += 1
        with open(os.path.join(self.path, "purges"), "a", encoding="utf-8") as f:
            f.write("%f %s\n" % (time.time(), prefix.replace("\n", "")))
        self.add(epoch=1)
        files = self.entries()
        self.set(bytes=sum(s for _, s, _ in files), entries=len(files))
        return removed

    def purges_since(self, offset):
        """(new offset, prefixes purged since `offset` in the purges file)."""
        try:
            with open(os.path.join(self.path, "purges"), "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return offset, []
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8", "replace").splitlines()
        return offset + end, [line.partition(" ")[2] for line in lines]

    # -- the state record ----------------------------------------------------------
    def read_state(self):
        data = os.pread(self._state_fd, _STATE.size, 0)
        values = _STATE.unpack(data) if len(data) == _STATE.size else (0,) * len(FIELDS)
        return dict(zip(FIELDS, values))

    def add(self, **deltas):
        """Add to the counters under the lock; the bytes now on disk."""
        return self._update(deltas, False)

    def set(self, **values):
        return self._update(values, True)

    def _update(self, changes, absolute):
        fd = self._state_fd
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            state = self.read_state()
            for name, value in changes.items():
                state[name] = value if absolute else state[name] + value
            state["bytes"] = max(0, state["bytes"])
            state["entries"] = max(0, state["entries"])
            os.pwrite(fd, _STATE.pack(*(state[f] for f in FIELDS)), 0)
            return state["bytes"]
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)


def _remove_old_tmp(f):
    """A temporary file left by a worker that died while writing."""
    try:
        if time.time() - f.stat(follow_symlinks=False).st_mtime > 600:
            os.unlink(f.path)
    except OSError:
        pass


def read_status(path):
    """The counters of the cache at `path` (for `skitaid status`), or None."""
    try:
        fd = os.open(os.path.join(path, "state"), os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, _STATE.size, 0)
    finally:
        os.close(fd)
    if len(data) != _STATE.size:
        return None
    state = dict(zip(FIELDS, _STATE.unpack(data)))
    served = state["hits"] + state["misses"] + state["revalidated"] + state["stale"]
    state["hit_ratio"] = round((state["hits"] + state["revalidated"] + state["stale"])
                               / served, 4) if served else 0.0
    return state
