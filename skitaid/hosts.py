"""Host-name tables: which entry a host name picks (layer 1).

The one set of matching rules for names in the config, for the TLS server
name (SNI) and for the Host header alike:

- `example.com`    that name only
- `.example.com`   the domain and every subdomain
- `*.example.com`  subdomains only (as in nginx)
- `default`, `*`   anything else

An exact name wins, then the longest suffix; at equal length the entry added
first. Names are compared in lower case without a trailing dot. A table
holds host names only: a `name:port` entry belongs to the caller (the router
matches those against the raw Host header).
"""

FALLBACK_NAMES = ("default", "*")


def normalize(host):
    """The form names are compared in: lower case, no trailing dot."""
    return host.lower().rstrip(".")


class HostTable:
    """host name → value, with the rules above."""

    __slots__ = ("exact", "suffixes", "fallback")

    def __init__(self, entries=()):
        """`entries`: (names, value) pairs, in order of preference."""
        self.exact = {}
        self.suffixes = []      # (".example.com", value, matches the bare domain too)
        self.fallback = None
        for names, value in entries:
            for name in names:
                self.add(name, value)

    def add(self, name, value):
        name = normalize(name)
        if name in FALLBACK_NAMES:
            if self.fallback is None:
                self.fallback = value
            return
        if name.startswith("*."):
            entry = (name[1:], value, False)
        elif name.startswith("."):
            entry = (name, value, True)
        else:
            self.exact.setdefault(name, value)
            return
        self.suffixes.append(entry)
        self.suffixes.sort(key=lambda s: -len(s[0]))    # stable: first added wins a tie

    def lookup(self, host, default=None):
        """The value for `host` (already without a port), else the fallback,
        else `default`."""
        host = normalize(host)
        value = self.exact.get(host)
        if value is not None:
            return value
        for suffix, value, bare in self.suffixes:
            if host.endswith(suffix) or (bare and host == suffix[1:]):
                return value
        return self.fallback if self.fallback is not None else default

    def __bool__(self):
        return bool(self.exact or self.suffixes or self.fallback is not None)
