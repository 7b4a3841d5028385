"""skitaid: a Python application server for UNIX, in the line of Skitai."""
from .version import __version__
from .api import (mount, run, set_max_age, log_off, set_503_estimated_timeout,
                  enable_debug, config)
from .websocket import (websocket, WS_SIMPLE, WS_CHANNEL, WS_DEDICATED, WS_THREADSAFE,
                        WS_GROUPCHAT, WS_MSG_TEXT, WS_MSG_JSON)

__all__ = ["__version__", "mount", "run", "set_max_age", "log_off",
           "set_503_estimated_timeout", "enable_debug", "config",
           "websocket", "WS_SIMPLE", "WS_CHANNEL", "WS_DEDICATED", "WS_THREADSAFE",
           "WS_GROUPCHAT", "WS_MSG_TEXT", "WS_MSG_JSON"]
