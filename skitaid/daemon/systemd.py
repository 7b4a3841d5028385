"""The systemd protocols, spoken directly (no libsystemd).

- sd_notify(3): state changes as one datagram of "KEY=VALUE" lines sent to the
  AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
  namespace).
- sd_listen_fds(3): socket activation hands listening sockets over as fds 3,
  4, … with LISTEN_PID (must be us), LISTEN_FDS (how many) and LISTEN_FDNAMES
  (colon-separated names).
- sd_watchdog_enabled(3): WATCHDOG_USEC (and WATCHDOG_PID) ask for WATCHDOG=1
  pings more often than that interval.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import List, Optional, Tuple

log = logging.getLogger("skitaid.systemd")

LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def booted() -> bool:
    """True when systemd is the init system (the sd_booted(3) test)."""
    return os.path.isdir("/run/systemd/system")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC to."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _notify_address(value: str):
    if value.startswith("@"):
        return "\0" + value[1:]         # abstract namespace
    if value.startswith("/"):
        return value
    return None                         # vsock: and other transports are not spoken here


def notify(*lines: str) -> bool:
    """Send `lines` ("READY=1", "STATUS=…") as one message to $NOTIFY_SOCKET.

    Returns True when sent, False when there is no socket to tell or the send
    failed: a service manager that does not listen must never stop the server.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or not lines:
        return False
    address = _notify_address(target)
    if address is None:
        log.debug("NOTIFY_SOCKET %r: unsupported address", target)
        return False
    message = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as e:
        log.debug("sd_notify to %r failed: %s", target, e)
        return False
    return True


def watchdog_interval(unset_environment: bool = False) -> Optional[float]:
    """Seconds within which systemd wants WATCHDOG=1, or None when it does not.

    Ping at half this interval. WATCHDOG_PID, when set, must be this process
    (a forked worker must not think the watchdog is its job)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if unset_environment:
        os.environ.pop("WATCHDOG_USEC", None)
        os.environ.pop("WATCHDOG_PID", None)
    try:
        value = int(usec or "0")
        if pid is not None and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def listen_fds_with_names(unset_environment: bool = True) -> List[Tuple[str, socket.socket]]:
    """Sockets passed by socket activation, as (name, socket) in fd order.

    Names come from LISTEN_FDNAMES ("unknown" when absent, as systemd says).
    Each fd gets FD_CLOEXEC. The variables are removed from the environment
    (unless told otherwise) so that processes started later do not take the
    fds for theirs."""
    env = os.environ
    pid, count, names = (env.get(k) for k in _LISTEN_VARS)
    if unset_environment:
        for k in _LISTEN_VARS:
            env.pop(k, None)
    try:
        if pid is None or int(pid) != os.getpid():
            return []
        n = int(count or "0")
    except ValueError:
        return []
    name_list = names.split(":") if names else []
    found = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        name = name_list[i] if i < len(name_list) and name_list[i] else "unknown"
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)      # family and type are read from the fd
        except OSError as e:
            log.warning("LISTEN_FDS: fd %d (%s) is not a usable socket: %s", fd, name, e)
            continue
        found.append((name, sock))
    return found


def listen_fds(unset_environment: bool = True) -> List[socket.socket]:
    """Sockets passed by socket activation (see listen_fds_with_names)."""
    return [sock for _, sock in listen_fds_with_names(unset_environment)]
