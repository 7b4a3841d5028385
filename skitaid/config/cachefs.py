"""The [cachefs] section (and skitaid.enable_cachefs()) → CacheConfig."""
from __future__ import annotations

import dataclasses
import os
import re

from . import values as v
from .model import CacheConfig

_STALE = ("error", "timeout")


def _use_stale(s):
    words = tuple(w.lower() for w in v.split_words(s))
    if words in (("no",), ("off",), ("none",)):
        return ()
    if not all(w in _STALE for w in words):
        raise ValueError(s)
    return words


def _header_name(s):
    if s.lower() in ("", "no", "off", "none"):
        return ""
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", s):
        raise ValueError(s)
    return s


def _client_rule(s):
    low = s.lower()
    if low in ("ignore", "revalidate"):
        return low
    raise ValueError(s)


KEYS = {
    "memmax": ("memmax", v.size),
    "diskmax": ("diskmax", v.size),
    "path": ("path", v.text("a directory")),
    "max_entry": ("max_entry", v.size),
    "use_stale": ("use_stale", v.Kind("error and/or timeout separated by commas, or no",
                                      _use_stale)),
    "stale_max": ("stale_max", v.seconds()),
    "cache_status_header": ("status_header", v.Kind(
        "a header field name (e.g. X-Cache), or no", _header_name)),
    "client_no_cache": ("client_no_cache", v.Kind("ignore or revalidate", _client_rule)),
    "store_set_cookie": ("store_set_cookie", v.boolean),
    "lock_timeout": ("lock_timeout", v.seconds(0.0)),
}


def build_cachefs(ctx, sec, read_keys) -> CacheConfig:
    """One [cachefs] section → CacheConfig; mistakes go to ctx.problems.
    `read_keys`: build._read_keys (passed in: build imports this module)."""
    found = {}
    read_keys(ctx, sec, KEYS, found)
    found.pop("_where", None)
    if found.get("path"):
        found["path"] = ctx.path(found["path"])
    return CacheConfig(**found)


def with_default_path(server, var_path):
    """The server with its cache directory filled in: VAR_PATH/cache/NAME."""
    c = server.cachefs
    if not c.enabled or c.path:
        return server
    base = var_path or os.path.join(os.path.expanduser("~"), ".skitaid")
    return dataclasses.replace(server, cachefs=dataclasses.replace(
        c, path=os.path.join(base, "cache", server.name)))
