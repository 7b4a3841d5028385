"""The master's pid file: written at start, removed at exit, stale ones detected.

The file holds the pid alone (what `kill $(cat …)`, systemd's PIDFile= and
logrotate scripts expect). A pid in it is trusted only if that process is a
skitaid master: its title is `skitaid: master`, and it was started before
the file was written (else the pid was reused by a process born later).
"""
import os

MASTER_TITLE = "skitaid: master"
CLOCK_SLACK = 2.0           # seconds: process start times are read at tick resolution


def is_master_title(title):
    """`skitaid: master`, or an app script's `skitaid/NAME: master`."""
    return title == MASTER_TITLE or (title.startswith("skitaid/") and title.endswith(": master"))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _not_master(pid, path, title_wanted=MASTER_TITLE):
    """Why process `pid` is not the master (or the process titled `title_wanted`)
    that wrote `path` ("" if it is, or cannot be told)."""
    try:
        import psutil
        proc = psutil.Process(pid)
        created = proc.create_time()
        title = " ".join(proc.cmdline()).strip()
    except ImportError:
        return ""
    except psutil.NoSuchProcess:
        return "pid %d is gone" % pid
    except psutil.Error:            # not ours to read: cannot tell
        return ""
    try:
        written = os.stat(path).st_mtime
    except OSError:
        written = None
    if written is not None and created > written + CLOCK_SLACK:
        return "pid %d (%s) started after the pid file was written" % (pid, title or "?")
    if title_wanted == MASTER_TITLE:
        if not is_master_title(title):
            return "pid %d is %r, not a skitaid master" % (pid, title or "?")
    elif title != title_wanted:
        return "pid %d is %r, not %r" % (pid, title or "?", title_wanted)
    return ""


def check_pid(path, title=MASTER_TITLE):
    """(pid, why): the live master's pid in `path` and "", or None and why a pid
    found there is not trusted ("" when there is no file or no pid in it).
    `title`: the process title expected (another skitaid daemon's pid file)."""
    pid = _read(path)
    if pid is None or pid == os.getpid():
        return None, ""
    if not _alive(pid):
        return None, "pid %d is gone" % pid
    why = _not_master(pid, path, title)
    return (None, why) if why else (pid, "")


def read_pid(path, title=MASTER_TITLE):
    """The pid in `path` if it is a live skitaid master (or `title`), else None
    (a stale or missing file)."""
    return check_pid(path, title)[0]


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
        if self._written and _read(self.path) == os.getpid():
            try:
                os.unlink(self.path)
            except OSError:
                pass
