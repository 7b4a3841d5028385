"""Development mode's decisions, without servers: who is watched, which
mounts show tracebacks, which changed paths reload, the worker→master
messages, the test client's stub paths and argument checks."""
import json
import os
import sys
import types

import pytest

from skitaid import devel, mode, reimport
from skitaid.config.build import FileContext, RawSection, ROUTES, SERVER, build_server
from skitaid.config.model import APP, Config, GlobalConfig, HostGroup, Route, ServerConfig
from skitaid.daemon import watch
from skitaid.daemon.channel import MasterLink, WorkerChannel


@pytest.fixture(autouse=True)
def clean_mode():
    yield
    mode.set_mode(devel=False, silent=False)


def server(*routes, **kw):
    return ServerConfig(hosts=(HostGroup(("default",), tuple(routes)),), **kw)


def app_route(target="/x/app.py:app", **kw):
    return Route("/", APP, target, "test", **kw)


class FlaskLike:
    debug = False

    def __call__(self, environ, start_response):
        return []


# -- who is watched ------------------------------------------------------------------------
def test_no_watcher_without_devel():
    assert not devel.watched(server(app_route()))


@pytest.mark.parametrize("how", ["mode", "server", "route", "app"])
def test_each_switch_turns_the_watcher_on_and_silent_beats_it(how):
    target = "/x/app.py:app"
    if how == "app":
        target = FlaskLike()
        target.use_reloader = True
    s = server(app_route(target, reload=(how == "route")), devel=(how == "server"))
    if how == "mode":
        mode.set_mode(devel=True)
    assert devel.watched(s)
    mode.set_mode(silent=True)
    assert not devel.watched(s)


# -- debug pages per mount -----------------------------------------------------------------
def test_debug_follows_the_mount_then_the_app_then_the_server():
    loud, quiet = FlaskLike(), FlaskLike()
    loud.debug = True
    assert devel.apply_debug(app_route(loud), server(), loud) is True
    assert devel.apply_debug(app_route(quiet), server(), quiet) is False
    assert devel.apply_debug(app_route(quiet), server(debug=True), quiet) is True
    assert devel.apply_debug(app_route(loud, debug=False), server(), loud) is False
    assert loud.debug is False          # the mount's pref decided: the app is told
    assert devel.apply_debug(app_route(quiet, debug=True), server(), quiet) is True
    assert quiet.debug is True


def test_devel_turns_debug_on_everywhere_and_silent_off():
    app = FlaskLike()
    mode.set_mode(devel=True)
    assert devel.apply_debug(app_route(app, debug=False), server(), app) is True
    assert app.debug is True            # Flask then lets exceptions through to the page
    mode.set_mode(silent=True)
    assert devel.apply_debug(app_route(app, debug=True), server(debug=True), app) is False
    assert app.debug is False


def test_a_plain_function_gets_no_attribute_it_did_not_have():
    def app(environ, start_response):
        return []
    mode.set_mode(devel=True)
    assert devel.apply_debug(app_route(app), server(), app) is True
    assert not hasattr(app, "debug")


def test_is_devel():
    import skitaid
    assert skitaid.is_devel() is False
    mode.set_mode(devel=True)
    assert skitaid.is_devel() is True
    mode.set_mode(silent=True)
    assert skitaid.is_devel() is False


# -- the devel key ----------------------------------------------------------------------------
def test_the_devel_key(tmp_path):
    (tmp_path / "app.py").write_text("def app(e, s): pass\n")
    ctx = FileContext("web.conf", str(tmp_path))
    config = build_server(ctx, [RawSection("server", SERVER, [("devel", "yes")]),
                                RawSection("routes:line", ROUTES, [("/", "app.py:app")])],
                          "web", "web.conf")
    assert config.devel is True and not ctx.problems
    ctx = FileContext("web.conf", str(tmp_path))
    build_server(ctx, [RawSection("server", SERVER, [("devel", "sometimes")]),
                       RawSection("routes:line", ROUTES, [("/", "app.py:app")])],
                 "web", "web.conf")
    assert ctx.problems and "devel" in str(ctx.problems[0]) and "web.conf" in str(ctx.problems[0])


# -- what is watched, what reloads ----------------------------------------------------------
def test_sources_come_from_the_config_and_skip_the_log_and_run_dirs(tmp_path):
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "app.py").write_text("")
    conf = tmp_path / "etc"
    (conf / "servers-enabled").mkdir(parents=True)
    (conf / "servers-enabled" / "web.conf").write_text("")
    s = server(app_route("%s/app.py:app" % site), devel=True,
               source=str(conf / "servers-enabled" / "web.conf"))
    g = GlobalConfig(config_dir=str(conf), log_path=str(site / "log"), run_path="/var/run/x")
    spec = watch.sources(Config(g, (s,)))
    assert spec["roots"] == [os.path.realpath(site)]
    assert str(conf / "servers-enabled" / "web.conf") in spec["files"]
    assert spec["ignore"] == [os.path.realpath(site / "log")]     # /var/run/x is outside
    root = spec["roots"][0]
    yes = ["app.py", "pkg/mod.py", "templates/index.html", "pkg/templates/a/b.txt"]
    no = ["__pycache__/app.cpython-311.pyc", "pkg/__pycache__/m.py", ".git/x.py", "venv/a.py",
          ".venv/lib/b.py", "log/x.py", "static/style.css", "notes.txt", ".#app.py", "app.py~",
          "node_modules/x.py"]
    for rel in yes:
        assert watch.relevant(os.path.join(root, rel), spec), rel
    for rel in no:
        assert not watch.relevant(os.path.join(root, rel), spec), rel
    assert watch.relevant(os.path.realpath(conf / "servers-enabled" / "new.yaml"), spec)
    assert not watch.relevant("/elsewhere/app.py", spec)
    assert watch.sources(Config(g, (server(app_route("%s/app.py:app" % site)),))) is None


def test_a_scripts_callable_is_found_in_its_module(tmp_path):
    module = types.ModuleType("devel_probe_mod")
    module.__file__ = str(tmp_path / "probe.py")

    def app(environ, start_response):
        return []
    module.the_app = app
    sys.modules["devel_probe_mod"] = module
    try:
        assert reimport.binding(app) == (module, "the_app")
        spec = watch.sources(Config(GlobalConfig(), (server(app_route(app), devel=True),)))
        assert spec["roots"] == [os.path.realpath(tmp_path)]
    finally:
        del sys.modules["devel_probe_mod"]
    assert reimport.binding(lambda e, s: []) is None


def test_watch_paths_are_not_nested():
    spec = {"roots": ["/a", "/a/b", "/c"], "files": ["/a/b/x.conf"], "config_dirs": []}
    assert watch.watch_paths(spec) == [p for p in ("/a", "/c") if os.path.isdir(p)]


def test_a_burst_of_reports_is_one_reload_after_the_quiet_time():
    r = watch.Reloader(selector=None)

    class Out:
        def __init__(self):
            self.lines = [json.dumps([p]).encode() + b"\n" for p in ("/a.py", "/b.py")]

        def read(self):
            return self.lines.pop(0)
    r.proc = types.SimpleNamespace(stdout=Out())
    r.readable(10.0)
    r.readable(10.1)
    assert not r.take_due(10.1 + watch.QUIET / 2)
    assert r.take_due(10.1 + watch.QUIET)
    assert not r.take_due(20.0)         # once


# -- worker → master messages --------------------------------------------------------------
def test_the_channel_carries_watch_and_traceback():
    channel = WorkerChannel()
    link = MasterLink(channel.worker_end, os.getpid())
    link.watch()
    link.traceback('Traceback (most recent call last):\n  File "app.py"\nSyntaxError: x\n')
    link.failed("SyntaxError: x")
    link.ready()
    channel.read()
    assert channel.wants_watch and channel.ready
    assert channel.trace.endswith("SyntaxError: x\n") and "\n  File" in channel.trace
    assert channel.reason == "SyntaxError: x"
    channel.close()


# -- the test client, without a server ----------------------------------------------------------
def test_stub_paths():
    from skitaid.testclient import Stub
    calls = []

    class Fake:
        def get(self, path, **kw):
            calls.append(("GET", path, kw))

        def post(self, path, **kw):
            calls.append(("POST", path, kw))

    stub = Stub(Fake())
    stub.apis.pets(45).get(q=1)
    stub.apis.pets("a b/c").post({"x": 1})
    stub("v1", 2).items.get()
    stub.get()
    assert calls == [("GET", "/apis/pets/45", {"params": {"q": 1}}),
                     ("POST", "/apis/pets/a%20b%2Fc", {"json": {"x": 1}}),
                     ("GET", "/v1/2/items", {"params": None}),
                     ("GET", "/", {"params": None})]


def test_test_client_arguments(tmp_path):
    import skitaid
    with pytest.raises(ValueError, match="test_client.*port"):
        skitaid.test_client(str(tmp_path), 0)
    with pytest.raises(ValueError, match="port"):
        skitaid.test_client(str(tmp_path), "6000")
    with pytest.raises(FileNotFoundError, match="test_client.*no such script"):
        skitaid.test_client(str(tmp_path / "nope.py"), 6000)
    with pytest.raises(TypeError, match="test_client"):
        skitaid.test_client(None, 6000)
