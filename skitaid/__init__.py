"""skitaid: a Python application server for UNIX, in the line of Skitai.

The `skitaid` command's master imports this package too (skitaid.cli), and
must not load the request stack (protocols, handlers, worker) before it
forks. So only the app-script API (api.py: configuration only) is imported
here; the rest of the public names are imported when first used.
"""
from .version import __version__
from .api import (mount, run, set_max_age, log_off, set_503_estimated_timeout,
                  enable_debug, config, set_worker_critical_point, enable_ssl,
                  enable_forward, alias, register_cache_keys, register_states, enable_proxy, enable_status,
                  enable_gateway, set_auth_handler, enable_cachefs, set_rate_limit,
                  set_keep_alive, set_request_timeout, set_max_upload_size,
                  set_backend_keep_alive, set_max_rcache, abspath, getswd, use_poll, is_devel,
                  set_smtp,
                  add_option, options, get_option, preference, set_proxy_keep_alive,
                  config_executors, enable_file_logging,
                  PROTO_HTTP, PROTO_HTTPS, DB_PGSQL, DB_SQLITE3, DB_REDIS)
from .api import add_database_interface, set_shared_state, DB_MONGODB

_TASK_NAMES = ("STA_REQFAIL", "STA_UNSENT", "STA_TIMEOUT", "STA_NETERR", "STA_ERROR",
               "STA_NORMAL", "CorequestError")
_WEBSOCKET_NAMES = ("websocket", "WS_SIMPLE", "WS_CHANNEL", "WS_DEDICATED", "WS_THREADSAFE",
                    "WS_GROUPCHAT", "WS_MSG_TEXT", "WS_MSG_JSON")

__all__ = ["__version__", "mount", "run", "set_max_age", "log_off",
           "set_503_estimated_timeout", "enable_debug", "config",
           "set_worker_critical_point", "enable_ssl", "enable_forward", "push",
           "alias", "register_cache_keys", "register_states", "enable_proxy", "enable_status",
           "enable_gateway", "set_auth_handler", "enable_cachefs", "set_rate_limit",
           "set_keep_alive", "set_request_timeout", "set_max_upload_size",
           "set_backend_keep_alive", "set_max_rcache", "abspath", "getswd", "use_poll",
           "is_devel", "test_client", "set_smtp",
           "add_option", "options", "get_option", "preference", "set_proxy_keep_alive",
           "config_executors", "enable_file_logging",
           "was", "PROTO_HTTP", "PROTO_HTTPS", "DB_PGSQL", "DB_SQLITE3", "DB_REDIS",
           "add_database_interface", "set_shared_state", "DB_MONGODB", "DatabaseInterface",
           *_TASK_NAMES, *_WEBSOCKET_NAMES]


def __getattr__(name):
    """The lazily imported public names (PEP 562): bound here on first use."""
    if name == "push":
        from .context import push as value
    elif name == "test_client":
        from .testclient import test_client as value
    elif name == "was":
        import skitaid.was      # (`from . import was` would ask this function again)
        value = skitaid.was
    elif name == "DatabaseInterface":
        from .corequest.db.interface import DatabaseInterface as value
    elif name in _TASK_NAMES:
        from .corequest import task
        value = getattr(task, name)
    elif name in _WEBSOCKET_NAMES:
        # all of them at once: importing the submodule bound `skitaid.websocket`
        # to it, and the public name is the decorator
        from .websocket import (websocket, WS_SIMPLE, WS_CHANNEL, WS_DEDICATED,
                                WS_THREADSAFE, WS_GROUPCHAT, WS_MSG_TEXT, WS_MSG_JSON)
        globals().update(websocket=websocket, WS_SIMPLE=WS_SIMPLE, WS_CHANNEL=WS_CHANNEL,
                         WS_DEDICATED=WS_DEDICATED, WS_THREADSAFE=WS_THREADSAFE,
                         WS_GROUPCHAT=WS_GROUPCHAT, WS_MSG_TEXT=WS_MSG_TEXT,
                         WS_MSG_JSON=WS_MSG_JSON)
        return globals()[name]
    else:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
