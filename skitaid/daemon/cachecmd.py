"""`skitaid cache purge [SERVER] [URL-PREFIX]`, and the cache lines of `skitaid status`.

Both work on the cache directories themselves (cachefs/disk.py), so a purge
needs no running daemon; the workers' memory tiers follow a purge within a
second (they watch the directory's purge epoch).
"""
import sys

from ..cachefs.disk import DiskTier, read_status


def _looks_like_prefix(arg):
    return arg.startswith("/") or "://" in arg


def purge(config, first=None, second=None):
    """Remove the entries of SERVER (default: every server with a cache) whose
    URL starts with URL-PREFIX (default: all). An argument starting with '/'
    (or holding '://') is the prefix."""
    server, prefix = first, second
    if first is not None and second is None and _looks_like_prefix(first):
        server, prefix = None, first
    with_cache = [s for s in config.servers if s.cachefs.enabled]
    if server is not None:
        named = [s for s in config.servers if s.name == server]
        if not named:
            print("skitaid cache purge: no server %r (servers: %s)"
                  % (server, ", ".join(s.name for s in config.servers) or "none"),
                  file=sys.stderr)
            return 1
        if not named[0].cachefs.enabled:
            print("skitaid cache purge: server %r has no cache ([cachefs] memmax and diskmax "
                  "are 0)" % server, file=sys.stderr)
            return 1
        with_cache = named
    if not with_cache:
        print("no server has a cache")
        return 0
    for s in with_cache:
        try:
            disk = DiskTier(s.cachefs.path, s.cachefs.diskmax)
            try:
                removed = disk.purge(prefix or "")
            finally:
                disk.close()
        except OSError as e:
            print("skitaid cache purge: %s: %s" % (s.cachefs.path, e.strerror or e),
                  file=sys.stderr)
            return 1
        print("%s: %d entr%s removed%s" % (s.name, removed, "y" if removed == 1 else "ies",
                                          " under %s" % prefix if prefix else ""))
    return 0


def cache_status(server):
    """The `cache` part of a server's status: None when it has no cache."""
    c = server.cachefs
    if not c.enabled:
        return None
    state = read_status(c.path) or {}
    return {"path": c.path, "memmax": c.memmax, "diskmax": c.diskmax,
            "entries": state.get("entries", 0), "bytes": state.get("bytes", 0),
            "hits": state.get("hits", 0), "misses": state.get("misses", 0),
            "revalidated": state.get("revalidated", 0), "stale": state.get("stale", 0),
            "bypass": state.get("bypass", 0), "hit_ratio": state.get("hit_ratio", 0.0)}


def status_line(cache):
    return ("  cache %s: %d entries, %.1fM of %.1fM on disk, hit ratio %.1f%% "
            "(%d hits, %d revalidated, %d stale, %d misses, %d bypass)" % (
                cache["path"], cache["entries"], cache["bytes"] / 1048576.0,
                cache["diskmax"] / 1048576.0, cache["hit_ratio"] * 100, cache["hits"],
                cache["revalidated"], cache["stale"], cache["misses"], cache["bypass"]))
