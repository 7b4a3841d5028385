"""Who the workers run as: resolve a user/group, and drop to it for good.

Workers drop privileges right after fork, before importing any app. The
order matters: supplementary groups and the group first (they need root),
the user last; then we check that root cannot be regained.

Policy when the master runs as root (see worker_credentials):
- `user` set (in the server file, else in skitaid.conf [global]) → that user;
- nothing set, started with sudo → the sudo user ($SUDO_USER), as the
  original Skitai did;
- nothing set otherwise → `nobody` (an unprivileged default, as nginx does); a log line
  says so;
- `user = root` (or uid 0) set explicitly → workers keep root, with a warning:
  the operator asked for it.
When the master is not root, workers run as the master's user and `user` is
only honoured if it names that same user.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("skitaid.privileges")



class PrivilegeError(Exception):
    """A user or group that does not exist, or a drop that did not hold."""


@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    name: str           # user name ("" when the uid has no passwd entry)
    home: str
    group: str = ""     # group name, for messages


def _user(user: str):
    try:
        if user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except KeyError:
        return None


def _group(group: str):
    try:
        if group.isdigit():
            return grp.getgrgid(int(group))
        return grp.getgrnam(group)
    except KeyError:
        return None


def resolve(user: str, group: Optional[str] = None) -> Credentials:
    """A user and group (names or numeric ids) → Credentials.

    The group defaults to the user's primary group. A numeric uid without a
    passwd entry is accepted when a group is given. Raises PrivilegeError."""
    user = str(user).strip()
    group = str(group).strip() if group is not None else ""
    if not user:
        raise PrivilegeError("no user given")
    pw = _user(user)
    if pw is None and not (user.isdigit() and group):
        raise PrivilegeError("unknown user %r" % user)
    if group:
        gr = _group(group)
        if gr is None and not group.isdigit():
            raise PrivilegeError("unknown group %r" % group)
        gid = gr.gr_gid if gr else int(group)
        group_name = gr.gr_name if gr else ""
    else:
        gid = pw.pw_gid
        gr = _group(str(gid))
        group_name = gr.gr_name if gr else ""
    if pw is None:
        return Credentials(uid=int(user), gid=gid, name="", home="/", group=group_name)
    return Credentials(uid=pw.pw_uid, gid=gid, name=pw.pw_name, home=pw.pw_dir, group=group_name)


def needs_drop(user: Optional[str] = None) -> bool:
    """True when this process is root and workers must become someone else.

    Without a user, workers keep the master's user (the policy below)."""
    if os.geteuid() != 0 or not user:
        return False
    return _user(str(user)) is None or _user(str(user)).pw_uid != 0


def worker_credentials(server_user: str = "", server_group: str = "", global_user: str = "",
                       global_group: str = "") -> Optional[Credentials]:
    """The credentials a server's workers drop to, or None to stay as they are.

    A server's own `user` comes with its own `group` (or the user's primary
    group); without a server user, the global user applies, with the
    server's group, else the global group. Raises PrivilegeError."""
    if server_user:
        user, group = server_user, server_group
    else:
        user, group = global_user, server_group or global_group
    if os.geteuid() != 0:
        if user:
            wanted = resolve(user, group or None)
            if wanted.uid != os.getuid():
                raise PrivilegeError("user %r needs the master to run as root" % user)
        return None
    if not user:
        sudo_user = sudo_caller()
        if sudo_user:
            # started with sudo: the workers are the one who asked, as the
            # original Skitai did; the master keeps root for low ports on reload
            log.info("no user configured: workers run as the sudo user %r", sudo_user)
            return resolve(sudo_user, group or None)
        # As skitaid.conf documents: an empty user keeps the one that started
        # the master. Said loudly, since root workers are rarely what is meant.
        log.warning("no user configured: workers run as root (set user in skitaid.conf)")
        return None
    creds = resolve(user, group or None)
    if creds.uid == 0:
        log.warning("user %r is root: workers keep root privileges", user)
        return None
    return creds


def sudo_caller() -> str:
    """$SUDO_USER when it names a user other than root, else ""."""
    name = os.environ.get("SUDO_USER", "").strip()
    pw = _user(name) if name else None
    return pw.pw_name if pw is not None and pw.pw_uid != 0 else ""


def drop(creds: Credentials) -> None:
    """Become creds for good (groups, gid, uid), then prove root is gone.

    Raises PrivilegeError when any step fails or root can be regained; the
    caller must then exit rather than serve."""
    if creds.uid == 0:
        raise PrivilegeError("refusing to drop to root (uid 0)")
    try:
        if creds.name:
            os.initgroups(creds.name, creds.gid)
        else:
            os.setgroups([creds.gid])
        os.setgid(creds.gid)
        os.setuid(creds.uid)
    except OSError as e:
        raise PrivilegeError("cannot become %s (uid %d, gid %d): %s"
                             % (creds.name or "?", creds.uid, creds.gid, e)) from e
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError("root privileges could be regained after dropping to uid %d" % creds.uid)
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (creds.uid, creds.uid,
                                                                  creds.gid, creds.gid):
        raise PrivilegeError("uid/gid did not change to %d/%d" % (creds.uid, creds.gid))
    # Apps that expand "~" or read $USER see the user they run as.
    os.environ["HOME"] = creds.home
    if creds.name:
        os.environ["USER"] = os.environ["LOGNAME"] = creds.name
