"""The `skitaid` command: `skitaid [-c DIR] COMMAND [-c DIR]`.

`run` serves in the foreground; `check` validates the config. The daemon
commands arrive with the master process (daemon/).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

COMMANDS = [
    ("run", "serve in the foreground, logging to the console"),
    ("check", "validate the config files and list the servers"),
    ("start", "start the daemon"),
    ("stop", "stop the daemon"),
    ("restart", "stop and start the daemon"),
    ("reload", "load the changed config without dropping requests"),
    ("status", "show whether the daemon runs, and its workers"),
    ("reopen-logs", "reopen the log files (after logrotate renamed them)"),
    ("top", "a live view of the workers (q quits; c, m, r sort by CPU, memory, requests)"),
    ("passwd", "print a status_auth line for USER (asks for the password)"),
    ("install", "install the systemd unit and the logrotate config"),
    ("remove", "remove the systemd unit and the logrotate config"),
    ("cache", "the HTTP cache: cache purge [SERVER] [URL-PREFIX]"),
    ("smtpda", "the mail delivery agent: start, stop, status (or run in the foreground)"),
]


def build_parser() -> argparse.ArgumentParser:
    # -c is accepted before and after the command; SUPPRESS keeps a value given
    # before the command from being reset by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="config dir (default: $SKITAID_CONFIG_DIR, /etc/skitaid, "
                             "or the built-in sample)")
    parser = argparse.ArgumentParser(
        prog="skitaid", parents=[common],
        description="skitaid: a Python application server for UNIX")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, help_text in COMMANDS:
        p = parsers[name] = sub.add_parser(name, parents=[common], help=help_text,
                                           description=help_text)
        if name in ("install", "remove"):
            p.add_argument("--unit-path", metavar="PATH", default=None,
                           help="the unit file (default: /etc/systemd/system/skitaid.service)")
            p.add_argument("--logrotate-path", metavar="PATH", default=None,
                           help="the logrotate config (default: /etc/logrotate.d/skitaid, "
                                "unless --unit-path puts the unit elsewhere)")
            p.add_argument("--force", action="store_true",
                           help="replace or delete a unit file or logrotate config skitaid "
                                "did not write")
    for name in ("run", "start"):       # development mode (skitaid/devel.py)
        parsers[name].add_argument("--devel", action="store_true",
                                   help="debug pages everywhere, reload when a source changes")
        parsers[name].add_argument("--silent", action="store_true",
                                   help="no debug pages and no reloader, whatever asks for them")
    parsers["smtpda"].add_argument("action", choices=("start", "stop", "status", "run"))
    parsers["status"].add_argument("--json", action="store_true",
                                   help="machine-readable output")
    parsers["cache"].add_argument("action", choices=["purge"])
    parsers["cache"].add_argument("server", nargs="?", help="a server name (default: all)")
    parsers["cache"].add_argument("prefix", nargs="?",
                                  help="remove only entries whose URL starts with this")
    parsers["passwd"].add_argument("user", help="the user name of status_auth")
    parsers["top"].add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                                help="refresh interval (default 1)")
    parsers["restart"].add_argument("server", nargs="?",
                                    help="replace only this server's workers, gracefully")
    return parser


def _config_dir(args):
    from .config import find_config_dir
    return find_config_dir(getattr(args, "config_dir", None))


def _load(args, control=False, located=False):
    """Load the config, or print every problem to stderr and return None.
    `control`: stop/status need only skitaid.conf (see load_control_config).
    `located`: each problem with its line (file:line), as `check` reports."""
    from .config import ConfigError, load_config, load_control_config
    try:
        if not control:
            return load_config(_config_dir(args))
        warnings = []
        config = load_control_config(_config_dir(args), warnings)
    except ConfigError as e:
        for problem in e.problems:
            print(problem.located() if located else problem, file=sys.stderr)
        return None
    if warnings:
        for problem in warnings:
            print("skitaid: warning: %s" % problem.located(), file=sys.stderr)
        g = config.globals
        found = ["%s %s" % (k, getattr(g, k)) for k in ("pidfile", "run_path") if getattr(g, k)]
        print("skitaid: warning: %s" % (
            "going on with what could be read: " + ", ".join(found) if found else
            "neither pidfile nor run_path could be read: the running daemon cannot be found"),
            file=sys.stderr)
    return config


def describe_server(server) -> str:
    """One line: name, address:port, and the routes of every host group."""
    scheme = "https" if server.ssl else "http"
    groups = []
    for group in server.hosts:
        routes = ", ".join("%s = %s" % (r.prefix, r.target) for r in group.routes)
        groups.append("[%s] %s" % (" ".join(group.names), routes))
    from .daemon.listeners import display
    return "  %s  %s://%s  %s" % (server.name, scheme, display(server.address, server.port),
                                  "; ".join(groups))


def cmd_check(args) -> int:
    """Parse everything, then try what serving needs (bind, import apps, paths)."""
    config = _load(args, located=True)
    if config is None:
        return 1
    from .daemon.preflight import deep_check, held_by
    from .daemon.pidfile import read_pid
    pid = read_pid(config.globals.pidfile) if config.globals.pidfile else None
    problems = deep_check(config, held=held_by(pid) if pid else ())
    if problems:
        for problem in problems:
            print(problem.located(), file=sys.stderr)
        return 1
    print("configuration OK: %d server(s)" % len(config.servers))
    for server in config.servers:
        print(describe_server(server))
    return 0


def _unit_args(args):
    from .daemon import unit
    return unit, (args.unit_path or unit.DEFAULT_UNIT_PATH)


def _logrotate_dest(args):
    """--logrotate-path; without it /etc/logrotate.d/skitaid when the unit goes to
    its default place too. A unit written elsewhere (a package build, a test)
    gets no logrotate config unless one is asked for."""
    from .daemon import logrotate
    if args.logrotate_path:
        return args.logrotate_path
    return logrotate.DEFAULT_PATH if args.unit_path is None else None


def cmd_install(args) -> int:
    config = _load(args)
    if config is None:
        return 1
    from .daemon import logrotate
    unit, dest = _unit_args(args)
    rotate_dest = _logrotate_dest(args)
    try:
        print(unit.install(config, dest, force=args.force))
        if rotate_dest:
            print(logrotate.install(config, rotate_dest, force=args.force))
    except unit.UnitError as e:
        print("skitaid install: %s" % e, file=sys.stderr)
        return 1
    return 0


def cmd_remove(args) -> int:
    from .daemon import logrotate
    unit, dest = _unit_args(args)
    rotate_dest = _logrotate_dest(args)
    try:
        print(unit.remove(dest, force=args.force))
        if rotate_dest:
            print(logrotate.remove(rotate_dest, force=args.force))
    except unit.UnitError as e:
        print("skitaid remove: %s" % e, file=sys.stderr)
        return 1
    return 0


def cmd_daemon(args) -> int:
    """run, start, stop, restart, reload, status: talk to (or become) the master."""
    server = getattr(args, "server", None)
    control = args.command in ("stop", "status", "reopen-logs") or (
        args.command == "restart" and server)
    if getattr(args, "devel", False) or getattr(args, "silent", False):
        from . import mode
        mode.set_mode(devel=args.devel or None, silent=args.silent or None)
    config = _load(args, control=control)
    if config is None:
        return 1
    from .config import load_config
    from .daemon import commands   # lazily: `check` needs no daemon code
    from .smtpda.control import with_server
    with_server(config, args.command)   # the mail spool for workers; [global] smtpda = yes
    config_dir = _config_dir(args)
    return commands.dispatch(args.command, config, loader=lambda: load_config(config_dir),
                             server=server, as_json=getattr(args, "json", False))


def cmd_smtpda(args) -> int:
    """skitaid smtpda start|stop|status|run: the agent needs skitaid.conf only."""
    config = _load(args, control=True)
    if config is None:
        return 1
    from .smtpda.control import main as smtpda_main
    return smtpda_main(args.action, config)


def main(argv=None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()          # here, not at exit, where a closed pipe would be loud
        return code
    except BrokenPipeError:
        # `skitaid status | head`: the reader has what it wanted. Quiet, with the
        # status of a command that SIGPIPE ended (the daemon ignores SIGPIPE, so
        # the CLI cannot simply take the default action).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "install":
        return cmd_install(args)
    if args.command == "remove":
        return cmd_remove(args)
    if args.command == "cache":
        config = _load(args)
        if config is None:
            return 1
        from .daemon.cachecmd import purge
        return purge(config, args.server, args.prefix)
    if args.command == "passwd":
        return cmd_passwd(args)
    if args.command == "top":
        return cmd_top(args)
    if args.command == "smtpda":
        return cmd_smtpda(args)
    return cmd_daemon(args)


def cmd_passwd(args) -> int:
    """Ask for a password (twice on a terminal; one line from a pipe) and print
    the status_auth line with its scrypt hash."""
    import getpass
    from .passwords import auth_line
    if not args.user or ":" in args.user:
        print("skitaid passwd: a user name without ':' is needed", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password for %s: " % args.user)
        if getpass.getpass("again: ") != password:
            print("skitaid passwd: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("skitaid passwd: an empty password is refused", file=sys.stderr)
        return 1
    print(auth_line(args.user, password))
    return 0


def cmd_top(args) -> int:
    config = _load(args, control=True)
    if config is None:
        return 1
    if not args.interval > 0:
        print("skitaid top: --interval must be > 0", file=sys.stderr)
        return 2
    from .daemon import top
    return top.main(config, args.interval)


if __name__ == "__main__":
    sys.exit(main())
