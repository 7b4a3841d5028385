"""`skitaid install` / `skitaid remove`: the systemd unit of this installation.

The shipped unit (skitaid.service next to this file) is a working default;
install() fills in ExecStart= with the real `skitaid` of this installation
(plus `-c DIR` for a config dir other than /etc/skitaid) and TimeoutStopSec=
from the largest graceful_timeout, marks the file as written by skitaid, and
runs `systemctl daemon-reload` when systemd runs this machine.

A unit file that skitaid did not write is never replaced or deleted without
force=True: it may be an operator's own.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from typing import List, Optional

from ..config.locate import SYSTEM_DIR
from . import systemd

DEFAULT_UNIT_PATH = "/etc/systemd/system/skitaid.service"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skitaid.service")
MARKER = "# Written by `skitaid install`: run it again rather than editing this file."
STOP_MARGIN = 10            # seconds beyond graceful_timeout before systemd kills
# Where daemon-reload makes a difference.
SYSTEM_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
                    "/lib/systemd/system", "/usr/local/lib/systemd/system")


class UnitError(Exception):
    pass


def skitaid_command() -> List[str]:
    """The command that runs this installation's skitaid: its console script
    when there is one (next to this Python first, as in a virtualenv), else
    `python -m skitaid`."""
    beside = os.path.join(os.path.dirname(sys.executable), "skitaid")
    for candidate in (beside, shutil.which("skitaid")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [os.path.abspath(candidate)]
    return [os.path.abspath(sys.executable), "-m", "skitaid"]


def _quote(word: str) -> str:
    """One word of a systemd command line: specifiers and variables escaped."""
    word = word.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', word):
        return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"')
    return word


def stop_timeout(config) -> int:
    graceful = max((s.graceful_timeout for s in config.servers), default=30.0)
    return int(math.ceil(graceful)) + STOP_MARGIN


def render(config, command: Optional[List[str]] = None) -> str:
    """The unit text for `config`."""
    with open(TEMPLATE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and lines[0].startswith("#"):       # the template's own header
        lines.pop(0)
    argv = list(command or skitaid_command()) + ["run"]
    config_dir = config.globals.config_dir
    if config_dir and os.path.abspath(config_dir) != SYSTEM_DIR:
        argv += ["-c", os.path.abspath(config_dir)]
    out = [MARKER]
    for line in lines:
        if line.startswith("ExecStart="):
            line = "ExecStart=" + " ".join(_quote(w) for w in argv)
        elif line.startswith("TimeoutStopSec="):
            line = "TimeoutStopSec=%d" % stop_timeout(config)
        out.append(line)
    return "\n".join(out) + "\n"


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n") == MARKER
    except OSError:
        return False


def _systemctl(dest: str, *args: str) -> str:
    """Run systemctl for a unit in a system unit dir on a systemd machine; a note on failure."""
    if os.path.dirname(os.path.abspath(dest)) not in SYSTEM_UNIT_DIRS:
        return ""
    exe = shutil.which("systemctl")
    if not exe or not systemd.booted():
        return ""
    try:
        r = subprocess.run([exe] + list(args), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "\nwarning: systemctl %s: %s" % (" ".join(args), e)
    if r.returncode != 0:
        return "\nwarning: systemctl %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip())
    return ""


def write_owned(dest: str, text: str, force: bool = False, what: str = "file") -> bool:
    """Write `text` (starting with MARKER) to `dest` atomically, mode 0644.
    Returns False when it was up to date. A file there that skitaid did not
    write is only replaced with force. Raises UnitError."""
    if os.path.lexists(dest):
        try:
            with open(dest, encoding="utf-8", errors="replace") as f:
                if f.read() == text:
                    return False
        except OSError as e:
            raise UnitError("cannot read %s: %s" % (dest, e.strerror)) from None
        if not force and not _ours(dest):
            raise UnitError("%s exists and was not written by skitaid install "
                            "(--force replaces it)" % dest)
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise UnitError("%s: no such directory" % folder)
    tmp = os.path.join(folder, ".%s.%d.tmp" % (os.path.basename(dest), os.getpid()))
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)            # never a half-written file
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UnitError("cannot write %s: %s" % (dest, e.strerror or e)) from None
    return True


def check_removable(dest: str, force: bool = False) -> bool:
    """False when there is nothing at `dest`; raises UnitError for a file
    skitaid did not write (unless force)."""
    if not os.path.lexists(dest):
        return False
    if not force and not _ours(dest):
        raise UnitError("%s was not written by skitaid install (--force deletes it)" % dest)
    return True


def delete(dest: str) -> None:
    try:
        os.unlink(dest)
    except OSError as e:
        raise UnitError("cannot delete %s: %s" % (dest, e.strerror)) from None


def install(config, dest: str = DEFAULT_UNIT_PATH, force: bool = False) -> str:
    """Write the unit to `dest`; returns what was done. Raises UnitError."""
    if not write_owned(dest, render(config), force):
        return "%s is up to date" % dest
    note = _systemctl(dest, "daemon-reload")
    name = os.path.basename(dest)
    return ("installed %s\nstart it with: systemctl enable --now %s" % (dest, name)) + note


def remove(dest: str = DEFAULT_UNIT_PATH, force: bool = False) -> str:
    """Delete the unit at `dest` (disabling it first); returns what was done."""
    if not check_removable(dest, force):
        return "no unit at %s: nothing to remove" % dest
    name = os.path.basename(dest)
    note = _systemctl(dest, "disable", "--quiet", name)
    delete(dest)
    note += _systemctl(dest, "daemon-reload")
    return "removed %s (a running service keeps running until stopped)" % dest + note
