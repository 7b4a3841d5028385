"""The master's pid file: written at start, removed at exit, stale ones detected."""
import os


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path):
    """The pid in `path` if that process is alive, else None (a stale or missing file)."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid() or not _alive(pid):
        return None
    return pid


class PidFile:
    def __init__(self, path):
        self.path = path
        self._written = False

    def running(self):
        return read_pid(self.path)

    def write(self):
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        tmp = "%s.%d" % (self.path, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(tmp, self.path)      # never a half-written pid
        self._written = True

    def remove(self):
        if self._written and read_pid(self.path) is None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
