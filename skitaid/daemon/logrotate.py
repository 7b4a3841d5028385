"""`skitaid install` / `skitaid remove`: the logrotate config of this installation.

The shipped config (skitaid.logrotate next to this file) is a working
default; render() fills in the log files the config names (the daemon's
error.log and NAME-request.log in log_path, and every request_log_file)
and the real `skitaid` command, whose `reopen-logs` asks the master
through its control socket (USR1 through the pid file as a fallback) to
reopen them after the rotation. The same rules as the unit's apply: a
file skitaid did not write is never replaced or deleted without force.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

from ..config.locate import SYSTEM_DIR
from .unit import MARKER, UnitError, check_removable, delete, skitaid_command, write_owned

DEFAULT_PATH = "/etc/logrotate.d/skitaid"
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skitaid.logrotate")


def log_files(config) -> List[str]:
    """The files (and globs) the daemon writes, as `skitaid start` names them."""
    g = config.globals
    log_dir = g.log_path or (os.path.dirname(g.pidfile) if g.pidfile else "")
    files = []
    if log_dir:
        files += [os.path.join(log_dir, "error.log"), os.path.join(log_dir, "*-request.log")]
    for server in config.servers:
        if server.request_log_file and server.request_log_file not in files:
            files.append(server.request_log_file)
    return files


def _word(text: str) -> str:
    """A file name or command word as logrotate (and the shell) reads it."""
    if re.search(r"[\s\"'\\$`;&|<>(){}]", text):
        return "'%s'" % text.replace("'", "'\\''")
    return text


def _path(path: str) -> str:
    """logrotate quotes file names with double quotes (globs still apply)."""
    return '"%s"' % path if re.search(r'[\s{}#]', path) else path


def render(config, command: Optional[List[str]] = None) -> str:
    """The logrotate config text for `config`; UnitError if it names no log file."""
    files = log_files(config)
    if not files:
        raise UnitError("no log files to rotate (no log_path, pidfile or request_log_file)")
    argv = list(command or skitaid_command()) + ["reopen-logs"]
    config_dir = config.globals.config_dir
    if config_dir and os.path.abspath(config_dir) != SYSTEM_DIR:
        argv += ["-c", os.path.abspath(config_dir)]
    with open(TEMPLATE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and lines[0].startswith("#"):       # the template's own header
        lines.pop(0)
    out = [MARKER]
    for line in lines:
        if line.endswith("{") and not line.startswith(" "):
            line = " ".join(_path(p) for p in files) + " {"
        elif "skitaid reopen-logs" in line:
            indent = line[:len(line) - len(line.lstrip())]
            line = indent + " ".join(_word(w) for w in argv) + " >/dev/null"
        out.append(line)
    return "\n".join(out) + "\n"


def install(config, dest: str = DEFAULT_PATH, force: bool = False) -> str:
    """Write the logrotate config to `dest`; returns what was done. Raises UnitError."""
    if dest == DEFAULT_PATH and not os.path.isdir(os.path.dirname(dest)):
        return "logrotate config not installed: no %s (is logrotate installed?)" \
            % os.path.dirname(dest)
    if not write_owned(dest, render(config), force):
        return "%s is up to date" % dest
    return "installed %s" % dest


def remove(dest: str = DEFAULT_PATH, force: bool = False) -> str:
    if not check_removable(dest, force):
        return "no logrotate config at %s: nothing to remove" % dest
    delete(dest)
    return "removed %s" % dest
