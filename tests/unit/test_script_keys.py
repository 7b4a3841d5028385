"""The config keys behind the script API's setup functions, the script
command-line parser and the Range rule for WSGI answers: pure functions."""
import pytest

from skitaid import scriptargs
from skitaid.config.build import SERVER, FileContext, RawSection, build_server
from skitaid.handlers.ranges import ranged
from skitaid.preference import Preference, apply_app_config


def build(root, server):
    (root / "www").mkdir(exist_ok=True)
    ctx = FileContext("web.conf", str(root))
    sections = [RawSection("server", SERVER, list(server)),
                RawSection("routes:line", "routes", [("/", "www")])]
    return build_server(ctx, sections, "web", "web.conf"), [str(p) for p in ctx.problems]


def test_the_setup_functions_keys(tmp_path):
    config, problems = build(tmp_path, [("executor_workers", "3"), ("zombie_timeout", "20"),
                                        ("process_start_method", "Spawn"),
                                        ("proxy_keep_alive", "60")])
    assert problems == []
    assert (config.executor_workers, config.zombie_timeout, config.process_start_method,
            config.proxy_keep_alive) == (3, 20.0, "spawn", 60.0)


@pytest.mark.parametrize("key, value, expected", [
    ("executor_workers", "-1", "an integer >= 0"),
    ("zombie_timeout", "soon", "a number of seconds >= 0"),
    ("process_start_method", "threads", "forkserver, spawn or fork"),
    ("proxy_keep_alive", "-2", "a number of seconds >= 0"),
])
def test_bad_values_of_those_keys(tmp_path, key, value, expected):
    _, problems = build(tmp_path, [(key, value)])
    [problem] = problems
    assert problem.startswith("web.conf [server] %s: found %r, expected " % (key, value))
    assert expected in problem


def _declared():
    d = []
    d.append(scriptargs.declare(d, "-D", "--dist", "dist"))
    d.append(scriptargs.declare(d, None, "--db=DB_NAME", "db"))
    return d


def test_parse_takes_skitaids_words_and_keeps_the_apps():
    p = scriptargs.parse(["app.py", "--db", "x", "-d", "--port=81", "-D", "--", "a", "-z"],
                         _declared())
    assert p.command == "start"
    assert p.values == {"--db": "x", "-D": True, "--dist": True, "--port": "81"}
    assert p.app_argv == ["app.py", "--db", "x", "-D", "a", "-z"]
    assert p.carried == ["--db", "x", "--port=81", "-D", "--", "a", "-z"]


def test_install_user_takes_its_value_either_way():
    for args in (["--user", "root", "install"], ["--user=root", "install"]):
        p = scriptargs.parse(["app.py"] + args, ())
        assert p.command == "install" and p.values["--user"] == "root"


def test_tolerant_parse_ignores_what_is_not_declared_yet():
    p = scriptargs.parse(["app.py", "--later=1", "status", "--devel"], (), strict=False)
    assert p.command == "status" and p.values == {"--devel": True}
    with pytest.raises(scriptargs.UsageError, match="unknown option --later"):
        scriptargs.parse(["app.py", "--later=1"], ())


def test_preference_merges_flask_style():
    class App:
        def __init__(self):
            self.config = {"A": 1}

        def __call__(self, env, start):
            pass
    app = apply_app_config(App(), {"B": 2})
    assert app.config == {"A": 1, "B": 2}
    pref = Preference()
    pref.config.X = 1
    assert pref.config == {"X": 1} and pref.debug is None and pref.use_reloader is False


class _Req:
    def __init__(self, method="GET", **headers):
        self.method = method
        self._h = {k.replace("_", "-").lower(): v for k, v in headers.items()}

    def header(self, name, default=None):
        return self._h.get(name, default)


def test_ranged_answers():
    h = [("Content-Length", "10"), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
    body = b"0123456789"
    st, hh, b = ranged(_Req(range="bytes=3-"), "200 OK", h, body)
    assert (st, b) == ("206 Partial Content", b"3456789")
    assert ("Content-Range", "bytes 3-9/10") in hh and all(k != "Content-Length" for k, _ in hh)
    st, hh, b = ranged(_Req(range="bytes=3-", if_range="Mon, 01 Jan 2024 00:00:00 GMT"),
                       "200 OK", h, body)
    assert st.startswith("206")
    assert ranged(_Req(range="bytes=3-", if_range="Tue, 02 Jan 2024 00:00:00 GMT"),
                  "200 OK", h, body)[0] == "200 OK"
    assert ranged(_Req(range="bytes=3-"), "404 Not Found", h, body)[0] == "404 Not Found"
    assert ranged(_Req(range="bytes=3-"), "200 OK", [("Accept-Ranges", "none")],
                  body)[0] == "200 OK"
    assert ranged(_Req(range="bytes=3-"), "200 OK", [("Content-Length", "99")],
                  body)[0] == "200 OK"
    st, hh, b = ranged(_Req(range="bytes=10-"), "200 OK", h, body)
    assert st.startswith("416") and ("Content-Range", "bytes */10") in hh and b == b""
