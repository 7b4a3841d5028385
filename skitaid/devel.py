"""Who gets development behaviour: the source reloader and debug pages.

Four switches meet here: the process-wide `--devel`/`--silent` (mode.py), a
server's `devel = yes`, a mount's own `pref.debug`/`pref.use_reloader`
(Route.debug/Route.reload) and the app object's `debug`/`use_reloader`
attributes, as the original Skitai's apps set them. `--silent` beats them all.
"""
from . import mode


def server_devel(server):
    """Development mode for the whole server: `--devel` or `devel = yes`."""
    return not mode.silent and (mode.devel or server.devel)


def _app_flag(app, name):
    """app.use_reloader / app.debug set to True (Flask's debug is a property)."""
    try:
        return getattr(app, name, False) is True
    except Exception:       # a property that raises: not set
        return False


def route_reloads(route):
    """A mount that asked for the reloader itself: pref.use_reloader, or
    app.use_reloader on a callable the script mounted (the master has that
    object; an app file's own flag is reported by its worker)."""
    if mode.silent:
        return False
    return bool(route.reload) or (callable(route.target) and _app_flag(route.target, "use_reloader"))


def watched(server):
    """Does the master watch this server's sources?"""
    if mode.silent:
        return False
    return server_devel(server) or any(route_reloads(r) for g in server.hosts for r in g.routes)


def app_reloads(app):
    """An app file's app that set use_reloader = True (seen by its worker)."""
    return not mode.silent and _app_flag(app, "use_reloader")


def mount_debug(route, server, app=None):
    """Tracebacks in this mount's 500 pages? Devel turns them on everywhere,
    --silent off everywhere; else the mount's pref.debug, else app.debug, else
    the server's `debug` key."""
    if mode.silent:
        return False
    if server_devel(server):
        return True
    if route.debug is not None:
        return bool(route.debug)
    return _app_flag(app, "debug") or server.debug


def apply_debug(route, server, app):
    """The mount's debug decision, also handed to an app that has a `debug`
    switch (Flask: with debug on it lets exceptions through to the server's
    traceback page, with it off it answers its own bare 500). The app's own
    setting is changed only when devel, --silent or the mount's pref decided."""
    debug = mount_debug(route, server, app)
    if (mode.silent or server_devel(server) or route.debug is not None) \
            and hasattr(app, "debug") and not isinstance(app, type):
        try:
            if getattr(app, "debug") is not debug:
                setattr(app, "debug", debug)
        except Exception:       # read-only: the page decision still holds
            pass
    return debug
