"""skitaid: a Python application server for UNIX, in the line of Skitai."""
from .version import __version__
from .api import (mount, run, set_max_age, log_off, set_503_estimated_timeout,
                  enable_debug, config, set_worker_critical_point, enable_ssl,
                  enable_forward)
from .push import push

__all__ = ["__version__", "mount", "run", "set_max_age", "log_off",
           "set_503_estimated_timeout", "enable_debug", "config",
           "set_worker_critical_point", "enable_ssl", "enable_forward", "push"]
