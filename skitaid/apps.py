"""Turning a mount target ("app.py:app", "pkg.module:app", a callable) into a WSGI app."""
import hashlib
import importlib
import importlib.util
import os
import sys


class AppLoadError(Exception):
    hint = ""           # which config key would fix it, as " (…)"


def prepare_imports(pythonpath=(), working_dir="", app_dir=""):
    """A server's import setup, as gunicorn's --chdir and --pythonpath: chdir to
    working_dir, then put it and the pythonpath directories first on sys.path.
    Without working_dir, chdir to app_dir (the first app file's), sys.path unchanged."""
    if working_dir:
        os.chdir(working_dir)
    elif app_dir and os.path.isdir(app_dir):
        os.chdir(app_dir)
    for folder in reversed((working_dir,) + tuple(pythonpath) if working_dir
                           else tuple(pythonpath)):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)


def first_app_dir(server):
    """The directory of a server's first app file ('' if it mounts none): the
    workers' working directory when working_dir is not set, so that an app
    opening "data/x.txt" finds it next to itself, as it did in development."""
    from .config.model import APP
    for group in server.hosts:
        for route in group.routes:
            if route.kind == APP and isinstance(route.target, str):
                path = split_spec(route.target)[0]
                if path.endswith(".py") and os.path.isabs(path):
                    return os.path.dirname(path)
    return ""


def _where_is(name, start, levels=4):
    """The directory above `start` that holds package or module `name` ('' if none):
    what pythonpath should name so that `import name` works."""
    folder = os.path.abspath(start)
    for _ in range(levels + 1):
        if os.path.isfile(os.path.join(folder, name, "__init__.py")) or \
                os.path.isfile(os.path.join(folder, name + ".py")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return ""


def _import_hint(e, path):
    """For "No module named 'mysite'" raised by mysite/mysite/wsgi.py: which
    directory to add, and the keys that add it."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return ""
    top = e.name.split(".")[0]
    starts = [os.path.dirname(path)] if path else []
    starts.append(os.getcwd())
    for start in starts:
        folder = _where_is(top, start)
        if folder and folder not in sys.path:
            return (" (%s is in %s, which is not on the import path: set the server's "
                    "pythonpath = %s, or working_dir = %s)" % (top, folder, folder, folder))
    return ""


def split_spec(spec):
    """'path/app.py:name' → ('path/app.py', 'name'); 'pkg.mod' → ('pkg.mod', 'app')."""
    head, sep, name = spec.rpartition(":")
    if not sep or not name.isidentifier():
        return spec, "app"
    return head, name


def find_app_file(where, base_dir):
    """The app file that `where` names, relative to `base_dir`: 'app_v1/app.py',
    'app_v1/app' (the .py may be left out) or a directory holding app.py.
    '' when none exists."""
    path = where if os.path.isabs(where) else os.path.join(base_dir, where)
    if path.endswith(".py"):
        candidates = (path,)
    else:
        candidates = (path + ".py", os.path.join(path, "app.py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return ""


def load_app(target, base_dir=None):
    if callable(target):
        return target
    if not isinstance(target, str):
        module = target   # a module object: its `app`
        return getattr(module, "app")
    where, name = split_spec(target)
    path = ""
    try:
        if where.endswith(".py") or os.sep in where:
            path = where if os.path.isabs(where) or base_dir is None else os.path.join(base_dir, where)
            path = os.path.abspath(path)
            path = find_app_file(path, "") or path
            if not os.path.isfile(path):
                raise AppLoadError("%s: no such file" % path)
            folder = os.path.dirname(path)
            if folder not in sys.path:
                sys.path.insert(0, folder)   # the app's own imports resolve next to it
            modname = "skitaid_app_" + hashlib.sha1(path.encode()).hexdigest()[:12]
            module = sys.modules.get(modname)
            if module is None:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[modname]
                    raise
        else:
            if base_dir and base_dir not in sys.path:
                sys.path.insert(0, base_dir)
            module = importlib.import_module(where)
    except AppLoadError:
        raise
    except Exception as e:
        hint = _import_hint(e, path)
        err = AppLoadError("cannot import %s: %s: %s%s" % (target, type(e).__name__, e, hint))
        err.hint = hint
        raise err from e
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError("%s has no attribute %r" % (where, name)) from None
    if not callable(app):
        raise AppLoadError("%s:%s is not callable" % (where, name))
    return app
