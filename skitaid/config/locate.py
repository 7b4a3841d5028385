"""Find the config dir and load everything in it into one Config."""
from __future__ import annotations

import ipaddress
import os
import re
from typing import List, Optional

from . import ini, yamlfile
from .errors import ConfigError, Problem
from .model import Config
from .where import add_lines, read_text

ENV_VAR = "SKITAID_CONFIG_DIR"
SYSTEM_DIR = "/etc/skitaid"
# The sample config shipped inside the package: runs out of the box.
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "default_config")

_READERS = {".conf": ini.parse_server, ".yaml": yamlfile.parse_server,
            ".yml": yamlfile.parse_server}


def find_config_dir(cli_dir: Optional[str] = None) -> str:
    """-c DIR, else $SKITAID_CONFIG_DIR, else /etc/skitaid if present, else the built-in one."""
    for candidate in (cli_dir, os.environ.get(ENV_VAR)):
        if candidate:
            return os.path.abspath(os.path.expanduser(candidate))
    if os.path.isdir(SYSTEM_DIR):
        return SYSTEM_DIR
    return DEFAULT_DIR


def _is_wildcard(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _clash(a, b) -> bool:
    """Would binding both (address, port) listeners fail? A wildcard clashes with any
    address of its family on the same port; UNIX sockets clash only on the same path."""
    (a_addr, a_port), (b_addr, b_port) = a, b
    a_unix, b_unix = a_addr.startswith("unix:"), b_addr.startswith("unix:")
    if a_unix or b_unix:
        return a_unix and b_unix and os.path.normpath(a_addr[5:]) == os.path.normpath(b_addr[5:])
    if a_port != b_port:
        return False
    if a_addr == b_addr:
        return True
    # IPv6 listeners are V6ONLY: '::' and '0.0.0.0' can both be bound
    return (_is_wildcard(a_addr) or _is_wildcard(b_addr)) and (":" in a_addr) == (":" in b_addr)


def _clash_problem(file, server, others) -> Optional[Problem]:
    """The first listener of `server` (its own, then its forward port) that another
    server already has."""
    for n, mine in enumerate(server.listen_addresses):
        for other in others:
            theirs = next((t for t in other.listen_addresses if _clash(mine, t)), None)
            if theirs is None:
                continue
            where = "servers-enabled/%s" % os.path.basename(other.source)
            if n == 1:
                return Problem(file, "server", "forward", str(mine[1]),
                               "a forward port not used by %s" % where)
            if server.unix_path:
                return Problem(file, "server", "address", server.address,
                               "a socket path not used by %s" % where)
            return Problem(file, "server", "port", str(server.port),
                           "a port not used by %s (%s:%d)" % (where, theirs[0], theirs[1]))
    return None


def _read_globals(config_dir: str, lenient: bool = False):
    return ini.parse_global(os.path.join(config_dir, "skitaid.conf"), config_dir, "skitaid.conf",
                            lenient=lenient)


def load_control_config(config_dir: str, warnings: Optional[List[Problem]] = None) -> Config:
    """The config with every server, or, when a server file is broken, skitaid.conf
    alone (no servers): enough to find a running master's pid file and control
    socket, so a bad server file never locks the operator out of stop/status.

    With a `warnings` list, a broken skitaid.conf does not lock them out either:
    its problems go to the list and the keys that can be read are used (the
    master was started with a config that worked)."""
    try:
        return load_config(config_dir)
    except ConfigError:
        if not os.path.isdir(config_dir):
            raise
        globals_, problems = _read_globals(config_dir)
        if problems:
            if warnings is None:
                raise ConfigError(problems) from None
            warnings.extend(problems)
            globals_, _ = _read_globals(config_dir, lenient=True)
        return Config(globals=globals_, servers=())


def _shared_state_problems(globals_, servers) -> List[Problem]:
    """`shared_state = @name` must name a redis alias of one of the server files."""
    ref = globals_.shared_state
    if not ref.startswith("@"):
        return []
    found = [a for s in servers for a in s.aliases if a.name == ref[1:]]
    if found and all(a.type == "redis" for a in found):
        return []
    known = sorted("@" + a.name for s in servers for a in s.aliases if a.type == "redis")
    return [Problem("skitaid.conf", "global", "shared_state", ref,
                    "a redis alias of a server file (%s)" % (", ".join(known) or "none defined"))]


def load_config(config_dir: Optional[str] = None) -> Config:
    """Read skitaid.conf and servers-enabled/*; raise ConfigError with every problem found."""
    config_dir = os.path.abspath(config_dir) if config_dir else find_config_dir()
    if not os.path.isdir(config_dir):
        raise ConfigError([Problem(config_dir, "", "", None, "a config directory")])
    problems: List[Problem] = []

    globals_, found = _read_globals(config_dir)
    problems += found

    enabled = os.path.join(config_dir, "servers-enabled")
    try:
        entries = sorted(os.listdir(enabled))
    except OSError:
        entries = []
    servers = []
    names = {}
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if entry.startswith(".") or ext.lower() not in _READERS:
            continue                # editor backups, README, disabled.conf.off …
        file = "servers-enabled/" + entry
        path = os.path.join(enabled, entry)
        if not os.path.isfile(path):            # follows symlinks; catches broken ones
            problems.append(Problem(file, "", "", None,
                                    "a file (a broken symlink, or a directory?)"))
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", stem):
            problems.append(Problem(file, "", "", stem,
                                    "a file name of letters, digits, '_', '-', '.'"))
            continue
        if stem in names:
            problems.append(Problem(file, "", "", entry, "one file per server name (%s is also "
                                    "servers-enabled/%s)" % (stem, names[stem])))
            continue
        names[stem] = entry
        server, found = _READERS[ext.lower()](path, config_dir, stem, file)
        problems += found
        if found:
            continue                # its address is not trustworthy; don't report clashes
        clash = _clash_problem(file, server, servers)
        if clash is not None:
            problems.append(clash)
        servers.append(server)

    problems += _shared_state_problems(globals_, servers)
    if not entries or not names:
        problems.append(Problem("servers-enabled", "", "", None,
                                "at least one server file (*.conf or *.yaml) in %s" % enabled))
    if problems:
        # those found across files (clashes) get their lines here
        raise ConfigError(add_lines(problems, lambda file: read_text(os.path.join(config_dir, file))))
    from .cachefs import with_default_path
    return Config(globals=globals_, servers=tuple(with_default_path(s, globals_.var_path)
                                                  for s in servers))
