"""Aliases declared in code with `skitaid.alias()`, for an engine started outside a server.

A worker's engine takes its aliases from its server's config. A script or a
test that calls `was` without a server gets a private engine (engine.current()),
which takes the aliases declared here: `skitaid.alias()` hands each one down
when it is called, so the engine never looks them up in the API above it.
"""
_declared = {}      # name → config.model.Alias


def declare(alias):
    """Record `alias` (a later one of the same name replaces it)."""
    _declared[alias.name] = alias


def declared():
    """The aliases declared so far, in declaration order."""
    return tuple(_declared.values())
