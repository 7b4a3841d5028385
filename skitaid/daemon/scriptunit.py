"""`python app.py install|update|remove`: a systemd unit that runs this script.

The unit is the shipped template (unit.py) with ExecStart= running this
Python on the script (with the options given to `install`, so that the
service runs as it was tried), User= the one who asked (the sudo user, or
--user=NAME) and WorkingDirectory= the script's directory. It carries the
same marker as `skitaid install`'s, so a file skitaid did not write is never
replaced or deleted without --force.
"""
import getpass
import os
import pwd
import sys

from . import unit


def default_path(name):
    return "/etc/systemd/system/%s.service" % name


def service_user(asked=None):
    """--user=NAME, else the sudo user, else whoever runs this. ValueError
    for a user this machine does not have."""
    name = asked or os.environ.get("SUDO_USER") or getpass.getuser()
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValueError("--user: no user %r on this machine" % name) from None
    return name


def render(config, script, args, user):
    """The unit text: `config` as the script builds it, `script` its file,
    `args` the options the service runs it with."""
    with open(unit.TEMPLATE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and lines[0].startswith("#"):       # the template's own header
        lines.pop(0)
    argv = [os.path.abspath(sys.executable), os.path.abspath(script)] + list(args)
    name = config.servers[0].name if config.servers else "skitaid"
    out = [unit.MARKER]
    for line in lines:
        if line.startswith("Description="):
            line = "Description=%s (skitaid app %s)" % (name, os.path.abspath(script))
        elif line.startswith("ExecStart="):
            line = "ExecStart=" + " ".join(unit._quote(w) for w in argv)
        elif line.startswith("TimeoutStopSec="):
            line = "TimeoutStopSec=%d" % unit.stop_timeout(config)
        out.append(line)
        if line == "[Service]":
            out.append("User=%s" % user)
            out.append("WorkingDirectory=%s" % unit._quote(os.path.dirname(
                os.path.abspath(script))))
    return "\n".join(out) + "\n"


def install(config, script, args, user, dest, force=False):
    """Write (or rewrite) the unit; returns what was done. Raises unit.UnitError."""
    if not unit.write_owned(dest, render(config, script, args, user), force):
        return "%s is up to date" % dest
    note = unit._systemctl(dest, "daemon-reload")
    name = os.path.basename(dest)
    return ("installed %s (User=%s)\nstart it with: systemctl enable --now %s"
            % (dest, user, name)) + note


def update(config, script, args, user, dest, force=False):
    if not os.path.lexists(dest):
        raise unit.UnitError("no unit at %s to update (install writes one)" % dest)
    return install(config, script, args, user, dest, force)


def remove(dest, force=False):
    return unit.remove(dest, force)
