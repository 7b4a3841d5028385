"""The layer map holds: imports only go down (import-linter's contracts in
setup.cfg, run here so README's test command runs them), every module is on
the map, a wrong import is caught, and the `skitaid` command's master does
not load the request stack before it forks."""
import configparser
import json
import os
import shutil
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "skitaid")
REQUEST_STACK = ("skitaid.protocols", "skitaid.handlers", "skitaid.worker")


def lint_imports(root):
    """Run lint-imports on the skitaid package under `root` with its setup.cfg."""
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(exe):
        exe = shutil.which("lint-imports") or "lint-imports"
    env = dict(os.environ, PYTHONPATH=root)   # the package under `root`, not an installed one
    return subprocess.run([exe, "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)


def test_imports_follow_the_layers():
    out = lint_imports(ROOT)
    assert out.returncode == 0, "lint-imports found imports against the layers:\n%s%s" % (
        out.stdout, out.stderr)
    assert "0 broken" in out.stdout


def test_every_module_is_on_the_layer_map():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    layers = cfg["importlinter:contract:layers"]["layers"]
    placed = {name.strip() for line in layers.split("\n")
              for name in line.replace("|", ":").split(":") if name.strip()}
    modules = set()
    for entry in os.listdir(PACKAGE):
        path = os.path.join(PACKAGE, entry)
        if entry.endswith(".py") and entry != "__init__.py":
            modules.add("skitaid." + entry[:-3])
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            modules.add("skitaid." + entry)
    assert modules, PACKAGE
    assert sorted(modules - placed) == [], "modules on no layer of setup.cfg's layers contract"


def test_a_wrong_import_is_caught(tmp_path):
    """An upward import inside a function and the master importing a protocol,
    in a copy of the package: both are reported."""
    shutil.copytree(PACKAGE, tmp_path / "skitaid",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(os.path.join(ROOT, "setup.cfg"), tmp_path / "setup.cfg")
    with open(tmp_path / "skitaid" / "corequest" / "engine.py", "a") as f:
        f.write(textwrap.dedent("""
            def _aliases_from_the_api():
                from ..api import _aliases
                return _aliases
            """))
    with open(tmp_path / "skitaid" / "daemon" / "master.py", "a") as f:
        f.write("\nfrom ..protocols import h1  # noqa: E402\n")
    out = lint_imports(str(tmp_path))
    assert out.returncode != 0, out.stdout
    assert "skitaid.corequest.engine -> skitaid.api" in out.stdout, out.stdout
    assert "skitaid.daemon.master -> skitaid.protocols.h1" in out.stdout, out.stdout
    assert "skitaid layers: imports only go down BROKEN" in out.stdout, out.stdout
    assert "the master never imports the request stack before it forks BROKEN" in out.stdout


def test_the_master_loads_no_request_stack_before_it_forks():
    """What `skitaid run` does up to the fork, in a fresh interpreter: parse
    the command line, load the built-in config, build the master."""
    code = textwrap.dedent("""
        import json, sys
        from skitaid import cli
        from skitaid.config import DEFAULT_DIR
        args = cli.build_parser().parse_args(["run", "-c", DEFAULT_DIR])
        config = cli._load(args)
        assert config is not None and config.servers
        from skitaid.daemon import commands, master, preflight
        master.Master(config, loader=None)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("skitaid"))))
        """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert "skitaid.daemon.master" in loaded and "skitaid.cli" in loaded
    stack = [m for m in loaded if m.startswith(REQUEST_STACK)]
    assert stack == [], "the master imported %s before forking" % ", ".join(stack)
