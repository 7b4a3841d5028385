"""Database corequests: PostgreSQL (psycopg2 driven by the loop) and SQLite
(a thread per database file), behind the same Task verbs as HTTP calls."""
from ..cluster import ConnectFailed  # noqa: F401  (a new connection could not be opened)


class Row(dict):
    """One row: key access (row["name"]) and attribute access (row.name).
    A dict, so a list of rows goes straight to json.dumps()."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def make_rows(description, tuples):
    if not description:
        return []
    names = [d[0] for d in description]
    return [Row(zip(names, t)) for t in tuples]


class PoolExhausted(Exception):
    """No connection came free within the pool's timeout."""
