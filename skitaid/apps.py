"""Turning a mount target ("app.py:app", "pkg.module:app", a callable) into a WSGI app."""
import hashlib
import importlib
import importlib.util
import os
import sys


class AppLoadError(Exception):
    pass


def split_spec(spec):
    """'path/app.py:name' → ('path/app.py', 'name'); 'pkg.mod' → ('pkg.mod', 'app')."""
    head, sep, name = spec.rpartition(":")
    if not sep or not name.isidentifier():
        return spec, "app"
    return head, name


def load_app(target, base_dir=None):
    if callable(target):
        return target
    if not isinstance(target, str):
        module = target   # a module object: its `app`
        return getattr(module, "app")
    where, name = split_spec(target)
    try:
        if where.endswith(".py") or os.sep in where:
            path = where if os.path.isabs(where) or base_dir is None else os.path.join(base_dir, where)
            path = os.path.abspath(path)
            if os.path.isdir(path):
                path = os.path.join(path, "app.py")
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
        raise AppLoadError("cannot import %s: %s: %s" % (target, type(e).__name__, e)) from e
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError("%s has no attribute %r" % (where, name)) from None
    if not callable(app):
        raise AppLoadError("%s:%s is not callable" % (where, name))
    return app
