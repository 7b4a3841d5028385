"""The script API of the original Skitai's pages, run as real scripts.

Each test writes an app script (and the files it mounts) to a temporary
directory and runs it with this Python: served ones against a real server
on a free port, refused ones checked for their message and exit status.
"""
import os
import subprocess
import sys
import textwrap

from conftest import ROOT, ServerProc
from helpers.clients import fetch


def _app(body):
    return textwrap.dedent('''
        def app(env, start):
            body = ("%s " + env["SCRIPT_NAME"]).encode()
            start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        ''' % body)


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_script(path, cwd, timeout=20):
    env = dict(os.environ, PYTHONPATH=ROOT, PORT="1")
    return subprocess.run([sys.executable, str(path)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_mount_forms_of_the_pages(tmp_path):
    site = tmp_path / "site"
    write(site, {
        "app_v1/app.py": _app("v1") + "\nother = app\n",
        "pkg/__init__.py": _app("pkg-module"),
        "pkg/inner.py": _app("inner") + "\nother = app\n",
        "app.py": '''
            import os
            import skitaid
            import pkg
            skitaid.mount("/a", "app_v1/app:app")      # a file and its app's name
            skitaid.mount("/b", "app_v1/app")          # the .py left out
            skitaid.mount("/c", (pkg, "inner"))        # a file next to that module
            skitaid.mount("/d", (pkg, "inner:other"))  # ... and the app's name
            skitaid.mount("/e", pkg)                   # a module object: its app
            skitaid.mount("/f", ("app_v1/app.py", "other"))   # (file, app name)
            skitaid.run(port=int(os.environ["PORT"]))
            ''',
    })
    elsewhere = tmp_path / "elsewhere"       # paths are the script's, not the cwd's
    elsewhere.mkdir()
    with ServerProc([sys.executable, str(site / "app.py")], str(elsewhere)) as s:
        got = {p: fetch(s.port, p + "/").body.decode() for p in "/a /b /c /d /e /f".split()}
    assert got == {"/a": "v1 /a", "/b": "v1 /b", "/c": "inner /c", "/d": "inner /d",
                   "/e": "pkg-module /e", "/f": "v1 /f"}


def test_two_apps_at_one_mount_point_is_an_error_naming_both(tmp_path):
    write(tmp_path, {
        "first.py": _app("first"),
        "app.py": '''
            import skitaid
            def second(env, start):
                pass
            skitaid.mount("/", "static")            # a static dir may share the point
            skitaid.mount("/", "first.py")
            skitaid.mount("/", second)
            skitaid.run(port=1)
            ''',
    })
    (tmp_path / "static").mkdir()
    r = run_script(tmp_path / "app.py", tmp_path)
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "first.py:app" in r.stderr
    assert "__main__.second" in r.stderr and "mounted at / for host default" in r.stderr


def test_other_hosts_may_use_the_same_mount_point(tmp_path):
    write(tmp_path, {
        "one.py": _app("one"),
        "two.py": _app("two"),
        "app.py": '''
            import os, skitaid
            skitaid.mount("/", "one.py")
            skitaid.mount("/", "two.py", host="two.example")
            skitaid.run(port=int(os.environ["PORT"]))
            ''',
    })
    with ServerProc([sys.executable, str(tmp_path / "app.py")], str(tmp_path)) as s:
        assert fetch(s.port, "/").body == b"one "
        assert fetch(s.port, "/", host="two.example").body == b"two "


def test_mount_targets_that_do_not_exist_are_refused_at_once(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "app.py": '''
        import sys, skitaid, pkg
        cases = [lambda: skitaid.mount("/x", "nosuch/app"),
                 lambda: skitaid.mount("/x", (pkg, "nosuch")),
                 lambda: skitaid.mount("/x", pkg),
                 lambda: skitaid.mount("/x", (pkg, "a", "b")),
                 lambda: skitaid.mount("/x", 42),
                 lambda: skitaid.mount("/x", "app.py:not-a-name")]
        for case in cases:
            try:
                case()
                print("ACCEPTED")
            except (TypeError, ValueError) as e:
                print(type(e).__name__, e)
        '''})
    r = run_script(tmp_path / "app.py", tmp_path)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 6 and "ACCEPTED" not in r.stdout, r.stdout + r.stderr
    assert "no app file %s" % (tmp_path / "nosuch" / "app") in lines[0]
    assert "no app file %s" % (tmp_path / "pkg" / "nosuch") in lines[1]
    assert "the module has no callable 'app'" in lines[2]
    assert lines[3].startswith("TypeError") and "(module, 'file[:app]')" in lines[3]
    assert lines[4].startswith("TypeError") and "not 42" in lines[4]
    assert "must be a Python name" in lines[5]
