"""Who holds a listening address that cannot be bound: skitaid workers whose
master is gone (killed with -9 before they could notice), named by pid so
`start` can say so instead of a bare "Address already in use"."""
import os
import socket

from .pidfile import is_master_title

WORKER_TITLE = "skitaid: "      # "skitaid: NAME worker #N" (daemon/child.py)


def _is_worker(title):
    return (title.startswith(WORKER_TITLE) or title.startswith("skitaid/")) and \
        " worker #" in title


def _holds(proc, address, port, unix):
    try:
        conns = getattr(proc, "net_connections", None) or proc.connections
        found = conns(kind="unix" if unix else "inet")
    except Exception:
        return False
    for c in found:
        if unix:
            if c.laddr == unix:
                return True
        elif c.status == "LISTEN" and c.laddr and c.laddr[1] == port and (
                c.laddr[0] == address or address in ("0.0.0.0", "::")
                or c.laddr[0] in ("0.0.0.0", "::")):
            return True
    return False


def worker_holders(address, port, unix_path=""):
    """[(pid, title)] of skitaid worker processes listening on (address, port)
    or on the UNIX socket `unix_path`."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        address = socket.getaddrinfo(address, None)[0][4][0] if not unix_path else address
    except OSError:
        pass
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid():
                continue
            title = " ".join(proc.cmdline()).strip()
        except psutil.Error:
            continue
        if _is_worker(title) and _holds(proc, address, port, unix_path):
            found.append((proc.pid, title, _master_of(proc)))
    return found


def orphaned_workers():
    """[(pid, title)] of skitaid worker processes whose master is gone, on the
    whole machine (for `status` when no master answers)."""
    try:
        import psutil
    except ImportError:
        return []
    found = []
    for proc in psutil.process_iter():
        try:
            title = " ".join(proc.cmdline()).strip()
        except psutil.Error:
            continue
        if _is_worker(title) and not _master_of(proc):
            found.append((proc.pid, title))
    return found


def describe_orphans(found):
    """The operator's line about `orphaned_workers()`; "" for none."""
    if not found:
        return ""
    return ("orphaned skitaid worker(s) still running, their master gone: %s; they stop by "
            "themselves within seconds unless stopped or hung (then: kill %s)"
            % (", ".join("pid %d (%s)" % o for o in found),
               " ".join(str(pid) for pid, _ in found)))


def _master_of(proc):
    """The pid of the live skitaid master that forked `proc`, or 0."""
    try:
        parent = proc.parent()
        if parent is not None and is_master_title(" ".join(parent.cmdline()).strip()):
            return parent.pid
    except Exception:
        pass
    return 0


def describe(holders):
    """What to tell the operator about `worker_holders()`; "" for nobody."""
    orphans = [(pid, title) for pid, title, master in holders if not master]
    masters = sorted({master for _, _, master in holders if master})
    parts = []
    if orphans:
        parts.append("held by skitaid worker(s) whose master is gone: %s; they stop by "
                     "themselves within seconds unless stopped or hung (then: kill %s)"
                     % (", ".join("pid %d (%s)" % o for o in orphans),
                        " ".join(str(pid) for pid, _ in orphans)))
    if masters:
        parts.append("served by another skitaid master (pid %s)"
                     % ", ".join(str(m) for m in masters))
    return "; ".join(parts)
