"""Fresh app code in a worker of a script whose master has the old code.

A script that mounts its own callable (`skitaid.mount("/", app)`) is the
master too: the app was imported before the first fork, and every worker
forked later inherits that copy. For the development reloader a worker
forgets the script's modules (those under its directory, not installed
packages) and imports them again, then takes the app by the name the script
bound it to. The script itself runs again under another name than
"__main__", so its `if __name__ == "__main__": skitaid.run()` stays quiet;
while it runs, mount() and run() do nothing (running() says so).
"""
import importlib
import importlib.util
import os
import sys
import sysconfig

MAIN_AGAIN = "__skitaid_main__"      # the script's module name in the worker
_running = False
_done = {}                           # module name → fresh module (one import per worker)
_purged = False


def running():
    """Is the script being run again in a worker (mount/run must do nothing)?"""
    return _running


def _installed_dirs():
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(path)
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # skitaid's own
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


def _module_file(module):
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if isinstance(path, str) and path else ""


def _own(path, installed):
    return bool(path) and not path.startswith(installed) and "site-packages" not in path


def binding(target):
    """(module, name): where the script bound `target`; __main__ first. None
    when no module of the project holds it (a lambda made in a function)."""
    installed = _installed_dirs()
    main = sys.modules.get("__main__")
    candidates = [main] + [m for n, m in list(sys.modules.items()) if n != "__main__"]
    for module in candidates:
        if module is None or not _own(_module_file(module), installed):
            continue
        for name, value in list(vars(module).items()):
            if value is target and not name.startswith("__"):
                return module, name
    return None


def _purge(folders, installed):
    """Forget every module loaded from under `folders` (but __main__)."""
    for name, module in list(sys.modules.items()):
        path = _module_file(module)
        if name != "__main__" and _own(path, installed) and path.startswith(folders):
            del sys.modules[name]


def _run_script(path):
    global _running
    spec = importlib.util.spec_from_file_location(MAIN_AGAIN, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MAIN_AGAIN] = module
    _running = True
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MAIN_AGAIN]
        raise
    finally:
        _running = False
    return module


def fresh(target):
    """The newly imported version of the callable `target` (itself when it
    cannot be found again: a function made at run time)."""
    global _purged
    found = binding(target)
    if found is None:
        return target
    module, name = found
    installed = _installed_dirs()
    if not _purged:
        _purged = True
        folders = set()
        for m in (sys.modules.get("__main__"), module):
            path = _module_file(m)
            if _own(path, installed):
                folders.add(os.path.join(os.path.dirname(path), ""))
        _purge(tuple(folders), installed)
    key = module.__name__
    if key not in _done:
        if key == "__main__":
            _done[key] = _run_script(module.__file__)
        else:
            _done[key] = importlib.import_module(key)
    app = getattr(_done[key], name, None)
    if not callable(app):
        raise AttributeError("%s no longer defines the app %r (a callable)"
                             % (module.__file__, name))
    return app
