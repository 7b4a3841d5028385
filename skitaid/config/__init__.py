"""Config files → frozen dataclasses. The only code in skitaid that reads INI/YAML."""
from .errors import ConfigError, Problem
from .locate import DEFAULT_DIR, find_config_dir, load_config, load_control_config
from .model import (ALIAS, ALIAS_TYPES, APP, STATIC, Alias, Config, GlobalConfig, HostGroup,
                    Limits, Member, Route, ServerConfig)

__all__ = [
    "load_config", "load_control_config", "find_config_dir", "DEFAULT_DIR", "ConfigError", "Problem",
    "Config", "GlobalConfig", "ServerConfig", "HostGroup", "Route", "Limits",
    "Alias", "Member", "STATIC", "APP", "ALIAS", "ALIAS_TYPES",
]
