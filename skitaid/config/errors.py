"""Config mistakes, reported all at once with where they are and what was expected."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, List, Optional


@dataclass(frozen=True)
class Problem:
    file: str                   # relative to the config dir when inside it
    section: str = ""           # "server", "routes:line", "@backend", "" for the file itself
    key: str = ""
    found: Optional[str] = None # the offending value as written; None when nothing was found
    expected: str = ""
    line: int = 0               # 1-based line in `file`; 0 when not known

    def located(self):
        """As str(), with the line after the file name ("web.conf:4 [server] …"),
        the way nginx -t and compilers say where."""
        if not self.line:
            return str(self)
        return str(replace(self, file="%s:%d" % (self.file, self.line), line=0))

    def __str__(self):
        where = self.file
        if self.section:
            where += " [%s]" % self.section
        if self.key:
            where += " " + self.key
        if self.found is None:
            return "%s: expected %s" % (where, self.expected)
        return "%s: found %r, expected %s" % (where, self.found, self.expected)


class ConfigError(Exception):
    """One or more problems in the config files; str() gives one line per problem."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: List[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self):
        return "\n".join(str(p) for p in self.problems)
