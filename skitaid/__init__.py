"""skitaid: a Python application server for UNIX, in the line of Skitai."""
from .version import __version__
from .api import (mount, run, set_max_age, log_off, set_503_estimated_timeout,
                  enable_debug, config, set_worker_critical_point, enable_ssl,
                  enable_forward, alias, register_cache_keys, register_states, enable_proxy,
                  PROTO_HTTP, PROTO_HTTPS, DB_PGSQL, DB_SQLITE3, DB_REDIS)
from .context import push
from .corequest.task import (STA_REQFAIL, STA_UNSENT, STA_TIMEOUT, STA_NETERR, STA_ERROR,
                             STA_NORMAL, CorequestError)
from .websocket import (websocket, WS_SIMPLE, WS_CHANNEL, WS_DEDICATED, WS_THREADSAFE,
                        WS_GROUPCHAT, WS_MSG_TEXT, WS_MSG_JSON)
from . import was

__all__ = ["__version__", "mount", "run", "set_max_age", "log_off",
           "set_503_estimated_timeout", "enable_debug", "config",
           "set_worker_critical_point", "enable_ssl", "enable_forward", "push",
           "alias", "register_cache_keys", "register_states", "enable_proxy",
           "STA_REQFAIL", "STA_UNSENT", "STA_TIMEOUT", "STA_NETERR", "STA_ERROR", "STA_NORMAL",
           "CorequestError", "was", "PROTO_HTTP", "PROTO_HTTPS", "DB_PGSQL", "DB_SQLITE3",
           "DB_REDIS",
           "websocket", "WS_SIMPLE", "WS_CHANNEL", "WS_DEDICATED", "WS_THREADSAFE",
           "WS_GROUPCHAT", "WS_MSG_TEXT", "WS_MSG_JSON"]
