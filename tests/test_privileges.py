"""Dropping privileges in a real forked child (the tests run as root)."""
import grp
import json
import os
import pwd

import pytest

from skitaid.daemon.privileges import (Credentials, PrivilegeError, drop, needs_drop, resolve,
                                       worker_credentials)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup") if "nogroup" in {g.gr_name for g in grp.getgrall()} else None


def in_child(fn):
    """Run fn() in a forked child; its JSON result (or the error text) comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"ok": fn()}
        except BaseException as e:         # noqa: B902 - everything goes back to the test
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_resolve_names_and_ids():
    c = resolve("nobody")
    assert (c.uid, c.gid, c.name, c.home) == (NOBODY.pw_uid, NOBODY.pw_gid, "nobody", NOBODY.pw_dir)
    assert resolve(str(NOBODY.pw_uid)) == c
    if NOGROUP:
        assert resolve("nobody", "nogroup").gid == NOGROUP.gr_gid
    assert resolve("nobody", "0").gid == 0
    # a uid without a passwd entry works with an explicit group
    assert resolve("54321", "54321") == Credentials(54321, 54321, "", "/", "")


@pytest.mark.parametrize("user, group, message", [
    ("no-such-user-x", None, "unknown user 'no-such-user-x'"),
    ("nobody", "no-such-group-x", "unknown group 'no-such-group-x'"),
    ("54321", None, "unknown user '54321'"),
    ("", None, "no user given"),
])
def test_resolve_errors(user, group, message):
    with pytest.raises(PrivilegeError) as info:
        resolve(user, group)
    assert str(info.value) == message


@root_only
def test_drop_in_a_forked_child(tmp_path):
    secret = tmp_path / "root-only.txt"
    secret.write_text("x")
    os.chmod(secret, 0o600)
    os.chmod(tmp_path, 0o755)
    creds = resolve("nobody", "nogroup" if NOGROUP else None)

    def child():
        drop(creds)
        try:
            open(secret, "a").close()
            wrote = True
        except PermissionError:
            wrote = False
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            regained = False
        return {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
                "groups": os.getgroups(), "wrote": wrote, "regained": regained,
                "home": os.environ["HOME"], "user": os.environ["USER"]}

    got = in_child(child)["ok"]
    assert got["ids"] == [creds.uid, creds.uid, creds.gid, creds.gid]
    # initgroups: the user's groups only (nobody is in none but its own), never root's 0
    expected = {creds.gid} | {g.gr_gid for g in grp.getgrall() if "nobody" in g.gr_mem}
    assert set(got["groups"]) <= expected and 0 not in got["groups"]
    assert got["wrote"] is False and got["regained"] is False
    assert (got["home"], got["user"]) == (NOBODY.pw_dir, "nobody")
    assert os.getuid() == 0                  # the parent is untouched


@root_only
def test_drop_refuses_root_and_reports_failure():
    assert "refusing to drop to root" in in_child(lambda: drop(resolve("root")))["error"]
    # already dropped: dropping again to another user must fail loudly, not half-work
    other = Credentials(54321, 54321, "", "/")

    def twice():
        drop(resolve("nobody"))
        drop(other)
    out = in_child(twice)
    assert out["error"].startswith("PrivilegeError: cannot become ? (uid 54321, gid 54321)")


@root_only
def test_worker_credentials_policy():
    # nothing configured: workers keep the master's user (skitaid.conf says so)
    assert worker_credentials() is None
    # the server's user wins, with its primary group unless the server says otherwise
    c = worker_credentials("daemon", "", "nobody", "nogroup")
    assert (c.name, c.gid) == ("daemon", pwd.getpwnam("daemon").pw_gid)
    # no server user: the global user, the server's group before the global one
    c = worker_credentials("", "daemon", "nobody", "nogroup")
    assert (c.name, c.gid) == ("nobody", grp.getgrnam("daemon").gr_gid)
    # root on purpose: no drop
    assert worker_credentials("root") is None
    with pytest.raises(PrivilegeError):
        worker_credentials("no-such-user-x")
    assert not needs_drop() and needs_drop("nobody") and not needs_drop("root")


def test_not_root_keeps_its_user():
    def child():
        drop(resolve("nobody"))
        out = [worker_credentials() is None, needs_drop("daemon")]
        try:
            worker_credentials("daemon")
        except PrivilegeError as e:
            out.append(str(e))
        return out
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody first")
    assert in_child(child)["ok"] == [True, False, "user 'daemon' needs the master to run as root"]
